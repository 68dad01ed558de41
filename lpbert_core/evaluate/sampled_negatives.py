"""GraIL's protocol (Teru, Denis, Hamilton, ICML 2020): each test triple ranked against sampled negative entities.

`sample_negative_blocks` draws, per test triple of an inductive test graph and per side, `num_negatives` distinct
entities of that graph with a fixed seed, never a known true answer (any train / valid / test triple of the graph with
the same anchor and relation) and never the anchor itself (GraIL's `neg_head != neg_tail`). The blocks are written as
BERTRL-style list files (`ranking_head.txt`: the head fixed, tails varying; `ranking_tail.txt`: the reverse; the true
triple first), so every model is ranked on the same lines (lpbert_core.ranking.candidate_blocks reads them).

Departures from GraIL's test_ranking.py (`get_neg_samples_replacing_head_tail`), stated in lists.json: GraIL's code
keeps 49 draws with replacement beside the true triple (50 lines; its paper says "50 other ... negative triplets"),
filtered by the observed graph (train.txt) only; ours draws `num_negatives` without replacement, filtered by every
known triple. Our sample is not GraIL's: numbers on it are comparable with each other, not draw-for-draw with theirs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lpbert_core.runtime.atomic import atomic_path
from lpbert_core.ranking.candidate_blocks import (LIST_FILES, LISTS_RECORD, SPLITS, CandidateBlocks,  # noqa: F401
                                          GraphIndex, graph_index_from_raw, list_record, load_graph_index)


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
