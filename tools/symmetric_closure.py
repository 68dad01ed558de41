"""How much `finetune.symmetric_closure` changes the known answers (issue #25 item 5): per dataset, the relations
detected symmetric on train (share of self-reverse train triples >= the threshold), and the share of test (and dev)
triples whose answer is a known answer of its own query only with the closure (its reverse is in train, the relation
symmetric): without closure those answers can be drawn as negatives of their own query.

    python tools/symmetric_closure.py --out measurements/symmetric_closure.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lpbert_core.graph.kg import load_tokenized_kg
from lpbert_core.graph.known_answers import SYMMETRY_THRESHOLD, self_reverse_shares, symmetric_relations, train_known_answers


def split_report(kg, split: str, off, on, symmetric: np.ndarray) -> dict:
    """Shares of a held-out split's triples (h, r, t): reverse (t, r, h) in train (any relation / r symmetric), and
    t a known answer of (h, r) (and h of (t, r + R)) with the closure on but not off."""
    h, r, t = np.asarray(kg.triples[split], dtype=np.int64).T
    reverse_in_train = off.contains(t, r, h)
    sym = np.isin(r, symmetric)
    tail_new = on.contains(h, r, t) & ~off.contains(h, r, t)
    head_new = on.contains(t, r + kg.num_relations, h) & ~off.contains(t, r + kg.num_relations, h)
    n = len(h)
    return {"triples": n,
            "reverse_in_train_any_relation": float(reverse_in_train.mean()),
            "reverse_in_train_relation_symmetric": float((reverse_in_train & sym).mean()),
            "tail_known_with_closure_not_without": float(tail_new.mean()),
            "head_known_with_closure_not_without": float(head_new.mean()),
            "triples_with_relation_symmetric": float(sym.mean())}


def dataset_report(root: Path, threshold: float) -> dict:
    kg = load_tokenized_kg(str(root / "text"), str(root / "tokens" / "minilm"))
    train = kg.triples["train"]
    shares = self_reverse_shares(train, kg.num_relations)
    symmetric = symmetric_relations(train, kg.num_relations, threshold)
    off, on = train_known_answers(kg), train_known_answers(kg, symmetric_closure=True)
    counts = np.bincount(train[:, 1], minlength=kg.num_relations)
    order = np.argsort(-np.nan_to_num(shares, nan=-1.0))
    return {"entities": kg.num_entities, "relations": kg.num_relations, "train_triples": len(train),
            "symmetric_relations": {kg.relation_ids[i]: round(float(shares[i]), 4) for i in symmetric},
            "train_share_in_symmetric_relations": float(counts[symmetric].sum() / len(train)),
            "near_misses_0.5_to_threshold": {kg.relation_ids[i]: round(float(shares[i]), 4) for i in order
                                             if 0.5 <= shares[i] < threshold},
            "known_keys_off": len(off.keys), "known_keys_on": len(on.keys),
            "test": split_report(kg, "test", off, on, symmetric),
            "dev": split_report(kg, "dev", off, on, symmetric)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["WN18RR", "FB15k-237"])
    ap.add_argument("--results", type=Path, default=Path("results"), help="folder holding {dataset}/text, tokens")
    ap.add_argument("--threshold", type=float, default=SYMMETRY_THRESHOLD)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    report = {"command": "python " + " ".join(sys.argv), "threshold": args.threshold,
              "datasets": {d: dataset_report(args.results / d, args.threshold) for d in args.datasets}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
