"""Timed, sampled ranking of the KG-BERT-style cross-encoder baseline (Table 3) and the kgbert_score rule's entry point.

A cross-encoder has no reusable entity vectors, so ranking one query costs one encoder pass per candidate (40,943 for
WN18RR). We rank a fixed seeded sample of test triples in both directions against every entity, time each query, and
extrapolate linearly to all 2 x |test| queries. Metrics are on the sampled queries only (labelled).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from lpbert_core.runtime.atomic import write_json, write_parquet
from lpbert_core.baselines.cross_encoder import CrossEncoder, TripleSequenceBuilder, load_cross_encoder
from lpbert_core.baselines.cross_encoder_loop import score_triples
from lpbert_core.config.settings import KgbertSettings
from lpbert_core.graph.kg import TokenizedKG
from lpbert_core.ranking.filtered_ranks import assert_finite_metrics, build_filter_index, filtered_ranks, metrics_from_ranks
from lpbert_core.runtime.training import compute_record, sync_device

log_ = logging.getLogger("lpbert.kgbert")


def sample_test_triples(kg: TokenizedKG, count: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed seeded sample of `count` test triples: (their row numbers in the test split, the triples)."""
    test = kg.triples["test"]
    count = len(test) if count is None else min(int(count), len(test))  # None: the whole test split
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(test), size=count, replace=False)) if count else np.zeros(0, dtype=np.int64)
    return rows.astype(np.int64), test[rows]


def candidate_triples(h: int, r: int, t: int, direction: str, num_entities: int) -> np.ndarray:
    """Every entity in the missing slot: (h, r, e) for a tail query, (e, r, t) for a head query."""
    cand = np.empty((num_entities, 3), dtype=np.int64)
    cand[:, 0], cand[:, 1], cand[:, 2] = h, r, t
    cand[:, 2 if direction == "tail" else 0] = np.arange(num_entities)
    return cand


def extrapolate(seconds_measured: float, queries_measured: int, queries_total: int) -> dict:
    """Linear extrapolation of the measured ranking time to all queries of the test set."""
    if queries_measured <= 0:
        raise ValueError("extrapolate: no query was measured")
    per_query = seconds_measured / queries_measured
    return {
        "inference_seconds_measured": float(seconds_measured),
        "queries_measured": int(queries_measured),
        "queries_total": int(queries_total),
        "seconds_per_query": float(per_query),
        "inference_seconds_extrapolated": float(per_query * queries_total),
        "extrapolated_from": f"{queries_measured} of {queries_total} queries, linear extrapolation "
                             f"({per_query:.3f} s per query x {queries_total})",
    }


def rank_sampled_queries(model: CrossEncoder, kg: TokenizedKG, builder: TripleSequenceBuilder, device, *,
                         score_queries: int | None, seed: int, batch_size: int, precision: str = "auto",
                         filter_splits=("train", "dev", "test"), progress: bool = True,
                         log: Callable[[str], None] = log_.info) -> tuple[pd.DataFrame, dict]:
    """Filtered ranks of `score_queries` sampled test triples, tail and head direction each, every entity a
    candidate (one encoder pass per candidate). Returns the ranks frame and the timing summary."""
    rows, sample = sample_test_triples(kg, score_queries, seed)
    index = build_filter_index(np.concatenate([kg.triples[s] for s in filter_splits]), kg.num_entities)
    E = kg.num_entities
    records, per_query = [], []
    for row, (h, r, t) in zip(rows, sample):
        h, r, t = int(h), int(r), int(t)
        for direction in ("tail", "head"):
            anchor, gold = (h, t) if direction == "tail" else (t, h)
            sync_device(device)
            t0 = time.perf_counter()
            scores = score_triples(model, builder, candidate_triples(h, r, t, direction, E), device, batch_size,
                                   precision, progress)
            mask = index.mask(torch.tensor([anchor]), torch.tensor([r]), direction, device)
            ranks = filtered_ranks(scores.unsqueeze(0), torch.tensor([gold], device=device), mask)
            ranks = {k: float(v[0]) for k, v in ranks.items()}
            seconds = time.perf_counter() - t0
            per_query.append(seconds)
            log(f"query {row} ({direction}): realistic rank {ranks['realistic']:.1f} of "
                f"{int(ranks['num_candidates'])} candidates, {seconds:.2f} s")
            records.append({"query": int(row), "direction": direction, "head": kg.entity_ids[h],
                            "relation": kg.relation_ids[r], "tail": kg.entity_ids[t], "gold": kg.entity_ids[gold],
                            "optimistic": ranks["optimistic"], "pessimistic": ranks["pessimistic"],
                            "realistic": ranks["realistic"], "num_candidates": int(ranks["num_candidates"])})
    columns = ["query", "direction", "head", "relation", "tail", "gold", "optimistic", "pessimistic", "realistic",
               "num_candidates"]
    frame = pd.DataFrame(records, columns=columns)
    frame["num_candidates"] = frame["num_candidates"].astype(np.int64)
    timing = extrapolate(sum(per_query), len(per_query), 2 * len(kg.triples["test"]))
    timing["per_query_seconds"] = [round(s, 4) for s in per_query]
    timing["candidates_per_query"] = int(E)
    return frame, timing


