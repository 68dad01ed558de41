"""What the training batch order does to a batch's contents (no model, tokenized data only).

Fine-tuning (UMLS train split with inverse rows, batch 128, query max length 24): per batch, the distinct query
relations (original and inverse relations counted apart, as the queries read them) and the fraction of inverse rows,
for `batch_order: random` (the paper's reading) vs `length` (bucketed by query length). Which relations share a batch
decides which in-batch negatives meet: a length bucket holds queries of similar relation text.
Pre-training (UMLS train split, mem-mrm-mlm samples, batch 32, max length 36): the share of each task per batch (MEM
and MRM samples differ in length, so length buckets group tasks; the EM-head's BatchNorm sees those groups).

    python tools/bench_batch_composition.py [--epochs 5]
Writes measurements/batch_composition_umls.json. Needs results/umls/text and results/umls/tokens/minilm
(`snakemake results/umls/tokens/minilm/manifest.json --cores 1`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.finetune.finetune_data import training_triples  # noqa: E402
from lpbert_core.model.sequences import SequenceBuilder  # noqa: E402
from lpbert_core.graph.kg import load_tokenized_kg  # noqa: E402
from lpbert_core.pretrain.pretrain_samples import TASK_NAMES, build_samples  # noqa: E402
from lpbert_core.runtime.training import BATCH_ORDERS, epoch_seed, training_batches  # noqa: E402


def _summary(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mean": round(float(values.mean()), 4), "min": round(float(values.min()), 4),
            "max": round(float(values.max()), 4), "std": round(float(values.std()), 4)}


def finetune_composition(kg, batch_size: int, max_length: int, seed: int, epochs: int) -> dict:
    rows = training_triples(kg, inverse_augmentation=True)
    R = kg.num_relations
    builder = SequenceBuilder(kg, max_length, max_length)
    lengths = [builder.query_length(int(h), int(r)) for h, r, _ in rows]
    out = {"train_rows": int(len(rows)), "inverse_rows": int((rows[:, 1] >= R).sum()), "relations": R,
           "query_relations": 2 * R, "batch_size": batch_size, "max_length": max_length, "seed": seed,
           "epochs": epochs}
    for order in BATCH_ORDERS:
        distinct, inverse, distinct_full, inverse_full = [], [], [], []
        for epoch in range(epochs):
            for b in training_batches(lengths, batch_size, order, epoch_seed(seed, epoch)):
                rel = rows[b, 1]
                d, f = len(np.unique(rel)), float((rel >= R).mean())
                distinct.append(d)
                inverse.append(f)
                if len(b) == batch_size:
                    distinct_full.append(d)
                    inverse_full.append(f)
        out[order] = {
            "batches": len(distinct),
            "distinct_relations_per_batch": _summary(distinct),
            "inverse_fraction_per_batch": _summary(inverse),
            "full_batches_only": {"batches": len(distinct_full),
                                  "distinct_relations_per_batch": _summary(distinct_full),
                                  "inverse_fraction_per_batch": _summary(inverse_full)},
        }
    return out


def pretrain_composition(kg, batch_size: int, max_length: int, seed: int, epochs: int) -> dict:
    train = kg.triples["train"]
    probs = {"mem_head": 0.4, "mem_tail": 0.4, "mrm": 0.2}
    out = {"tasks": "mem-mrm-mlm", "train_triples": int(len(train)), "batch_size": batch_size,
           "max_length": max_length, "seed": seed, "epochs": epochs}
    shares = {order: {name: [] for name in ("mem_head", "mem_tail", "mrm")} for order in BATCH_ORDERS}
    for epoch in range(1, epochs + 1):  # the pre-training loop counts epochs from 1
        es = epoch_seed(seed, epoch)
        samples = build_samples(kg, train, "mem-mrm-mlm", max_length, np.random.default_rng(es), probs)
        tasks = np.array([s.task for s in samples])
        lengths = [len(s.input_ids) for s in samples]
        for order in BATCH_ORDERS:
            for b in training_batches(lengths, batch_size, order, es):
                if len(b) < batch_size:
                    continue
                for code in (0, 1, 2):
                    shares[order][TASK_NAMES[code]].append(float((tasks[b] == code).mean()))
    for order in BATCH_ORDERS:
        out[order] = {f"{name}_share_per_batch": _summary(v) for name, v in shares[order].items()}
        out[order]["batches_without_mrm"] = int(sum(v == 0 for v in shares[order]["mrm"]))
        out[order]["full_batches"] = len(shares[order]["mrm"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="umls")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=24)
    ap.add_argument("--pretrain-batch-size", type=int, default=32)
    ap.add_argument("--pretrain-max-length", type=int, default=36)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    kg = load_tokenized_kg(ROOT / f"results/{args.dataset}/text", ROOT / f"results/{args.dataset}/tokens/minilm")
    result = {
        "dataset": args.dataset,
        "what": "training batch contents under finetune.batch_order / pretrain.batch_order (random vs length); "
                "every epoch of the given seed, epoch seeds as in the training loops",
        "finetune": finetune_composition(kg, args.batch_size, args.max_length, args.seed, args.epochs),
        "pretrain": pretrain_composition(kg, args.pretrain_batch_size, args.pretrain_max_length, args.seed,
                                         args.epochs),
        "python": platform.python_version(),
    }
    out = Path(args.out or ROOT / f"measurements/batch_composition_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    ft = result["finetune"]
    for order in BATCH_ORDERS:
        d, f = ft[order]["distinct_relations_per_batch"], ft[order]["inverse_fraction_per_batch"]
        print(f"finetune {order:6s}: distinct relations/batch {d['mean']:.1f} (min {d['min']:.0f}, "
              f"max {d['max']:.0f}); inverse rows/batch {f['min']:.1%}-{f['max']:.1%}")
        m = result["pretrain"][order]["mrm_share_per_batch"]
        print(f"pretrain {order:6s}: MRM share/batch {m['min']:.1%}-{m['max']:.1%} (std {m['std']:.3f}), "
              f"batches without MRM {result['pretrain'][order]['batches_without_mrm']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
