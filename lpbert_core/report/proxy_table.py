"""The CPU proxy's table and figure (issue #25; configs/proxy.yaml, rule proxy_table): per dataset, the zero-shot
floor, then each reading with its dev trajectory (the dev points of its step budget), its test metrics (the full test
split, every entity a candidate), the anchor-first rate and the MRR with the anchor left out at the last dev point
(diagnostics, never the protocol), Delta MRR against the floor, and its step time. Mean +- sample sd over seeds.

Row specs (from rules/common.smk `proxy_rows`): {dataset, run, label, floor (bool), instances: [{run, seed, metrics,
train_log, finetune_benchmark, score_benchmark}]}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

TEST_METRICS = ("mrr", "hits@1", "hits@3", "hits@10", "mr")
DEV_METRICS = ("dev_mrr", "dev_hits@1", "dev_hits@3", "dev_hits@10", "dev_mr", "dev_anchor_first",
               "dev_mrr_anchor_removed", "dev_positive_cosine", "dev_negative_cosine", "dev_positive_gradient_share")


def _benchmark_seconds(path) -> float | None:
    path = Path(path) if path else None
    if path is None or not path.exists():
        return None
    return float(pd.read_csv(path, sep="\t")["s"].iloc[-1])


def instance_record(dataset: str, run: str, label: str, floor: bool, instance: dict) -> dict:
    """One seed of one run: test metrics, the last dev point, the step time and the wall times."""
    metrics = json.loads(Path(instance["metrics"]).read_text())["metrics"]["both"]
    log = pd.read_csv(instance["train_log"])
    last = log.iloc[-1]
    steps = float(log["steps"].sum()) if "steps" in log else 0.0
    train_s = float(log["train_seconds"].sum()) if "train_seconds" in log else 0.0
    record = {"dataset": dataset, "run": run, "label": label, "floor": floor, "instance": instance["run"],
              "seed": instance.get("seed"), **{m: metrics.get(m) for m in TEST_METRICS},
              **{m: (float(last[m]) if m in log and pd.notna(last[m]) else None) for m in DEV_METRICS},
              "dev_points": len(log) if not floor else 0, "steps": int(steps),
              "step_seconds": train_s / steps if steps else None,
              "finetune_s": _benchmark_seconds(instance.get("finetune_benchmark")),
              "score_s": _benchmark_seconds(instance.get("score_benchmark"))}
    return record


def proxy_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per (dataset, run, seed)."""
    return pd.DataFrame([instance_record(r["dataset"], r["run"], r["label"], bool(r.get("floor")), inst)
                         for r in rows for inst in r["instances"] if Path(inst["metrics"]).exists()])


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (ddof 1) over seeds per (dataset, run), and Delta MRR against the dataset's floor."""
    numeric = [c for c in frame.columns if c not in ("dataset", "run", "label", "floor", "instance", "seed")]
    grouped = frame.groupby(["dataset", "run"], sort=False)
    out = grouped[["label", "floor"]].first()
    out = out.join(grouped[numeric].mean()).join(grouped[["mrr"]].std(ddof=1).rename(columns={"mrr": "mrr_sd"}))
    out["n"] = grouped.size()
    out["seeds"] = grouped["seed"].apply(lambda s: ",".join(str(int(x)) for x in s if pd.notna(x)))
    floors = out[out["floor"]].reset_index().groupby("dataset")["mrr"].first()
    out["delta_mrr_vs_floor"] = [row.mrr - floors.get(ds, np.nan) for (ds, _), row in out.iterrows()]
    return out.reset_index()


