"""Fine-tuning data: inverse-relation augmentation, query / candidate token sequences, the in-batch label matrix
(train-only known answers by default; `finetune.label_splits` adds dev/test, the authors' leak) and the
"BatchSample = N" negative sampler.

Relation numbering after augmentation: relation r in 0..R-1 is the original relation, r + R its inverse
(read with the relation's inverse text, e.g. "reversed has part"). A head query (?, r, t) is the tail query
(t, r + R, ?): one query form serves both directions (paper, "Triple Augmentation").

Sequences (BERT sentence pairs, token ids from the tokenize stage, no special tokens there):
- query:     [CLS] head text [SEP] relation text [SEP]   token types 0 ... 0 | 1 ... 1
- candidate: [CLS] entity text [SEP]                     token types 0
Truncation (as the authors' code): the relation is kept whole (cut only if it alone overflows), the head text is
cut to `max_length - 3 - len(relation)`; a candidate is cut to `max_length - 2`. Unlike the authors, the candidate's
cut does not depend on any relation, so each entity has exactly one encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .kg import TokenizedKG, seeded_subset
from .training import pad_batch


# ------------------------------------------------------------------ augmentation and known answers

def augment_inverse(triples: np.ndarray, num_relations: int) -> np.ndarray:
    """Original triples followed by (tail, r + R, head) for each; shape (2n, 3)."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    inverse = np.stack([triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]], axis=1)
    return np.concatenate([triples, inverse], axis=0)


def training_triples(kg: TokenizedKG, inverse_augmentation: bool, subsample: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """The rows fine-tuning iterates over: train split only (never dev/test), optionally a fixed seeded
    subset of the original triples (CPU overlay for big graphs), then the inverse rows when asked."""
    train = seeded_subset(kg.triples["train"], subsample, seed)
    return augment_inverse(train, kg.num_relations) if inverse_augmentation else train.copy()


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
    n = len(batch)
    h = np.repeat(batch[:, 0], n)
    r = np.repeat(batch[:, 1], n)
    t = np.tile(batch[:, 2], n)
    y = known.contains(h, r, t).reshape(n, n)
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


# ------------------------------------------------------------------ token sequences

@dataclass
class SequenceBuilder:
    """Turns entity / (entity, relation) ids into BERT inputs; `max_query_length` / `max_candidate_length`
    count the special tokens."""

    kg: TokenizedKG
    max_query_length: int
    max_candidate_length: int

    def relation_tokens(self, r: int) -> list[int]:
        R = self.kg.num_relations
        return self.kg.relation_text_ids[r] if r < R else self.kg.relation_inverse_ids[r - R]

    def query(self, h: int, r: int, head_tokens: list[int] | None = None,
              rel_tokens: list[int] | None = None) -> tuple[list[int], list[int]]:
        sp = self.kg.special
        rel = list(self.relation_tokens(r) if rel_tokens is None else rel_tokens)
        head = list(self.kg.entity_text_ids[h] if head_tokens is None else head_tokens)
        rel = rel[: max(self.max_query_length - 4, 1)]  # keep >= 1 head token when the relation is huge
        head = head[: max(self.max_query_length - 3 - len(rel), 0)]
        ids = [sp.cls] + head + [sp.sep] + rel + [sp.sep]
        types = [0] * (len(head) + 2) + [1] * (len(rel) + 1)
        return ids, types

    def candidate(self, e: int, tokens: list[int] | None = None) -> list[int]:
        sp = self.kg.special
        body = list(self.kg.entity_text_ids[e] if tokens is None else tokens)
        return [sp.cls] + body[: self.max_candidate_length - 2] + [sp.sep]

    def query_length(self, h: int, r: int) -> int:
        return len(self.query(h, r)[0])

    def candidate_length(self, e: int) -> int:
        return min(len(self.kg.entity_text_ids[e]), self.max_candidate_length - 2) + 2

    def truncation_report(self) -> dict:
        """How many entity texts / query heads the configured lengths cut (to document max_length choices)."""
        E, R = self.kg.num_entities, self.kg.num_relations
        ent_len = np.array([len(t) for t in self.kg.entity_text_ids])
        rel_len = np.array([len(self.relation_tokens(r)) for r in range(2 * R)])
        cand_cut = int((ent_len + 2 > self.max_candidate_length).sum())
        # a query (h, r) is cut when len(h) + len(r) + 3 > L; count over the training rows
        rows = augment_inverse(self.kg.triples["train"], R)
        q_len = ent_len[rows[:, 0]] + rel_len[rows[:, 1]] + 3
        return {
            "entities": E,
            "entities_truncated": cand_cut,
            "train_queries": int(len(rows)),
            "train_queries_truncated": int((q_len > self.max_query_length).sum()),
            "max_query_tokens": int(q_len.max()) if len(q_len) else 0,
            "max_candidate_tokens": int(ent_len.max() + 2) if len(ent_len) else 0,
        }


def collate_queries(builder: SequenceBuilder, heads, relations) -> dict[str, torch.Tensor]:
    pairs = [builder.query(int(h), int(r)) for h, r in zip(heads, relations)]
    return collate_pairs(pairs, builder.kg.special.pad)


def collate_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    ids = pad_batch([p[0] for p in pairs], pad_id)
    types = pad_batch([p[1] for p in pairs], 0)
    mask = pad_batch([[1] * len(p[0]) for p in pairs], 0)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def collate_candidates(builder: SequenceBuilder, entities) -> dict[str, torch.Tensor]:
    seqs = [builder.candidate(int(e)) for e in entities]
    return collate_sequences(seqs, builder.kg.special.pad)


def collate_sequences(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    ids = pad_batch(seqs, pad_id)
    mask = pad_batch([[1] * len(s) for s in seqs], 0)
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
