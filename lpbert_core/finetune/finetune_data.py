"""Fine-tuning data: the training rows (train split, inverse rows), the in-batch label matrix (train-only known
answers by default; `finetune.label_splits` adds dev/test, the authors' leak), the self-negative mask and the
"BatchSample = N" negative sampler. Known answers and the inverse augmentation: lpbert_core.graph.known_answers; token
sequences: lpbert_core.model.sequences.
"""

from __future__ import annotations

import numpy as np
import torch

from lpbert_core.graph.kg import TokenizedKG, seeded_subset
from lpbert_core.graph.known_answers import KnownAnswers, augment_inverse


def training_triples(kg: TokenizedKG, inverse_augmentation: bool, subsample: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """The rows fine-tuning iterates over: train split only (never dev/test), optionally a fixed seeded
    subset of the original triples (CPU overlay for big graphs), then the inverse rows when asked."""
    train = seeded_subset(kg.triples["train"], subsample, seed)
    return augment_inverse(train, kg.num_relations) if inverse_augmentation else train.copy()


def split_rows(kg: TokenizedKG, split: str, inverse_augmentation: bool, subsample: int | None = None,
               seed: int = 0) -> np.ndarray:
    """The rows of any split as fine-tuning sees them (optional fixed seeded subset, then the inverse rows when
    asked): the dev in-batch loss (`finetune.selection: dev_loss`) runs over the dev split this way."""
    rows = seeded_subset(kg.triples[split], subsample, seed)
    return augment_inverse(rows, kg.num_relations) if inverse_augmentation else np.asarray(rows).copy()


def label_matrix(batch: np.ndarray, known: KnownAnswers) -> torch.Tensor:
    """n x n float labels: y[i, j] = 1 iff candidate t_j is a known train answer of query (h_i, r_i).
    The diagonal is 1 by construction (each row is a training triple), duplicates of the same answer in a
    batch are positives, not false negatives."""
    batch = np.asarray(batch, dtype=np.int64).reshape(-1, 3)
    y = known.matrix(batch[:, 0], batch[:, 1], batch[:, 2])
    np.fill_diagonal(y, True)
    return torch.from_numpy(y.astype(np.float32))


def self_negative_mask(batch: np.ndarray, known: KnownAnswers, scored: np.ndarray | None = None) -> np.ndarray:
    """`finetune.self_negatives` (SimKGC's self-negatives; not in the paper): row i's anchor h_i is scored as one
    extra negative candidate of its own query (h_i, r_i). Returns bool [n], True where that extra column counts:
    False where h_i is a known train answer of (h_i, r_i) (e.g. (h, r, h) in train: never a negative) and where
    `scored[:, j]` already holds h_i for row i (the same pair is already scored in the row, e.g. h_i is another
    row's tail in the in-batch matrix: the extra column would count it twice). `scored`: [n, k] entity ids of
    the candidates row i already scores (in-batch: every row's tails, the same for all rows)."""
    batch = np.asarray(batch, dtype=np.int64).reshape(-1, 3)
    h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
    ok = ~known.contains(h, r, h) & (h != t)
    if scored is not None:
        scored = np.asarray(scored, dtype=np.int64).reshape(len(batch), -1)
        ok &= ~(scored == h[:, None]).any(axis=1)
    return ok


def sample_negative_tails(batch: np.ndarray, known: KnownAnswers, num_entities: int,
                          rng: np.random.Generator, max_tries: int = 50) -> np.ndarray:
    """"BatchSample = N" mode (Table 4, our reading): one random entity per positive that is not a known
    train answer of its query (re-drawn up to `max_tries` times; on a graph where every entity is an answer the
    last draw is kept and labelled by the caller)."""
    batch = np.asarray(batch, dtype=np.int64).reshape(-1, 3)
    neg = rng.integers(0, num_entities, size=len(batch))
    for _ in range(max_tries):
        bad = known.contains(batch[:, 0], batch[:, 1], neg) | (neg == batch[:, 2])
        if not bad.any():
            break
        neg[bad] = rng.integers(0, num_entities, size=int(bad.sum()))
    return neg
