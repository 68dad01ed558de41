"""Figures (PNG, matplotlib Agg): paper vs ours per metric, rank distributions, training curves.

Every function writes one PNG atomically and returns its path; inputs are the table frames of `lpbert_core.report.tables`
(paired by `table_frames.paired` / `reproduction.paired_reproduction`) and the files the pipeline writes
(`ranks.parquet`, `train_log.csv`, pre-training `log.csv`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lpbert_core.runtime.atomic import atomic_path  # noqa: E402

log = logging.getLogger("lpbert.figures")

FRACTION_METRICS = ("hits@1", "hits@3", "hits@10", "mrr")
DPI = 110


def safe_name(text: str) -> str:
    """A file-name-safe slug: letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _empty(path: str | Path, title: str, message: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return _save(fig, path)


def _valid(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


# ------------------------------------------------------------------------------------------- paper vs ours
def paper_vs_ours(frame: pd.DataFrame, path: str | Path, title: str, metrics: Iterable[str] | None = None) -> Path:
    """One panel per metric; for every row that has our numbers, a paper bar and an ours bar side by side.

    `frame` has one row per row of ours: `label`, `dataset`, `{metric}_paper`, `{metric}_ours` (our mean over seeds;
    `lpbert_core.report.table_frames.paired`). MR and the hour columns get their own panels (log scale for hours).
    """
    metrics = list(metrics) if metrics is not None else [
        m for m in ("hits@1", "hits@3", "hits@10", "mrr", "mr", "t_per_epoch", "infer") if f"{m}_ours" in frame.columns
    ]
    ours_rows = frame[[any(_valid(v) for v in vals) for vals in frame[[f"{m}_ours" for m in metrics]].itertuples(index=False)]]
    if ours_rows.empty:
        return _empty(path, title, "no results of ours yet")
    labels = [
        f"{label}\n{dataset}" if frame["dataset"].nunique() > 1 else str(label)
        for label, dataset in zip(ours_rows["label"], ours_rows["dataset"])
    ]
    x = np.arange(len(ours_rows))
    width = 0.38
    ncols = min(len(metrics), 3)
    nrows = int(np.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 0.6 * max(0, len(x) - 3), 3.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        paper = np.array([v if _valid(v) else np.nan for v in ours_rows[f"{metric}_paper"]], dtype=float)
        ours = np.array([v if _valid(v) else np.nan for v in ours_rows[f"{metric}_ours"]], dtype=float)
        ax.bar(x - width / 2, np.nan_to_num(paper, nan=0.0), width, label="paper", color="#8da0cb")
        ax.bar(x + width / 2, np.nan_to_num(ours, nan=0.0), width, label="ours", color="#fc8d62")
        for xi, p in zip(x, paper):
            if np.isnan(p):
                ax.text(xi - width / 2, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        name = {"t_per_epoch": "T/Ep (h)", "infer": "Infer (h)"}.get(metric, metric.upper() if metric in ("mr", "mrr")
                                                                         else metric.replace("hits", "Hits"))
        ax.set_title(name + (" (lower is better)" if metric in ("mr", "t_per_epoch", "infer") else ""))
        if metric in FRACTION_METRICS:
            ax.set_ylim(0, 1.05)
        if metric in ("t_per_epoch", "infer") and np.nanmax(np.concatenate([paper, ours, [0]])) > 0:
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- rank distributions
def rank_distribution(ranks: pd.DataFrame | str | Path, path: str | Path, title: str, column: str = "realistic") -> Path:
    """Histogram of filtered ranks (log-spaced bins, head and tail apart) and the cumulative Hits@k curve."""
    frame = pd.read_parquet(ranks) if isinstance(ranks, (str, Path)) else ranks
    if column not in frame.columns or frame.empty:
        return _empty(path, title, f"no '{column}' ranks")
    values = frame[column].to_numpy(dtype=float)
    directions = frame["direction"].astype(str).to_numpy() if "direction" in frame.columns else np.full(len(frame), "all")
    top = max(float(np.nanmax(values)), 2.0)
    bins = np.unique(np.geomspace(1, top + 1, num=40))
    fig, (ax_hist, ax_cdf) = plt.subplots(1, 2, figsize=(11, 3.8))
    for direction in sorted(set(directions)):
        sel = values[directions == direction]
        ax_hist.hist(sel, bins=bins, histtype="step", linewidth=1.5, label=f"{direction} (n={len(sel)})")
        ks = np.unique(np.geomspace(1, top, num=200).round())
        ax_cdf.plot(ks, [(sel <= k).mean() for k in ks], label=direction)
    ks = np.unique(np.geomspace(1, top, num=200).round())
    ax_cdf.plot(ks, [(values <= k).mean() for k in ks], color="black", linewidth=1, linestyle="--", label="both")
    for ax in (ax_hist, ax_cdf):
        ax.set_xscale("log")
        for k in (1, 3, 10):
            ax.axvline(k, color="grey", linewidth=0.6, linestyle=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_hist.set_xlabel(f"{column} filtered rank (log)")
    ax_hist.set_ylabel("queries")
    ax_cdf.set_xlabel("k (log)")
    ax_cdf.set_ylabel("Hits@k")
    ax_cdf.set_ylim(0, 1.02)
    fig.suptitle(f"{title}: median {np.median(values):g}, MRR {np.mean(1 / values):.3f}")
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- training curves
def training_curves(log_csv: str | Path, path: str | Path, title: str, max_panels: int = 12) -> Path:
    """Every numeric column of a per-epoch log against `epoch` (or the row number), one panel each."""
    log_csv = Path(log_csv)
    try:
        frame = pd.read_csv(log_csv)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return _empty(path, title, f"no log rows in {log_csv}")
    if frame.empty:
        return _empty(path, title, f"no log rows in {log_csv}")
    x_name = "epoch" if "epoch" in frame.columns else None
    x = frame[x_name].to_numpy() if x_name else np.arange(1, len(frame) + 1)
    numeric = [
        c for c in frame.columns
        if c != x_name and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()
        and not pd.api.types.is_bool_dtype(frame[c])
    ][:max_panels]
    if not numeric:
        return _empty(path, title, "no numeric columns to plot")
    ncols = min(len(numeric), 4)
    nrows = int(np.ceil(len(numeric) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.7 * nrows), squeeze=False)
    for ax, column in zip(axes.flat, numeric):
        ax.plot(x, frame[column].to_numpy(dtype=float), marker="o", markersize=3)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel(x_name or "row")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(numeric):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- all figures of a table
def figures_for_tables(frames: dict[str, pd.DataFrame], specs: Iterable, out_dir: str | Path) -> list[Path]:
    """Every figure for the given tables into `out_dir`:
    `{table}_paper_vs_ours.png`; per distinct run instance (seed) with files: `ranks_{dataset}_{run}.png`,
    `train_{dataset}_{run}.png`; per distinct pre-training log: `pretrain_{dataset}_{variant}.png` (variant = the log's
    folder name)."""
    from lpbert_core.report.reproduction import paired_reproduction
    from lpbert_core.report.table_frames import paired, table_metrics
    from lpbert_core.report.table_render import TITLES
    from lpbert_core.report.table_sources import RowSpec

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table, frame in frames.items():
        pairs = paired_reproduction(frame) if table == "reproduction" else paired(frame, table_metrics(table))
        written.append(paper_vs_ours(pairs, out_dir / f"{table}_paper_vs_ours.png", TITLES.get(table, table)))
    done: set[str] = set()
    for spec in specs:
        spec = spec if isinstance(spec, RowSpec) else RowSpec.from_mapping(spec)
        if spec.table not in frames or spec.skipped:
            continue
        jobs = []
        for inst in spec.instances:
            run = inst.run or spec.run or spec.row
            tag = safe_name(f"{spec.dataset}_{run}")
            if inst.ranks and Path(inst.ranks).exists():
                jobs.append((f"ranks_{tag}.png", rank_distribution, inst.ranks, f"Filtered ranks, {spec.dataset} / {run}"))
            if inst.train_log and Path(inst.train_log).exists():
                jobs.append((f"train_{tag}.png", training_curves, inst.train_log, f"Fine-tuning, {spec.dataset} / {run}"))
            if inst.pretrain_log and Path(inst.pretrain_log).exists():
                variant = Path(inst.pretrain_log).parent.name
                jobs.append((f"pretrain_{safe_name(spec.dataset + '_' + variant)}.png", training_curves,
                             inst.pretrain_log, f"Pre-training ({variant}), {spec.dataset}"))
        for name, fn, source, title in jobs:
            if name in done:
                continue
            done.add(name)
            written.append(fn(source, out_dir / name, title))
    log.info("wrote %d figures to %s", len(written), out_dir)
    return written
