"""Benchmark (issue #11 item 5): where the wall time of one fine-tuning step goes (UMLS, MiniLM, batch 128, the
config's default paper-text loss, CPU fp32), split into host batch preparation (index selection, sampled negatives,
token tensors and padding, label matrix), host->device copy, forward (encodings), loss, backward, optimizer (AdamW
step + schedule) and everything else (per-step loss reads, bookkeeping). Two loops, same batches:

- before: the old loop: the batch prepared inline at the start of the step, the loss read to the host every step
  (3 x float(), i.e. 3 synchronisations on a GPU);
- after: the loop of lpbert_core.finetune.finetune_loop.finetune: batches prepared one ahead by a background thread
  (BatchFeed + prepare_batch; pinned on CUDA, non-blocking copies), the loss summed on the device and read every
  LOG_EVERY steps. "batch preparation" is then the time the step waited for the next batch.

On CPU every phase is synchronous, so perf_counter around each phase is exact. The share "outside" is
1 - (forward + loss + backward + optimizer) / step. Blocks of steps alternate between the loops (load hits both).

    python tools/bench_step_profile.py --steps 24 --block 6
Writes measurements/step_profile_umls.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.finetune import finetune_loop as loop  # noqa: E402
from lpbert_core.finetune import finetune_step as step  # noqa: E402
from lpbert_core.finetune.batch_feed import BatchFeed  # noqa: E402
from lpbert_core.config.load import load_config  # noqa: E402
from lpbert_core.model.encoders import load_encoder  # noqa: E402
from lpbert_core.config.resolve import resolve  # noqa: E402
from lpbert_core.finetune.finetune_data import training_triples  # noqa: E402
from lpbert_core.graph.known_answers import known_answers  # noqa: E402
from lpbert_core.model.sequences import SequenceBuilder  # noqa: E402
from lpbert_core.finetune.finetune_loss import LossConfig, batch_loss  # noqa: E402
from lpbert_core.graph.kg import load_tokenized_kg  # noqa: E402
from lpbert_core.model.siamese import SiameseModel  # noqa: E402
from lpbert_core.runtime.training import (autocast_context, build_optimizer, build_scheduler, epoch_seed,  # noqa: E402
                                  torch_threads, training_batches)

PHASES = ("batch_prep", "h2d_copy", "forward", "loss", "backward", "optimizer", "other")
INSIDE = ("forward", "loss", "backward", "optimizer")


def interpret(before: dict, after: dict) -> str:
    prep_b = before["phase_mean_s"]["batch_prep"] * 1e3
    prep_a = after["phase_mean_s"]["batch_prep"] * 1e3
    return (f"CPU: compute dominates (step {before['median_step_s']:.2f} s before, {after['median_step_s']:.2f} s "
            f"after; a difference within the load noise of the shared machine: the prefetch thread does {prep_b:.0f} ms of work a step), so the host work was already a small share: "
            f"{before['share_outside_fwd_loss_bwd_opt']:.2%} outside before, "
            f"{after['share_outside_fwd_loss_bwd_opt']:.2%} after (target < 10%). In absolute terms the step waited "
            f"{prep_b:.1f} ms per batch for its preparation before and {prep_a:.1f} ms after (the thread made it "
            "during the previous step). On a GPU the compute phases shrink to tens of ms while the host preparation "
            f"stays ~{prep_b:.0f} ms, so inline it would be a large share of the step; with the prefetch it overlaps "
            "the device's work, and the per-step float() reads (each a device synchronisation that drains the "
            "queue of launched kernels) are gone. Not measured on a GPU here.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="umls")
    ap.add_argument("--steps", type=int, default=24, help="timed steps per loop")
    ap.add_argument("--block", type=int, default=6, help="consecutive steps of one loop before switching")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch_threads(args.threads)
    # the paper run's settings on the graph (config.yaml alone)
    cfg = resolve(load_config([ROOT / "config.yaml"]), "finetune", args.dataset, "lpbert")
    loss_cfg = LossConfig.from_settings(cfg)
    device = torch.device("cpu")
    precision = "fp32"
    kg = load_tokenized_kg(ROOT / f"results/{args.dataset}/text", ROOT / f"results/{args.dataset}/tokens/minilm")
    max_len = int(cfg.max_length)
    builder = SequenceBuilder(kg, max_len, max_len)
    rows = training_triples(kg, cfg.inverse_augmentation, cfg.train_subsample, int(cfg.seed))
    known = known_answers(kg, tuple(cfg.label_splits), cfg.inverse_augmentation)
    bs = int(cfg.batch_size)
    in_batch = bool(cfg.in_batch_negatives)
    assert in_batch and not loss_cfg.self_negatives, "the phase split below follows the default in-batch step"
    q_lengths = [builder.query_length(int(h), int(r)) for h, r, _ in rows]
    batches = training_batches(q_lengths, bs, cfg.batch_order, epoch_seed(int(cfg.seed), 0))
    torch.manual_seed(0)
    model = SiameseModel(load_encoder("minilm"), cfg.pooling, 1.0 / loss_cfg.temperature,
                         -float(loss_cfg.shift) / loss_cfg.temperature).to(device).train()
    optimizer = build_optimizer(model, "encoder.", float(cfg.lr_encoder), float(cfg.lr_new),
                                float(cfg.weight_decay))
    scheduler = build_scheduler(optimizer, 10_000, 0.0)
    rng = np.random.default_rng(0)

    def compute(prepared, t, times):
        """prepared_step + optimizer_step of the default in-batch config, phase by phase."""
        inp = prepared.inputs
        q = step._device_batch(inp.queries, device)
        c = step._device_batch(inp.cands, device)
        inv = inp.inverse.to(device, non_blocking=True)
        labels = prepared.labels.to(device, non_blocking=True)
        t = lap(times, "h2d_copy", t)
        with autocast_context(device, precision):
            qv = model.encode(**q)
            cv = model.encode(**c)
        qv, cv = qv.float(), cv.float()[inv]
        t = lap(times, "forward", t)
        out = batch_loss(qv, cv, labels, loss_cfg, model.prob_scale, model.prob_bias, scorer=model)
        t = lap(times, "loss", t)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        t = lap(times, "backward", t)
        optimizer.step()
        scheduler.step()
        t = lap(times, "optimizer", t)
        return out, t

    def lap(times, phase, t0):
        t1 = time.perf_counter()
        times[phase] += t1 - t0
        return t1

    def run_before(idx, records):
        el = [0.0, 0.0, 0.0, 0]
        for b in idx:
            times = dict.fromkeys(PHASES, 0.0)
            t0 = t = time.perf_counter()
            prepared = step.prepare_batch(builder, rows[batches[b]], known, loss_cfg, in_batch, rng)
            t = lap(times, "batch_prep", t)
            out, t = compute(prepared, t, times)
            el[0] += float(out["loss"].detach())
            el[1] += float(out["focal"].detach())
            el[2] += float(out["distance"].detach())
            el[3] += 1
            if el[3] % loop.LOG_EVERY == 0:
                print(f"loss {el[0] / el[3]:.4f}", file=sys.stderr)
            t = lap(times, "other", t)
            times["step"] = t - t0
            records.append(times)

    def run_after(idx, records):
        el = [0.0, 0.0, 0.0, 0]
        loss_sum = torch.tensor(el[:3], dtype=torch.float64, device=device)
        feed = BatchFeed(lambda b: step.prepare_batch(builder, rows[batches[b]], known, loss_cfg, in_batch,
                                                           rng, device.type == "cuda"), idx, 1)
        it = iter(feed)
        try:
            for _ in idx:
                times = dict.fromkeys(PHASES, 0.0)
                t0 = t = time.perf_counter()
                prepared = next(it)
                t = lap(times, "batch_prep", t)
                out, t = compute(prepared, t, times)
                loss_sum += torch.stack([out[k].detach().double() for k in ("loss", "focal", "distance")])
                el[3] += 1
                if el[3] % loop.LOG_EVERY == 0:
                    el[:3] = loss_sum.tolist()
                    print(f"loss {el[0] / el[3]:.4f}", file=sys.stderr)
                t = lap(times, "other", t)
                times["step"] = t - t0
                records.append(times)
        finally:
            feed.close()

    # warm-up (allocator, first-call overheads), then alternating blocks
    run_before([0, 1], [])
    run_after([2, 3], [])
    records = {"before": [], "after": []}
    loads = [os.getloadavg()]
    nxt = 4
    for k in range(2 * ((args.steps + args.block - 1) // args.block)):
        which = "before" if k % 2 == 0 else "after"
        idx = [(nxt + i) % len(batches) for i in range(args.block)]
        nxt += args.block
        (run_before if which == "before" else run_after)(idx, records[which])
        loads.append(os.getloadavg())
        print(which, f"{statistics.median(r['step'] for r in records[which]):.3f} s/step", file=sys.stderr)

    def summary(recs):
        total = sum(r["step"] for r in recs)
        phase_s = {p: sum(r[p] for r in recs) / len(recs) for p in PHASES}
        untimed = total / len(recs) - sum(phase_s.values())
        inside = sum(phase_s[p] for p in INSIDE)
        mean_step = total / len(recs)
        return {"steps": len(recs), "mean_step_s": mean_step,
                "median_step_s": statistics.median(r["step"] for r in recs),
                "phase_mean_s": {**phase_s, "untimed": untimed},
                "phase_share": {p: phase_s[p] / mean_step for p in PHASES},
                "share_outside_fwd_loss_bwd_opt": 1.0 - inside / mean_step,
                "median_share_outside": statistics.median(
                    1.0 - sum(r[p] for p in INSIDE) / r["step"] for r in recs)}

    before, after = summary(records["before"]), summary(records["after"])
    result = {
        "what": f"one fine-tuning step on {args.dataset}, MiniLM, batch {bs}, max_length {max_len}, loss "
                f"{loss_cfg.loss} (config.yaml default), CPU fp32: wall time per phase; 'outside' = 1 - (forward + "
                "loss + backward + optimizer) / step",
        "before": {**before, "loop": "batch prepared inline at the start of each step; loss read to the host "
                                     "(float()) every step"},
        "after": {**after, "loop": "finetune()'s loop: the next batch prepared by a background thread (BatchFeed, "
                                   "depth 1) during the current step; batch_prep = time waited for it; loss summed "
                                   "on the device, read every LOG_EVERY steps"},
        "target_share_outside": 0.10,
        "interpretation": interpret(before, after),
        "machine": {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "torch": torch.__version__, "python": platform.python_version(),
                    "loadavg_start": loads[0], "loadavg_end": loads[-1],
                    "loadavg_1min_max": max(l[0] for l in loads),
                    "note": "shared 2-core machine: a UMLS study ran in the background during the measurement; "
                            "blocks of steps alternate between the two loops so load hits both alike"},
    }
    out = ROOT / f"measurements/step_profile_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: {m: result[k][m] for m in ("median_step_s", "share_outside_fwd_loss_bwd_opt",
                                                    "phase_share")} for k in ("before", "after")}, indent=1))


if __name__ == "__main__":
    main()
