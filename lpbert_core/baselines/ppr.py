"""Personalized PageRank (PPR) from the query's entity over the test graph's observed triples: a structural baseline
of the inductive table (no text, no training; Shomer et al. 2024, arXiv 2406.11898, report it as a strong shortcut on
GraIL's splits).

The graph: the undirected entity graph of the test graph's `graph_splits` (GraIL's convention: `vN_ind/train.txt`
holds the observed triples, `test.txt` the queries; valid/test triples are never edges), relation types ignored,
parallel edges merged (weighting `binary`) or counted (`count`), self-loop triples dropped. A random walk from the
anchor moves to a uniform neighbour (row-normalised adjacency) and returns to the anchor with probability `restart`;
`iterations` steps of power iteration (scipy.sparse), started at the anchor. A walk at an isolated anchor stays there.
The anchor's own PPR mass is not evidence of a link to itself: with `exclude_anchor` it scores lowest.

Both directions: a tail query (h, r, ?) scores every entity by PPR from h, a head query (?, r, t) by PPR from t (the
graph is undirected, so the relation plays no part). Ranked in three protocols, like every model of the table: full
(every entity, filtered by all known triples, realistic ranks), BERTRL's lists and our GraIL-protocol lists.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lpbert_core.graph.adjacency import undirected_adjacency
from lpbert_core.ranking.filtered_ranks import build_filter_index, filtered_ranks, metrics_from_ranks

PROTOCOLS = ("full", "candidates", "grail50")


def personalized_pagerank(adj: sp.csr_matrix, sources: np.ndarray, restart: float, iterations: int,
                          chunk: int = 512) -> np.ndarray:
    """PPR vectors [len(sources), E] (float64, each row sums to 1) by `iterations` power-iteration steps of
    x <- (1 - restart) x P + restart e_source, P = D^-1 A; an isolated node's mass returns to its source."""
    if not 0 < restart < 1:
        raise ValueError(f"restart must lie in (0, 1), got {restart}")
    n = adj.shape[0]
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    step_t = (sp.diags(inv) @ adj).T.tocsr()  # P^T: x^T P = (P^T x)^T, vectors as columns
    dangling = degree == 0
    sources = np.asarray(sources, dtype=np.int64)
    out = np.empty((len(sources), n), dtype=np.float64)
    for start in range(0, len(sources), chunk):
        src = sources[start:start + chunk]
        teleport = np.zeros((n, len(src)))
        teleport[src, np.arange(len(src))] = 1.0
        x = teleport.copy()
        for _ in range(int(iterations)):
            lost = x[dangling].sum(axis=0)  # mass on isolated nodes (only an isolated source has any)
            x = (1 - restart) * (step_t @ x) + (restart + (1 - restart) * lost) * teleport
        out[start:start + len(src)] = x.T
    return out


