"""BERT inputs of queries and candidates (neutral: fine-tuning, scoring, the candidate lists and prediction build the
same sequences).

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

from lpbert_core.graph.kg import TokenizedKG
from lpbert_core.graph.known_answers import augment_inverse
from lpbert_core.runtime.training import pad_batch


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


def collate_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(ids, token types) sequences -> padded input_ids / token_type_ids / attention_mask (dynamic padding)."""
    ids = pad_batch([p[0] for p in pairs], pad_id)
    types = pad_batch([p[1] for p in pairs], 0)
    mask = pad_batch([[1] * len(p[0]) for p in pairs], 0)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def split_context_budget(head_len: int, tail_len: int, budget: int) -> tuple[int, int]:
    """MRM: share `budget` tokens between head and tail text (PAPER_VS_CODE section 2): nothing is cut when both fit;
    a side shorter than half the budget is kept whole and the other gets the rest; otherwise half each."""
    budget = max(budget, 0)
    if head_len + tail_len <= budget:
        return head_len, tail_len
    if head_len < budget / 2:
        return head_len, budget - head_len
    if tail_len < budget / 2:
        return budget - tail_len, tail_len
    return budget // 2, budget - budget // 2
