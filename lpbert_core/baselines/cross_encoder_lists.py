"""The KG-BERT-style cross-encoder (Table 3) on candidate lists: BERTRL's 50-candidate lists or our GraIL-protocol
sample (lpbert_core.evaluate.sampled_negatives), the rule kgbert_lists' entry point; lists read by
lpbert_core.ranking.candidate_blocks.

Each listed line is one encoder pass over [CLS] head [SEP] relation [SEP] tail [SEP] (the model trained on vN, the
text of vN_ind); the rank of the true line among its block's lines, ties optimistic / pessimistic / realistic, as
every other model of the inductive table is ranked (lpbert_core.ranking.candidate_blocks.list_frame).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lpbert_core.ranking.candidate_blocks import CandidateBlocks, list_frame

log_ = logging.getLogger("lpbert.kgbert")


def block_triples(blocks: CandidateBlocks) -> np.ndarray:
    """[blocks * per_query, 3] integer triples, block by block, the true line first: (h, r, e) for a tail query,
    (e, r, t) for a head query."""
    count, per = blocks.candidates.shape
    out = np.empty((count, per, 3), dtype=np.int64)
    tail = (blocks.direction == "tail")[:, None]
    out[:, :, 0] = np.where(tail, blocks.head[:, None], blocks.candidates)
    out[:, :, 1] = blocks.relation[:, None]
    out[:, :, 2] = np.where(tail, blocks.candidates, blocks.tail[:, None])
    return out.reshape(-1, 3)


def rank_lists_cross(model, kg, builder, blocks: CandidateBlocks, device, batch_size: int,
                     precision: str = "auto") -> pd.DataFrame:
    from lpbert_core.baselines.cross_encoder_loop import score_triples

    scores = score_triples(model, builder, block_triples(blocks), device, batch_size, precision)
    return list_frame(kg, blocks, scores.reshape(blocks.candidates.shape).cpu())


def run_kgbert_lists(*, settings: dict, inputs: dict, outputs: dict, log=log_.info) -> dict:
    """Rule kgbert_lists. settings: JobSettings.kgbert_params. inputs: model, triples, manifest, and raw (BERTRL's
    lists) or lists (our sampled lists' lists.json). outputs: ranks, metrics."""
    from lpbert_core.runtime.atomic import write_json, write_parquet
    from lpbert_core.baselines.cross_encoder import TripleSequenceBuilder, load_cross_encoder
    from lpbert_core.ranking.candidate_blocks import list_record, lists_folder, lists_summary, read_candidate_lists
    from lpbert_core.graph.kg import load_tokenized_kg
    from lpbert_core.ranking.filtered_ranks import assert_finite_metrics, metrics_from_ranks
    from lpbert_core.config.settings import KgbertSettings
    from lpbert_core.runtime.training import compute_record, pick_device

    cfg = KgbertSettings.from_mapping(settings["settings"], f"kgbert (run {settings['run']} on {settings['dataset']})")
    device = pick_device(cfg.device)
    kg = load_tokenized_kg(Path(inputs["triples"]).parent, Path(inputs["manifest"]).parent)
    model, info = load_cross_encoder(inputs["model"], device)
    builder = TripleSequenceBuilder(kg, int(info.get("max_length", cfg.max_length)), model.two_token_types)
    folder = lists_folder(inputs)
    spec = list_record(folder)
    blocks = read_candidate_lists(folder, kg, int(spec["per_query"]))
    t0 = time.perf_counter()
    frame = rank_lists_cross(model, kg, builder, blocks, device, cfg.eval_batch_size, cfg.precision)
    seconds = time.perf_counter() - t0
    metrics = metrics_from_ranks(frame)
    assert_finite_metrics(metrics)
    n_test = len(kg.triples["test"])
    out = {
        "metrics": metrics,
        "rank_type": "realistic (mean of optimistic and pessimistic ranks among the listed lines)",
        "protocol": spec["protocol"],
        "lists": lists_summary(folder, blocks, kg, frame),
        "scale": {"encoder": info.get("encoder"), "pretrain": info.get("pretrain"),
                  "epochs_run": info.get("epochs_run"),
                  "train_subsample": info.get("train_subsample"), "train_rows_used": info.get("train_positives"),
                  "test_triples_used": n_test, "test_triples_total": n_test, "num_entities": int(kg.num_entities),
                  "full_protocol": info.get("train_subsample") is None},
        "settings": {k: getattr(cfg, k) for k in ("eval_batch_size", "precision", "seed")},
        "run": {**info, "run": settings["run"], "dataset": settings["dataset"], "model": "kgbert",
                "scorer": "cross_encoder"},
        "leaky": False,
        "timings_s": {"total_s": round(seconds, 4), "lines_scored": int(blocks.candidates.size)},
        "compute": compute_record(device, cfg.precision),
    }
    write_parquet(outputs["ranks"], frame)
    write_json(outputs["metrics"], out)
    both = metrics["both"]
    log(f"{settings['dataset']} cross-encoder on {folder}: MRR {both['mrr']:.4f} Hits@10 {both['hits@10']:.3f}, "
        f"{blocks.candidates.size} lines in {seconds:.1f} s")
    return out
