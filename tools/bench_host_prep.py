"""Benchmark (issue #26 item 2): host milliseconds to prepare one training batch, and the share of a step the model
waits for data.

Host preparation = everything `finetune_step.prepare_batch` does before the device sees the batch (negatives, label
matrix, masks, token tensors): timed per batch for the vectorised assembly (lpbert_core.model.token_table, the loop's
path) and for the per-row Python assembly it replaced (SequenceBuilder + collate_pairs, same tensors), for WN18RR
fine-tuning at batch 64 and 256 (self-negatives on: the most host work), FB15k-237 at 120, and the pre-training batch
of 32 (pretrain_loop's collate of already built samples). The wait share: a few real training steps (MiniLM, CPU)
with the loop's BatchFeed prefetch; `BatchFeed.wait_seconds / step time`.

    python tools/bench_host_prep.py --batches 30 --steps 4
Writes measurements/host_prep.json (each case the moment it is measured).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.finetune import finetune_step as step  # noqa: E402
from lpbert_core.finetune.finetune_data import training_triples  # noqa: E402
from lpbert_core.finetune.finetune_loss import LossConfig  # noqa: E402
from lpbert_core.config.load import load_config  # noqa: E402
from lpbert_core.config.resolve import resolve  # noqa: E402
from lpbert_core.graph.kg import load_tokenized_kg  # noqa: E402
from lpbert_core.graph.known_answers import known_answers  # noqa: E402
from lpbert_core.model.sequences import SequenceBuilder, collate_pairs  # noqa: E402
from lpbert_core.runtime.training import epoch_seed, torch_threads, training_batches  # noqa: E402

CASES = [("WN18RR", 64), ("WN18RR", 256), ("FB15k-237", 120)]


def per_row_inputs(builder, rows, cands):
    """The replaced assembly: one Python call per row and per candidate (for the comparison only)."""
    pad = builder.kg.special.pad
    queries = collate_pairs([builder.query(int(h), int(r)) for h, r, _ in rows], pad)
    uniq = np.unique(cands)
    return queries, collate_pairs([(s, [0] * len(s)) for s in (builder.candidate(int(e)) for e in uniq)], pad)


def time_case(dataset: str, bs: int, batches: int) -> dict:
    config = load_config([ROOT / "config.yaml"])
    cfg = resolve(config, "finetune", dataset, "lpbert-plus")
    loss_cfg = LossConfig.from_settings(cfg)
    kg = load_tokenized_kg(ROOT / f"results/{dataset}/text", ROOT / f"results/{dataset}/tokens/minilm")
    builder = SequenceBuilder(kg, cfg.max_length, cfg.max_length)
    rows = training_triples(kg, True, None, 0)
    known = known_answers(kg)
    lengths = [builder.query_length(int(h), int(r)) for h, r, _ in rows[:200_000]]
    plan = training_batches(lengths, bs, "random", epoch_seed(0, 0))[:batches]
    step.token_table(builder)  # built once per run (not per batch): excluded as the loop excludes it
    rng = np.random.default_rng(0)
    vec, old = [], []
    for idx in plan:
        batch = rows[idx]
        t = time.perf_counter()
        step.prepare_batch(builder, batch, known, loss_cfg, True, rng)
        vec.append(time.perf_counter() - t)
        t = time.perf_counter()
        per_row_inputs(builder, batch, np.concatenate([batch[:, 2], batch[:, 0]]))
        old.append(time.perf_counter() - t)
    return {"dataset": dataset, "batch_size": bs, "max_length": cfg.max_length, "batches": len(plan),
            "self_negatives": loss_cfg.self_negatives, "pre_batch": cfg.pre_batch,
            "host_ms_per_batch": round(1e3 * statistics.median(vec), 3),
            "per_row_token_assembly_ms_per_batch": round(1e3 * statistics.median(old), 3)}


def time_pretrain(dataset: str, batches: int, sample_triples: int = 20_000) -> dict:
    """The pre-training batch of 32: the epoch's samples (build_samples, once per epoch; timed on a sample of
    triples and scaled to the train split) and each batch's collate, the host work per batch whether or not a GPU run
    overlaps it (batch_loader)."""
    from lpbert_core.pretrain.pretrain_samples import build_samples, collate

    config = load_config([ROOT / "config.yaml"])
    pre = config["pretrain"]
    kg = load_tokenized_kg(ROOT / f"results/{dataset}/text", ROOT / f"results/{dataset}/tokens/minilm")
    train = kg.triples["train"]
    part = train[:sample_triples]
    t = time.perf_counter()
    samples = build_samples(kg, part, "mem-mrm-mlm", pre["max_length"][dataset], np.random.default_rng(0),
                            pre["task_probabilities"], pre["mlm_probability"])
    build_s = time.perf_counter() - t
    bs = int(pre["batch_size"])
    plan = training_batches([len(s.input_ids) for s in samples], bs, "random", 0)[:batches]
    times = []
    for idx in plan:
        t = time.perf_counter()
        collate([samples[i] for i in idx], kg.special.pad)
        times.append(time.perf_counter() - t)
    per_triple = build_s / len(part)
    return {"dataset": dataset, "batch_size": bs, "max_length": pre["max_length"][dataset],
            "build_samples_s_per_epoch": round(per_triple * len(train), 2),
            "build_samples_ms_per_batch": round(1e3 * per_triple * bs, 3),
            "collate_ms_per_batch": round(1e3 * statistics.median(times), 3),
            "host_ms_per_batch": round(1e3 * (per_triple * bs + statistics.median(times)), 3),
            "note": "on a CPU device the samples are built in the training process once per epoch; on a GPU the next "
                    "epoch's are built in a background thread while this one trains and batches are collated by "
                    "DataLoader workers (lpbert_core/runtime/batch_loader.py); the per-batch figure spreads the "
                    "build over the epoch's batches"}


def wait_share(dataset: str, bs: int, steps: int) -> dict:
    """A few real steps with the loop's prefetch: the share of step time spent waiting for the next batch."""
    from lpbert_core.model.encoders import load_encoder
    from lpbert_core.finetune.batch_feed import BatchFeed
    from lpbert_core.model.siamese import SiameseModel

    config = load_config([ROOT / "config.yaml"])
    cfg = resolve(config, "finetune", dataset, "lpbert-plus")
    loss_cfg = LossConfig.from_settings(cfg)
    kg = load_tokenized_kg(ROOT / f"results/{dataset}/text", ROOT / f"results/{dataset}/tokens/minilm")
    builder = SequenceBuilder(kg, 32, 32)
    rows = training_triples(kg, True, None, 0)
    known = known_answers(kg)
    plan = training_batches([1] * len(rows), bs, "random", epoch_seed(0, 0))[:steps]
    model = SiameseModel(load_encoder("minilm")).train()
    model.set_learnable_temperature(loss_cfg.infonce_temperature)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = np.random.default_rng(0)
    feed = BatchFeed(lambda b: step.prepare_batch(builder, rows[plan[b]], known, loss_cfg, True, rng),
                     range(len(plan)), 1)
    t0 = time.perf_counter()
    for prepared in feed:
        out = step.prepared_step(model, prepared, loss_cfg, torch.device("cpu"), "fp32", True)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    total = time.perf_counter() - t0
    return {"dataset": dataset, "batch_size": bs, "max_length": 32, "steps": len(plan),
            "mean_step_s": round(total / len(plan), 3), "wait_s": round(feed.wait_seconds, 4),
            "wait_share": round(feed.wait_seconds / total, 5),
            "note": "the first batch is waited for by construction (nothing to overlap it with)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "measurements/host_prep.json"))
    args = ap.parse_args()
    torch_threads(args.threads)
    out = Path(args.out)
    report = {"command": "python " + " ".join(sys.argv), "machine": {"platform": platform.platform(),
              "torch": torch.__version__, "threads": args.threads}, "target": "host <= 3 ms per batch; wait < 5 %",
              "cases": [], "pretrain": None, "wait": None}

    def save():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(out)

    for dataset, bs in CASES:
        report["cases"].append(time_case(dataset, bs, args.batches))
        print(json.dumps(report["cases"][-1]))
        save()
    report["pretrain"] = time_pretrain("FB15k-237", args.batches)
    print(json.dumps(report["pretrain"]))
    save()
    report["wait"] = wait_share("WN18RR", 64, args.steps)
    print(json.dumps(report["wait"]))
    save()


if __name__ == "__main__":
    main()
