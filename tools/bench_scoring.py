"""Benchmark (a): evaluation cost on WN18RR test, both directions, all 40,943 entities as candidates, CPU, MiniLM.

Times (1) encoding every entity once and every test query once with length-sorted batches and dynamic padding,
(2) scoring (chunked matrix products) + filtered ranking (train+dev+test) on the device, and (3) the same encoding
done by a plain loop that pads every batch to the configured max length (128) in input order.

The padded loop is slow; `--padded-sample N` times it on N fixed random sequences (entities and queries in their
real proportion) and extrapolates linearly to all sequences; the length-sorted encoder is timed on the same sample
too, so the speed-up is a like-for-like ratio. `--entity-sample` does the same for the full pipeline when the
machine is too slow to encode everything (all numbers are labelled).

    python tools/bench_scoring.py [--padded-sample 2048]
Writes measurements/scoring_WN18RR.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lpbert_core.model.encoders import load_encoder  # noqa: E402
from lpbert_core.model.sequences import SequenceBuilder  # noqa: E402
from lpbert_core.graph.kg import load_tokenized_kg  # noqa: E402
from lpbert_core.ranking.filtered_ranks import build_filter_index  # noqa: E402
from lpbert_core.ranking.rank_split import build_queries, encode_sequences, entity_pairs, known_triples, rank_queries  # noqa: E402
from lpbert_core.model.siamese import SiameseModel  # noqa: E402
from lpbert_core.runtime.training import torch_threads  # noqa: E402


@torch.inference_mode()
def padded_loop(model, pairs, pad_id, max_length, batch_size):
    """The plain way: input order, every batch padded to max_length."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        ids = torch.full((len(chunk), max_length), pad_id, dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for i, (s, t) in enumerate(chunk):
            ids[i, :len(s)] = torch.tensor(s)
            types[i, :len(t)] = torch.tensor(t)
            mask[i, :len(s)] = 1
        out.append(model.encode(input_ids=ids, attention_mask=mask, token_type_ids=types))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="WN18RR")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--padded-sample", type=int, default=2048)
    ap.add_argument("--entity-sample", type=int, default=None,
                    help="encode only this many entities/queries and extrapolate (slow machines); default: all")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch_threads(args.threads)
    device = torch.device("cpu")
    kg = load_tokenized_kg(ROOT / f"results/{args.dataset}/text", ROOT / f"results/{args.dataset}/tokens/minilm")
    builder = SequenceBuilder(kg, args.max_length, args.max_length)
    model = SiameseModel(load_encoder("minilm")).to(device).eval()
    pad = kg.special.pad
    queries = build_queries(kg.triples["test"], kg.num_relations)
    ent_pairs = entity_pairs(builder)
    q_pairs = [builder.query(int(a), int(r)) for a, r in zip(queries.anchor, queries.query_relation)]
    n_ent, n_q = len(ent_pairs), len(q_pairs)
    rng = np.random.default_rng(0)

    # ---- (1) length-sorted encoding of all entities and queries (or a fixed sample, extrapolated)
    if args.entity_sample:
        e_idx = np.sort(rng.choice(n_ent, min(args.entity_sample, n_ent), replace=False))
        q_idx = np.sort(rng.choice(n_q, min(int(args.entity_sample * n_q / n_ent) + 1, n_q), replace=False))
    else:
        e_idx, q_idx = np.arange(n_ent), np.arange(n_q)
    t0 = time.perf_counter()
    ent_vecs = encode_sequences(model, [ent_pairs[i] for i in e_idx], pad, device, args.batch_size)
    t1 = time.perf_counter()
    q_vecs = encode_sequences(model, [q_pairs[i] for i in q_idx], pad, device, args.batch_size)
    t2 = time.perf_counter()
    enc_ent = (t1 - t0) * n_ent / len(e_idx)
    enc_q = (t2 - t1) * n_q / len(q_idx)

    # ---- (2) scoring + filtered ranking against ALL entities (random vectors fill unencoded entities/queries)
    if len(e_idx) < n_ent:
        full = torch.randn(n_ent, ent_vecs.shape[1])
        full[torch.as_tensor(e_idx)] = ent_vecs
        ent_vecs = full
    if len(q_idx) < n_q:
        full = torch.randn(n_q, q_vecs.shape[1])
        full[torch.as_tensor(q_idx)] = q_vecs
        q_vecs = full
    t3 = time.perf_counter()
    index = build_filter_index(known_triples(kg), kg.num_entities)
    ranks = rank_queries(q_vecs, ent_vecs, queries, index, args.chunk_size)
    t4 = time.perf_counter()
    score_rank = t4 - t3
    total = enc_ent + enc_q + score_rank

    # ---- (3) padded loop vs length-sorted on the same fixed sample
    all_pairs = ent_pairs + q_pairs
    s_idx = rng.choice(len(all_pairs), min(args.padded_sample, len(all_pairs)), replace=False)
    sample = [all_pairs[i] for i in s_idx]
    t5 = time.perf_counter()
    padded_loop(model, sample, pad, args.max_length, args.batch_size)
    t6 = time.perf_counter()
    encode_sequences(model, sample, pad, device, args.batch_size)
    t7 = time.perf_counter()
    padded_s, sorted_s = t6 - t5, t7 - t6
    scale = len(all_pairs) / len(sample)

    result = {
        "what": f"{args.dataset} test, both directions ({n_q} queries), all {n_ent} entities as candidates, filtered "
                f"(train+dev+test), CPU fp32, MiniLM (untrained weights: timing only), max_length {args.max_length}",
        "entities": n_ent, "queries": n_q,
        "encode_entities_s": round(enc_ent, 3), "encode_queries_s": round(enc_q, 3),
        "score_and_rank_s": round(score_rank, 3), "total_eval_s": round(total, 3),
        "score_and_rank_fraction": round(score_rank / total, 4),
        "encoded_fraction": {"entities": len(e_idx) / n_ent, "queries": len(q_idx) / n_q,
                             "note": "1.0 = measured on everything; below 1 = measured on a fixed sample, "
                                     "extrapolated linearly"},
        "padded_loop_vs_sorted": {
            "sample_sequences": len(sample),
            "padded_loop_s": round(padded_s, 3), "length_sorted_s": round(sorted_s, 3),
            "speedup": round(padded_s / sorted_s, 3),
            "padded_loop_all_sequences_extrapolated_s": round(padded_s * scale, 1),
        },
        "ranked_queries": int(len(ranks["realistic"])),
        "machine": {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "note": "shared machine: other jobs were running"},
    }
    out = ROOT / f"measurements/scoring_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