class PprScorer:
    """PPR scores of anchors over one observed graph, computed once per distinct anchor."""

    def __init__(self, graph, *, restart: float, iterations: int, graph_splits, weighting: str, exclude_anchor: bool):
        self.graph = graph
        self.restart, self.iterations = float(restart), int(iterations)
        self.graph_splits, self.weighting, self.exclude_anchor = tuple(graph_splits), weighting, bool(exclude_anchor)
        edges = np.concatenate([graph.triples[s] for s in self.graph_splits])
        self.adj = undirected_adjacency(edges, graph.num_entities, weighting)
        self._rows: dict[int, np.ndarray] = {}

    def scores(self, anchors: np.ndarray) -> np.ndarray:
        """[len(anchors), E]; the anchor's own entry -inf with exclude_anchor."""
        anchors = np.asarray(anchors, dtype=np.int64)
        missing = sorted(set(anchors.tolist()) - set(self._rows))
        if missing:
            for a, row in zip(missing, personalized_pagerank(self.adj, np.asarray(missing), self.restart,
                                                             self.iterations)):
                self._rows[a] = row
        out = np.stack([self._rows[a] for a in anchors.tolist()]) if len(anchors) else np.zeros((0, self.adj.shape[0]))
        if self.exclude_anchor and len(anchors):
            out = out.copy()
            out[np.arange(len(anchors)), anchors] = -np.inf
        return out

    def graph_record(self) -> dict:
        return {"edges_from": list(self.graph_splits), "weighting": self.weighting, "restart": self.restart,
                "iterations": self.iterations, "exclude_anchor": self.exclude_anchor,
                "undirected_edges": int(self.adj.nnz // 2),
                "isolated_entities": int((self.adj.getnnz(axis=1) == 0).sum())}


def rank_full(scorer: PprScorer, chunk: int = 256) -> pd.DataFrame:
    """Filtered ranks (all known triples) of every test triple, tail then head queries, every entity a candidate."""
    graph = scorer.graph
    test = graph.triples["test"]
    index = build_filter_index(graph.known(), graph.num_entities)
    ent = np.asarray(graph.entity_ids, dtype=object)
    rel = np.asarray(graph.relation_ids, dtype=object)
    frames = []
    for direction in ("tail", "head"):
        anchors = test[:, 0] if direction == "tail" else test[:, 2]
        gold = test[:, 2] if direction == "tail" else test[:, 0]
        parts = []
        for s in range(0, len(test), chunk):
            a, g, r = anchors[s:s + chunk], gold[s:s + chunk], test[s:s + chunk, 1]
            mask = index.mask(torch.as_tensor(a), torch.as_tensor(r), direction, "cpu")
            ranks = filtered_ranks(torch.as_tensor(scorer.scores(a)), torch.as_tensor(g), mask)
            parts.append({k: v.numpy() for k, v in ranks.items()})
        ranks = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
        frames.append(pd.DataFrame({
            "query": np.arange(len(test), dtype=np.int64), "direction": direction,
            "head": ent[test[:, 0]], "relation": rel[test[:, 1]], "tail": ent[test[:, 2]], "gold": ent[gold],
            "optimistic": ranks.get("optimistic"), "pessimistic": ranks.get("pessimistic"),
            "realistic": ranks.get("realistic"),
            "num_candidates": np.asarray(ranks.get("num_candidates", []), dtype=np.int64)}))
    return pd.concat(frames, ignore_index=True)


def rank_lists(scorer: PprScorer, blocks) -> pd.DataFrame:
    """Ranks of the true line of each candidate block (column 0) among its lines."""
    from lpbert_core.ranking.candidate_blocks import list_frame

    anchors = np.where(blocks.direction == "tail", blocks.head, blocks.tail)
    full = scorer.scores(anchors)
    scores = np.take_along_axis(full, blocks.candidates, axis=1)
    return list_frame(scorer.graph, blocks, torch.as_tensor(scores))


def evaluate(graph, protocol: str, settings: dict, lists_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """(ranks frame, metrics.json object) of PPR on `graph` under one protocol (PROTOCOLS)."""
    from lpbert_core.ranking.candidate_blocks import list_record, lists_summary, read_candidate_lists

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    t0 = time.perf_counter()
    scorer = PprScorer(graph, restart=settings["restart"], iterations=settings["iterations"],
                       graph_splits=settings["graph_splits"], weighting=settings["weighting"],
                       exclude_anchor=settings["exclude_anchor"])
    extra = {}
    if protocol == "full":
        frame = rank_full(scorer)
        description = ("filtered by train+dev+test of the test graph; both directions; every entity of the test graph "
                       "a candidate; realistic ranks")
    else:
        spec = list_record(lists_dir)
        blocks = read_candidate_lists(lists_dir, graph, int(spec["per_query"]))
        frame = rank_lists(scorer, blocks)
        description = spec["protocol"]
        extra["lists"] = lists_summary(Path(lists_dir), blocks, graph, frame)
    seconds = time.perf_counter() - t0
    n_test = len(graph.triples["test"])
    record = {
        "metrics": metrics_from_ranks(frame),
        "rank_type": "realistic (mean of optimistic and pessimistic ranks)",
        "protocol": description,
        **extra,
        "scale": {"note": "no text, no training: PPR over the test graph's observed triples", "num_entities":
                  int(graph.num_entities), "test_triples_used": n_test, "test_triples_total": n_test,
                  "full_protocol": True},
        "run": {"model": "ppr", "graph": scorer.graph_record()},
        "settings": dict(settings),
        "leaky": False,
        "timings_s": {"total_s": round(seconds, 4)},
    }
    return frame, record


def run_ppr_score(*, settings: dict, inputs: dict, outputs: dict, log=print) -> dict:
    """Rule ppr_score. settings: {protocol, dataset, ppr: {restart, iterations, graph_splits, weighting,
    exclude_anchor}}. inputs: triples (text/triples.parquet; entities / relations beside it), and for the list
    protocols raw (BERTRL's lists) or lists (our sampled lists' lists.json). outputs: ranks, metrics."""
    from lpbert_core.runtime.atomic import write_json, write_parquet
    from lpbert_core.ranking.candidate_blocks import lists_folder, load_graph_index

    graph = load_graph_index(Path(inputs["triples"]).parent)
    protocol = settings["protocol"]
    lists_dir = None if protocol == "full" else lists_folder(inputs)
    frame, record = evaluate(graph, protocol, settings["ppr"], lists_dir)
    record["run"]["dataset"] = settings.get("dataset")
    write_parquet(outputs["ranks"], frame)
    write_json(outputs["metrics"], record)
    both = record["metrics"]["both"]
    log(f"PPR {settings.get('dataset')} ({protocol}): MRR {both['mrr']:.4f} Hits@10 {both['hits@10']:.4f}")
    return record
