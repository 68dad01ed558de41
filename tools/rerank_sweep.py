"""The n-hop re-ranking's hops and weight, chosen on dev (issue #25; config `rerank:`): one trained run's dev split
encoded once and ranked per (hops, weight) (lpbert_core.ranking.rerank_sweep); writes a JSON record.

    python tools/rerank_sweep.py --root /work/proxy --dataset WN18RR --run proxy-plus-frozen-lr2e4 \
        --out measurements/proxy/rerank_sweep_WN18RR.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.config import paths  # noqa: E402
from lpbert_core.graph.kg import load_tokenized_kg  # noqa: E402
from lpbert_core.model.sequences import SequenceBuilder  # noqa: E402
from lpbert_core.model.siamese import load_run_model  # noqa: E402
from lpbert_core.ranking.rerank_sweep import sweep_dev  # noqa: E402
from lpbert_core.runtime.atomic import write_json  # noqa: E402
from lpbert_core.runtime.training import pick_device, torch_threads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="the folder holding results/")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--hops", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--subsample", type=int, default=None, help="seeded dev triples (default: all)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch_threads(args.threads)
    device = pick_device("auto")
    run_dir = args.root / paths.fill(paths.RUN_MODEL, dataset=args.dataset, run=args.run)
    model, info = load_run_model(run_dir, device)
    tokens = args.root / paths.fill(paths.TOKENS_MANIFEST, dataset=args.dataset, encoder=info["tokens_encoder"])
    text = args.root / paths.fill(paths.TEXT_TRIPLES, dataset=args.dataset)
    kg = load_tokenized_kg(text.parent, tokens.parent)
    max_len = int(info["max_length"])
    rows = sweep_dev(model, kg, SequenceBuilder(kg, max_len, max_len), device, args.hops, args.weights,
                     batch_size=args.batch_size, chunk_size=args.chunk_size, subsample=args.subsample)
    best = max(rows, key=lambda r: (r["mrr"], -r["hops"]))
    write_json(args.out, {
        "what": "n-hop re-ranking on dev (both directions, every entity a candidate, filtered by train+dev, "
                "realistic ranks); hops 0 = no re-ranking",
        "dataset": args.dataset, "run": args.run, "split": "dev", "dev_subsample": args.subsample,
        "command": "python " + " ".join(sys.argv), "machine": platform.node(), "device": str(device),
        "rows": rows, "best_by_dev_mrr": best})
    print(json.dumps(best))


if __name__ == "__main__":
    main()
