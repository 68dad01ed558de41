"""One fine-tuning step of LP-BERT, split from the loop (lpbert_core.finetune.finetune_loop): the host half (`prepare_batch`:
negatives drawn, candidate list laid out, token tensors, labels and masks; run one batch ahead by the prefetch thread)
and the device half (`prepared_step`: encode, score, loss); the two measurements that reuse them in eval mode are in
step_measures.py.

Candidate layout of a batch of n rows (blocks of n, aligned with the rows, so each rank of a multi-GPU job encodes
the same slice of every block): in-batch mode: tails | hard negatives (k blocks) | the rows' own heads
(self-negatives); sampled mode ("BatchSample = N"): tails | one sampled negative per row | own heads; all-entity mode
(`all_entity_negatives`): entities 0 .. E-1 in whole blocks (`all_entity_columns`; the first E columns are scored),
or, with a frozen entity tower, no candidate at all: the columns are the fixed table of every entity's vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lpbert_core.runtime import distributed
from lpbert_core.finetune.extra_negatives import (Neighbourhood, column_labels, hard_negative_columns, pre_batch_valid,
                                                  sample_hard_negatives)
from lpbert_core.finetune.entity_bank import bank_known_pairs, bank_valid
from lpbert_core.finetune.finetune_data import label_matrix, sample_negative_tails, self_negative_mask
from lpbert_core.model.sequences import SequenceBuilder
from lpbert_core.model.token_table import TokenTable
from lpbert_core.finetune.finetune_loss import (LossConfig, ScoreColumns, add_self_column, batch_loss, column_loss, infonce_logits,
                            masked_loss, pair_loss)
from lpbert_core.model.siamese import SiameseModel, distance_matrix, pair_distance
from lpbert_core.runtime.training import autocast_context

def _device_batch(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _pinned(t: torch.Tensor, pin: bool) -> torch.Tensor:
    return t.pin_memory() if pin else t


@dataclass
class EncodingInputs:
    """The host-side tensors of one batch's encoding on this rank: query inputs for rows [lo, hi) of the global
    batch, the distinct candidate entities' inputs, and `inverse` (where each of this rank's candidates sits among
    the distinct ones). Built off the step (prefetch thread), pinned when the device is a GPU."""

    queries: dict
    cands: dict
    inverse: torch.Tensor
    lo: int
    hi: int
    blocks: int
    n: int


def token_table(builder: SequenceBuilder) -> TokenTable:
    """The builder's pre-tokenized id arrays, made once per builder (vectorised batch assembly)."""
    table = getattr(builder, "_token_table", None)
    if table is None:
        table = builder._token_table = TokenTable.from_builder(builder)
    return table


def encoding_inputs(builder: SequenceBuilder, batch_rows: np.ndarray, cand_entities: np.ndarray,
                    pin: bool = False) -> EncodingInputs:
    """The CPU half of `encode_batch` (no model, no RNG): this rank's slice of the rows and of every candidate block
    (one process: all of them), padded to token tensors."""
    n = len(batch_rows)
    blocks = np.asarray(cand_entities).reshape(-1, n) if n else np.zeros((1, 0), dtype=np.int64)
    lo, hi = distributed.shard_range(n) if distributed.world().size > 1 else (0, n)
    if hi <= lo:  # a short last batch can leave a rank without rows: it still takes part in the gathers
        return EncodingInputs({}, {}, torch.zeros(0, dtype=torch.long), lo, hi, len(blocks), n)
    table = token_table(builder)
    local_rows = batch_rows[lo:hi]
    local_cands = blocks[:, lo:hi].reshape(-1)
    queries = table.queries(local_rows[:, 0], local_rows[:, 1])
    cands, inverse = {}, torch.zeros(0, dtype=torch.long)
    if len(local_cands):  # none: the columns come from a fixed table (frozen entity tower)
        uniq, inverse = np.unique(local_cands, return_inverse=True)
        cands = table.candidates(uniq)
        inverse = torch.as_tensor(inverse.reshape(-1))
    if pin:
        queries = {k: v.pin_memory() for k, v in queries.items()}
        cands = {k: v.pin_memory() for k, v in cands.items()}
        inverse = inverse.pin_memory()
    return EncodingInputs(queries, cands, inverse, lo, hi, len(blocks), n)


