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

from lpbert_core.evaluate.hop_breakdown import (anchor_gold_distances, by_hop_distance, hop_figure, reverse_in_graph,
                                                split_triples)
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
    triples = pd.read_parquet(base / "text" / "triples.parquet")  # what rule inductive_hops reads
    config = load_config(args.configfile or [args.root / "config.yaml"])
    splits = config["inductive_eval"]["ppr"]["graph_splits"]
    edges, test = split_triples(triples, splits), split_triples(triples, ["test"])
    frames, entry = {}, {"root": str(args.root), "observed_triples": len(edges), "test_triples": len(test),
                         "graph_splits": list(splits), "reverse_in_graph": reverse_in_graph(test, edges), "rows": {}}
    entry["commit"] = subprocess.run(["git", "-C", str(args.root), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip()
    for spec in args.rows:
        name, _, folder = spec.partition("=")
        if not folder:
            ap.error(f"--rows wants NAME=FOLDER, got {spec!r}")
        ranks = pd.read_parquet(base / folder / "ranks.parquet")
        frames[name] = by_hop_distance(ranks, anchor_gold_distances(ranks, edges))
        entry["rows"][name] = {"folder": f"results/{args.graph}/{folder}",
                               "by_distance": frames[name].round(4).to_dict(orient="records")}
        print(f"{args.graph} {name}\n{frames[name].round(3).to_string(index=False)}")
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    record[args.graph] = entry
    write_json(args.out, dict(sorted(record.items())))
    with atomic_path(args.out.with_name(f"{args.out.stem}_{args.graph}.png")) as tmp:
        hop_figure(frames, tmp, f"{args.graph}: full-ranking MRR by the answer's distance from the query's entity")


if __name__ == "__main__":
    main()
