"""The two measurements that reuse a training step in eval mode (no dropout, no gradient): the measured shift of eq.
11's mapping from the first training batches' in-batch pairs (`shift: initial_mean | midpoint | balanced`), and the
dev in-batch loss (`selection: dev_loss`)."""

from __future__ import annotations

import numpy as np
import torch

from lpbert_core.finetune.calibration import measured_shift
from lpbert_core.finetune.finetune_loss import LossConfig
from lpbert_core.finetune.finetune_step import all_entity_columns, encode_batch, training_step
from lpbert_core.model.sequences import SequenceBuilder
from lpbert_core.model.siamese import SiameseModel, cosine_matrix


SHIFT_BATCHES = 8  # training batches whose in-batch pairs give `shift: initial_mean`


def measure_initial_shift(model: SiameseModel, builder: SequenceBuilder, rows: np.ndarray, batches: list,
                          device, precision: str, max_batches: int = SHIFT_BATCHES,
                          all_entities: bool = False, mode: str = "initial_mean",
                          loss_cfg: LossConfig | None = None, table: torch.Tensor | None = None) -> dict:
    """The measured shift of eq. 11's mapping (`shift: initial_mean | midpoint | balanced`, finetune/calibration.py)
    from the n x n in-batch (query, tail) pairs of the first `max_batches` training batches (`all_entities`: all n x E
    (query, entity) pairs, the pairs that mode trains on), the model in eval mode (no dropout, no gradient, no RNG
    drawn), before the first step. `initial_mean` = the mean cosine of all pairs; the record also holds the positive
    pairs' mean (the diagonal; all-entity: each row's tail column) and the spread (lpbert_run.json `initial_shift`).
    `table`: a frozen entity tower's fixed table of every entity, scored instead of encoding every entity."""
    was_training = model.training
    model.eval()
    cos_all, diag, off = [], [], []
    with torch.no_grad():
        for idx in batches[:max_batches]:
            batch_rows = rows[idx]
            n, tails = len(batch_rows), batch_rows[:, 2]
            num = builder.kg.num_entities
            # columns, how many are scored, and each row's positive column
            cands, width, pos = (all_entity_columns(num, n), num, tails) if all_entities else (tails, n, np.arange(n))
            fixed = all_entities and table is not None  # the columns are the table: encode the queries only
            qv, cv = encode_batch(model, builder, batch_rows, cands[:0] if fixed else cands, device, precision)
            cv = table if fixed else cv
            cos = cosine_matrix(qv, cv[:width]).cpu()
            cos_all.append(cos.flatten())
            diag.append(cos[torch.arange(n), torch.as_tensor(pos)])
            is_pos = torch.zeros_like(cos, dtype=torch.bool)
            is_pos[torch.arange(n), torch.as_tensor(pos)] = True
            off.append(cos[~is_pos])
    model.train(was_training)
    cos_all, diag, off = torch.cat(cos_all), torch.cat(diag), torch.cat(off)
    record = {"shift": float(cos_all.mean()), "std": float(cos_all.std()), "diagonal_mean": float(diag.mean()),
              "batches": min(max_batches, len(batches)), "pairs": int(cos_all.numel())}
    if mode != "initial_mean":
        record.update(mode=mode, initial_mean=record["shift"], negative_mean=float(off.mean()),
                      shift=measured_shift(mode, diag, off, record["shift"], loss_cfg))
    return record


def dev_in_batch_loss(model: SiameseModel, builder: SequenceBuilder, rows: np.ndarray, known, loss_cfg: LossConfig,
                      device, precision: str, in_batch: bool, batch_size: int, seed: int,
                      table: torch.Tensor | None = None) -> float:
    """`selection: dev_loss` (authors' code): the training loss on the dev rows, the same construction as a training
    step (n x n in-batch, or sampled negatives from a fixed generator), dropout off, no gradient, batches in file
    order (unshuffled); the mean over batches. Draws nothing from the training random streams. `table`: a frozen
    entity tower's fixed table (all-entity mode scores it)."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    losses = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            out = training_step(model, builder, rows[start:start + batch_size], known, loss_cfg, device, precision,
                                in_batch, rng, table)
            losses.append(float(out["loss"]))
    model.train(was_training)
    return float(np.mean(losses)) if losses else float("nan")
