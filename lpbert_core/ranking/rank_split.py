"""Filtered ranking of a split, shared by fine-tuning's dev selection, the score rule (lpbert_core.evaluate.scoring), the
predictor and the candidate lists: encode every entity once and every query once (length-sorted batches, dynamic padding),
score all queries against all entities with chunked matrix products on the device, and compute filtered ranks on
the device (lpbert_core.ranking.filtered_ranks). Never one encoder pass per (query, candidate) pair.

Both directions: the tail query of (h, r, t) is (h, r, ?) with gold t. The head query (?, r, t) with gold h, filtered
by the known heads of (t, r), is ranked one of two ways (`score.head_ranking`):
- `inverse_query` (default): the tail query (t, r_inverse, ?) (inverse-relation text). When the run trained without
  inverse augmentation (authors' WN18RR choice) that direction is untrained: metrics.json says so
  (`head_direction_trained: false`);
- `relation_candidates` (the authors' code on WN18RR, StAR-style): each candidate head h' is encoded as the query
  "[CLS] h' [SEP] r [SEP]" and scored against the candidate encoding of t: s(query(h', r), entity(t)). Only the pairs
  needed are encoded: every entity x each distinct relation of the head queries ranked (one relation at a time).

Score = the run's pair scorer (siamese.py): the cosine of the pooled vectors (eq. 13's d1; every probability mapping
of the loss is increasing in it, so the ranking is the same whichever mapping trained the model), or the raw output of
the `pair_linear` layer, an n x N matrix from one matrix product plus per-query and per-candidate biases.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lpbert_core.runtime import distributed
from lpbert_core.model.sequences import collate_pairs, SequenceBuilder
from lpbert_core.graph.kg import TokenizedKG, seeded_subset
from lpbert_core.ranking.filtered_ranks import build_filter_index, filtered_ranks, metrics_from_ranks
from lpbert_core.runtime.training import autocast_context, length_sorted_batches, sync_device

HEAD_RANKINGS = ("inverse_query", "relation_candidates")
TOWERS = ("entity", "query")  # which encoder of a two-tower model (one tower: the same encoder)


@torch.inference_mode()
def encode_sequences(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device,
                     batch_size: int, precision: str = "auto", tower: str = "entity") -> torch.Tensor:
    """Encode token sequences ((ids, token types) pairs) in length-sorted batches with dynamic padding; returns
    float32 vectors [N, d] on `device`, in input order. In a multi-GPU job (every rank calls this with the same
    pairs) each rank encodes every K-th batch of the same batch list and all ranks get all vectors, each computed
    exactly as one process computes it. `tower`: `entity` (candidates) or `query` (a two-tower model's query
    encoder)."""
    if tower not in TOWERS:
        raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
    encode = getattr(model, f"encode_{tower}", None) or model.encode  # a model without towers: `encode`
    was_training = model.training
    model.eval()
    lengths = [len(p[0]) for p in pairs]
    out = None
    batches = length_sorted_batches(lengths, batch_size, shuffle=False)
    if distributed.world().size > 1:
        return _encode_sequences_ranks(model, pairs, batches, pad_id, device, precision, was_training, encode)
    for idx in batches:
        batch = collate_pairs([pairs[i] for i in idx], pad_id)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast_context(device, precision):
            vec = encode(**batch).float()
        if out is None:
            out = torch.empty(len(pairs), vec.shape[1], device=device)
        out[torch.as_tensor(idx, device=device)] = vec
    model.train(was_training)
    if out is None:
        return torch.empty(0, 0, device=device)
    return out


def _encode_sequences_ranks(model, pairs, batches, pad_id: int, device, precision: str, was_training: bool,
                            encode=None):
    """encode_sequences in a multi-GPU job: batch b on rank b % K (the batches are sorted by length, so this shares
    the work evenly), rows summed over ranks into one zero tensor (exact: each row is filled by one rank)."""
    ranks = distributed.world()
    encode = encode or model.encode
    vectors = []
    for idx in batches[ranks.rank::ranks.size]:
        batch = collate_pairs([pairs[i] for i in idx], pad_id)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast_context(device, precision):
            vectors.append((idx, encode(**batch).float()))
    model.train(was_training)
    dim = distributed.max_int(vectors[0][1].shape[1] if vectors else 0)
    if dim == 0:
        return torch.empty(0, 0, device=device)
    out = torch.zeros(len(pairs), dim, device=device)
    for idx, vec in vectors:
        out[torch.as_tensor(idx, device=device)] = vec
    return distributed.sum_disjoint_rows(out)


def entity_pairs(builder: SequenceBuilder) -> list[tuple[list[int], list[int]]]:
    return [(s, [0] * len(s)) for s in (builder.candidate(e) for e in range(builder.kg.num_entities))]


def encode_entities(model, builder: SequenceBuilder, device, batch_size: int, precision: str = "auto"):
    return encode_sequences(model, entity_pairs(builder), builder.kg.special.pad, device, batch_size, precision,
                            tower="entity")


def encode_queries(model, builder: SequenceBuilder, anchors, relations, device, batch_size: int,
                   precision: str = "auto"):
    pairs = [builder.query(int(a), int(r)) for a, r in zip(anchors, relations)]
    return encode_sequences(model, pairs, builder.kg.special.pad, device, batch_size, precision, tower="query")


@dataclass
class QuerySet:
    """Queries of one split in both directions, in the order: all tail queries, then all head queries."""

    query: np.ndarray  # index of the triple in the (sub-sampled) split
    direction: np.ndarray  # "tail" / "head"
    head: np.ndarray
    relation: np.ndarray
    tail: np.ndarray
    anchor: np.ndarray  # entity in the query text
    query_relation: np.ndarray  # relation id used in the query text (r, or r + R for inverse)
    gold: np.ndarray

    def __len__(self):
        return len(self.gold)


def build_queries(triples: np.ndarray, num_relations: int, directions=("tail", "head")) -> QuerySet:
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    n = len(triples)
    parts = []
    for d in directions:
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        if d == "tail":
            parts.append((np.arange(n), np.full(n, "tail"), h, r, t, h, r, t))
        else:
            parts.append((np.arange(n), np.full(n, "head"), h, r, t, t, r + num_relations, h))
    cols = [np.concatenate(c) for c in zip(*parts)]
    return QuerySet(*cols)


def known_answer_mask(filter_index, anchors: torch.Tensor, relations: torch.Tensor, is_tail: torch.Tensor,
                      device) -> torch.Tensor:
    """Bool [n, E]: the known answers of each query in its direction, tails of (h, r) for tail queries and heads of
    (t, r) for head queries (anchors = h or t, relations = r, both directions in one block)."""
    mask = torch.zeros(len(anchors), filter_index.num_entities, dtype=torch.bool, device=device)
    for direction, rows in (("tail", is_tail), ("head", ~is_tail)):
        if bool(rows.any()):
            sel = rows.nonzero().flatten()
            mask[sel] = filter_index.mask(anchors[sel], relations[sel], direction, device)
    return mask


@torch.inference_mode()
def rank_queries(query_vecs: torch.Tensor, entity_vecs: torch.Tensor, queries: QuerySet, filter_index,
                 chunk_size: int = 1024, pair_head=None, prior=None) -> dict[str, np.ndarray]:
    """Chunked scores [chunk, E] and filtered ranks on the device; only the ranks come back to the host. Scores:
    the cosine, or `pair_head.matrix` (siamese.PairLinear, eval mode) when given; plus `prior.bonus(anchors)`
    (graph_prior.NeighbourPrior, n-hop re-ranking) when given."""
    device = entity_vecs.device
    if pair_head is None:
        ent = F.normalize(entity_vecs.float(), dim=-1)
        qn = F.normalize(query_vecs.float(), dim=-1)
    else:
        ent, qn = entity_vecs.float(), query_vecs.float()
    anchor = torch.as_tensor(queries.anchor, device=device)
    relation = torch.as_tensor(queries.relation, device=device)
    gold = torch.as_tensor(queries.gold, device=device)
    is_tail = torch.as_tensor(queries.direction == "tail", device=device)
    outs = {k: [] for k in ("optimistic", "pessimistic", "realistic", "num_candidates")}
    starts = list(range(0, len(queries), chunk_size))
    if distributed.world().size > 1:  # a multi-GPU job: each rank ranks a contiguous run of whole chunks, gathered below
        lo, hi = distributed.shard_range(len(starts))
        starts = starts[lo:hi]
    for start in starts:
        sl = slice(start, start + chunk_size)
        scores = qn[sl] @ ent.T if pair_head is None else pair_head.matrix(qn[sl], ent)
        if prior is not None:
            scores = scores + prior.bonus(anchor[sl])
        mask = known_answer_mask(filter_index, anchor[sl], relation[sl], is_tail[sl], device)
        ranks = filtered_ranks(scores, gold[sl], mask)
        for k in outs:
            outs[k].append(ranks[k])
    if distributed.world().size > 1:
        local = (torch.stack([torch.cat(outs[k]) for k in outs], 1) if starts
                 else torch.zeros(0, len(outs), dtype=torch.float64, device=device))
        every = distributed.gather_variable(local).cpu().numpy()  # rank order = query order
        return {k: every[:, i] for i, k in enumerate(outs)}
    return {k: torch.cat(v).cpu().numpy() if v else np.zeros(0) for k, v in outs.items()}


@torch.inference_mode()
def rank_heads_by_relation_candidates(model, builder: SequenceBuilder, entity_vecs: torch.Tensor, queries: QuerySet,
                                      filter_index, device, batch_size: int, chunk_size: int = 1024,
                                      precision: str = "auto", progress: bool = True,
                                      prior=None) -> dict[str, np.ndarray]:
    """`head_ranking: relation_candidates`: filtered ranks of head queries (?, r, t) (queries.anchor = t,
    queries.relation = r, queries.gold = h), every entity h' a candidate scored s(query(h', r), entity(t)).
    One relation at a time: its E candidate queries are encoded (the query tower; length-sorted, dynamic padding; tqdm
    counts the sequences), then its head queries are scored in chunks, [chunk, E] on the device."""
    from tqdm.auto import tqdm

    E = builder.kg.num_entities
    pair_head = getattr(model, "pair_head", None)
    n = len(queries)
    outs = {k: np.zeros(n) for k in ("optimistic", "pessimistic", "realistic", "num_candidates")}
    relations = np.unique(queries.relation)
    bar = tqdm(total=len(relations) * E, desc=f"head candidates ({len(relations)} relations x {E} entities)",
               unit="seq", file=sys.stderr, mininterval=10, disable=not progress or n == 0, leave=False)
    anchors = torch.as_tensor(queries.anchor, device=device)
    gold = torch.as_tensor(queries.gold, device=device)
    rel_t = torch.as_tensor(queries.relation, device=device)
    entities = np.arange(E)
    step = max(int(batch_size) * 32, 1)  # sequences per encoder call: the bar moves, sorting still pays
    for r in relations:
        parts = []
        for i in range(0, E, step):
            chunk = entities[i:i + step]
            parts.append(encode_queries(model, builder, chunk, np.full(len(chunk), r), device, batch_size, precision))
            bar.update(len(chunk))
        cand = torch.cat(parts)
        cand = F.normalize(cand.float(), dim=-1) if pair_head is None else cand.float()
        rows = np.flatnonzero(queries.relation == r)
        for start in range(0, len(rows), chunk_size):
            sel = torch.as_tensor(rows[start:start + chunk_size], device=device)
            target = entity_vecs[anchors[sel]].float()
            if pair_head is None:
                scores = F.normalize(target, dim=-1) @ cand.T  # cos(query(h', r), entity(t)): [chunk, E]
            else:
                scores = pair_head.matrix(cand, target).T
            if prior is not None:  # candidate heads h' near the tail t
                scores = scores + prior.bonus(anchors[sel])
            mask = filter_index.mask(anchors[sel], rel_t[sel], "head", device)
            ranks = filtered_ranks(scores, gold[sel], mask)
            idx = rows[start:start + chunk_size]
            for k in outs:
                outs[k][idx] = ranks[k].cpu().numpy()
    bar.close()
    return outs


def known_triples(kg: TokenizedKG, splits=("train", "dev", "test")) -> np.ndarray:
    return np.concatenate([kg.triples[s] for s in splits], axis=0)


def evaluate_split(model, kg: TokenizedKG, builder: SequenceBuilder, split: str, device, *,
                   batch_size: int, chunk_size: int, precision: str, head_ranking: str,
                   filter_splits=("train", "dev", "test"), subsample: int | None = None, seed: int = 0,
                   entity_vecs: torch.Tensor | None = None,
                   vectors: dict | None = None, prior=None) -> tuple[pd.DataFrame, dict, dict]:
    """Filtered ranks of every query of `split` (both directions) against all entities; head queries ranked per
    `head_ranking` (module docstring); `prior`: n-hop re-ranking (graph_prior.NeighbourPrior), None in the
    protocol. `vectors`: a dict that receives what was encoded (entity_vecs, and for
    inverse_query: query_vecs, queries, filter_index), for diagnostics and the entity bank to reuse.

    Returns (ranks frame, metrics, timings). Columns: query, direction, head, relation, tail (entity / relation
    string ids), gold (entity id), optimistic, pessimistic, realistic, num_candidates."""
    if head_ranking not in HEAD_RANKINGS:
        raise ValueError(f"score.head_ranking must be one of {HEAD_RANKINGS}, got {head_ranking!r}")
    timings = {}
    triples = seeded_subset(kg.triples[split], subsample, seed)
    queries = build_queries(triples, kg.num_relations)
    pair_head = getattr(model, "pair_head", None)
    t0 = time.perf_counter()
    if entity_vecs is None:
        entity_vecs = encode_entities(model, builder, device, batch_size, precision)
    sync_device(device)
    t1 = time.perf_counter()
    if vectors is not None:
        vectors["entity_vecs"] = entity_vecs
    if head_ranking == "inverse_query":
        query_vecs = encode_queries(model, builder, queries.anchor, queries.query_relation, device, batch_size,
                                    precision)
        sync_device(device)
        t2 = time.perf_counter()
        index = build_filter_index(known_triples(kg, filter_splits), kg.num_entities)
        ranks = rank_queries(query_vecs, entity_vecs, queries, index, chunk_size, pair_head, prior)
        if vectors is not None:
            vectors.update(query_vecs=query_vecs, queries=queries, filter_index=index)
    else:
        tail = queries.direction == "tail"
        tq, hq = (QuerySet(*(getattr(queries, f)[sel] for f in QuerySet.__dataclass_fields__))
                  for sel in (tail, ~tail))
        query_vecs = encode_queries(model, builder, tq.anchor, tq.query_relation, device, batch_size, precision)
        sync_device(device)
        t2 = time.perf_counter()
        index = build_filter_index(known_triples(kg, filter_splits), kg.num_entities)
        tail_ranks = rank_queries(query_vecs, entity_vecs, tq, index, chunk_size, pair_head, prior)
        head_ranks = rank_heads_by_relation_candidates(model, builder, entity_vecs, hq, index, device, batch_size,
                                                       chunk_size, precision, prior=prior)
        ranks = {}
        for k in tail_ranks:
            ranks[k] = np.zeros(len(queries))
            ranks[k][tail], ranks[k][~tail] = tail_ranks[k], head_ranks[k]
    sync_device(device)
    t3 = time.perf_counter()
    # relation_candidates: encoding the head candidates is inside score_and_rank_s
    timings.update(encode_entities_s=t1 - t0, encode_queries_s=t2 - t1, score_and_rank_s=t3 - t2)
    frame = ranks_frame(kg, queries, ranks)
    metrics = metrics_from_ranks(frame) if len(frame) else {}
    return frame, metrics, timings


def ranks_frame(kg: TokenizedKG, queries: QuerySet, ranks: dict[str, np.ndarray]) -> pd.DataFrame:
    """The ranks.parquet layout: one line per query (evaluate_split's docstring names the columns)."""
    ent_ids = np.asarray(kg.entity_ids, dtype=object)
    rel_ids = np.asarray(kg.relation_ids, dtype=object)
    return pd.DataFrame({
        "query": queries.query.astype(np.int64),
        "direction": queries.direction.astype(str),
        "head": ent_ids[queries.head],
        "relation": rel_ids[queries.relation],
        "tail": ent_ids[queries.tail],
        "gold": ent_ids[queries.gold],
        "optimistic": ranks["optimistic"],
        "pessimistic": ranks["pessimistic"],
        "realistic": ranks["realistic"],
        "num_candidates": ranks["num_candidates"].astype(np.int64),
    })
