"""Dev metrics of finished runs, for choosing among runs whose training kept no dev score (`finetune.dev_eval: false`,
the CPU overlay's one-epoch WN18RR / FB15k-237 runs). The same ranking as fine-tuning's per-epoch dev scorer: the dev
split (a seeded subset when --subsample is given), both directions, every entity a candidate, filtered by train + dev
only, so the test split never enters the choice. The scorer's batch and chunk sizes, precision and head ranking are
the score rule's settings for the dataset, resolved from config.yaml and the given overlays (a run that was only
trained, with no metrics.json, has none of its own).

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
    """Dev metrics of one run; `score`: the score rule's settings for its dataset (ScoreSettings or a mapping)."""
    from lpbert_core.config.settings import ScoreSettings
    from lpbert_core.evaluate.predict import LinkPredictor

    if not isinstance(score, ScoreSettings):
        score = ScoreSettings.from_mapping(score, "dev_metrics: the score settings")
    lp = LinkPredictor.from_run(run_dir, device="cpu")
    t0 = time.perf_counter()
    _, metrics = lp.evaluate("dev", filter_splits=("train", "dev"), test_subsample=subsample, seed=seed,
                             head_ranking=score.head_ranking, precision="fp32", device="cpu",
                             batch_size=score.batch_size, chunk_size=score.chunk_size)
    both = metrics["both"]
    return {"run": str(run_dir), "dev_triples": both["count"] // 2, "subsample": subsample, "seed": seed,
            "seconds": round(time.perf_counter() - t0, 1),
            **{k: both[k] for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10")}}


def score_settings(run_dir: Path, configfiles: list[Path]):
    """The score rule's settings for the run's dataset (results/{dataset}/runs/{run}), from config.yaml + overlays."""
    from lpbert_core.config.load import load_config
    from lpbert_core.config.resolve import JobSettings

    dataset = run_dir.resolve().parents[1].name
    return JobSettings(load_config([ROOT / "config.yaml", *configfiles])).resolve("score", dataset)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--subsample", type=int, default=None, help="seeded subset of dev triples (default: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="the overlays the runs were made with (config.yaml comes first)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    reports = []
    for run in args.runs:
        reports.append(dev_report(run, args.subsample, args.seed, score_settings(run, args.configfile)))
        print(json.dumps(reports[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "runs": reports}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
