"""Where does a siamese model put the query's own entity (the anchor)? A siamese encoder embeds "h [SEP] r" and "h"
from nearly the same text, so before it has learnt otherwise the anchor is the nearest entity to its own query. In the
filtered protocol the anchor stays a candidate unless (h, r, h) is a known triple, so an anchor at rank 1 costs Hits@1
on every such query (SimKGC's self-negatives train it away).

The counts with the anchor taken out are diagnostics only, NOT the protocol: no table reports them. Used by the
proxy's dev points (finetune/dev_point.py) and by tools/anchor_rank.py on finished runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lpbert_core.ranking.filtered_ranks import filtered_ranks

COUNTS = ("anchor_is_top_candidate", "anchor_scores_above_gold", "anchor_filtered_as_known_answer",
          "hits@1_unbroken_ties", "hits@1_anchor_removed")


def anchor_counts(scores: torch.Tensor, anchors: torch.Tensor, gold: torch.Tensor, known: torch.Tensor) -> dict:
    """Counts over a block of queries. scores [n, E]; anchors, gold [n]; known [n, E] True at every known answer of
    the query (the gold among them). The filtered protocol: every known answer but the gold is out of the ranking.
    `hits@1_unbroken_ties` counts a gold that is the argmax (the first maximum; a diagnostic, not the realistic
    rank); `hits@1_anchor_removed` the same with the anchor also out, unless the anchor is the gold."""
    rows = torch.arange(len(gold), device=scores.device)
    out_mask = known.clone()
    out_mask[rows, gold] = False
    scores = scores.float().masked_fill(out_mask, float("-inf"))
    top = scores.argmax(1)
    without = scores.clone()
    without[rows, anchors] = torch.where(anchors == gold, without[rows, anchors],
                                         torch.tensor(float("-inf"), device=scores.device))
    return {
        "anchor_is_top_candidate": int(((top == anchors) & ~out_mask[rows, anchors]).sum()),
        "anchor_scores_above_gold": int((scores[rows, anchors] > scores[rows, gold]).sum()),
        "anchor_filtered_as_known_answer": int(out_mask[rows, anchors].sum()),
        "hits@1_unbroken_ties": int((top == gold).sum()),
        "hits@1_anchor_removed": int((without.argmax(1) == gold).sum()),
    }


def anchor_removed_reciprocal_ranks(scores: torch.Tensor, anchors: torch.Tensor, gold: torch.Tensor,
                                    known: torch.Tensor) -> torch.Tensor:
    """1 / realistic filtered rank of the gold with the anchor also filtered out (unless it is the gold): [n]."""
    rows = torch.arange(len(gold), device=scores.device)
    mask = known.clone()
    mask[rows, anchors] = True  # filtered_ranks never filters the gold itself, so an anchor that is the gold stays
    return 1.0 / filtered_ranks(scores, gold, mask)["realistic"]


@torch.inference_mode()
def anchor_report(query_vecs: torch.Tensor, entity_vecs: torch.Tensor, queries, filter_index,
                  chunk_size: int = 1024) -> dict:
    """Shares over all queries of a QuerySet (evaluation.build_queries) scored by the cosine: the anchor-first rate,
    how often the anchor outranks the gold, Hits@1 and the MRR with the anchor taken out (diagnostics)."""
    from lpbert_core.ranking.rank_split import known_answer_mask

    device = entity_vecs.device
    ent = F.normalize(entity_vecs.float(), dim=-1)
    qn = F.normalize(query_vecs.float(), dim=-1)
    anchors = torch.as_tensor(queries.anchor, device=device)
    relations = torch.as_tensor(queries.relation, device=device)
    gold = torch.as_tensor(queries.gold, device=device)
    is_tail = torch.as_tensor(queries.direction == "tail", device=device)
    totals = dict.fromkeys(COUNTS, 0)
    rr_sum = 0.0
    for start in range(0, len(gold), chunk_size):
        sl = slice(start, start + chunk_size)
        known = known_answer_mask(filter_index, anchors[sl], relations[sl], is_tail[sl], device)
        scores = qn[sl] @ ent.T
        counts = anchor_counts(scores, anchors[sl], gold[sl], known)
        totals = {k: totals[k] + counts[k] for k in COUNTS}
        rr_sum += float(anchor_removed_reciprocal_ranks(scores, anchors[sl], gold[sl], known).sum())
    n = max(len(gold), 1)
    return {**{k: totals[k] / n for k in COUNTS}, "mrr_anchor_removed": rr_sum / n, "queries": len(gold)}
