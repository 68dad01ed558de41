"""Where the inductive test graph answers for itself (issue #27): each row's metrics by the gold answer's hop distance
from the query's entity in `vN_ind`'s observed triples (lpbert_core.evaluate.hop_breakdown), from built ranks.parquet
files in any checkout (rule inductive_hops builds the same breakdown with the inductive table; this tool records it
for runs built at an earlier commit). Adds or replaces one test graph's entry in the JSON record and draws its figure
beside it.

    python tools/inductive_hops.py --root /work/ind --graph WN18RR_v1_ind \
        --rows PPR=baselines/ppr/full lpbert-plus=runs/lpbert-plus-frozen re-ranked=runs/lpbert-plus-frozen/rerank \
               "paper reading"=runs/lpbert zero-shot=runs/zero-shot \
        --out measurements/inductive_hops.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pandas as pd

from lpbert_core.evaluate.hop_breakdown import hop_breakdowns, hop_figure
from lpbert_core.config.load import load_config
from lpbert_core.runtime.atomic import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose results/ holds the built runs")
    ap.add_argument("--graph", required=True, help="an inductive test graph, e.g. WN18RR_v1_ind")
    ap.add_argument("--rows", nargs="+", required=True, metavar="NAME=FOLDER",
                    help="a row's name and its folder under results/GRAPH/ holding ranks.parquet")
    ap.add_argument("--configfile", type=Path, nargs="+", default=None,
                    help="the config files of the build (default: ROOT/config.yaml): the walked splits are its "
                         "inductive_eval.ppr.graph_splits, as in rule inductive_hops")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    base = args.root / "results" / args.graph
    config = load_config(args.configfile or [args.root / "config.yaml"])
    splits = config["inductive_eval"]["ppr"]["graph_splits"]
    folders = {}
    for spec in args.rows:
        name, _, folder = spec.partition("=")
        if not folder:
            ap.error(f"--rows wants NAME=FOLDER, got {spec!r}")
        folders[name] = folder
    frames, summary = hop_breakdowns(pd.read_parquet(base / "text" / "triples.parquet"),  # what the rule reads
                                     {name: pd.read_parquet(base / folder / "ranks.parquet")
                                      for name, folder in folders.items()}, splits)
    commit = subprocess.run(["git", "-C", str(args.root), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    entry = {"commit": commit, "root": str(args.root), "graph_splits": list(splits), **summary,
             "rows": {name: {"folder": f"results/{args.graph}/{folders[name]}",
                             "by_distance": frame.round(4).to_dict(orient="records")}
                      for name, frame in frames.items()}}
    for name, frame in frames.items():
        print(f"{args.graph} {name}\n{frame.round(3).to_string(index=False)}")
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    record[args.graph] = entry
    write_json(args.out, dict(sorted(record.items())))
    with atomic_path(args.out.with_name(f"{args.out.stem}_{args.graph}.png")) as tmp:
        hop_figure(frames, tmp, f"{args.graph}: full-ranking MRR by the answer's distance from the query's entity")


if __name__ == "__main__":
    main()
