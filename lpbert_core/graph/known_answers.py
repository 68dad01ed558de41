"""Known answers of a graph's queries (neutral: fine-tuning labels, negative samplers, the cross-encoder's corruption
filter and the extra negatives all ask "is entity e a known answer of query (h, r)"), and the inverse-relation
augmentation that defines the query forms: relation r in 0..R-1 is the original relation, r + R its inverse, and a
head query (?, r, t) is the tail query (t, r + R, ?).
"""

from __future__ import annotations

import numpy as np

from lpbert_core.graph.kg import TokenizedKG


def augment_inverse(triples: np.ndarray, num_relations: int) -> np.ndarray:
    """Original triples followed by (tail, r + R, head) for each; shape (2n, 3)."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    inverse = np.stack([triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]], axis=1)
    return np.concatenate([triples, inverse], axis=0)


class KnownAnswers:
    """Membership test "is entity e a known answer of query (h, r)" over a fixed set of (h, r, t) rows,
    vectorised through sorted int64 keys (h * R2 + r) * E + t."""

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations_total: int):
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        self.E = int(num_entities)
        self.R2 = int(num_relations_total)
        self.keys = np.unique(self._key(triples[:, 0], triples[:, 1], triples[:, 2]))

    def _key(self, h, r, t):
        return (np.asarray(h, dtype=np.int64) * self.R2 + np.asarray(r, dtype=np.int64)) * self.E + np.asarray(
            t, dtype=np.int64)

    def contains(self, h, r, t) -> np.ndarray:
        keys = self._key(h, r, t)
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1) if len(self.keys) else pos
        return (self.keys[pos] == keys) if len(self.keys) else np.zeros(np.shape(keys), dtype=bool)

    def answers_of(self, h, r) -> tuple[np.ndarray, np.ndarray]:
        """Every known answer of each query (h_i, r_i) as (row_index, tail) int64 arrays, rows in order, tails
        ascending within a row. The answers of (h, r) are the keys in [(h R2 + r) E, (h R2 + r + 1) E)."""
        lo = self._key(np.ravel(h), np.ravel(r), 0)
        start = np.searchsorted(self.keys, lo, side="left")
        counts = np.searchsorted(self.keys, lo + self.E, side="left") - start
        rows = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
        # position of each answer: its row's first key + its rank within the row
        offset = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.keys[np.repeat(start, counts) + offset] - np.repeat(lo, counts)


    def matrix(self, h, r, columns) -> np.ndarray:
        """[n, m] bool: column entity columns[j] is a known answer of query (h_i, r_i). The same values as
        `contains` on the n x m grid, from the n queries' answer lists (n + answers lookups, not n m)."""
        columns = np.asarray(columns, dtype=np.int64).reshape(-1)
        rows, answers = self.answers_of(h, r)
        out = np.zeros((len(np.ravel(h)), len(columns)), dtype=bool)
        order = np.argsort(columns, kind="stable")
        ordered = columns[order]
        lo = np.searchsorted(ordered, answers, side="left")
        counts = np.searchsorted(ordered, answers, side="right") - lo  # columns holding this answer (repeats too)
        offset = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        out[np.repeat(rows, counts), order[np.repeat(lo, counts) + offset]] = True
        return out


SYMMETRY_THRESHOLD = 0.9  # WN18RR: its 3 symmetric relations are 92.5-93.2 % self-reverse, the next (_also_see) 64 %


def self_reverse_shares(train_triples: np.ndarray, num_relations: int) -> np.ndarray:
    """[R] float: per relation r, the share of its distinct train triples (h, r, t), h != t, whose reverse (t, r, h)
    is also in train. Self-loops are ignored (trivially their own reverse, no evidence either way); NaN for a
    relation without a non-loop triple."""
    t = np.unique(np.asarray(train_triples, dtype=np.int64).reshape(-1, 3), axis=0)
    t = t[t[:, 0] != t[:, 2]]
    kn = KnownAnswers(t, int(t[:, [0, 2]].max(initial=-1)) + 1, num_relations)
    reversed_ = kn.contains(t[:, 2], t[:, 1], t[:, 0])
    total = np.bincount(t[:, 1], minlength=num_relations)
    hits = np.bincount(t[:, 1], weights=reversed_, minlength=num_relations)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / total


