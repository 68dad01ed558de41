"""GraIL's protocol (Teru, Denis, Hamilton, ICML 2020): each test triple ranked against sampled negative entities.

`sample_negative_blocks` draws, per test triple of an inductive test graph and per side, `num_negatives` distinct
entities of that graph with a fixed seed, never a known true answer (any train / valid / test triple of the graph with
the same anchor and relation) and never the anchor itself (GraIL's `neg_head != neg_tail`). The blocks are written as
BERTRL-style list files (`ranking_head.txt`: the head fixed, tails varying; `ranking_tail.txt`: the reverse; the true
triple first), so every model is ranked on the same lines by lpbert_core.evaluate.candidate_lists.

Departures from GraIL's test_ranking.py (`get_neg_samples_replacing_head_tail`), stated in lists.json: GraIL's code
keeps 49 draws with replacement beside the true triple (50 lines; its paper says "50 other ... negative triplets"),
filtered by the observed graph (train.txt) only; ours draws `num_negatives` without replacement, filtered by every
known triple. Our sample is not GraIL's: numbers on it are comparable with each other, not draw-for-draw with theirs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lpbert_core.atomic import atomic_path
from lpbert_core.evaluate.candidate_lists import LIST_FILES, CandidateBlocks

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
    from lpbert_core.kg_files import SPLIT_FILES, detect_layout, read_ids, read_triples

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


def _answers(known: np.ndarray) -> dict[tuple[str, int, int], set[int]]:
    out: dict[tuple[str, int, int], set[int]] = {}
    for h, r, t in known.tolist():
        out.setdefault(("tail", h, r), set()).add(t)
        out.setdefault(("head", t, r), set()).add(h)
    return out


def sample_negative_blocks(graph: GraphIndex, num_negatives: int, seed: int, exclude_anchor: bool) -> CandidateBlocks:
    """Blocks of 1 + `num_negatives` candidates per test triple and side: tail queries (all test triples, file
    order) then head queries. Draws are uniform over the graph's entities in sorted-id order (independent of the
    tables' row order), without replacement, from one numpy Generator seeded with `seed`."""
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    test = graph.triples["test"]
    answers = _answers(np.concatenate([np.asarray(graph.triples[s]) for s in SPLITS]))
    domain = np.argsort(np.asarray(graph.entity_ids, dtype=object), kind="stable").astype(np.int64)
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("head", "relation", "tail", "direction", "candidates", "source")}
    for direction in ("tail", "head"):
        for row, (h, r, t) in enumerate(test.tolist()):
            anchor, gold = (h, t) if direction == "tail" else (t, h)
            banned = set(answers.get((direction, anchor, r), ())) | {gold}
            if exclude_anchor:
                banned.add(anchor)
            eligible = domain[~np.isin(domain, np.fromiter(banned, dtype=np.int64))]
            if len(eligible) < num_negatives:
                raise ValueError(f"test triple {row + 1}: its {direction} query has {len(eligible)} entities that are "
                                 f"not known answers, fewer than num_negatives={num_negatives}")
            negatives = rng.choice(eligible, size=num_negatives, replace=False)
            for key, value in (("head", h), ("relation", r), ("tail", t), ("direction", direction),
                               ("candidates", np.concatenate([[gold], negatives]).astype(np.int64)),
                               ("source", f"sampled:{direction}:{row + 1}")):
                out[key].append(value)
    return CandidateBlocks(np.asarray(out["head"], dtype=np.int64), np.asarray(out["relation"], dtype=np.int64),
                           np.asarray(out["tail"], dtype=np.int64), np.asarray(out["direction"]),
                           np.stack(out["candidates"]) if out["candidates"] else np.zeros((0, num_negatives + 1),
                                                                                            dtype=np.int64),
                           out["source"], 0, 0)


def write_candidate_lists(folder: str | Path, graph: GraphIndex, blocks: CandidateBlocks, record: dict) -> dict:
    """BERTRL's file layout (LIST_FILES): `ranking_head.txt` holds the tail queries' blocks (head fixed),
    `ranking_tail.txt` the head queries'; lists.json = `record` + per_query and counts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ent, rel = graph.entity_ids, graph.relation_ids
    for name, direction in zip(LIST_FILES, ("tail", "head")):
        lines = []
        for i in np.flatnonzero(blocks.direction == direction):
            h, r, t = int(blocks.head[i]), int(blocks.relation[i]), int(blocks.tail[i])
            for e in blocks.candidates[i].tolist():
                hh, tt = (h, e) if direction == "tail" else (e, t)
                lines.append(f"{ent[hh]}\t{rel[r]}\t{ent[tt]}\n")
        with atomic_path(folder / name) as tmp:
            Path(tmp).write_text("".join(lines))
    out = {**record, "per_query": int(blocks.candidates.shape[1]), "blocks": int(len(blocks.head)),
           "test_triples": int(len(graph.triples["test"])), "num_entities": int(graph.num_entities)}
    with atomic_path(folder / LISTS_RECORD) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=2) + "\n")
    return out


def list_record(folder: str | Path) -> dict:
    """lists.json of a folder of sampled lists; BERTRL's folders have none: their protocol, 50 lines per block."""
    path = Path(folder) / LISTS_RECORD
    if path.is_file():
        return json.loads(path.read_text())
    return {"per_query": 50, "filtered": False,
            "protocol": "presampled candidate lists (50 per query, the true triple first), used exactly as given: "
                        "no filtering, duplicate lines kept"}


def run_grail_lists(*, settings: dict, inputs: dict, outputs: dict) -> dict:
    """Rule grail_lists. settings: num_negatives, seed, exclude_anchor. inputs: triples (text/triples.parquet;
    entities / relations beside it). outputs: record (lists.json; the list files beside it)."""
    graph = load_graph_index(Path(inputs["triples"]).parent)
    k, seed = int(settings["num_negatives"]), int(settings["seed"])
    blocks = sample_negative_blocks(graph, k, seed, bool(settings["exclude_anchor"]))
    record = {
        "protocol": f"GraIL protocol, our sample: the true triple + {k} negative entities per test triple and side, "
                    f"drawn uniformly without replacement (seed {seed}) from the test graph's entities, never a known "
                    "triple (train/valid/test) nor the anchor; realistic ranks",
        "filtered": True, "num_negatives": k, "seed": seed, "exclude_anchor": bool(settings["exclude_anchor"]),
        "departures": "GraIL's code: 49 draws with replacement + the true triple, filtered by train.txt only; "
                      "our sample is not theirs",
    }
    return write_candidate_lists(Path(outputs["record"]).parent, graph, blocks, record)
