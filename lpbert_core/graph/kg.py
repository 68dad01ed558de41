"""The tokenized knowledge graph as later stages consume it: integer-indexed triples plus token ids.

Reads the outputs of `join_text` (text/*.parquet) and `tokenize` (tokens/{encoder}/*.parquet + manifest.json).
Token id lists carry no special tokens; each stage adds [CLS]/[SEP]/[MASK] itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "dev", "test")


@dataclass
class SpecialIds:
    cls: int
    sep: int
    mask: int
    pad: int
    vocab_size: int


@dataclass
class TokenizedKG:
    """Entities and relations are numbered 0..E-1 and 0..R-1 in the order of the text tables."""

    entity_ids: list[str]
    relation_ids: list[str]
    entity_name_ids: list[list[int]]  # the entity's name (WN lemma, FB name, UMLS name)
    entity_desc_ids: list[list[int]]  # its description (may be empty)
    entity_text_ids: list[list[int]]  # the full text the protocol uses (name + description)
    relation_text_ids: list[list[int]]
    relation_inverse_ids: list[list[int]]  # text of the inverse relation (e.g. "reversed has part")
    triples: dict[str, np.ndarray]  # split -> int64 array (n, 3) of (head, relation, tail), original direction only
    special: SpecialIds
    manifest: dict = field(default_factory=dict)

    @property
    def num_entities(self) -> int:
        return len(self.entity_ids)

    @property
    def num_relations(self) -> int:
        return len(self.relation_ids)


def seeded_subset(triples: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A fixed seeded subset of rows, kept in file order, when `size` is smaller than the array (CPU overlays)."""
    if size is None or size >= len(triples):
        return triples
    rng = np.random.default_rng(seed)
    return triples[np.sort(rng.choice(len(triples), size=int(size), replace=False))]


def load_tokenized_kg(text_dir: str | Path, tokens_dir: str | Path) -> TokenizedKG:
    text_dir, tokens_dir = Path(text_dir), Path(tokens_dir)
    manifest = json.loads((tokens_dir / "manifest.json").read_text())
    ent = pd.read_parquet(tokens_dir / "entities.parquet")
    rel = pd.read_parquet(tokens_dir / "relations.parquet")
    triples = pd.read_parquet(text_dir / "triples.parquet")
    triples = triples[~triples["inverse"]]
    ent_index = {e: i for i, e in enumerate(ent["id"])}
    rel_index = {r: i for i, r in enumerate(rel["id"])}
    by_split = {}
    for split in SPLITS:
        part = triples[triples["split"] == split]
        by_split[split] = np.stack(
            [
                part["head"].map(ent_index).to_numpy(dtype=np.int64),
                part["relation"].map(rel_index).to_numpy(dtype=np.int64),
                part["tail"].map(ent_index).to_numpy(dtype=np.int64),
            ],
            axis=1,
        ).reshape(-1, 3)
    sp = manifest["special_ids"]
    as_lists = lambda col: [list(map(int, x)) for x in col]  # noqa: E731
    return TokenizedKG(
        entity_ids=list(ent["id"]),
        relation_ids=list(rel["id"]),
        entity_name_ids=as_lists(ent["name_ids"]),
        entity_desc_ids=as_lists(ent["description_ids"]),
        entity_text_ids=as_lists(ent["text_ids"]),
        relation_text_ids=as_lists(rel["text_ids"]),
        relation_inverse_ids=as_lists(rel["inverse_ids"]),
        triples=by_split,
        special=SpecialIds(sp["cls"], sp["sep"], sp["mask"], sp["pad"], sp["vocab_size"]),
        manifest=manifest,
    )


def make_toy_kg(tokenizer, entities: dict[str, tuple[str, str]], relations: dict[str, str],
                triples: dict[str, list[tuple[str, str, str]]], *, inverse_prefix: str) -> TokenizedKG:
    """Build a TokenizedKG in memory (for tests and the Python API): entities id -> (name, description);
    `inverse_prefix`: the text before an inverse relation's (config.yaml `text.inverse_prefix`)."""
    enc = lambda texts: [list(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]  # noqa: E731
    eids = list(entities)
    rids = list(relations)
    names = [entities[e][0] for e in eids]
    descs = [entities[e][1] for e in eids]
    texts = [f"{n}, {d}" if d else n for n, d in zip(names, descs)]
    ei = {e: i for i, e in enumerate(eids)}
    ri = {r: i for i, r in enumerate(rids)}
    by_split = {
        s: np.array([[ei[h], ri[r], ei[t]] for h, r, t in triples.get(s, [])], dtype=np.int64).reshape(-1, 3)
        for s in SPLITS
    }
    return TokenizedKG(
        entity_ids=eids,
        relation_ids=rids,
        entity_name_ids=enc(names),
        entity_desc_ids=enc(descs),
        entity_text_ids=enc(texts),
        relation_text_ids=enc(relations[r] for r in rids),
        relation_inverse_ids=enc(inverse_prefix + relations[r] for r in rids),
        triples=by_split,
        special=SpecialIds(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id,
                           tokenizer.pad_token_id, len(tokenizer)),
    )
