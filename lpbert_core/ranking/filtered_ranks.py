"""Filtered link-prediction ranks on the scores' device, the filter index, and the metrics built from ranks.

Conventions (the same as the rank-based evaluation of the KGE literature):
- a higher score is a better candidate;
- the *filtered* setting removes every other known true answer (train, dev and test triples) from the candidate list,
  never the gold entity itself;
- `optimistic` = 1 + #(candidates scoring strictly above the gold),
  `pessimistic` = #(candidates scoring at least as high as the gold, the gold counted once),
  `realistic` = their mean (the expected rank under random tie breaking; text encoders do produce ties).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lpbert_core.ranking.results import RANK_TYPES, SIDES, side_block

DIRECTIONS = ("head", "tail")


# ----------------------------------------------------------------------------------------------------------- ranks
def filtered_ranks(scores: Tensor, gold: Tensor, known_mask: Tensor | None) -> dict[str, Tensor]:
    """Filtered ranks of the gold entity of each query.

    scores: float [B, E], higher = better. gold: long [B], the true entity of each query. known_mask: bool [B, E],
    True where a candidate is another known true answer and must be skipped (None = raw, unfiltered ranks); the gold
    entity is never skipped, even when its mask bit is set.

    Returns float tensors [B] on scores' device: `optimistic`, `pessimistic`, `realistic`, and `num_candidates`
    (E minus the filtered ones, gold included). Raises ValueError on NaN scores or mismatched shapes; the NaN check is
    the only host synchronisation (one boolean per call).
    """
    if scores.dim() != 2:
        raise ValueError(f"filtered_ranks: scores must be [B, E], got shape {tuple(scores.shape)}")
    num_queries, num_entities = scores.shape
    if gold.dim() != 1 or gold.shape[0] != num_queries:
        raise ValueError(f"filtered_ranks: gold must be [B]={num_queries}, got shape {tuple(gold.shape)}")
    if known_mask is not None and tuple(known_mask.shape) != (num_queries, num_entities):
        raise ValueError(
            f"filtered_ranks: known_mask must be [B, E]={(num_queries, num_entities)}, got {tuple(known_mask.shape)}"
        )
    if not scores.is_floating_point():
        scores = scores.float()
    if bool(torch.isnan(scores).any()):
        bad = torch.isnan(scores).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"filtered_ranks: NaN in scores (query rows {bad} among others); cannot rank")

    device = scores.device
    gold = gold.to(device=device, dtype=torch.long)
    rows = torch.arange(num_queries, device=device)
    gold_score = scores[rows, gold].unsqueeze(1)  # [B, 1]

    if known_mask is None:
        keep = torch.ones_like(scores, dtype=torch.bool)
    else:
        keep = ~known_mask.to(device=device, dtype=torch.bool)
        keep[rows, gold] = True  # the gold entity is never filtered

    greater = ((scores > gold_score) & keep).sum(dim=1)
    greater_equal = ((scores >= gold_score) & keep).sum(dim=1)  # counts the gold itself once
    optimistic = (greater + 1).to(torch.float64)
    pessimistic = greater_equal.to(torch.float64)
    return {
        "optimistic": optimistic,
        "pessimistic": pessimistic,
        "realistic": 0.5 * (optimistic + pessimistic),
        "num_candidates": keep.sum(dim=1).to(torch.float64),
    }


# --------------------------------------------------------------------------------------------------- filter index
class _CSR:
    """Known answers grouped by the key anchor * num_relations + relation (sorted unique keys + offsets)."""

    def __init__(self, anchors: np.ndarray, relations: np.ndarray, answers: np.ndarray, num_relations: int):
        keys = anchors.astype(np.int64) * num_relations + relations.astype(np.int64)
        order = np.lexsort((answers, keys))
        keys, answers = keys[order], answers[order].astype(np.int64)
        # drop duplicate (key, answer) pairs (a triple seen in two splits)
        if len(keys):
            fresh = np.ones(len(keys), dtype=bool)
            fresh[1:] = (keys[1:] != keys[:-1]) | (answers[1:] != answers[:-1])
            keys, answers = keys[fresh], answers[fresh]
        unique_keys, starts, counts = np.unique(keys, return_index=True, return_counts=True)
        self.keys = torch.from_numpy(unique_keys)
        self.starts = torch.from_numpy(starts.astype(np.int64))
        self.counts = torch.from_numpy(counts.astype(np.int64))
        self.values = torch.from_numpy(answers)
        self._on: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        name = str(device)
        if name not in self._on:
            self._on[name] = tuple(t.to(device) for t in (self.keys, self.starts, self.counts, self.values))
        return self._on[name]


class FilterIndex:
    """Known heads/tails per (anchor, relation), answering boolean masks for batches of queries."""

    def __init__(self, triples: np.ndarray, num_entities: int):
        triples = np.asarray(triples)
        if triples.ndim != 2 or triples.shape[1] != 3:
            raise ValueError(f"build_filter_index: triples must be an [n, 3] array, got shape {triples.shape}")
        if len(triples) and not np.issubdtype(triples.dtype, np.integer):
            raise ValueError(f"build_filter_index: triples must hold integer ids, got dtype {triples.dtype}")
        triples = triples.astype(np.int64, copy=False)
        if len(triples):
            entities = triples[:, [0, 2]]
            if entities.min() < 0 or entities.max() >= num_entities:
                raise ValueError(
                    f"build_filter_index: entity ids must lie in [0, {num_entities}), "
                    f"found [{entities.min()}, {entities.max()}]"
                )
            if triples[:, 1].min() < 0:
                raise ValueError("build_filter_index: negative relation id")
        self.num_entities = int(num_entities)
        self.num_relations = int(triples[:, 1].max()) + 1 if len(triples) else 1
        heads, relations, tails = triples[:, 0], triples[:, 1], triples[:, 2]
        self._csr = {
            "tail": _CSR(heads, relations, tails, self.num_relations),  # known tails of (head, relation)
            "head": _CSR(tails, relations, heads, self.num_relations),  # known heads of (tail, relation)
        }

    def answers(self, anchor: int, relation: int, direction: str) -> list[int]:
        """Known answers of one query (for inspection and tests)."""
        mask = self.mask(torch.tensor([anchor]), torch.tensor([relation]), direction, "cpu")
        return mask[0].nonzero().flatten().tolist()

    def mask(self, anchors: Tensor, relations: Tensor, direction: str, device: torch.device | str | None = None) -> Tensor:
        """Bool [B, E] on `device`: True where the entity is a known answer of query i.

        direction "tail": the known tails of (anchors[i] as head, relations[i]);
        direction "head": the known heads of (anchors[i] as tail, relations[i]).
        """
        if direction not in self._csr:
            raise ValueError(f"FilterIndex.mask: direction must be 'head' or 'tail', got {direction!r}")
        anchors = torch.as_tensor(anchors)
        relations = torch.as_tensor(relations)
        if anchors.shape != relations.shape or anchors.dim() != 1:
            raise ValueError(
                f"FilterIndex.mask: anchors and relations must be equal-length 1-d, got "
                f"{tuple(anchors.shape)} and {tuple(relations.shape)}"
            )
        device = torch.device(device) if device is not None else anchors.device
        keys, starts, counts, values = self._csr[direction].on(device)
        anchors = anchors.to(device=device, dtype=torch.long)
        relations = relations.to(device=device, dtype=torch.long)
        batch = anchors.shape[0]
        out = torch.zeros(batch, self.num_entities, dtype=torch.bool, device=device)
        if batch == 0 or keys.numel() == 0:
            return out

        valid = (relations >= 0) & (relations < self.num_relations)
        query_keys = anchors * self.num_relations + relations.clamp(0, self.num_relations - 1)
        slot = torch.searchsorted(keys, query_keys).clamp(max=keys.numel() - 1)
        found = valid & (keys[slot] == query_keys)
        lengths = torch.where(found, counts[slot], torch.zeros_like(slot))
        begin = torch.where(found, starts[slot], torch.zeros_like(slot))
        # flat positions: query i owns values[begin_i : begin_i + lengths_i]
        row = torch.repeat_interleave(torch.arange(batch, device=device), lengths)
        if row.numel() == 0:
            return out
        first_of_row = torch.cumsum(lengths, 0) - lengths
        offset_in_row = torch.arange(row.numel(), device=device) - first_of_row[row]
        columns = values[begin[row] + offset_in_row]
        out.index_put_((row, columns), torch.ones_like(row, dtype=torch.bool))
        return out


def build_filter_index(triples: np.ndarray, num_entities: int) -> FilterIndex:
    """Index all known triples (train + dev + test, as int (head, relation, tail) rows) for filtered ranking."""
    return FilterIndex(triples, num_entities)


# --------------------------------------------------------------------------------------------------------- metrics
def metrics_from_ranks(frame: pd.DataFrame) -> dict:
    """The `metrics` object of metrics.json: for `both` directions together and each apart, MRR, MR and Hits@1/3/10
    of every rank type the frame has, plus the count (keys: lpbert_core.ranking.results, shared with the tables' reader).

    `frame` needs `direction` ("head"/"tail") and `realistic` (unsuffixed keys); `optimistic`/`pessimistic` columns,
    where present, give the suffixed keys (`mrr_optimistic`, `hits@10_pessimistic`, ...). Values are plain Python
    floats/ints (None where a direction has no query), so the result is valid JSON.
    """
    for column in ("direction", "realistic"):
        if column not in frame.columns:
            raise ValueError(f"metrics_from_ranks: missing column {column!r} (have {list(frame.columns)})")
    directions = frame["direction"].astype(str)
    unknown = sorted(set(directions) - set(DIRECTIONS))
    if unknown:
        raise ValueError(f"metrics_from_ranks: unknown direction values {unknown}; expected 'head'/'tail'")
    realistic = frame["realistic"].to_numpy(dtype=np.float64)
    if len(realistic) and (np.isnan(realistic).any() or (realistic < 1).any()):
        raise ValueError("metrics_from_ranks: realistic ranks must be >= 1 and not NaN")
    columns = {rank_type: frame[rank_type].to_numpy(dtype=np.float64) for rank_type in RANK_TYPES
               if rank_type in frame.columns}
    result = {}
    for side in SIDES:
        selector = np.ones(len(frame), dtype=bool) if side == "both" else (directions == side).to_numpy()
        result[side] = side_block({rank_type: values[selector] for rank_type, values in columns.items()})
    return result


def assert_finite_metrics(metrics: dict) -> None:
    """Raise if any metric value is NaN/inf (the JSON must stay strict)."""

    def walk(value, path: Iterable[str]):
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, (*path, str(key)))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"non-finite metric at {'.'.join(path)}: {value}")

    walk(metrics, ())
