"""KG-BERT-style cross-encoder baseline (Table 3): the whole triple is one sequence, scored by a classifier.

Written from the idea of KG-BERT (Yao et al., 2019), not from its code:
- sequence: `[CLS] head text [SEP] relation text [SEP] tail text [SEP]`, token types 0 | 1 | 0 (all 0 for encoders
  without a second token type, e.g. RoBERTa);
- truncation to `max_length` (special tokens included): the relation is never cut (unless it alone overflows), the
  longer of the two entity texts loses tokens first, so both keep as much as the budget allows;
- model: encoder + dropout + a linear layer on the pooled [CLS] vector -> one logit (plausibility of the triple);
- training data: each train triple (label 1) plus k corrupted triples (label 0), head or tail replaced by a uniformly
  random entity, re-drawn while the corrupted triple is a known train triple (or equals the positive).

Ranking a query (h, r, ?) needs one encoder pass per candidate entity (see `cross_encoder_loop.rank_sampled_queries`):
this is what makes the baseline slow and why Table 3 measures it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lpbert_core.model.run_folder import read_encoder, read_layer, read_run_info, write_run_folder
from lpbert_core.graph.known_answers import KnownAnswers
from lpbert_core.graph.kg import TokenizedKG
from lpbert_core.model.sequences import split_context_budget  # one rule for sharing a budget between head and tail
from lpbert_core.runtime.training import pad_batch

CLASSIFIER_FILE = "classifier.safetensors"


# ------------------------------------------------------------------------------------------------ sequences
class TripleSequenceBuilder:
    """Token ids and token types of `[CLS] h [SEP] r [SEP] t [SEP]` for integer triples of a TokenizedKG."""

    def __init__(self, kg: TokenizedKG, max_length: int, two_token_types: bool = True):
        if max_length < 6:
            raise ValueError(f"cross-encoder max_length must be >= 6 (4 special tokens + text), got {max_length}")
        self.kg = kg
        self.max_length = int(max_length)
        self.two_token_types = bool(two_token_types)

    def build(self, h: int, r: int, t: int) -> tuple[list[int], list[int]]:
        sp = self.kg.special
        rel = list(self.kg.relation_text_ids[r])[: self.max_length - 6]  # cut only when the relation alone overflows
        head = self.kg.entity_text_ids[h]
        tail = self.kg.entity_text_ids[t]
        nh, nt = split_context_budget(len(head), len(tail), self.max_length - 4 - len(rel))
        ids = [sp.cls, *head[:nh], sp.sep, *rel, sp.sep, *tail[:nt], sp.sep]
        if self.two_token_types:
            types = [0] * (nh + 2) + [1] * (len(rel) + 1) + [0] * (nt + 1)
        else:
            types = [0] * len(ids)
        return ids, types

    def length(self, h: int, r: int, t: int) -> int:
        rel = min(len(self.kg.relation_text_ids[r]), self.max_length - 6)
        nh, nt = split_context_budget(len(self.kg.entity_text_ids[h]), len(self.kg.entity_text_ids[t]),
                              self.max_length - 4 - rel)
        return nh + nt + rel + 4

    def truncation_report(self, triples: np.ndarray) -> dict:
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        ent = np.array([len(x) for x in self.kg.entity_text_ids])
        rel = np.array([len(x) for x in self.kg.relation_text_ids])
        full = ent[triples[:, 0]] + rel[triples[:, 1]] + ent[triples[:, 2]] + 4 if len(triples) else np.zeros(0)
        return {"triples": int(len(triples)), "truncated": int((full > self.max_length).sum()),
                "max_tokens_untruncated": int(full.max()) if len(full) else 0, "max_length": self.max_length}


def collate_triples(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    return {
        "input_ids": pad_batch([p[0] for p in pairs], pad_id),
        "token_type_ids": pad_batch([p[1] for p in pairs], 0),
        "attention_mask": pad_batch([[1] * len(p[0]) for p in pairs], 0),
    }


# ------------------------------------------------------------------------------------------- negative sampling
def train_triple_set(kg: TokenizedKG) -> KnownAnswers:
    """Membership test over the train split only (dev/test never influence training)."""
    return KnownAnswers(kg.triples["train"], kg.num_entities, max(kg.num_relations, 1))


def corrupt_triples(positives: np.ndarray, known: KnownAnswers, num_entities: int, k: int,
                    rng: np.random.Generator, side: str = "per_positive", max_tries: int = 50) -> np.ndarray:
    """k corrupted copies of every positive: shape (n, k, 3), entry -1 where no valid corruption exists.

    side="per_positive": one coin per positive decides whether all its k negatives replace the head or the tail
    (KG-BERT's link-prediction sampler); side="per_negative": one coin per negative. The replacing entity is uniform
    over all entities, re-drawn while the corrupted triple is a known train triple or equals the positive; after
    `max_tries` random draws the remaining rows pick uniformly among the valid entities (exhaustive), and a row with
    none (every entity is a known answer) is marked -1 and dropped by the caller. So no negative is ever a known
    train triple."""
    pos = np.asarray(positives, dtype=np.int64).reshape(-1, 3)
    n = len(pos)
    if k <= 0 or n == 0:
        return np.zeros((n, max(k, 0), 3), dtype=np.int64)
    if side == "per_positive":
        corrupt_head = np.repeat(rng.random(n) < 0.5, k)
    elif side == "per_negative":
        corrupt_head = rng.random(n * k) < 0.5
    else:
        raise ValueError(f"negative side must be 'per_positive' or 'per_negative', got {side!r}")
    base = np.repeat(pos, k, axis=0)
    neg = base.copy()
    col = np.where(corrupt_head, 0, 2)
    rows = np.arange(n * k)

    def bad_rows(cand: np.ndarray) -> np.ndarray:
        return known.contains(cand[:, 0], cand[:, 1], cand[:, 2]) | (cand[rows, col] == base[rows, col])

    neg[rows, col] = rng.integers(0, num_entities, size=n * k)
    bad = bad_rows(neg)
    for _ in range(max_tries):
        if not bad.any():
            break
        idx = np.flatnonzero(bad)
        neg[idx, col[idx]] = rng.integers(0, num_entities, size=len(idx))
        bad = bad_rows(neg)
    for i in np.flatnonzero(bad):  # exhaustive fallback (dense graphs only)
        cand = np.repeat(base[i : i + 1], num_entities, axis=0)
        cand[:, col[i]] = np.arange(num_entities)
        ok = ~known.contains(cand[:, 0], cand[:, 1], cand[:, 2])
        ok[base[i, col[i]]] = False
        choices = np.flatnonzero(ok)
        if len(choices):
            neg[i, col[i]] = choices[rng.integers(0, len(choices))]
        else:
            neg[i] = -1
    return neg.reshape(n, k, 3)


def training_examples(positives: np.ndarray, known: KnownAnswers, num_entities: int, k: int,
                      rng: np.random.Generator, side: str = "per_positive") -> tuple[np.ndarray, np.ndarray]:
    """Positives (label 1) followed by their valid corruptions (label 0): (triples [m, 3], labels [m] float32)."""
    pos = np.asarray(positives, dtype=np.int64).reshape(-1, 3)
    neg = corrupt_triples(pos, known, num_entities, k, rng, side).reshape(-1, 3)
    neg = neg[neg[:, 0] >= 0]
    triples = np.concatenate([pos, neg], axis=0)
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)
    return triples, labels


# ----------------------------------------------------------------------------------------------------- model
class CrossEncoder(nn.Module):
    """Encoder + dropout + linear classifier on the pooled [CLS] vector -> one logit per triple.

    pooling="pooler": the encoder's pooler output (dense + tanh over [CLS], what BertForSequenceClassification uses)
    when the encoder has one, else the raw [CLS] state; pooling="cls": always the raw [CLS] hidden state."""

    def __init__(self, encoder: nn.Module, pooling: str = "pooler", dropout: float | None = None):
        super().__init__()
        if pooling not in ("pooler", "cls"):
            raise ValueError(f"cross-encoder pooling must be 'pooler' or 'cls', got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        hidden = int(encoder.config.hidden_size)
        p = getattr(encoder.config, "hidden_dropout_prob", 0.1) if dropout is None else dropout
        self.dropout = nn.Dropout(float(p))
        self.classifier = nn.Linear(hidden, 1)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    @property
    def two_token_types(self) -> bool:
        from lpbert_core.model.encoders import uses_token_types

        return uses_token_types(self.encoder)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.two_token_types:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(**kwargs)
        pooled = getattr(out, "pooler_output", None) if self.pooling == "pooler" else None
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        return self.classifier(self.dropout(pooled)).squeeze(-1)

    def classifier_state(self) -> dict[str, torch.Tensor]:
        return {f"classifier.{k}": v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()}


def save_cross_encoder(model: CrossEncoder, tokenizer, directory: str | Path, run_info: dict) -> None:
    """The run folder (lpbert_core.model.run_folder): the fine-tuned encoder, classifier.safetensors, lpbert_run.json."""
    info = dict(run_info)
    info.update({"scorer": "cross_encoder", "pooling": model.pooling})
    write_run_folder(directory, model.encoder, tokenizer, info, {CLASSIFIER_FILE: model.classifier_state()})


def load_cross_encoder(directory: str | Path, device: torch.device | str = "cpu") -> tuple[CrossEncoder, dict]:
    info = read_run_info(directory)
    if info.get("scorer") != "cross_encoder":
        raise ValueError(f"{directory}: not a cross-encoder run (scorer={info.get('scorer')!r})")
    model = CrossEncoder(read_encoder(directory), info.get("pooling", "pooler"))
    state = read_layer(directory, CLASSIFIER_FILE)
    model.classifier.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})
    model.to(device).eval()
    return model, info
