"""The reading study's figure: dev Hits@10 by epoch per reading, test Hits@10 and MR per reading (every seed a dot),
and the one-at-a-time attribution against each reading's baseline with the band of twice the pooled seed sd."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lpbert_core.report.study import SCREEN, attribution
from lpbert_core.runtime.atomic import atomic_path


def study_figure(runs: list[dict], per_reading: pd.DataFrame, path, paper: dict | None = None) -> Path:
    """Top left: dev Hits@10 by epoch per reading (mean over seeds; one line style per stage). Top middle / right:
    test Hits@10 and MR per reading, every seed a dot, the bar the mean; `paper` ({metric: value}) draws the paper's
    numbers as dashed lines. Bottom: the attribution, each reading's Δ test Hits@10 against its baseline
    (`baseline_run_of`), with the band of twice the pooled seed sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(16, 10))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.0, 0.8])
    axes = [fig.add_subplot(grid[0, i]) for i in range(3)]
    attribution_ax = fig.add_subplot(grid[1, :])
    dev = pd.concat([r["dev_log"] for r in runs], ignore_index=True)
    readings = list(dict.fromkeys(per_reading["reading"]))
    palette = plt.get_cmap("tab10" if len(readings) <= 10 else "tab20")
    colours = {name: palette(i % palette.N) for i, name in enumerate(readings)}
    styles = {stage: s for stage, s in zip(sorted(dev["stage"].unique()), ["-", "--", ":", "-."] * 4)}
    for (stage, reading), g in dev.groupby(["stage", "reading"]):
        mean = g.groupby("epoch")["dev_hits@10"].mean()
        axes[0].plot(mean.index, mean.values, styles[stage], marker="o", ms=3, color=colours[reading],
                     label=f"{reading} ({stage}, {g['seed'].nunique()} seed{'s' * (g['seed'].nunique() > 1)})")
    axes[0].set(xlabel="epoch", ylabel="dev Hits@10 (filtered, both directions)", title="dev Hits@10 by epoch")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    per_run = pd.DataFrame([{k: v for k, v in r.items() if k != "dev_log"} for r in runs])
    # one line per bar: the screen's readings bare, a longer schedule's with its stage (two-line labels overlapped)
    labels = [r["reading"] if r["stage"] == SCREEN else f"{r['reading']} ({r['stage']})"
              for _, r in per_reading.iterrows()]
    for ax, metric, title in ((axes[1], "test_hits@10", "test Hits@10"), (axes[2], "test_mr", "test MR")):
        for i, (_, r) in enumerate(per_reading.iterrows()):
            vals = per_run[(per_run["stage"] == r["stage"]) & (per_run["reading"] == r["reading"])][metric]
            ax.bar(i, vals.mean(), color=colours[r["reading"]], alpha=0.5)
            ax.scatter([i] * len(vals), vals, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set(title=f"{title} per reading", xlabel="readings ranked by dev Hits@10; dots: seeds")
        ax.grid(alpha=0.3, axis="y")
        reference = (paper or {}).get(metric.removeprefix("test_"))
        if reference is not None:
            ax.axhline(reference, color="black", ls="--", lw=1.2,
                       label=f"paper LP-BERT: {reference:.2f}" if metric == "test_mr" else f"paper LP-BERT: {reference:.3f}")
            ax.legend(fontsize=7, loc="upper left" if metric == "test_mr" else "lower left")
    lo = per_run["test_hits@10"].min() if len(per_run) else 0.0
    axes[1].set_ylim(max(0.0, lo - 0.05), 1.005)
    _attribution_panel(attribution_ax, attribution(per_reading))
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _attribution_panel(ax, frame: pd.DataFrame) -> None:
    """Horizontal bars: Δ test Hits@10 of each reading against its baseline, largest |Δ| first."""
    if frame.empty:
        ax.set_axis_off()
        return
    frame = frame.reindex(frame["delta_test_hits@10"].abs().sort_values().index)
    def label(r) -> str:
        base_stage = f" ({r['baseline_stage']})" if r["baseline_stage"] != r["stage"] else ""
        return (f"{r['reading']}{' (leaky)' if r['leaky'] else ''} vs {r['baseline']}"
                f"{' (leaky)' if r['baseline_leaky'] else ''}{base_stage} [{r['stage']}]")

    labels = [label(r) for _, r in frame.iterrows()]
    colours = ["tab:green" if d > 0 else "tab:red" for d in frame["delta_test_hits@10"]]
    ax.barh(range(len(frame)), frame["delta_test_hits@10"], color=colours, alpha=0.7)
    ax.set_yticks(range(len(frame)), labels, fontsize=7)
    # each bar's own ±2 sd (pooled per stage and family, the larger side) as an error-bar-like whisker around zero
    sd = frame["seed_sd"].astype(float)
    if sd.notna().any():
        ax.errorbar([0] * len(frame), range(len(frame)), xerr=2 * sd.fillna(0), fmt="none", ecolor="grey",
                    elinewidth=6, alpha=0.35, label="±2 seed sd (pooled per stage and family; the larger side)", zorder=0)
        ax.legend(fontsize=7, loc="lower right")
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel="Δ test Hits@10 against the baseline reading",
           title="Attribution: what each switch moves (paper-text readings vs P, authors'-code switches vs ac, "
                 "a longer schedule vs the same reading's 8 epochs)")
    ax.grid(alpha=0.3, axis="x")
