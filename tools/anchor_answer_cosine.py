"""Diagnostic (issue #25): how close a WN18RR test query's answer sits to its anchor (the query's own entity) in the
untrained encoder's space, against random entities. Measures whether pushing a query away from its anchor (the
self-negative) must push it away from the answer too.

For every test triple in both directions (tail query (h, r, ?): anchor h, answer t; head query: anchor t, answer h),
with the proxy's encoder and length (MiniLM, mean pooling, max length 32; no fine-tuning), cosines of:
anchor-answer, anchor-random entity, query-anchor, query-answer, query-random. Writes a JSON record.

    python tools/anchor_answer_cosine.py --root /work/proxy --out measurements/proxy/anchor_answer_cosine.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.graph.kg import load_tokenized_kg  # noqa: E402
from lpbert_core.model.encoders import load_encoder  # noqa: E402
from lpbert_core.model.sequences import SequenceBuilder  # noqa: E402
from lpbert_core.model.siamese import SiameseModel  # noqa: E402
from lpbert_core.ranking.rank_split import encode_sequences  # noqa: E402


def summary(values: torch.Tensor) -> dict:
    v = values.double()
    return {"mean": round(float(v.mean()), 4), "median": round(float(v.median()), 4),
            "p10": round(float(torch.quantile(v, 0.1)), 4), "p90": round(float(torch.quantile(v, 0.9)), 4)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="where results/WN18RR/text and tokens/minilm are")
    ap.add_argument("--dataset", default="WN18RR")
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="the random entities' draw")
    ap.add_argument("--out", type=Path, default=ROOT / "measurements/proxy/anchor_answer_cosine.json")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(2)
    kg = load_tokenized_kg(args.root / f"results/{args.dataset}/text", args.root / f"results/{args.dataset}/tokens/minilm")
    builder = SequenceBuilder(kg, args.max_length, args.max_length)
    model = SiameseModel(load_encoder("minilm"), "mean").eval()
    cpu, pad = torch.device("cpu"), kg.special.pad
    test = kg.triples["test"]
    R = kg.num_relations
    anchors = np.concatenate([test[:, 0], test[:, 2]])
    answers = np.concatenate([test[:, 2], test[:, 0]])
    relations = np.concatenate([test[:, 1], test[:, 1] + R])  # head queries read the inverse relation
    others = np.random.default_rng(args.seed).integers(0, kg.num_entities, len(anchors))
    entities = np.unique(np.concatenate([anchors, answers, others]))
    where = {int(e): i for i, e in enumerate(entities)}
    with torch.no_grad():
        vectors = encode_sequences(model, [(s, [0] * len(s)) for s in (builder.candidate(int(e)) for e in entities)],
                                   pad, cpu, 256)
        queries = encode_sequences(model, [builder.query(int(a), int(r)) for a, r in zip(anchors, relations)], pad,
                                   cpu, 256, tower="query")
    index = lambda ids: torch.as_tensor([where[int(e)] for e in ids])  # noqa: E731
    a, g, o = vectors[index(anchors)], vectors[index(answers)], vectors[index(others)]
    cos = lambda x, y: F.cosine_similarity(x, y, dim=-1)  # noqa: E731
    record = {
        "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
        "machine": f"cpu ({platform.machine()}), 2 threads, shared with a proxy training run",
        "dataset": args.dataset, "encoder": "minilm (no fine-tuning), mean pooling", "max_length": args.max_length,
        "queries": int(len(anchors)), "note": "both directions of every test triple; `random`: one uniformly drawn "
        "entity per query (seed above), not filtered",
        "anchor_answer": summary(cos(a, g)), "anchor_random": summary(cos(a, o)),
        "query_anchor": summary(cos(queries, a)), "query_answer": summary(cos(queries, g)),
        "query_random": summary(cos(queries, o)),
        "answer_closer_to_anchor_than_to_query": round(float((cos(a, g) > cos(queries, g)).double().mean()), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
