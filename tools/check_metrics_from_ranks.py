"""Recompute every run's metrics from its ranks.parquet, independently of lpbert_core's metric code, and compare them
with its metrics.json (issue #9: "metrics recomputed independently from ranks.parquet agree with metrics.json").

Plain numpy on the rank columns: for each side (head, tail, both) and rank type (realistic = the reported one,
optimistic, pessimistic): MR = mean rank, MRR = mean of 1 / rank, Hits@k = share of ranks <= k. Also checks that the
realistic rank is the mean of the optimistic and pessimistic ones, that every test triple is ranked once per direction
and that no rank lies outside 1..num_candidates.

    python tools/check_metrics_from_ranks.py RUN_DIR [RUN_DIR ...] --out measurements/<name>.json
A RUN_DIR holds ranks.parquet and metrics.json (results/{dataset}/runs/{run}). Exit status 1 when any run disagrees.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KINDS = {"realistic": "", "optimistic": "_optimistic", "pessimistic": "_pessimistic"}
TOLERANCE = 1e-12


def recompute(ranks: pd.DataFrame) -> dict:
    out = {}
    for side in ("head", "tail", "both"):
        frame = ranks if side == "both" else ranks[ranks["direction"] == side]
        metrics = {"count": int(len(frame))}
        for kind, suffix in KINDS.items():
            r = frame[kind].to_numpy(dtype=np.float64)
            metrics[f"mr{suffix}"] = float(r.mean())
            metrics[f"mrr{suffix}"] = float((1.0 / r).mean())
            for k in (1, 3, 10):
                metrics[f"hits@{k}{suffix}"] = float((r <= k).mean())
        out[side] = metrics
    return out


def check_run(run_dir: Path) -> dict:
    ranks = pd.read_parquet(run_dir / "ranks.parquet")
    reported = json.loads((run_dir / "metrics.json").read_text())
    ours = recompute(ranks)
    differences = []
    for side, metrics in reported["metrics"].items():
        for key, value in metrics.items():
            if key in ours.get(side, {}) and abs(float(value) - ours[side][key]) > TOLERANCE:
                differences.append({"side": side, "metric": key, "metrics_json": value, "recomputed": ours[side][key]})
    compared = sum(1 for side, metrics in reported["metrics"].items() for key in metrics if key in ours.get(side, {}))
    per_direction = ranks.groupby("direction")["query"].agg(["count", "nunique"])
    checks = {
        "realistic_is_mean_of_optimistic_and_pessimistic": bool(np.allclose(
            ranks["realistic"], (ranks["optimistic"] + ranks["pessimistic"]) / 2, rtol=0, atol=1e-9)),
        "each_query_once_per_direction": bool((per_direction["count"] == per_direction["nunique"]).all()),
        # full ranking ranks every test triple in both directions; presampled candidate lists (a `list` column)
        # hold the blocks their source published, which need not pair up
        "both_directions_same_queries": "list" in ranks.columns or set(ranks.loc[ranks["direction"] == "head", "query"])
                                         == set(ranks.loc[ranks["direction"] == "tail", "query"]),
        "ranks_within_candidates": bool(((ranks["optimistic"] >= 1)
                                         & (ranks["pessimistic"] <= ranks["num_candidates"])).all()),
    }
    return {"run": run_dir.name, "folder": str(run_dir), "queries": int(len(ranks)), "metrics_compared": compared,
            "differences": differences, "checks": checks, "leaky": bool(reported.get("leaky", False)),
            "agree": not differences and all(checks.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (ranks.parquet + metrics.json)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    results = [check_run(d) for d in sorted(args.runs) if (d / "ranks.parquet").exists()]
    summary = {"what": __doc__.split("\n\n")[0], "tolerance": TOLERANCE, "runs": len(results),
               "all_agree": all(r["agree"] for r in results), "results": results,
               "command": "python tools/check_metrics_from_ranks.py " + " ".join(map(str, args.runs))
                          + f" --out {args.out}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for r in results:
        print(f"{r['run']}: {'agree' if r['agree'] else 'DISAGREE'} ({r['metrics_compared']} metrics, "
              f"{r['queries']} ranked queries{', leaky' if r['leaky'] else ''})")
    return 0 if summary["all_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
