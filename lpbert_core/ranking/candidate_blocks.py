"""Candidate lists as every scorer reads them (neutral: the evaluate and baselines packages both use it).

A list folder holds `ranking_head.txt` / `ranking_tail.txt` (BERTRL's layout: blocks of `per_query` lines
`head<TAB>relation<TAB>tail`, the true triple first) and, for lists we sample ourselves
(lpbert_core.evaluate.sampled_negatives), `lists.json` naming `per_query` and the protocol. `read_candidate_lists`
parses a folder into CandidateBlocks; `list_frame` turns any model's scores [blocks, per_query] into the ranks frame
(ties optimistic / pessimistic / realistic, `list_ranks`); GraphIndex is a graph's ids and integer triples without
tokens (what PPR and the sampler need).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lpbert_core.errors import InputError
from lpbert_core.graph.kg import TokenizedKG
from lpbert_core.graph.kg_files import read_triples

LIST_FILES = ("ranking_head.txt", "ranking_tail.txt")
PER_QUERY = 50  # BERTRL: the true triple + 49 corruptions


@dataclass
class CandidateBlocks:
    """One row per block: the true triple (entity / relation indices), the query direction and the candidate entity
    indices [blocks, per_query] (column 0 = the gold entity)."""

    head: np.ndarray
    relation: np.ndarray
    tail: np.ndarray
    direction: np.ndarray
    candidates: np.ndarray
    source: list[str]  # "file:first line" of each block
    known_corruptions: int = 0
    duplicate_lines: int = 0


def read_candidate_lists(folder: str | Path, kg: TokenizedKG, per_query: int = PER_QUERY) -> CandidateBlocks:
    """Parse every list file in `folder`; ids must be entities / relations of `kg` (errors name file and line)."""
    folder = Path(folder)
    ent = {e: i for i, e in enumerate(kg.entity_ids)}
    rel = {r: i for i, r in enumerate(kg.relation_ids)}
    known = {tuple(t) for split in ("train", "dev", "test") for t in np.asarray(kg.triples[split]).tolist()}
    out = {k: [] for k in ("head", "relation", "tail", "direction", "candidates", "source")}
    known_corruptions = duplicates = 0
    files = [folder / name for name in LIST_FILES if (folder / name).is_file()]
    if not files:
        raise InputError(folder, f"no candidate list ({' or '.join(LIST_FILES)})")
    for path in files:
        lines = read_triples(path)
        if len(lines) % per_query:
            raise InputError(path, f"{len(lines)} lines are not blocks of {per_query} (true triple + corruptions)")
        for start in range(0, len(lines), per_query):
            block = lines[start:start + per_query]
            ids = []
            for h, r, t, line in block:
                for name, table, kind in ((h, ent, "entity"), (t, ent, "entity"), (r, rel, "relation")):
                    if name not in table:
                        raise InputError(path, f"unknown {kind} id {name!r} (not in this graph)", line)
                ids.append((ent[h], rel[r], ent[t]))
            ids = np.asarray(ids, dtype=np.int64)
            first_line = block[0][3]
            if (ids[:, 1] != ids[0, 1]).any():
                raise InputError(path, "the block's lines do not share one relation", first_line)
            if (ids[:, 0] == ids[0, 0]).all():
                direction, cands = "tail", ids[:, 2]
            elif (ids[:, 2] == ids[0, 2]).all():
                direction, cands = "head", ids[:, 0]
            else:
                raise InputError(path, "the block varies both head and tail", first_line)
            known_corruptions += sum(tuple(x) in known for x in ids[1:].tolist())
            duplicates += per_query - len({tuple(x) for x in ids.tolist()})
            for key, value in (("head", ids[0, 0]), ("relation", ids[0, 1]), ("tail", ids[0, 2]),
                               ("direction", direction), ("candidates", cands), ("source", f"{path}:{first_line}")):
                out[key].append(value)
    return CandidateBlocks(np.asarray(out["head"]), np.asarray(out["relation"]), np.asarray(out["tail"]),
                           np.asarray(out["direction"]), np.stack(out["candidates"]), out["source"],
                           known_corruptions, duplicates)


def list_ranks(scores: torch.Tensor) -> dict[str, np.ndarray]:
    """Ranks of column 0 among the columns of `scores` [blocks, per_query] (ties: optimistic / pessimistic /
    realistic)."""
    true = scores[:, :1]
    others = scores[:, 1:]
    optimistic = 1 + (others > true).sum(1)
    pessimistic = 1 + (others >= true).sum(1)
    return {"optimistic": optimistic.cpu().numpy().astype(np.float64),
            "pessimistic": pessimistic.cpu().numpy().astype(np.float64),
            "realistic": ((optimistic + pessimistic).double() / 2).cpu().numpy()}


def list_frame(kg, blocks: CandidateBlocks, scores: torch.Tensor) -> pd.DataFrame:
    """The ranks frame of `blocks` from any model's scores [blocks, per_query] (column 0 = the true line); `kg` needs
    entity_ids / relation_ids only (shared by the LP-BERT, cross-encoder and PPR list scorers)."""
    ranks = list_ranks(torch.as_tensor(scores))
    ent_ids = np.asarray(kg.entity_ids, dtype=object)
    rel_ids = np.asarray(kg.relation_ids, dtype=object)
    gold = np.where(blocks.direction == "tail", blocks.tail, blocks.head)
    return pd.DataFrame({
        "query": np.arange(len(gold), dtype=np.int64),
        "direction": blocks.direction.astype(str),
        "head": ent_ids[blocks.head], "relation": rel_ids[blocks.relation], "tail": ent_ids[blocks.tail],
        "gold": ent_ids[gold],
        **ranks,
        "num_candidates": np.full(len(gold), blocks.candidates.shape[1], dtype=np.int64),
        "list": blocks.source,
    })


def lists_folder(inputs: dict) -> Path:
    """The folder of the lists a scoring job ranks: `lists` (a sampled lists' lists.json, or a folder) where given,
    else BERTRL's lists in the raw folder (`raw`/CANDIDATES_FOLDER)."""
    from lpbert_core.graph.kg_files import CANDIDATES_FOLDER

    if inputs.get("lists"):
        path = Path(inputs["lists"])
        return path.parent if path.is_file() else path
    return Path(inputs["raw"]) / CANDIDATES_FOLDER


def lists_summary(folder: Path, blocks: CandidateBlocks, kg, frame: pd.DataFrame) -> dict:
    """metrics.json's `lists` block: where the lists are and what they hold (same keys for every scorer)."""
    test = {tuple(t) for t in np.asarray(kg.triples["test"]).tolist()}
    not_test = sum((h, r, t) not in test for h, r, t in zip(blocks.head, blocks.relation, blocks.tail))
    return {"folder": str(folder), "blocks": int(len(frame)), "per_query": int(blocks.candidates.shape[1]),
            "true_triples_not_in_test": int(not_test),
            "known_triples_among_corruptions": int(blocks.known_corruptions),
            "duplicate_lines": int(blocks.duplicate_lines)}


SPLITS = ("train", "dev", "test")
LISTS_RECORD = "lists.json"  # beside the list files: what they are (per_query, protocol, seed)


@dataclass
class GraphIndex:
    """A graph's ids and integer triples (the order of its text tables), no tokens: what the structural baselines and
    the list sampler need. Duck-types TokenizedKG for read_candidate_lists."""

    entity_ids: list[str]
    relation_ids: list[str]
    triples: dict[str, np.ndarray] = field(default_factory=dict)  # split -> int64 [n, 3], original direction

    @property
    def num_entities(self) -> int:
        return len(self.entity_ids)

    @property
    def num_relations(self) -> int:
        return len(self.relation_ids)

    def known(self) -> np.ndarray:
        return np.concatenate([self.triples[s] for s in SPLITS])


def load_graph_index(text_dir: str | Path) -> GraphIndex:
    """From join_text's tables (entities / relations / triples.parquet in `text_dir`)."""
    text_dir = Path(text_dir)
    entities = list(pd.read_parquet(text_dir / "entities.parquet", columns=["id"])["id"])
    relations = list(pd.read_parquet(text_dir / "relations.parquet", columns=["id"])["id"])
    frame = pd.read_parquet(text_dir / "triples.parquet")
    frame = frame[~frame["inverse"]]
    ent = {e: i for i, e in enumerate(entities)}
    rel = {r: i for i, r in enumerate(relations)}
    triples = {}
    for split in SPLITS:
        part = frame[frame["split"] == split]
        triples[split] = np.stack([part["head"].map(ent).to_numpy(dtype=np.int64),
                                   part["relation"].map(rel).to_numpy(dtype=np.int64),
                                   part["tail"].map(ent).to_numpy(dtype=np.int64)], axis=1).reshape(-1, 3)
    return GraphIndex(entities, relations, triples)


def graph_index_from_raw(folder: str | Path) -> GraphIndex:
    """From a raw folder (ConvE or KG-BERT layout), ids numbered as join_text numbers them (entities.txt /
    relations.txt where present, else first appearance over train, dev, test)."""
    from lpbert_core.graph.kg_files import SPLIT_FILES, detect_layout, read_ids, read_triples

    folder = Path(folder)
    layout = detect_layout(folder)
    rows = {split: [(h, r, t) for h, r, t, _ in read_triples(folder / name)]
            for split, name in SPLIT_FILES[layout].items()}
    seen_e: dict[str, None] = {}
    seen_r: dict[str, None] = {}
    for split in SPLITS:
        for h, r, t in rows[split]:
            seen_e.setdefault(h), seen_e.setdefault(t), seen_r.setdefault(r)
    entities = read_ids(folder / "entities.txt") if (folder / "entities.txt").is_file() else list(seen_e)
    relations = read_ids(folder / "relations.txt") if (folder / "relations.txt").is_file() else list(seen_r)
    ent = {e: i for i, e in enumerate(entities)}
    rel = {r: i for i, r in enumerate(relations)}
    triples = {split: np.asarray([(ent[h], rel[r], ent[t]) for h, r, t in rows[split]], dtype=np.int64).reshape(-1, 3)
               for split in SPLITS}
    return GraphIndex(entities, relations, triples)


def list_record(folder: str | Path) -> dict:
    """lists.json of a folder of sampled lists; BERTRL's folders have none: their protocol, 50 lines per block."""
    path = Path(folder) / LISTS_RECORD
    if path.is_file():
        return json.loads(path.read_text())
    return {"per_query": 50, "filtered": False,
            "protocol": "presampled candidate lists (50 per query, the true triple first), used exactly as given: "
                        "no filtering, duplicate lines kept"}
