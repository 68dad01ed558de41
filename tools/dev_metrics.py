"""Dev metrics of finished runs, for choosing among runs whose training kept no dev score (`finetune.dev_eval: false`,
the CPU overlay's one-epoch WN18RR / FB15k-237 runs). The same ranking as fine-tuning's per-epoch dev scorer: the dev
split (a seeded subset when --subsample is given), both directions, every entity a candidate, filtered by train + dev
only, so the test split never enters the choice. The scorer's batch and chunk sizes and head ranking are the score
rule's settings for the dataset, resolved from config.yaml and the given overlays (a run that was only trained, with
no metrics.json, has none of its own); it runs on the CPU in fp32.

    python tools/dev_metrics.py RUN_DIR [RUN_DIR ...] --subsample 300 --configfile configs/cpu.yaml \
        --out measurements/<name>.json
RUN_DIR = results/{dataset}/runs/{run} (its model/ folder); the dataset's text and tokens are read from results/{dataset}/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def dev_report(run_dir: Path, subsample: int | None, seed: int, score) -> dict:
    """Dev metrics of one run; `score`: the score rule's ScoreSettings for its dataset."""
    from lpbert_core.evaluate.predict import LinkPredictor
    from lpbert_core.ranking.results import METRICS

    lp = LinkPredictor.from_run(run_dir, device="cpu")
    t0 = time.perf_counter()
    _, metrics = lp.evaluate("dev", filter_splits=("train", "dev"), test_subsample=subsample, seed=seed,
                             head_ranking=score.head_ranking, precision="fp32", device="cpu",
                             batch_size=score.batch_size, chunk_size=score.chunk_size)
    both = metrics["both"]
    return {"run": str(run_dir), "dev_triples": both["count"] // 2, "subsample": subsample, "seed": seed,
            "seconds": round(time.perf_counter() - t0, 1),
            **{k: both[k] for k in METRICS}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--subsample", type=int, default=None, help="seeded subset of dev triples (default: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="the overlays the runs were made with (config.yaml comes first)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from lpbert_core.config.load import load_config
    from lpbert_core.config.resolve import JobSettings
    from lpbert_core.runtime.atomic import write_json

    torch.set_num_threads(2)
    settings = JobSettings(load_config([ROOT / "config.yaml", *args.configfile]))
    reports = []
    for run in args.runs:
        dataset = run.resolve().parents[1].name  # results/{dataset}/runs/{run}
        reports.append(dev_report(run, args.subsample, args.seed, settings.resolve("score", dataset)))
        print(json.dumps(reports[-1]), flush=True)
    write_json(args.out, {"command": "python " + " ".join(sys.argv), "runs": reports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
