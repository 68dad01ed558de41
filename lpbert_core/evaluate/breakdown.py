"""Where a run goes wrong: MRR, MR and Hits@k per relation and per direction, from its ranks.parquet.

One row per (relation, direction) plus the per-relation total over both directions ("both") and one overall row
(relation "ALL"), with the query count, so a user sees which relations and which side (head or tail prediction) pull
the averages down. Read from the realistic ranks, the same ranks metrics.json averages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HITS = (1, 3, 10)
COLUMNS = ["relation", "direction", "queries", "mrr", "mr", *[f"hits@{k}" for k in HITS]]


def rank_summary(ranks: np.ndarray) -> dict:
    return {"queries": int(len(ranks)), "mrr": float(np.mean(1.0 / ranks)), "mr": float(np.mean(ranks)),
            **{f"hits@{k}": float(np.mean(ranks <= k)) for k in HITS}}


def breakdown(ranks: pd.DataFrame) -> pd.DataFrame:
    """Per-relation x direction metrics (directions `head`, `tail`, `both`), relations sorted by query count, then
    the overall rows under relation `ALL`."""
    missing = {"relation", "direction", "realistic"} - set(ranks.columns)
    if missing:
        raise ValueError(f"ranks frame lacks columns {sorted(missing)}")
    rows = []
    order = ranks["relation"].value_counts(sort=True).index.tolist()  # most-queried relation first
    for relation in order + ["ALL"]:
        part = ranks if relation == "ALL" else ranks[ranks["relation"] == relation]
        for direction in ("head", "tail", "both"):
            sel = part if direction == "both" else part[part["direction"] == direction]
            if len(sel):
                rows.append({"relation": relation, "direction": direction,
                             **rank_summary(sel["realistic"].to_numpy(dtype=np.float64))})
    return pd.DataFrame(rows, columns=COLUMNS)


def breakdown_figure(frame: pd.DataFrame, path: str | Path, title: str, max_relations: int = 30) -> Path:
    """Two panels, MRR and Hits@10 per relation, head and tail bars side by side (the most-queried relations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_rel = frame[(frame["relation"] != "ALL") & (frame["direction"] != "both")]
    relations = [r for r in dict.fromkeys(per_rel["relation"])][:max_relations]
    height = max(3.0, 0.28 * len(relations) + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    y = np.arange(len(relations))
    for ax, metric in zip(axes, ("mrr", "hits@10")):
        for offset, direction, color in ((-0.2, "head", "#4c72b0"), (0.2, "tail", "#dd8452")):
            values = per_rel[per_rel["direction"] == direction].set_index("relation")[metric]
            ax.barh(y + offset, [values.get(r, np.nan) for r in relations], height=0.4, color=color,
                    label=f"{direction} prediction")
        overall = frame[(frame["relation"] == "ALL") & (frame["direction"] == "both")][metric]
        if len(overall):
            ax.axvline(float(overall.iloc[0]), color="black", linestyle="--", linewidth=1, label="all queries")
        ax.set_xlim(0, 1)
        ax.set_xlabel(metric.upper() if metric == "mrr" else "Hits@10")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [str(r)[:40] for r in relations])
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right", fontsize=8)
    shown = f" ({len(relations)} most-queried relations)" if per_rel["relation"].nunique() > len(relations) else ""
    fig.suptitle(f"{title}{shown}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, format="png")  # the atomic temporary name has no .png suffix
    plt.close(fig)
    return path


def run_breakdown(*, settings: dict, inputs: dict, outputs: dict) -> pd.DataFrame:
    """The breakdown rule: inputs.ranks (ranks.parquet) -> outputs.csv and outputs.png (both written atomically);
    settings: title (of the figure)."""
    from lpbert_core.runtime.atomic import atomic_path

    ranks_path, csv_path, png_path, title = inputs["ranks"], outputs["csv"], outputs["png"], settings["title"]
    frame = breakdown(pd.read_parquet(ranks_path))
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(png_path) as tmp:
        breakdown_figure(frame, tmp, title)
    return frame
