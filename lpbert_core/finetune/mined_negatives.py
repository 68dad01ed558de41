"""Negatives mined from the entity bank (lpbert-plus switch `finetune.mined_negatives: k`; ours, after ANCE): the
bank (finetune/entity_bank.py: no-gradient vectors of all entities, refreshed every `entity_bank` steps) only
CHOOSES each row's k hardest negatives; they are then encoded fresh, with gradient, and scored as extra columns.

Why: the bank's vectors as loss columns collapsed on the WN18RR proxy (docs/proxy.md: 40,943 stale columns are
escaped by moving every current vector away from them). Here no stale vector enters the loss: a mined column is the
current encoder's vector of an entity the (slightly older) bank ranked high for the row's query.

- Mining: each row's current query vector (detached) scored by cosine against the bank; the row's known answers
  (its own tail among them; the symmetric closure when on) and the batch's tails (already columns) are left out; the
  top k per row are its mined entities. The query's own anchor is not left out: where it outranks the answer it is
  mined, the self-negative chosen by the model itself.
- Columns: the k n mined entities, block-major (column b n + j = the b-th entity mined for row j, as hard negatives
  are laid out), each a column of every row: a negative, or a positive where the entity is a known answer of that
  other row (as an in-batch tail that answers a row).
- Cost: k n extra candidate encodings with gradient a step (k = 1: half a batch's encodings more) and one [n, E]
  matmul; the bank's refresh as for the entity bank.
- One process only: a multi-GPU job would encode each rank's mined entities on every rank (the finetune loop refuses).
"""

from __future__ import annotations

import numpy as np
import torch

from lpbert_core.model.siamese import cosine_matrix
from lpbert_core.model.token_table import TokenTable
from lpbert_core.runtime.training import autocast_context


class NegativeMiner:
    """k mined negatives a row: `mine` picks them from the bank, `columns` encodes them and labels them."""

    def __init__(self, table: TokenTable, k: int):
        self.table, self.k = table, int(k)

    def mine(self, qv: torch.Tensor, bank: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[n, k] entity ids: each row's k highest-cosine bank entities among its `valid` columns ([n, E] bool,
        entity_bank.bank_valid: not a known answer of the row, not a batch tail)."""
        with torch.no_grad():
            scores = cosine_matrix(qv.detach().float(), bank.float())
            scores = scores.masked_fill(~valid, float("-inf"))
            return scores.topk(min(self.k, scores.shape[1]), dim=1).indices

    def columns(self, model, qv: torch.Tensor, bank: torch.Tensor, valid: torch.Tensor, device, precision: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors [k n, d] with gradient, labels [n, k n] float) of the entities mined among the `valid` bank
        columns ([n, E], entity_bank.bank_valid)."""
        entities = self.mine(qv, bank, valid).T.reshape(-1)  # block-major, as hard negatives
        ids = entities.cpu().numpy()  # the step's one host round trip: the token ids of the mined entities
        uniq, inverse = np.unique(ids, return_inverse=True)
        inputs = {key: value.to(device, non_blocking=True) for key, value in self.table.candidates(uniq).items()}
        with autocast_context(device, precision):
            vectors = model.encode_entity(**inputs)
        vectors = vectors.float()[torch.as_tensor(inverse.reshape(-1), device=device)]
        labels = (~valid[:, entities]).float()  # a mined entity is never a batch tail: not valid = a known answer
        return vectors, labels
