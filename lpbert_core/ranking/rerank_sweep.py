"""Choosing the n-hop re-ranking's hops and weight on dev, never on test (tools/rerank_sweep.py): the dev split is
encoded once (every entity, every query, both directions: the inverse query) and filtered by train + dev (no test
fact enters the choice), then ranked once per (hops, weight) with the same vectors. Rows: hops 0 (the plain
ranking) first, then the grid, each with its dev metrics."""

from __future__ import annotations

import time

from lpbert_core.ranking.filtered_ranks import metrics_from_ranks
from lpbert_core.ranking.graph_prior import NeighbourPrior
from lpbert_core.ranking.rank_split import evaluate_split, rank_queries, ranks_frame

REPORTED = ("mrr", "hits@1", "hits@3", "hits@10", "mr")


def _row(hops: int, weight: float, metrics: dict, seconds: float) -> dict:
    both = metrics.get("both", {})
    return {"hops": hops, "weight": weight, **{m: both.get(m) for m in REPORTED}, "rank_s": round(seconds, 2)}


def sweep_dev(model, kg, builder, device, hops: list[int], weights: list[float], *, batch_size: int,
              chunk_size: int, precision: str = "auto", subsample: int | None = None, seed: int = 0,
              log=print) -> list[dict]:
    vectors: dict = {}
    t0 = time.perf_counter()
    _, plain, timings = evaluate_split(model, kg, builder, "dev", device, batch_size=batch_size, chunk_size=chunk_size,
                                       precision=precision, head_ranking="inverse_query", subsample=subsample,
                                       seed=seed, vectors=vectors, filter_splits=("train", "dev"))
    rows = [_row(0, 0.0, plain, time.perf_counter() - t0)]
    log(f"dev, plain: {rows[0]} (encoding {timings})")
    pair_head = getattr(model, "pair_head", None)
    for h in hops:
        for w in weights:
            t0 = time.perf_counter()
            prior = NeighbourPrior(kg.triples["train"], kg.num_entities, h, w)
            ranks = rank_queries(vectors["query_vecs"], vectors["entity_vecs"], vectors["queries"],
                                 vectors["filter_index"], chunk_size, pair_head, prior)
            rows.append(_row(h, w, metrics_from_ranks(ranks_frame(kg, vectors["queries"], ranks)),
                             time.perf_counter() - t0))
            log(f"dev, {h} hops, weight {w}: {rows[-1]}")
    return rows