def _fmt(value, digits=3) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def render_markdown(table: pd.DataFrame, trajectories: pd.DataFrame, scale_note: str = "") -> str:
    lines = ["# CPU proxy: which fine-tuning reading leaves the zero-shot floor (issue #25)", ""]
    for dataset, part in table.groupby("dataset", sort=False):
        lines += [f"## {dataset}", "",
                  "| reading | seeds | test MRR | ± sd | H@1 | H@3 | H@10 | MR | Δ MRR vs floor | dev MRR by point | "
                  "anchor first (dev) | dev MRR, anchor out | + grad share (dev) | s / step |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, row in part.sort_values("floor", ascending=False).iterrows():
            traj = trajectories[(trajectories["dataset"] == dataset) & (trajectories["run"] == row["run"])]
            points = " → ".join(_fmt(v) for v in traj.groupby("global_step")["dev_mrr"].mean())
            below = " ▽" if not row["floor"] and row["delta_mrr_vs_floor"] <= 0 else ""
            lines.append(
                f"| {row['label']}{' (floor)' if row['floor'] else ''}{below} | {row['seeds'] or '–'} | "
                f"{_fmt(row['mrr'])} | {_fmt(row['mrr_sd'])} | {_fmt(row['hits@1'])} | {_fmt(row['hits@3'])} | "
                f"{_fmt(row['hits@10'])} | {_fmt(row['mr'], 0)} | "
                f"{'–' if row['floor'] else _fmt(row['delta_mrr_vs_floor'])} | {points or '–'} | "
                f"{_fmt(row['dev_anchor_first'])} | {_fmt(row['dev_mrr_anchor_removed'])} | "
                f"{_fmt(row['dev_positive_gradient_share'])} | {_fmt(row['step_seconds'], 1)} |")
        lines.append("")
    lines += ["Test: the full test split, both directions, every entity a candidate, filtered, realistic ranks. Dev: "
              "a seeded dev subset against every entity (filter train + dev) at each dev point; the anchor columns "
              "are diagnostics at the last dev point, never the protocol. ▽: at or below the zero-shot floor. "
              "`+ grad share`: the positives' share of the loss gradient on dev in-batch matrices.",
              ""]
    if scale_note:
        lines += [f"Scale: {scale_note}", ""]
    return "\n".join(lines)


def trajectory_frame(rows: list[dict]) -> pd.DataFrame:
    """Every dev point of every seed: dataset, run, seed, global_step and the dev columns (the floor at step 0)."""
    parts = []
    for r in rows:
        for inst in r["instances"]:
            if not Path(inst["train_log"]).exists():
                continue
            log = pd.read_csv(inst["train_log"])
            keep = [c for c in ("global_step", *DEV_METRICS) if c in log]
            part = log[keep].copy()
            part.insert(0, "seed", inst.get("seed"))
            part.insert(0, "run", r["run"])
            part.insert(0, "dataset", r["dataset"])
            parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["dataset", "run", "global_step"])


def trajectory_figure(trajectories: pd.DataFrame, table: pd.DataFrame, path: str | Path) -> Path:
    """Dev MRR and the anchor-first rate against the step, one line per reading (mean over seeds), per dataset;
    the floor as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(trajectories["dataset"]))
    fig, axes = plt.subplots(2, max(len(datasets), 1), figsize=(6 * max(len(datasets), 1), 7), squeeze=False)
    labels = dict(zip(zip(table["dataset"], table["run"]), table["label"]))
    floors = set(zip(table.loc[table["floor"], "dataset"], table.loc[table["floor"], "run"]))
    for col, dataset in enumerate(datasets):
        part = trajectories[trajectories["dataset"] == dataset]
        for run, runs in part.groupby("run", sort=False):
            metrics = [m for m in ("dev_mrr", "dev_anchor_first") if m in runs and runs[m].notna().any()]
            mean = runs.groupby("global_step")[metrics].mean()
            for row, metric in enumerate(("dev_mrr", "dev_anchor_first")):
                if metric not in metrics:  # a run logged without dev_diagnostics has no anchor column
                    continue
                ax = axes[row][col]
                if (dataset, run) in floors:
                    ax.axhline(mean[metric].iloc[0], color="grey", linestyle="--", label=labels[(dataset, run)])
                else:
                    ax.plot(mean.index, mean[metric], marker="o", label=labels.get((dataset, run), run))
        axes[0][col].set_title(f"{dataset}: dev MRR")
        axes[1][col].set_title(f"{dataset}: anchor is the top candidate (share of dev queries)")
        axes[1][col].set_xlabel("optimizer step")
        axes[0][col].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_proxy(rows: list[dict], paths: dict, scale_note: str = "") -> pd.DataFrame:
    """Write paths['md'], paths['csv'] (one line per reading: means, sds, seeds) and paths['figure']."""
    from lpbert_core.runtime.atomic import atomic_path

    frame = proxy_frame(rows)
    if frame.empty:
        raise ValueError("proxy table: no finished run among the rows")
    table = summary(frame)
    trajectories = trajectory_frame(rows)
    for key, text in (("md", render_markdown(table, trajectories, scale_note)), ("csv", table.to_csv(index=False))):
        with atomic_path(paths[key]) as tmp:
            tmp.write_text(text)
    if paths.get("figure"):
        trajectory_figure(trajectories, table, paths["figure"])
    return table