def symmetric_relations(train_triples: np.ndarray, num_relations: int,
                        threshold: float = SYMMETRY_THRESHOLD) -> np.ndarray:
    """Ids (0..R-1, ascending) of the relations whose train triples are at least `threshold` self-reverse
    (`self_reverse_shares`: self-loops ignored, a relation with only self-loops is not symmetric)."""
    shares = self_reverse_shares(train_triples, num_relations)
    return np.flatnonzero(np.nan_to_num(shares, nan=-1.0) >= threshold).astype(np.int64)


def close_symmetric(rows: np.ndarray, symmetric: np.ndarray, num_relations: int) -> np.ndarray:
    """`rows` plus (t, r, h) for every row (h, r, t) whose relation r or inverse id r + R belongs to a symmetric
    relation: the row set closed under reversal, for the original relation and its inverse id alike."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    sym = np.isin(rows[:, 1] % num_relations, np.asarray(symmetric, dtype=np.int64))
    return np.concatenate([rows, rows[sym][:, ::-1]], axis=0)


def _closed(kg: TokenizedKG, rows: np.ndarray, symmetric_closure: bool) -> np.ndarray:
    """The closure, symmetry detected on the TRAIN split only (dev / test never decide which relations close)."""
    if not symmetric_closure:
        return rows
    return close_symmetric(rows, symmetric_relations(kg.triples["train"], kg.num_relations), kg.num_relations)


def train_known_answers(kg: TokenizedKG, inverse_augmentation: bool = True,
                        symmetric_closure: bool = False) -> KnownAnswers:
    """Known answers from the FULL train split only (original + inverse rows). Dev and test never enter the
    training labels by default (the authors' labels used them: `known_answers(kg, ("train", "dev", "test"))`).
    `symmetric_closure` (`finetune.symmetric_closure`): (t, r, h) is also known wherever (h, r, t) is, for r a
    symmetric relation (`symmetric_relations` on train) or its inverse id."""
    rows = augment_inverse(kg.triples["train"], kg.num_relations)
    if not inverse_augmentation:
        rows = kg.triples["train"]
    return KnownAnswers(_closed(kg, rows, symmetric_closure), kg.num_entities, 2 * kg.num_relations)


LABEL_SPLITS = ("train", "dev", "test")


def known_answers(kg: TokenizedKG, splits=("train",), inverse_augmentation: bool = True,
                  symmetric_closure: bool = False) -> KnownAnswers:
    """Known answers from the named splits (`finetune.label_splits`; train must be one of them): the in-batch
    labels, the negative sampler's and the self-negatives' "known answer" test. ("train",) is
    `train_known_answers`; ("train", "dev", "test") is the authors' code, a test-set leak (`label_leak`).
    `symmetric_closure`: as in `train_known_answers`, applied to the rows of every named split."""
    splits = tuple(splits)
    bad = [s for s in splits if s not in LABEL_SPLITS]
    if bad or "train" not in splits:
        raise ValueError(f"finetune.label_splits must hold 'train' and only {LABEL_SPLITS}, got {list(splits)}")
    if splits == ("train",):
        return train_known_answers(kg, inverse_augmentation, symmetric_closure)
    rows = np.concatenate([np.asarray(kg.triples[s], dtype=np.int64).reshape(-1, 3) for s in splits])
    if inverse_augmentation:
        rows = augment_inverse(rows, kg.num_relations)
    return KnownAnswers(_closed(kg, rows, symmetric_closure), kg.num_entities, 2 * kg.num_relations)


def label_leak(splits) -> str | None:
    """The sentence every output of a run whose in-batch labels used held-out splits carries; None for train only."""
    held_out = [s for s in LABEL_SPLITS if s != "train" and s in tuple(splits)]
    if not held_out:
        return None
    return (f"leaky: in-batch training labels used the {' and '.join(held_out)} triples as known answers "
            f"(finetune.label_splits {list(splits)}, the authors' code reading); "
            + ("test answers influenced training, so test metrics are not a clean held-out measurement"
               if "test" in held_out else "dev answers influenced training and model selection"))
