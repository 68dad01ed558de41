"""Pre-tokenized id arrays and vectorised batch assembly (issue #26 item 1): the same query and candidate sequences as
`SequenceBuilder.query` / `.candidate` + `collate_pairs` (bit-identical tensors, tests/test_token_table.py), built by
numpy gathers over index grids instead of a Python loop per row, so a batch of 64-256 rows takes well under a
millisecond of host time.

Arrays: every entity's text ids cut to the candidate budget (max_length - 2) and to the query head budget, padded into
one [E, W] int64 matrix with its lengths; every relation (original 0..R-1, inverse R..2R-1) likewise, cut as the
builder cuts it (max_length - 4, at least 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lpbert_core.model.sequences import SequenceBuilder


def _padded(sequences, width: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([min(len(s), width) for s in sequences], dtype=np.int64)
    out = np.zeros((len(sequences), max(width, 1)), dtype=np.int64)
    for i, s in enumerate(sequences):  # once per table, not per batch
        out[i, :lengths[i]] = s[:lengths[i]]
    return out, lengths


@dataclass
class TokenTable:
    """The id arrays of one graph at one max length (`from_builder`)."""

    entity: np.ndarray  # [E, W] entity text ids (W = the longest text any sequence may keep)
    entity_len: np.ndarray  # [E]
    relation: np.ndarray  # [2R, V] relation text ids, original then inverse, cut as the builder cuts them
    relation_len: np.ndarray  # [2R]
    max_query: int
    max_candidate: int
    cls: int
    sep: int
    pad: int

    @classmethod
    def from_builder(cls, builder: SequenceBuilder) -> "TokenTable":
        kg = builder.kg
        L = builder.max_query_length
        rels = [builder.relation_tokens(r)[: max(L - 4, 1)] for r in range(2 * kg.num_relations)]
        width = max(builder.max_candidate_length - 2, L - 3, 1)
        entity, entity_len = _padded(kg.entity_text_ids, width)
        relation, relation_len = _padded(rels, max((len(r) for r in rels), default=1))
        sp = kg.special
        return cls(entity, entity_len, relation, relation_len, L, builder.max_candidate_length, sp.cls, sp.sep,
                   sp.pad)

    def queries(self, heads: np.ndarray, relations: np.ndarray) -> dict[str, torch.Tensor]:
        """[CLS] head [SEP] relation [SEP], token types 0 | 1, padded to the batch's longest (collate_pairs)."""
        h, r = np.asarray(heads, dtype=np.int64), np.asarray(relations, dtype=np.int64)
        rl = self.relation_len[r]
        hl = np.minimum(self.entity_len[h], np.maximum(self.max_query - 3 - rl, 0))
        total = hl + rl + 3
        n, width = len(h), int(total.max()) if len(h) else 0
        j = np.arange(width)[None, :]
        head_pos, rel_pos = j - 1, j - hl[:, None] - 2
        in_head = (head_pos >= 0) & (head_pos < hl[:, None])
        in_rel = (rel_pos >= 0) & (rel_pos < rl[:, None])
        ids = np.full((n, width), self.pad, dtype=np.int64)
        ids[:, :1] = self.cls
        ids = np.where(in_head, self.entity[h[:, None], np.clip(head_pos, 0, self.entity.shape[1] - 1)], ids)
        ids = np.where(in_rel, self.relation[r[:, None], np.clip(rel_pos, 0, self.relation.shape[1] - 1)], ids)
        ids = np.where((j == hl[:, None] + 1) | (j == total[:, None] - 1), self.sep, ids)
        real = j < total[:, None]
        types = (real & (j >= hl[:, None] + 2)).astype(np.int64)
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "attention_mask": torch.from_numpy(real.astype(np.int64))}

    def candidates(self, entities: np.ndarray) -> dict[str, torch.Tensor]:
        """[CLS] entity text [SEP], token types 0, padded to the batch's longest."""
        e = np.asarray(entities, dtype=np.int64)
        body = np.minimum(self.entity_len[e], self.max_candidate - 2)
        total = body + 2
        n, width = len(e), int(total.max()) if len(e) else 0
        j = np.arange(width)[None, :]
        pos = j - 1
        in_body = (pos >= 0) & (pos < body[:, None])
        ids = np.full((n, width), self.pad, dtype=np.int64)
        ids[:, :1] = self.cls
        ids = np.where(in_body, self.entity[e[:, None], np.clip(pos, 0, self.entity.shape[1] - 1)], ids)
        ids = np.where(j == total[:, None] - 1, self.sep, ids)
        real = j < total[:, None]
        # numpy, not torch.zeros: a torch fill may wake its intra-op thread pool (ms on a busy host)
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(np.zeros((n, width), np.int64)),
                "attention_mask": torch.from_numpy(real.astype(np.int64))}
