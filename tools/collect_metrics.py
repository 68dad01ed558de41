"""Copy the headline metrics of finished runs into one committed JSON record (the machine that made them does not
outlive the session): for each metrics.json under --root matching the given patterns, its path, the both-direction
MRR / Hits@1/3/10 / MR, its protocol line and its re-ranking settings, with the git commit of --root and the command.

    python tools/collect_metrics.py --root /work/ind --out measurements/inductive_cpu_v1/cells.json \
        'results/*_v1_ind/runs/*/metrics.json' 'results/*_v1_ind/runs/*/*/metrics.json' ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.ranking.results import METRICS, read_metrics  # noqa: E402
from lpbert_core.runtime.atomic import write_json  # noqa: E402


def cell(path: Path) -> dict:
    result = read_metrics(path)
    return {**{m: result.get(m) for m in METRICS}, "count": result.count(), "protocol": result.raw.get("protocol"),
            "rerank": result.raw.get("rerank"), "leaky": result.leaky}


def collect(root: Path, patterns: list[str]) -> dict:
    found = sorted({p for pattern in patterns for p in root.glob(pattern)})
    return {str(p.relative_to(root)): cell(p) for p in found}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("patterns", nargs="+", help="globs relative to --root")
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cells = collect(args.root, args.patterns)
    if not cells:
        ap.error(f"no metrics.json under {args.root} matches {args.patterns}")
    commit = subprocess.run(["git", "-C", str(args.root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    write_json(args.out, {"command": "python " + " ".join(sys.argv), "root_commit": commit.strip(), "cells": cells})
    print(f"{len(cells)} cells -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
