"""Where does a siamese run put the query's own entity? For every test query (h, r, ?) scored by a run (the queries of
its ranks.parquet, both directions), re-encode the query and every entity with the run's model and report how often
the anchor (h, or t for a head query) is the top unfiltered-out candidate, and how often it outranks the gold answer.

A siamese encoder embeds "h [SEP] r" and "h" from the same text, so before it has learnt otherwise the anchor is the
nearest entity to its own query. In the filtered protocol the anchor stays a candidate unless (h, r, h) is a known
triple, so an anchor at rank 1 costs Hits@1 on every such query (SimKGC's self-negatives train it away).
`hits@1_anchor_removed` is a diagnostic only, the Hits@1 with the anchor taken out of the candidates: it is NOT the
protocol, and no table reports it.

    python tools/anchor_rank.py RUN_DIR [RUN_DIR ...] --out measurements/<name>.json
RUN_DIR = results/{dataset}/runs/{run} (its model/ folder and ranks.parquet); the dataset's text and tokens are read from
results/{dataset}/. Transductive runs only (head_ranking inverse_query, the default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lpbert_core.ranking.anchor_diagnostics import COUNTS, anchor_counts  # the counting lives in the package


def anchor_report(run_dir: Path) -> dict:
    from lpbert_core.evaluate.predict import LinkPredictor
    from lpbert_core.ranking.rank_split import build_queries, encode_queries, known_answer_mask, known_triples
    from lpbert_core.ranking.filtered_ranks import build_filter_index

    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics.get("head_ranking", "inverse_query") != "inverse_query":
        raise SystemExit(f"{run_dir}: head_ranking {metrics['head_ranking']!r}: only inverse_query runs are supported")
    lp = LinkPredictor.from_run(run_dir, device="cpu")
    if lp.model.pair_head is not None:
        raise SystemExit(f"{run_dir}: a pair_linear run; this diagnostic reads cosine runs")
    kg = lp.kg
    ranks = pd.read_parquet(run_dir / "ranks.parquet")
    ent = {e: i for i, e in enumerate(kg.entity_ids)}
    rel = {r: i for i, r in enumerate(kg.relation_ids)}
    tails = ranks[ranks["direction"] == "tail"]
    triples = np.stack([tails["head"].map(ent), tails["relation"].map(rel), tails["tail"].map(ent)], 1)
    queries = build_queries(triples, kg.num_relations)  # tail queries then head queries, as the score rule
    t0 = time.perf_counter()
    entity_vecs = F.normalize(lp.entity_vectors().float(), dim=-1)
    query_vecs = F.normalize(encode_queries(lp.model, lp.builder, queries.anchor, queries.query_relation, lp.device,
                                            lp.batch_size).float(), dim=-1)
    index = build_filter_index(known_triples(kg), kg.num_entities)
    anchors, relations = torch.as_tensor(queries.anchor), torch.as_tensor(queries.relation)
    gold, is_tail = torch.as_tensor(queries.gold), torch.as_tensor(queries.direction == "tail")
    totals = dict.fromkeys(COUNTS, 0)
    for start in range(0, len(queries), 512):
        sl = slice(start, start + 512)
        known = known_answer_mask(index, anchors[sl], relations[sl], is_tail[sl], lp.device)
        counts = anchor_counts(query_vecs[sl] @ entity_vecs.T, anchors[sl], gold[sl], known)
        totals = {k: totals[k] + counts[k] for k in COUNTS}
    n = len(queries)
    return {
        "run": str(run_dir), "queries": n, "encoder": lp.info["encoder"], "seconds": round(time.perf_counter() - t0, 1),
        **{k: totals[k] / n for k in COUNTS},
        "metrics_json_hits@1": metrics["metrics"]["both"]["hits@1"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    reports = [anchor_report(r) for r in args.runs]
    for r in reports:
        print(json.dumps(r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "runs": reports}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