def encode_inputs(model: SiameseModel, inputs: EncodingInputs, device, precision: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The device half of `encode_batch`: copy (non-blocking), encode, gather back the candidate list; in a
    multi-GPU job all ranks' vectors come back with gradient, each block whole, in global order."""
    dim = model.encoder.config.hidden_size
    if inputs.hi > inputs.lo:
        with autocast_context(device, precision):
            qv = model.encode_query(**_device_batch(inputs.queries, device))
            cv = model.encode_entity(**_device_batch(inputs.cands, device)) if inputs.cands else None
        qv = qv.float()
        cv = (torch.zeros(0, dim, device=device) if cv is None
              else cv.float()[inputs.inverse.to(device, non_blocking=True)])
    elif torch.is_grad_enabled() and distributed.world().size > 1:  # a rank without rows: through both towers
        pad = distributed.padding_row(device)
        with autocast_context(device, precision):
            qv, cv = model.encode_query(**pad)[:0].float(), model.encode_entity(**pad)[:0].float()
    else:
        qv = cv = torch.zeros(0, dim, device=device)
    if distributed.world().size == 1:
        return qv, cv
    counts = distributed.shard_sizes(inputs.n)
    if not inputs.blocks:  # no candidate block: the columns are a frozen entity tower's table
        return distributed.gather_rows(qv, counts), cv.new_zeros(0, qv.shape[-1])
    cv = cv.reshape(inputs.blocks, inputs.hi - inputs.lo, qv.shape[-1])
    return (distributed.gather_rows(qv, counts),
            torch.cat([distributed.gather_rows(cv[b], counts) for b in range(inputs.blocks)]))


def encode_batch(model: SiameseModel, builder: SequenceBuilder, batch_rows: np.ndarray, cand_entities: np.ndarray,
                 device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Query vectors [n, d] and candidate vectors [len(cand_entities), d]; each distinct candidate entity is
    encoded once (UMLS: ~60 distinct tails in a batch of 128) and gathered back. In a multi-GPU job each rank
    encodes only its contiguous slice [lo, hi) of the n rows and the same slice of every block of n candidates (the
    candidate list is made of blocks of n aligned with the rows: tails; sampled negatives; the rows' own heads, see
    training_step); all ranks' vectors come back with gradient."""
    return encode_inputs(model, encoding_inputs(builder, batch_rows, cand_entities), device, precision)


@dataclass
class PreparedBatch:
    """Everything one training step needs from the host, built ahead of the step (`prepare_batch`): the encoding
    inputs, the labels / known-answer masks, and the numpy RNG state right after this batch's draws (what a
    mid-epoch checkpoint stores: the prefetch thread may already have drawn for later batches)."""

    rows: np.ndarray
    inputs: EncodingInputs
    labels: torch.Tensor | None = None
    self_mask: torch.Tensor | None = None
    rng_state: dict | None = None
    hard: int = 0  # hard negatives per row (their k n candidates follow the n tails)
    hard_labels: torch.Tensor | None = None
    hard_valid: torch.Tensor | None = None
    bank_valid: torch.Tensor | None = None  # [n, B] for the pre-batch bank's B columns (None: no bank)
    all_entities: int = 0  # all-entity mode: E, the number of entity columns (labels [n, E]); 0 = off
    targets: torch.Tensor | None = None  # all-entity mode: each row's tail id = its target column
    entity_bank: tuple | None = None  # (rows, entities) of the known answers left out of the entity bank's columns
    table_columns: bool = False  # all-entity mode over the fixed table (frozen entity tower): no candidate encoded

    @property
    def extra_columns(self) -> bool:
        return self.hard > 0 or self.bank_valid is not None or self.entity_bank is not None


def prepare_batch(builder: SequenceBuilder, batch_rows: np.ndarray, known, loss_cfg: LossConfig, in_batch: bool,
                  rng: np.random.Generator | None = None, pin: bool = False, hood: Neighbourhood | None = None,
                  hard: int = 0, bank_ids: np.ndarray | None = None, entity_bank: bool = False,
                  entity_table: bool = False) -> PreparedBatch:
    """The host half of a training step: sampled negatives and hard negatives (the only RNG draws, numpy; called in
    batch order from one thread), candidate list, token tensors, label matrix / pair labels, self-negative mask,
    the hard-negative and pre-batch columns' labels / masks (`bank_ids`: the entities the bank holds, None: no
    bank). Candidate layout: tails (n) | hard negatives (k blocks of n) | the rows' own heads (self-negatives).
    `entity_table`: all-entity mode scores a fixed table of every entity (frozen entity tower): nothing to encode."""
    kg = builder.kg
    n = len(batch_rows)
    tails = batch_rows[:, 2]
    if in_batch and loss_cfg.all_entity_negatives and n:
        return _all_entity_batch(builder, batch_rows, known, rng, pin, entity_table)
    self_neg = bool(loss_cfg.self_negatives)
    labels = mask = None
    extra = {}
    if in_batch:
        cand_entities = tails
        labels = label_matrix(batch_rows, known)
        scored = np.broadcast_to(tails, (n, n))
        if hard > 0:
            drawn, _ = sample_hard_negatives(batch_rows, known, hood, hard, rng)
            hard_labels, hard_valid = hard_negative_columns(batch_rows, known, drawn)
            cand_entities = np.concatenate([tails, drawn.T.reshape(-1)])
            extra.update(hard=hard, hard_labels=_pinned(torch.from_numpy(hard_labels.astype(np.float32)), pin),
                         hard_valid=_pinned(torch.from_numpy(hard_valid), pin))
            scored = np.concatenate([scored, np.where(hard_valid, drawn.T.reshape(1, -1), -1)], 1)
        if bank_ids is not None:
            extra["bank_valid"] = _pinned(torch.from_numpy(pre_batch_valid(batch_rows, known, bank_ids)), pin)
        if entity_bank:
            extra["entity_bank"] = tuple(_pinned(torch.from_numpy(a), pin) for a in bank_known_pairs(batch_rows, known))
        if self_neg:
            mask = self_negative_mask(batch_rows, known, scored)
    else:
        negs = sample_negative_tails(batch_rows, known, kg.num_entities, rng)
        cand_entities = np.concatenate([tails, negs])
        neg_known = known.contains(batch_rows[:, 0], batch_rows[:, 1], negs)
        if self_neg:  # rows x [positive tail, sampled negative, own anchor]
            labels = torch.from_numpy(np.stack([np.ones(n), neg_known.astype(np.float64)], 1)).float()
            mask = self_negative_mask(batch_rows, known, np.stack([tails, negs], 1))
        else:
            labels = torch.from_numpy(np.concatenate([np.ones(n), neg_known.astype(np.float64)])).float()
    if self_neg:
        cand_entities = np.concatenate([cand_entities, batch_rows[:, 0]])
    state = rng.bit_generator.state if rng is not None else None
    return PreparedBatch(batch_rows, encoding_inputs(builder, batch_rows, cand_entities, pin),
                         _pinned(labels, pin),
                         None if mask is None else _pinned(torch.as_tensor(mask, dtype=torch.bool), pin), state,
                         **extra)


def all_entity_columns(num: int, n: int) -> np.ndarray:
    """Entities 0 .. num-1 as whole blocks of n, the candidate layout of the multi-GPU sharding. Each slot of the last
    block's padding repeats the entity one block up in the same column: it falls in the same rank's slice, which
    encodes each distinct entity once, so the ranks encode num entities in all. A graph smaller than the batch
    (num < n) is cycled through one block."""
    if num < n:
        return np.resize(np.arange(num, dtype=np.int64), n)
    columns = np.arange(-(-num // n) * n, dtype=np.int64)
    columns[num:] -= n
    return columns


def _all_entity_batch(builder: SequenceBuilder, batch_rows: np.ndarray, known, rng, pin: bool,
                      entity_table: bool = False) -> PreparedBatch:
    """All-entity mode: every entity a candidate column of every row, labelled by the row's known answers (its own
    tail always among them). No RNG is drawn. `entity_table`: the columns are a fixed table (frozen entity tower),
    so no candidate is encoded."""
    n, num = len(batch_rows), builder.kg.num_entities
    entities = np.arange(num, dtype=np.int64)
    labels = column_labels(batch_rows, known, entities)
    labels[np.arange(n), batch_rows[:, 2]] = True  # the row's own triple, whatever `known` holds (dev rows)
    cand_entities = np.zeros(0, dtype=np.int64) if entity_table else all_entity_columns(num, n)
    state = rng.bit_generator.state if rng is not None else None
    return PreparedBatch(batch_rows, encoding_inputs(builder, batch_rows, cand_entities, pin),
                         _pinned(torch.from_numpy(labels.astype(np.float32)), pin), None, state, all_entities=num,
                         targets=_pinned(torch.from_numpy(batch_rows[:, 2].astype(np.int64)), pin),
                         table_columns=entity_table)


def all_entity_loss(model: SiameseModel, prepared: PreparedBatch, qv: torch.Tensor, cv: torch.Tensor,
                    labels: torch.Tensor, loss_cfg: LossConfig, device, table: torch.Tensor | None = None) -> dict:
    """All-entity mode: the [n, E] score matrix against every entity (the encoded columns, or the fixed `table` of a
    frozen entity tower); InfoNCE's target is the row's tail, its other known answers leave the denominator; the
    paper loss takes all n x E pairs with their labels."""
    if prepared.table_columns and table is None:
        raise ValueError("this batch scores the fixed entity table (frozen entity tower), and none was given")
    entities = table if prepared.table_columns else cv[:prepared.all_entities]
    scores = model.score_matrix(qv, entities)
    dist = None if loss_cfg.loss == "infonce" else distance_matrix(qv, entities)
    valid = torch.ones_like(scores, dtype=torch.bool)
    return masked_loss(scores, dist, labels, valid, prepared.targets.to(device, non_blocking=True), loss_cfg,
                       model.prob_scale, model.prob_bias, model.inverse_temperature())


def extra_column_loss(model: SiameseModel, prepared: PreparedBatch, qv: torch.Tensor, cv: torch.Tensor,
                      labels: torch.Tensor, mask, loss_cfg: LossConfig, device, bank: torch.Tensor | None,
                      entity_bank: torch.Tensor | None = None, miner=None, precision: str = "fp32") -> dict:
    """In-batch loss with hard-negative, pre-batch and / or entity-bank columns: blocks tails | hard | self |
    pre-batch | entity bank (or, with a `miner`, the negatives it mined from the bank, encoded fresh), one loss
    (finetune_loss.column_loss). The self, pre-batch and entity-bank columns are negatives (label 0) where valid."""
    n = len(prepared.rows)
    k = prepared.hard
    dist_of = (lambda v: None) if loss_cfg.loss == "infonce" else (lambda v: distance_matrix(qv, v))  # noqa: E731
    tails = cv[:n]
    blocks = [ScoreColumns(model.score_matrix(qv, tails), dist_of(tails), labels,
                           torch.ones(n, n, dtype=torch.bool, device=device))]
    if k:
        hv = cv[n:n + k * n]
        blocks.append(ScoreColumns(model.score_matrix(qv, hv), dist_of(hv),
                                   prepared.hard_labels.to(device, non_blocking=True),
                                   prepared.hard_valid.to(device, non_blocking=True)))
    if mask is not None:
        anchors = cv[n + k * n:]
        own = model.score_pairs(qv, anchors).unsqueeze(1)
        own_dist = None if loss_cfg.loss == "infonce" else pair_distance(qv, anchors).unsqueeze(1)
        blocks.append(ScoreColumns(own, own_dist, labels.new_zeros(n, 1), mask.reshape(n, 1)))
    if bank is not None and prepared.bank_valid is not None:
        blocks.append(ScoreColumns(model.score_matrix(qv, bank), dist_of(bank), labels.new_zeros(n, bank.shape[0]),
                                   prepared.bank_valid.to(device, non_blocking=True), loss_cfg.pre_batch_weight))
    if entity_bank is not None and prepared.entity_bank is not None:
        rows, cols = prepared.entity_bank
        valid = bank_valid(entity_bank.shape[0], rows, cols, torch.as_tensor(prepared.rows[:, 2]), n, device)
        if miner is not None:  # the bank only chooses the columns; they are encoded fresh
            mv, mined_labels = miner.columns(model, qv, entity_bank, valid, device, precision)
            blocks.append(ScoreColumns(model.score_matrix(qv, mv), dist_of(mv), mined_labels,
                                       torch.ones_like(mined_labels, dtype=torch.bool)))
        else:
            blocks.append(ScoreColumns(model.score_matrix(qv, entity_bank), dist_of(entity_bank),
                                       labels.new_zeros(n, entity_bank.shape[0]), valid))
    return column_loss(blocks, loss_cfg, model.prob_scale, model.prob_bias, model.inverse_temperature())


def prepared_step(model: SiameseModel, prepared: PreparedBatch, loss_cfg: LossConfig, device, precision: str,
                  in_batch: bool, bank: torch.Tensor | None = None, entity_bank: torch.Tensor | None = None,
                  miner=None) -> dict:
    """The device half of a training step: encode, score, loss (no backward); no host synchronisation (but one
    with a `miner`: the mined entities' token ids). `bank`: the pre-batch vectors [B, d] (None: none).
    `entity_bank`: the entity bank's vectors [E, d], or a frozen entity tower's fixed table (all-entity mode's
    columns). With extra columns the result also holds `tail_vectors` (the batch's tail vectors, for the pre-batch bank)."""
    n = len(prepared.rows)
    qv, cv = encode_inputs(model, prepared.inputs, device, precision)
    labels = prepared.labels.to(device, non_blocking=True)
    mask = None if prepared.self_mask is None else prepared.self_mask.to(device, non_blocking=True)
    inv_t = model.inverse_temperature()
    if prepared.all_entities:
        return all_entity_loss(model, prepared, qv, cv, labels, loss_cfg, device, entity_bank)
    if in_batch and prepared.extra_columns:
        out = extra_column_loss(model, prepared, qv, cv, labels, mask, loss_cfg, device, bank, entity_bank, miner,
                                precision)
        out["tail_vectors"] = cv[:n].detach()
        return out
    anchors = None
    if mask is not None:
        cv, anchors = cv[:-n], cv[-n:]
    if in_batch:
        if mask is None:
            return batch_loss(qv, cv, labels, loss_cfg, model.prob_scale, model.prob_bias, scorer=model,
                              inv_t=inv_t)
        return batch_loss(qv, cv, labels, loss_cfg, model.prob_scale, model.prob_bias, anchors, mask, scorer=model,
                          inv_t=inv_t)
    if mask is not None:
        cos = torch.stack([model.score_pairs(qv, cv[:n]), model.score_pairs(qv, cv[n:])], 1)
        dist = torch.stack([pair_distance(qv, cv[:n]), pair_distance(qv, cv[n:])], 1)
        cos, dist, labels, valid = add_self_column(cos, dist, labels, qv, anchors, mask, model)
        target = torch.zeros(n, dtype=torch.long, device=device)
        return masked_loss(cos, dist, labels, valid, target, loss_cfg, model.prob_scale, model.prob_bias, inv_t)
    q2 = torch.cat([qv, qv])
    cos, dist = model.score_pairs(q2, cv), pair_distance(q2, cv)
    if loss_cfg.loss == "infonce":
        pair = torch.stack([cos[:n], cos[n:]], 1)
        is_target = torch.zeros_like(pair, dtype=torch.bool)
        is_target[:, 0] = True
        logits = infonce_logits(pair, is_target, loss_cfg, inv_t)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=device))
        zero = loss.new_zeros(())
        return {"loss": loss, "focal": zero, "distance": zero}
    return pair_loss(cos, dist, labels, loss_cfg, model.prob_scale, model.prob_bias)


class FinetuneStep(torch.nn.Module):
    """The device half of a training step (`prepared_step`: encode, score, loss) as one module's forward. A multi-GPU
    job wraps it in DistributedDataParallel (distributed.data_parallel): the loss uses parameters outside the encoder
    (the logit mapping, the learnable temperature, the pair layer), and DDP must see the whole loss to reduce their
    gradients with the encoder's."""

    def __init__(self, model: SiameseModel, miner=None):
        super().__init__()
        self.model = model
        self.miner = miner  # finetune.mined_negatives: mined_negatives.NegativeMiner (None: off)

    def forward(self, prepared: "PreparedBatch", loss_cfg: LossConfig, device, precision: str, in_batch: bool,
                bank: torch.Tensor | None = None, entity_bank: torch.Tensor | None = None) -> dict:
        return prepared_step(self.model, prepared, loss_cfg, device, precision, in_batch, bank, entity_bank,
                             self.miner)


def training_step(model: SiameseModel, builder: SequenceBuilder, batch_rows: np.ndarray, known, loss_cfg: LossConfig,
                  device, precision: str, in_batch: bool, rng: np.random.Generator | None = None,
                  table: torch.Tensor | None = None) -> dict:
    """Forward pass + loss of one batch (no backward): `prepare_batch` then `prepared_step`. In-batch: 2n
    encodings, n x n scores. Sampled mode: queries, positive tails and one sampled negative tail each, 2n scored
    pairs. `loss_cfg.self_negatives`: the rows' head entities are encoded as extra candidates in the same pass (an
    entity already among the tails is encoded once) and each row gets one more negative, its own anchor
    (`self_negative_mask` says where it counts). `model` is the SiameseModel or the step module a multi-GPU job
    trains through (FinetuneStep, in its data_parallel wrapper). `table`: a frozen entity tower's fixed table of
    every entity (all-entity mode scores it instead of encoding every entity)."""
    prepared = prepare_batch(builder, batch_rows, known, loss_cfg, in_batch, rng, entity_table=table is not None)
    if isinstance(distributed.unwrap(model), FinetuneStep):
        return model(prepared, loss_cfg, device, precision, in_batch, entity_bank=table)
    return prepared_step(model, prepared, loss_cfg, device, precision, in_batch, entity_bank=table)


