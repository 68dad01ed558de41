"""The score rule (test ranks and metrics of a fine-tuned run; lpbert_core.ranking.rank_split does the ranking): its
settings, the protocol sentence written into metrics.json, and the rule's entry point."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lpbert_core.runtime import distributed
from lpbert_core.ranking.rank_split import evaluate_split
from lpbert_core.model.sequences import SequenceBuilder
from lpbert_core.config.settings import RerankSettings, ScoreSettings
from lpbert_core.ranking.graph_prior import prior_from


PROTOCOL_HEADS = {
    "inverse_query": "head prediction = tail prediction of (tail, inverse relation, ?)",
    "relation_candidates": "head prediction = each candidate head h' encoded with the relation as the query "
                           "(h', relation, ?) and scored against the tail (StAR-style, the authors' code on WN18RR)",
}


@distributed.multi_gpu_stage("score")  # gpus_per_job > 1: this call in K ranks
def run_score(*, settings: ScoreSettings | dict, inputs: dict, outputs: dict, log=print,
              rerank: RerankSettings | dict | None = None) -> dict:
    """The score rule: load the fine-tuned run, rank the test split (both directions, filtered by train+dev+test)
    and write ranks.parquet + metrics.json (metrics of the realistic ranks, the run's config, the scale, timings).

    settings: JobSettings.resolve("score", dataset) (or the `settings` of JobSettings.score_params). inputs: model (the
    run's model folder), triples (text/triples.parquet), manifest (tokens/<encoder>/manifest.json). outputs: ranks,
    metrics. rerank (rule score_reranked, never the protocol): n-hop re-ranking over the train split
    (lpbert_core.ranking.graph_prior), its settings and protocol sentence in metrics.json."""
    from lpbert_core.runtime.atomic import write_json, write_parquet
    from lpbert_core.graph.kg import load_tokenized_kg
    from lpbert_core.ranking.filtered_ranks import assert_finite_metrics
    from lpbert_core.model.siamese import load_run_model
    from lpbert_core.runtime.training import compute_record, pick_device

    s = ScoreSettings.from_mapping(settings)
    device = pick_device(s.device)
    compute = compute_record(device, s.precision)
    log(f"compute: {json.dumps(compute)}")
    model, info = load_run_model(inputs["model"], device)
    kg = load_tokenized_kg(Path(inputs["triples"]).parent, Path(inputs["manifest"]).parent)
    max_len = int(info["max_length"])
    builder = SequenceBuilder(kg, max_len, max_len)
    prior = prior_from(rerank, kg, info.get("scorer", "cosine"))
    if prior is not None:
        log(f"n-hop re-ranking: {json.dumps(prior.describe())}")
    t0 = time.perf_counter()
    frame, metrics, timings = evaluate_split(
        model, kg, builder, "test", device, subsample=s.test_subsample, seed=s.seed,
        batch_size=s.batch_size, chunk_size=s.chunk_size, precision=s.precision,
        head_ranking=s.head_ranking, prior=prior)
    timings["total_s"] = time.perf_counter() - t0
    assert_finite_metrics(metrics)
    n_test = len(kg.triples["test"])
    used = int(frame["query"].nunique()) if len(frame) else 0
    out = {
        "metrics": metrics,
        "rank_type": "realistic (mean of optimistic and pessimistic filtered ranks)",
        "protocol": "filtered by train+dev+test; both directions; all entities are candidates; "
                    + PROTOCOL_HEADS[s.head_ranking] + (prior.protocol_note() if prior else ""),
        "head_ranking": s.head_ranking,
        # relation_candidates scores (h', r) queries: the direction every run trains
        "head_direction_trained": bool(info.get("inverse_augmentation", True))
                                  or s.head_ranking == "relation_candidates",
        "scorer": info.get("scorer", "cosine"),
        "leaky": bool(info.get("leaky", False)),
        "scale": {
            "test_triples_used": used,
            "test_triples_total": int(n_test),
            "test_subsample": s.test_subsample,
            "num_entities": int(kg.num_entities),
            "train_rows_used": info.get("train_rows"),
            "train_subsample": info.get("train_subsample"),
            "epochs_run": info.get("epochs_run"),
            "encoder": info.get("encoder"),
            "pretrain": info.get("pretrain"),
            "full_protocol": s.test_subsample is None and info.get("train_subsample") is None,
        },
        "settings": s.as_dict(),
        "run": info,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "device": str(device),
        "compute": compute,  # scoring's; the training job's is run.compute
    }
    if info.get("leak"):
        out["leak"] = info["leak"]
    if prior is not None:
        out["rerank"] = prior.describe()
    if not distributed.is_main():  # a multi-GPU job: every rank holds the same ranks; rank 0 writes
        return out
    write_parquet(outputs["ranks"], frame)
    write_json(outputs["metrics"], out)
    b = metrics.get("both", {})
    if out["leaky"]:
        log(f"LEAKY run: {out.get('leak')}")
    log(f"test ({used}/{n_test} triples, both directions): MRR {b.get('mrr'):.4f} MR {b.get('mr'):.3f} "
        f"Hits@1 {b.get('hits@1'):.4f} Hits@10 {b.get('hits@10'):.4f}; timings {out['timings_s']}")
    return out
