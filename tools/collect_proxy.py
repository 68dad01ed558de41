"""Commit what the CPU proxy has finished so far (issue #25): copy each finished proxy run's record (metrics.json,
train_log.csv, lpbert_run.json, the Snakemake benchmark TSVs) from a working folder into measurements/proxy/,
then build the proxy table and figure from the copies (lpbert_core.report.proxy_table), listing the readings of
configs/proxy.yaml that have not run (or not for every seed). The Snakemake target results/tables/proxy.md needs
every run; this writes the partial table a session can commit while the rest are queued.

    python tools/collect_proxy.py --root /work/proxy --out measurements/proxy
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.report.proxy_table import build_proxy  # noqa: E402

FILES = {"metrics.json": "results/{d}/runs/{r}/metrics.json", "train_log.csv": "results/{d}/runs/{r}/train_log.csv",
         "lpbert_run.json": "results/{d}/runs/{r}/model/lpbert_run.json",
         "finetune_benchmark.tsv": "benchmarks/{d}/finetune/{r}.tsv", "score_benchmark.tsv": "benchmarks/{d}/score/{r}.tsv",
         # n-hop re-ranking (rule score_reranked): reported apart, copied where it was run
         "rerank_metrics.json": "results/{d}/runs/{r}/rerank/metrics.json"}


def instances(name: str, spec: dict) -> list[tuple[str, int | None]]:
    seeds = spec.get("seeds") or [None]
    return [(name if i == 0 else f"{name}.s{seed}", seed) for i, seed in enumerate(seeds)]


def pending_note(pending: dict[tuple[str, str], list], n_instances: dict[str, int]) -> str:
    """One sentence per kind: the readings with some seeds in and others not (to run), then those not run at all (per
    dataset, named once each, not once per seed)."""
    partial = [f"{d} {r} (seed {', '.join(map(str, seeds))})" for (d, r), seeds in pending.items()
               if len(seeds) < n_instances[r]]
    unrun = {}
    for (d, r), seeds in pending.items():
        if len(seeds) == n_instances[r]:
            unrun.setdefault(d, []).append(r)
    note = f" Seeds still to run: {'; '.join(partial)}." if partial else ""
    if unrun:
        note += " Configured, not run to the end: " + "; ".join(f"{d}: {', '.join(rs)}" for d, rs in unrun.items())
        note += "."
    return note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the folder the proxy runs were made in")
    ap.add_argument("--out", type=Path, default=ROOT / "measurements/proxy")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/proxy.yaml")
    args = ap.parse_args()
    proxy = yaml.safe_load(args.config.read_text())
    spec = proxy["tables"]["proxy"]
    labels = {**{run: "zero-shot (no fine-tuning)" for run in proxy["tables"]["floor"]}, **spec["rows"]}
    rows, pending = [], {}  # pending: (dataset, run) -> the seeds not run
    for dataset in spec["datasets"]:
        for run, label in labels.items():
            row = {"dataset": dataset, "run": run, "label": label, "floor": run in proxy["tables"]["floor"],
                   "instances": []}
            for name, seed in instances(run, proxy["runs"][run]):
                source = {key: args.root / pattern.format(d=dataset, r=name) for key, pattern in FILES.items()}
                folder = args.out / dataset / name
                if source["metrics.json"].exists():  # a run finished under --root: (re)collect its files
                    folder.mkdir(parents=True, exist_ok=True)
                    for key, path in source.items():
                        if path.exists():
                            shutil.copy2(path, folder / key)
                elif not (folder / "metrics.json").exists():  # neither here nor collected by an earlier session
                    pending.setdefault((dataset, run), []).append(seed)
                    continue
                row["instances"].append({"run": name, "seed": seed, "metrics": folder / "metrics.json",
                                         "train_log": folder / "train_log.csv",
                                         "finetune_benchmark": folder / "finetune_benchmark.tsv",
                                         "score_benchmark": folder / "score_benchmark.tsv"})
            if row["instances"]:
                rows.append(row)
    note = proxy["tables"].get("scale_note", "")
    note += pending_note(pending, {run: len(instances(run, proxy["runs"][run])) for run in labels})
    build_proxy(rows, {"md": args.out / "proxy.md", "csv": args.out / "proxy.csv",
                       "figure": args.out / "trajectories.png"}, note)
    print((args.out / "proxy.md").read_text())


if __name__ == "__main__":
    main()
