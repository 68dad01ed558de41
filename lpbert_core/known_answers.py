"""Known answers of a graph's queries (neutral: fine-tuning labels, negative samplers, the cross-encoder's corruption
filter and the extra negatives all ask "is entity e a known answer of query (h, r)"), and the inverse-relation
augmentation that defines the query forms: relation r in 0..R-1 is the original relation, r + R its inverse, and a
head query (?, r, t) is the tail query (t, r + R, ?).
"""

from __future__ import annotations

import numpy as np

from lpbert_core.kg import TokenizedKG


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


def train_known_answers(kg: TokenizedKG, inverse_augmentation: bool = True) -> KnownAnswers:
    """Known answers from the FULL train split only (original + inverse rows). Dev and test never enter the
    training labels by default (the authors' labels used them: `known_answers(kg, ("train", "dev", "test"))`)."""
    rows = augment_inverse(kg.triples["train"], kg.num_relations)
    if not inverse_augmentation:
        rows = kg.triples["train"]
    return KnownAnswers(rows, kg.num_entities, 2 * kg.num_relations)


LABEL_SPLITS = ("train", "dev", "test")


def known_answers(kg: TokenizedKG, splits=("train",), inverse_augmentation: bool = True) -> KnownAnswers:
    """Known answers from the named splits (`finetune.label_splits`; train must be one of them): the in-batch
    labels, the negative sampler's and the self-negatives' "known answer" test. ("train",) is
    `train_known_answers`; ("train", "dev", "test") is the authors' code, a test-set leak (`label_leak`)."""
    splits = tuple(splits)
    bad = [s for s in splits if s not in LABEL_SPLITS]
    if bad or "train" not in splits:
        raise ValueError(f"finetune.label_splits must hold 'train' and only {LABEL_SPLITS}, got {list(splits)}")
    if splits == ("train",):
        return train_known_answers(kg, inverse_augmentation)
    rows = np.concatenate([np.asarray(kg.triples[s], dtype=np.int64).reshape(-1, 3) for s in splits])
    if inverse_augmentation:
        rows = augment_inverse(rows, kg.num_relations)
    return KnownAnswers(rows, kg.num_entities, 2 * kg.num_relations)


def label_leak(splits) -> str | None:
    """The sentence every output of a run whose in-batch labels used held-out splits carries; None for train only."""
    held_out = [s for s in LABEL_SPLITS if s != "train" and s in tuple(splits)]
    if not held_out:
        return None
    return (f"leaky: in-batch training labels used the {' and '.join(held_out)} triples as known answers "
            f"(finetune.label_splits {list(splits)}, the authors' code reading); "
            + ("test answers influenced training, so test metrics are not a clean held-out measurement"
               if "test" in held_out else "dev answers influenced training and model selection"))
