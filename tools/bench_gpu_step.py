"""Benchmark (issue #26 item 2, the GPU half): where a fine-tuning step's time goes on the device, and one WN18RR
epoch timed, at batch 64 and 256.

Each case trains through the loop's own stage and epoch steps (finetune_loop.FinetuneStage / FinetuneEpoch:
prepare_batch one batch ahead in BatchFeed, pinned; FinetuneStep; optimizer_step with the run's optimiser, schedule
and grad scaler) on the config's reading
(`--run`, default the paper reading `lpbert`, no pre-training: the encoder as shipped):
- `profile`: `--profile-steps` steps under torch.profiler after `--warmup` steps: the step's wall time and the share of
  it the device spends in kernels (sum of the CUDA events' self device time / wall time; low = the host is the
  bottleneck), with the top kernels;
- `epoch`: the whole first epoch of the train split with inverse rows (WN18RR: 173,670 rows), timed end to end, no
  dev or test (`--epoch-steps N` times N steps and scales, for a CPU rehearsal).
Every figure comes with the device's name; each case is written the moment it is measured.

    python tools/bench_gpu_step.py --out measurements/gpu_step_profile.json              # on the GPU machine
    python tools/bench_gpu_step.py --device cpu --warmup 1 --profile-steps 2 --epoch-steps 2 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.config.load import load_config  # noqa: E402
from lpbert_core.config.resolve import JobSettings, resolve  # noqa: E402
from lpbert_core.finetune.finetune_loop import FinetuneStage  # noqa: E402
from lpbert_core.graph.kg import load_tokenized_kg  # noqa: E402
from lpbert_core.model.encoders import load_encoder  # noqa: E402
from lpbert_core.runtime.training import resolve_precision, sync_device  # noqa: E402


class Trainer:
    """One reading's fine-tuning stage (finetune_loop.FinetuneStage: its model, optimiser, schedule, grad scaler and
    negatives), stepped by the loop's own epoch steps (FinetuneEpoch: batches prepared one ahead in BatchFeed, pinned;
    FinetuneStep; optimizer_step), without dev points or checkpoints: `steps(count)` runs the next `count` steps
    (into the next epoch when one ends) and returns the wall seconds (device synchronised)."""

    def __init__(self, kg, cfg, device: torch.device, encoder):
        self.device = device
        self.scratch = tempfile.TemporaryDirectory(prefix="bench_gpu_step_")  # the stage's checkpoint folder: unused
        self.stage = FinetuneStage(kg, encoder, cfg, device, None, lambda message: None, "inverse_query", 1,
                                   Path(self.scratch.name))
        self.stage.start({"global_step": 0, "attempt": 1})  # a measured shift (eq. 11) is measured here, as in a run
        self.model, self.rows = self.stage.model, self.stage.rows
        self.precision = resolve_precision(device, cfg.precision)
        self.epoch_index = 0
        self._open_epoch()
        self.batches = self.epoch.batch_list

    def _open_epoch(self) -> None:
        self.epoch = self.stage.epoch(self.epoch_index, None)
        self._steps = self.epoch.steps(0)

    def steps(self, count: int, profiler=None) -> float:
        sync_device(self.device)
        start = time.perf_counter()
        for _ in range(count):
            if next(self._steps, StopIteration) is StopIteration:  # the epoch ended: the next one
                self.epoch.close()
                self.epoch_index += 1
                self._open_epoch()
                next(self._steps)
            self.stage.progress["global_step"] += 1
            if profiler is not None:
                profiler.step()
        sync_device(self.device)
        return time.perf_counter() - start

    def close(self) -> None:
        """The epoch's prefetch thread and the scratch folder."""
        self._steps.close()
        self.epoch.close()
        self.scratch.cleanup()


def kernel_seconds(profiler) -> tuple[float, list[dict]]:
    """The device's kernel time under the profiler (self device time of every CUDA event) and the top 10 kernels."""
    from torch.autograd import DeviceType

    events = [e for e in profiler.key_averages() if getattr(e, "device_type", None) == DeviceType.CUDA]
    self_us = [(e.key, getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0))
               for e in events]
    top = sorted(self_us, key=lambda kv: -kv[1])[:10]
    return sum(us for _, us in self_us) / 1e6, [{"kernel": k[:120], "ms": round(us / 1e3, 3)} for k, us in top]


def profile_case(trainer: Trainer, warmup: int, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    trainer.steps(warmup)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        wall = trainer.steps(steps, prof)
    record = {"steps": steps, "warmup_steps": warmup, "step_ms": round(1e3 * wall / steps, 2)}
    if trainer.device.type == "cuda":
        kernels, top = kernel_seconds(prof)
        record.update(kernel_ms_per_step=round(1e3 * kernels / steps, 2), kernel_share=round(kernels / wall, 4),
                      top_kernels=top)
    return record


def epoch_case(trainer: Trainer, steps: int | None) -> dict:
    timed = steps or len(trainer.batches)
    wall = trainer.steps(timed)
    per_step = wall / timed
    return {"steps_timed": timed, "steps_per_epoch": len(trainer.batches), "rows": int(len(trainer.rows)),
            "step_ms": round(1e3 * per_step, 2), "epoch_s": round(per_step * len(trainer.batches), 1),
            "epoch_measured_whole": timed == len(trainer.batches)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="WN18RR")
    ap.add_argument("--run", default="lpbert", help="a run of config.yaml (its fine-tuning reading)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--profile-steps", type=int, default=20)
    ap.add_argument("--epoch-steps", type=int, default=0, help="0: the whole epoch; N: N steps, scaled")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--encoder", default=None, help="an encoder folder (default: the config's encoder)")
    ap.add_argument("--root", type=Path, default=ROOT, help="where results/{dataset}/text and tokens/ are")
    ap.add_argument("--out", type=Path, default=ROOT / "measurements/gpu_step_profile.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    config = load_config([ROOT / "config.yaml"])
    kg = load_tokenized_kg(args.root / f"results/{args.dataset}/text", args.root / f"results/{args.dataset}/tokens/minilm")
    report = {"command": "python " + " ".join(sys.argv), "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
              "torch": torch.__version__, "dataset": args.dataset, "run": args.run, "cases": []}

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(args.out)

    source = args.encoder or JobSettings(config).finetune_params(args.dataset, args.run)["encoder_source"]
    for bs in args.batch_sizes:
        cfg = resolve(config, "finetune", args.dataset, args.run)
        cfg = type(cfg).from_mapping({**cfg.as_dict(), "batch_size": bs})
        trainer = Trainer(kg, cfg, device, load_encoder(source))
        case = {"batch_size": bs, "max_length": cfg.max_length, "precision": trainer.precision,
                "profile": profile_case(trainer, args.warmup, args.profile_steps)}
        trainer.close()
        report["cases"].append(case)
        save()
        trainer = Trainer(kg, cfg, device, load_encoder(source))
        case["epoch"] = epoch_case(trainer, args.epoch_steps or None)
        trainer.close()
        save()
        print(json.dumps(case), flush=True)


if __name__ == "__main__":
    main()