def score_run(kg: TokenizedKG, model_dir: str | Path, cfg: KgbertSettings | dict, ranks_path: str | Path, metrics_path: str | Path,
              device: torch.device, run_info: dict | None = None, dataset: str | None = None,
              log: Callable[[str], None] = log_.info) -> dict:
    """Load a trained cross-encoder, rank the sampled test queries, write ranks.parquet and metrics.json.

    metrics.json follows the LP-BERT score rule's layout (`metrics`, `rank_type`, `protocol`, `scale`, `settings`,
    `run`, `timings_s`, `device`) plus the Table 3 inference fields at the top level: `inference_seconds_measured`,
    `queries_measured`, `queries_total`, `seconds_per_query`, `inference_seconds_extrapolated`, `extrapolated_from`.
    ranks.parquet: `query` is the row of the triple in the full test split."""
    cfg = KgbertSettings.from_mapping(cfg)
    model, info = load_cross_encoder(model_dir, device)
    builder = TripleSequenceBuilder(kg, int(info.get("max_length", cfg.max_length)), model.two_token_types)
    n_test = len(kg.triples["test"])
    wanted = n_test if cfg.score_queries is None else min(int(cfg.score_queries), n_test)
    log(f"ranking {wanted} sampled test triples x 2 directions against "
        f"{kg.num_entities} entities each (one encoder pass per candidate)")
    t0 = time.perf_counter()
    frame, timing = rank_sampled_queries(model, kg, builder, device, score_queries=cfg.score_queries,
                                         seed=cfg.seed, batch_size=cfg.eval_batch_size,
                                         precision=cfg.precision, log=log)
    total = time.perf_counter() - t0
    metrics = metrics_from_ranks(frame)
    assert_finite_metrics(metrics)
    q = timing["queries_measured"]
    note = (f"{'all' if q == 2 * n_test else 'sampled'}: metrics on {q} of {timing['queries_total']} test queries ({q // 2} seeded test triples x "
            f"head and tail), filtered, realistic ranks; inference time extrapolated linearly from those {q} "
            f"queries; trained on {info.get('train_positives')} train triples for {info.get('epochs_run')} "
            f"epoch(s), encoder {info.get('encoder', '?')}")
    per_query = timing.pop("per_query_seconds")
    out = {
        "metrics": metrics,
        "rank_type": "realistic (mean of optimistic and pessimistic filtered ranks)",
        "protocol": "filtered by train+dev+test; both directions; all entities are candidates, each scored by one "
                    "cross-encoder pass over [CLS] head [SEP] relation [SEP] tail [SEP]; sampled test queries only",
        "head_direction_trained": True,  # corruptions replace heads and tails alike
        "scale": {
            "note": note,
            "sampled_queries": True,
            "queries_measured": int(q),
            "test_triples_used": int(q // 2),
            "test_triples_total": int(n_test),
            "num_entities": int(kg.num_entities),
            "train_rows_used": info.get("train_positives"),
            "train_subsample": info.get("train_subsample"),
            "epochs_run": info.get("epochs_run"),
            "encoder": info.get("encoder"),
            "pretrain": info.get("pretrain"),
            "full_protocol": q == 2 * n_test and info.get("train_subsample") is None,
        },
        "settings": {k: getattr(cfg, k) for k in ("score_queries", "eval_batch_size", "precision", "seed")},
        "run": {**info, **(run_info or {}), "dataset": dataset, "model": "kgbert", "scorer": "cross_encoder"},
        "timings_s": {"total_s": round(total, 4), "per_query_s": per_query},
        "device": str(device),
        "compute": compute_record(device, cfg.precision),  # scoring's; the training job's is run.compute
        **timing,
    }
    write_parquet(ranks_path, frame)
    write_json(metrics_path, out)
    both = metrics["both"]
    log(f"{dataset}: MRR {both['mrr']:.4f} Hits@10 {both['hits@10']:.3f} on {q} sampled queries; "
        f"{timing['seconds_per_query']:.2f} s/query -> {timing['inference_seconds_extrapolated'] / 3600:.2f} h "
        f"extrapolated to {timing['queries_total']} queries")
    return out


# ---------------------------------------------------------------------------------------- rule entry points
def run_kgbert_score(*, settings: dict, inputs: dict, outputs: dict) -> dict:
    """The kgbert_score rule. settings: JobSettings.kgbert_params. inputs: model, triples, manifest. outputs: ranks,
    metrics."""
    from lpbert_core.graph.kg import load_tokenized_kg
    from lpbert_core.runtime.training import pick_device

    kg = load_tokenized_kg(Path(inputs["triples"]).parent, Path(inputs["manifest"]).parent)
    section = KgbertSettings.from_mapping(settings["settings"], f"kgbert (run {settings['run']} on {settings['dataset']})")
    device = pick_device(section.device)
    return score_run(kg, inputs["model"], section, outputs["ranks"], outputs["metrics"], device,
                     {"run": settings["run"]}, settings["dataset"])
