"""LP-BERT knowledge fine-tuning loop: siamese encoder, n x n in-batch negatives (or one sampled negative per
positive, "BatchSample = N"), focal + distance loss, AdamW with two learning rates and warmup, autocast on GPU,
early stopping on dev Hits@10 from the fast scorer, resumable from a checkpoint kept outside the rule's outputs.

The authors'-code reading as switches (each alone, defaults = the paper's reading; configs/authors-code.yaml sets all):
`scorer` (cosine | pair_linear, siamese.py), `label_splits` ([train] | + dev / test: in-batch labels from held-out
triples, a test leak every output states), `selection` (dev_hits10 | dev_loss: the dev in-batch loss, the same
n x n construction as training, dropout off, unshuffled dev batches), `adam_betas` / `adam_eps`, and the dev
evaluation's head ranking, which follows `score.head_ranking` (argument `head_ranking`).

Training batches (`batch_order`): `random` (default; the paper's standard BERT fine-tuning) or `length` (bucketed by
query length: less padding, but it changes which in-batch negatives meet). Dev/test scoring always encodes in
length-sorted batches (an efficiency choice only: it does not change any score).

Determinism (CPU): every epoch's batch order, dropout and negative draws derive from `epoch_seed(seed, epoch)`;
a checkpoint written mid-epoch stores the torch and numpy RNG states and the position in the epoch, so a killed run
resumes to the same result as an uninterrupted one.

The GPU is fed (issue #11): each step's host work (`prepare_batch`: sampled negatives, token tensors, labels) runs
one batch ahead in a background thread (`BatchFeed`, in batch order, so the numpy draws are the same draws in the
same order), pinned on CUDA and copied with non_blocking; the loss is summed on the device and read to the host only
for the progress line (every LOG_EVERY steps), a checkpoint and the epoch's end (benchmarks/bench_step_profile.py).

Several GPUs for one run (`gpus_per_job: K`, lpbert_core.distributed): `batch_size` stays the GLOBAL batch. Every rank
draws the same global batch (same seed, same sampled negatives) and encodes only its slice of the rows; all ranks'
query and candidate vectors are gathered with gradient, and every rank computes the loss on the full in-batch matrix
of the global batch (labels: known answers among the global batch's rows). The gathered backward sums each rank's
copy of the loss into the rows it owns and the gradients are averaged over ranks (training.optimizer_step), so the
update is the update of one device with the global batch (tests/test_distributed.py; dropout masks differ: each rank
draws its own, rank 0 the one-process stream). Only rank 0 writes checkpoints and outputs.
"""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import distributed
from .atomic import atomic_dir, write_log_csv
from .finetune_data import (SequenceBuilder, collate_pairs, known_answers, label_leak, label_matrix,
                            sample_negative_tails, self_negative_mask, split_rows, training_triples)
from .extra_negatives import (Neighbourhood, PreBatchBank, bank_entities, hard_negative_columns, pre_batch_valid,
                              sample_hard_negatives)
from .finetune_loss import (LossConfig, ScoreColumns, add_self_column, batch_loss, column_loss, infonce_logits,
                            masked_loss, pair_loss)
from .kg import TokenizedKG
from .scoring import SCORE_DEFAULTS, evaluate_split
from .siamese import SiameseModel, cosine_matrix, distance_matrix, pair_distance, save_run_model
from .training import (BATCH_ORDERS, autocast_context, build_optimizer, build_scheduler, epoch_seed, needs_grad_scaler,
                       optimizer_step, resume_checkpoint, save_checkpoint, set_seed, training_batches)

DEFAULTS = {
    "pooling": "mean",
    "max_length": 128,
    "batch_size": 64,
    "epochs": 7,
    "lr_encoder": 5e-5,
    "lr_new": 1e-3,
    "weight_decay": 0.01,
    "warmup_fraction": 0.05,
    "early_stop_patience": 1,
    "inverse_augmentation": True,
    "in_batch_negatives": True,
    "batch_order": "random",
    "self_negatives": False,
    "train_subsample": None,
    "dev_subsample": None,
    "dev_eval": True,
    "eval_batch_size": 256,
    "score_chunk_size": 1024,
    "precision": "auto",
    "max_grad_norm": None,
    "checkpoint_every_steps": 0,
    "keep_checkpoint": False,
    "seed": 42,
    "scorer": "cosine",
    "label_splits": ["train"],
    "selection": "dev_hits10",
    "adam_betas": [0.9, 0.999],
    "adam_eps": 1e-8,
    "infonce_learnable_temperature": False,
    "hard_negatives": 0,
    "pre_batch": 0,
}
SELECTIONS = ("dev_hits10", "dev_loss")


def _cfg(cfg: dict) -> dict:
    out = dict(DEFAULTS)
    out.update({k: v for k, v in cfg.items() if v is not None or k in ("train_subsample", "dev_subsample")})
    return out


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


def encoding_inputs(builder: SequenceBuilder, batch_rows: np.ndarray, cand_entities: np.ndarray,
                    pin: bool = False) -> EncodingInputs:
    """The CPU half of `encode_batch` (no model, no RNG): this rank's slice of the rows and of every candidate block
    (one process: all of them), padded to token tensors."""
    n = len(batch_rows)
    blocks = np.asarray(cand_entities).reshape(-1, n) if n else np.zeros((1, 0), dtype=np.int64)
    lo, hi = distributed.shard_range(n) if distributed.world().size > 1 else (0, n)
    if hi <= lo:  # a short last batch can leave a rank without rows: it still takes part in the gathers
        return EncodingInputs({}, {}, torch.zeros(0, dtype=torch.long), lo, hi, len(blocks), n)
    pad = builder.kg.special.pad
    local_rows = batch_rows[lo:hi]
    local_cands = blocks[:, lo:hi].reshape(-1)
    queries = collate_pairs([builder.query(int(h), int(r)) for h, r, _ in local_rows], pad)
    uniq, inverse = np.unique(local_cands, return_inverse=True)
    cands = collate_pairs([(s, [0] * len(s)) for s in (builder.candidate(int(e)) for e in uniq)], pad)
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
    if inputs.hi > inputs.lo:
        with autocast_context(device, precision):
            qv = model.encode(**_device_batch(inputs.queries, device))
            cv = model.encode(**_device_batch(inputs.cands, device))
        qv, cv = qv.float(), cv.float()[inputs.inverse.to(device, non_blocking=True)]
    else:
        qv = cv = torch.zeros(0, model.encoder.config.hidden_size, device=device)
    if distributed.world().size == 1:
        return qv, cv
    counts = distributed.shard_sizes(inputs.n)
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

    @property
    def extra_columns(self) -> bool:
        return self.hard > 0 or self.bank_valid is not None


def prepare_batch(builder: SequenceBuilder, batch_rows: np.ndarray, known, loss_cfg: LossConfig, in_batch: bool,
                  rng: np.random.Generator | None = None, pin: bool = False, hood: Neighbourhood | None = None,
                  hard: int = 0, bank_ids: np.ndarray | None = None) -> PreparedBatch:
    """The host half of a training step: sampled negatives and hard negatives (the only RNG draws, numpy; called in
    batch order from one thread), candidate list, token tensors, label matrix / pair labels, self-negative mask,
    the hard-negative and pre-batch columns' labels / masks (`bank_ids`: the entities the bank holds, None: no
    bank). Candidate layout: tails (n) | hard negatives (k blocks of n) | the rows' own heads (self-negatives)."""
    kg = builder.kg
    n = len(batch_rows)
    tails = batch_rows[:, 2]
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


def extra_column_loss(model: SiameseModel, prepared: PreparedBatch, qv: torch.Tensor, cv: torch.Tensor,
                      labels: torch.Tensor, mask, loss_cfg: LossConfig, device, bank: torch.Tensor | None) -> dict:
    """In-batch loss with hard-negative and / or pre-batch columns: blocks tails | hard | self | bank, one loss
    (finetune_loss.column_loss). The self column and the pre-batch columns are negatives (label 0) where valid."""
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
    return column_loss(blocks, loss_cfg, model.prob_scale, model.prob_bias, model.inverse_temperature())


def prepared_step(model: SiameseModel, prepared: PreparedBatch, loss_cfg: LossConfig, device, precision: str,
                  in_batch: bool, bank: torch.Tensor | None = None) -> dict:
    """The device half of a training step: encode, score, loss (no backward); no host synchronisation. `bank`: the
    pre-batch vectors [B, d] (None: none). With extra columns the result also holds `tail_vectors` (the batch's
    tail vectors, for the pre-batch bank)."""
    n = len(prepared.rows)
    qv, cv = encode_inputs(model, prepared.inputs, device, precision)
    labels = prepared.labels.to(device, non_blocking=True)
    mask = None if prepared.self_mask is None else prepared.self_mask.to(device, non_blocking=True)
    inv_t = model.inverse_temperature()
    if in_batch and prepared.extra_columns:
        out = extra_column_loss(model, prepared, qv, cv, labels, mask, loss_cfg, device, bank)
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


def training_step(model: SiameseModel, builder: SequenceBuilder, batch_rows: np.ndarray, known, loss_cfg: LossConfig,
                  device, precision: str, in_batch: bool, rng: np.random.Generator | None = None) -> dict:
    """Forward pass + loss of one batch (no backward): `prepare_batch` then `prepared_step`. In-batch: 2n
    encodings, n x n scores. Sampled mode: queries, positive tails and one sampled negative tail each, 2n scored
    pairs. `loss_cfg.self_negatives`: the rows' head entities are encoded as extra candidates in the same pass (an
    entity already among the tails is encoded once) and each row gets one more negative, its own anchor
    (`self_negative_mask` says where it counts)."""
    return prepared_step(model, prepare_batch(builder, batch_rows, known, loss_cfg, in_batch, rng), loss_cfg,
                         device, precision, in_batch)


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class BatchFeed:
    """`make(item)` for each item, in order. depth 0: inline, on demand. depth >= 1: one background thread makes
    them in order, at most `depth` finished ones waiting, while the caller runs the current step (the host work
    overlaps the device's; every RNG draw stays in one thread, in batch order). `wait_seconds`: how long the
    caller waited for batches (the share of host preparation the prefetch did not hide)."""

    def __init__(self, make: Callable, items, depth: int = 1):
        self._make, self._items, self.depth = make, list(items), int(depth)
        self.wait_seconds = 0.0
        self._stop = threading.Event()
        self._thread = None
        if self.depth > 0 and self._items:
            self._queue = queue.Queue(maxsize=self.depth)
            self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
            self._thread.start()

    def _put(self, obj) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set() or not self._put(self._make(item)):
                    return
        except BaseException as exc:  # re-raised in the consumer
            self._put(_Failure(exc))

    def __iter__(self):
        for item in self._items:
            t0 = time.perf_counter()
            if self._thread is None:
                out = self._make(item)
            else:
                out = self._queue.get()
                if isinstance(out, _Failure):
                    raise out.exc
            self.wait_seconds += time.perf_counter() - t0
            yield out

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


LOG_EVERY = 20  # training steps between progress lines (the only mid-epoch reads of the loss besides checkpoints)
SHIFT_BATCHES = 8  # training batches whose in-batch pairs give `shift: initial_mean`


def measure_initial_shift(model: SiameseModel, builder: SequenceBuilder, rows: np.ndarray, batches: list,
                          device, precision: str, max_batches: int = SHIFT_BATCHES) -> dict:
    """`shift: initial_mean`: the mean cosine of all n x n in-batch (query, tail) pairs of the first `max_batches`
    training batches, the model in eval mode (no dropout, no gradient, no RNG drawn), before the first step. Also
    the positive-diagonal mean and the spread, for the record (lpbert_run.json `initial_shift`)."""
    was_training = model.training
    model.eval()
    cos_all, diag = [], []
    with torch.no_grad():
        for idx in batches[:max_batches]:
            batch_rows = rows[idx]
            qv, cv = encode_batch(model, builder, batch_rows, batch_rows[:, 2], device, precision)
            cos = cosine_matrix(qv, cv)
            cos_all.append(cos.flatten().cpu())
            diag.append(cos.diagonal().cpu())
    model.train(was_training)
    cos_all, diag = torch.cat(cos_all), torch.cat(diag)
    return {"shift": float(cos_all.mean()), "std": float(cos_all.std()), "diagonal_mean": float(diag.mean()),
            "batches": min(max_batches, len(batches)), "pairs": int(cos_all.numel())}


def dev_in_batch_loss(model: SiameseModel, builder: SequenceBuilder, rows: np.ndarray, known, loss_cfg: LossConfig,
                      device, precision: str, in_batch: bool, batch_size: int, seed: int) -> float:
    """`selection: dev_loss` (authors' code): the training loss on the dev rows, the same construction as a training
    step (n x n in-batch, or sampled negatives from a fixed generator), dropout off, no gradient, batches in file
    order (unshuffled); the mean over batches. Draws nothing from the training random streams."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    losses = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            out = training_step(model, builder, rows[start:start + batch_size], known, loss_cfg, device, precision,
                                in_batch, rng)
            losses.append(float(out["loss"]))
    model.train(was_training)
    return float(np.mean(losses)) if losses else float("nan")


def _torch_rng_state() -> dict:
    state = {"cpu": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _store_rng(progress: dict, numpy_state: dict) -> None:
    """The RNG states a mid-epoch checkpoint needs: numpy's (the same on every rank; the state right after the last
    finished step's draws, recorded by prepare_batch: the prefetch thread may have drawn further) and torch's
    (dropout; one per rank in a multi-GPU job, each rank restores its own)."""
    progress["torch_rng"] = _torch_rng_state()
    progress["numpy_rng"] = numpy_state
    if distributed.world().size > 1:
        progress["torch_rng_ranks"] = distributed.all_gather_object(progress["torch_rng"])


def _rank_torch_rng(progress: dict) -> dict:
    ranks = progress.get("torch_rng_ranks")
    return ranks[distributed.world().rank] if ranks else progress["torch_rng"]


def _set_torch_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["cpu"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def finetune(kg: TokenizedKG, encoder, tokenizer, cfg: dict, model_dir: str | Path, log_csv: str | Path,
             checkpoint_dir: str | Path, device: torch.device, run_info: dict | None = None,
             log: Callable[[str], None] = print, stop_after_steps: int | None = None,
             head_ranking: str | None = None, prefetch: int = 1) -> dict:
    """Fine-tune `encoder` (a transformers model, already loaded) and write the best model (by dev Hits@10, or the
    dev loss) to `model_dir` and the per-epoch log to `log_csv`. `stop_after_steps` simulates a kill (tests).
    `head_ranking`: how the per-epoch dev evaluation ranks head queries (`score.head_ranking`; None = its default).
    `prefetch`: batches prepared ahead of the step by a background thread (0: inline); pinned on CUDA. Not a
    setting of the run (no effect on results: the same batches and RNG draws in the same order)."""
    cfg = _cfg(cfg)
    loss_cfg = LossConfig.from_dict(cfg)
    head_ranking = head_ranking or SCORE_DEFAULTS["head_ranking"]
    selection = cfg["selection"]
    if selection not in SELECTIONS:
        raise ValueError(f"finetune.selection must be one of {SELECTIONS}, got {selection!r}")
    label_splits = tuple(cfg["label_splits"])
    leak = label_leak(label_splits)
    if cfg["scorer"] != "cosine" and loss_cfg.distance == "per_pair_normalized":
        raise ValueError("finetune.distance per_pair_normalized is computed from the cosine; with scorer "
                         f"{cfg['scorer']!r} use per_pair, batch_sum or none")
    seed = int(cfg["seed"])
    set_seed(seed)
    checkpoint_dir = Path(checkpoint_dir)
    in_batch = bool(cfg["in_batch_negatives"])
    precision = cfg["precision"]
    max_len = int(cfg["max_length"])
    builder = SequenceBuilder(kg, max_len, max_len)

    init_scale = 1.0 / loss_cfg.temperature
    measured_shift = isinstance(loss_cfg.shift, str)  # `initial_mean`: measured below, before the first step
    model = SiameseModel(encoder, cfg["pooling"], init_scale,
                         0.0 if measured_shift else -loss_cfg.shift * init_scale).to(device)
    model.set_scorer(cfg["scorer"])  # pair_linear: a new layer (default init); cosine: nothing
    if cfg["infonce_learnable_temperature"]:
        if loss_cfg.loss != "infonce":
            raise ValueError("finetune.infonce_learnable_temperature needs loss: infonce")
        model.set_learnable_temperature(loss_cfg.infonce_temperature)
    hard_k, pre_batch = int(cfg["hard_negatives"] or 0), int(cfg["pre_batch"] or 0)
    if (hard_k or pre_batch) and not in_batch:
        raise ValueError("finetune.hard_negatives / pre_batch add columns to the in-batch matrix: they need "
                         "in_batch_negatives: true")
    if hard_k < 0 or pre_batch < 0:
        raise ValueError("finetune.hard_negatives and finetune.pre_batch are counts >= 0")
    rows = training_triples(kg, cfg["inverse_augmentation"], cfg["train_subsample"], seed)
    known = known_answers(kg, label_splits, cfg["inverse_augmentation"])
    hood = Neighbourhood(kg.triples["train"], kg.num_entities) if hard_k else None
    bank = PreBatchBank(pre_batch)
    if leak:
        log(f"LEAKY labels: {leak}")
    # dev loss: the dev rows as training sees them, labelled with label_splits + dev (dev may inform selection)
    dev_rows = split_rows(kg, "dev", cfg["inverse_augmentation"], cfg["dev_subsample"], seed)
    dev_known = known_answers(kg, tuple(s for s in ("train", "dev", "test") if s in label_splits or s == "dev"),
                              cfg["inverse_augmentation"])
    q_lengths = [builder.query_length(int(h), int(r)) for h, r, _ in rows]
    bs = int(cfg["batch_size"])
    batch_order = cfg["batch_order"]
    if batch_order not in BATCH_ORDERS:
        raise ValueError(f"finetune.batch_order must be one of {BATCH_ORDERS}, got {batch_order!r}")
    steps_per_epoch = len(training_batches(q_lengths, bs, batch_order, seed=0))
    epochs = int(cfg["epochs"])
    total_steps = steps_per_epoch * epochs
    optimizer = build_optimizer(model, "encoder.", float(cfg["lr_encoder"]), float(cfg["lr_new"]),
                                float(cfg["weight_decay"]), betas=tuple(float(b) for b in cfg["adam_betas"]),
                                eps=float(cfg["adam_eps"]))
    scheduler = build_scheduler(optimizer, total_steps, float(cfg["warmup_fraction"]))
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, precision) else None

    # a checkpoint is resumed only when it was written by the same settings, data and initial weights (and the same
    # number of ranks: a multi-GPU checkpoint holds one dropout stream per rank)
    world = distributed.world()
    fingerprint = hashlib.sha256(json.dumps(
        {"cfg": cfg, "rows": int(len(rows)), "rows_sum": int(rows.sum()), "entities": kg.num_entities,
         "init": (run_info or {}).get("initial_weights"), "head_ranking": head_ranking,
         **({"world_size": world.size} if world.size > 1 else {})},
        sort_keys=True, default=str).encode()).hexdigest()
    progress = distributed.main_first(lambda: resume_checkpoint(  # rank 0 discards a stale one before others read
        checkpoint_dir / "last", fingerprint, model, optimizer, scheduler, device, scaler, discard=checkpoint_dir,
        warn=log))
    if progress is None:
        progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_hits10": -1.0, "best_epoch": -1,
                    "bad_epochs": 0, "log": [], "stopped": False, "epoch_loss": [0.0, 0.0, 0.0, 0],
                    "fingerprint": fingerprint, "attempt": 1}
        log(f"fine-tuning from scratch: {len(rows)} training rows, {steps_per_epoch} steps/epoch, {epochs} epochs")
    else:
        log(f"resumed from {checkpoint_dir / 'last'} at epoch {progress['epoch']} step {progress['step_in_epoch']}")
    if measured_shift:
        if "initial_shift" not in progress:
            progress["initial_shift"] = measure_initial_shift(
                model, builder, rows, training_batches(q_lengths, bs, batch_order, epoch_seed(seed, 0)), device,
                precision)
            with torch.no_grad():  # the learnable mapping starts at the measured shift too (a resume restores it)
                model.prob_bias.fill_(-progress["initial_shift"]["shift"] * init_scale)
        loss_cfg.shift = progress["initial_shift"]["shift"]
        log(f"shift initial_mean: {json.dumps(progress['initial_shift'])}")
    log(f"truncation at max_length={max_len}: {json.dumps(builder.truncation_report())}")

    def save_last(extra_rng=None):
        if distributed.is_main():  # every rank holds the same weights and progress
            save_checkpoint(checkpoint_dir / "last", model, optimizer, scheduler, progress, scaler)

    steps_this_call = 0
    while progress["epoch"] < epochs and not progress["stopped"]:
        epoch = progress["epoch"]
        es = epoch_seed(seed, epoch)
        # rebuilt from (lengths, batch size, order, epoch seed) alone: a run resumed at step_in_epoch continues the
        # same list
        batches = training_batches(q_lengths, bs, batch_order, es)
        if progress["step_in_epoch"] == 0:
            torch.manual_seed(distributed.rank_seed(es))  # dropout: one stream per rank (rank 0: the usual one)
            rng = np.random.default_rng(es)
            progress["epoch_loss"] = [0.0, 0.0, 0.0, 0]
            progress["epoch_start"] = time.time()
            bank.clear()  # pre-batch negatives come from this epoch's batches only
        else:
            _set_torch_rng_state(_rank_torch_rng(progress))
            rng = np.random.default_rng()
            rng.bit_generator.state = progress["numpy_rng"]
            bank.load(progress.get("pre_batch_bank"), device)
        model.train()
        t_epoch = time.perf_counter()
        first_step = progress["step_in_epoch"]
        el = progress["epoch_loss"]
        # the epoch's loss sums stay on the device (float64: the same sums as adding float(loss) each step) and are
        # read back only when logged, checkpointed and at the epoch's end: no per-step host synchronisation
        loss_sum = None if device.type == "mps" else torch.tensor(el[:3], dtype=torch.float64, device=device)
        last_state = progress.get("numpy_rng") if first_step else rng.bit_generator.state
        pin = device.type == "cuda"
        feed = BatchFeed(lambda b: prepare_batch(
            builder, rows[batches[b]], known, loss_cfg, in_batch, rng, pin, hood, hard_k,
            bank_entities(rows, batches, b, pre_batch) if pre_batch else None), range(first_step, len(batches)), prefetch)

        def read_loss():
            if loss_sum is not None:
                el[:3] = loss_sum.tolist()

        try:
            for b, prepared in zip(range(first_step, len(batches)), feed):
                out = prepared_step(model, prepared, loss_cfg, device, precision, in_batch, bank.vectors())
                optimizer_step(out["loss"], model, optimizer, scheduler, scaler, cfg["max_grad_norm"])
                if pre_batch:
                    bank.push(out["tail_vectors"])
                last_state = prepared.rng_state
                parts = [out[k].detach() for k in ("loss", "focal", "distance")]
                if loss_sum is not None:
                    loss_sum += torch.stack([t.double() for t in parts])
                else:
                    for i, t in enumerate(parts):
                        el[i] += float(t)
                el[3] += 1
                progress["step_in_epoch"] = b + 1
                progress["global_step"] += 1
                steps_this_call += 1
                if progress["step_in_epoch"] % LOG_EVERY == 0:
                    read_loss()
                    log(f"epoch {epoch + 1} step {progress['step_in_epoch']}/{len(batches)} "
                        f"loss {el[0] / el[3]:.4f} ({time.perf_counter() - t_epoch:.0f} s)")
                every = int(cfg["checkpoint_every_steps"] or 0)
                killed = stop_after_steps is not None and steps_this_call >= stop_after_steps
                if (every and progress["global_step"] % every == 0) or killed:
                    read_loss()
                    _store_rng(progress, last_state)
                    if pre_batch:
                        progress["pre_batch_bank"] = bank.state()
                    save_last()
                if killed:
                    log(f"stopping after {steps_this_call} steps (simulated kill)")
                    return {"killed": True, "progress": progress}
        finally:
            feed.close()
        read_loss()
        train_seconds = time.perf_counter() - t_epoch

        # ---- fast dev scorer: filtered Hits@10 on dev (filter: train + dev; test never influences selection)
        t_dev = time.perf_counter()
        dev_metrics = {}
        dev_loss = None
        if cfg["dev_eval"]:  # off only where selection is moot (e.g. one epoch on CPU): the last epoch is kept
            _, dev_metrics, _ = evaluate_split(
                model, kg, builder, "dev", device, filter_splits=("train", "dev"), subsample=cfg["dev_subsample"],
                seed=seed, batch_size=int(cfg["eval_batch_size"]), chunk_size=int(cfg["score_chunk_size"]),
                precision=precision, head_ranking=head_ranking)
            # logged either way (cheap: 2 encodings per dev row); the selection key under `selection: dev_loss`
            dev_loss = dev_in_batch_loss(model, builder, dev_rows, dev_known, loss_cfg, device, precision, in_batch,
                                         bs, seed)
        dev_seconds = time.perf_counter() - t_dev
        both = dev_metrics.get("both", {})
        hits10 = float(both.get("hits@10") or 0.0)
        el = progress["epoch_loss"]
        k = max(el[3], 1)
        row = {"epoch": epoch + 1, "steps": el[3], "loss": el[0] / k, "focal": el[1] / k, "distance": el[2] / k,
               "dev_mrr": both.get("mrr"), "dev_mr": both.get("mr"), "dev_hits@1": both.get("hits@1"),
               "dev_hits@10": hits10, "dev_loss": dev_loss, "lr_encoder": scheduler.get_last_lr()[-1],
               "prob_scale": float(model.prob_scale.detach()), "prob_bias": float(model.prob_bias.detach()),
               **({"infonce_temperature": model.new_layer_state()["infonce_temperature"]}
                  if model.log_inv_t is not None else {}),
               "train_seconds": round(train_seconds, 3), "dev_seconds": round(dev_seconds, 3),
               # which attempt finished the epoch and how many of its steps it ran (T/Ep of resumed jobs)
               "attempt": progress["attempt"], "steps_timed": len(batches) - first_step}
        if measured_shift:
            row["shift"] = loss_cfg.shift
        progress["log"].append(row)
        log(" ".join(f"{k_}={v:.4g}" if isinstance(v, float) else f"{k_}={v}" for k_, v in row.items()))
        # model selection: dev Hits@10 (paper); equal Hits@10 is broken by dev MRR (Hits@10 saturates on UMLS).
        # selection dev_loss (authors' code): the lowest dev in-batch loss
        mrr = float(both.get("mrr") or 0.0)
        if not cfg["dev_eval"]:
            improved = True
        elif selection == "dev_loss":
            improved = progress.get("best_dev_loss") is None or dev_loss < progress["best_dev_loss"]
        else:
            improved = (hits10, mrr) > (progress["best_hits10"], progress.get("best_mrr", -1.0))
        if improved:
            progress["best_hits10"], progress["best_mrr"] = hits10, mrr
            progress["best_dev_loss"] = dev_loss
            progress["best_epoch"], progress["bad_epochs"] = epoch + 1, 0
            if distributed.is_main():
                with atomic_dir(checkpoint_dir / "best") as tmp:
                    save_file({k_: v.detach().cpu().contiguous() for k_, v in model.state_dict().items()},
                              str(tmp / "model.safetensors"))
        else:
            progress["bad_epochs"] += 1
            if progress["bad_epochs"] >= int(cfg["early_stop_patience"]):
                progress["stopped"] = True
                criterion = "loss" if selection == "dev_loss" else "Hits@10"
                log(f"early stop: dev {criterion} did not improve for {progress['bad_epochs']} epoch(s)")
        progress["epoch"] = epoch + 1
        progress["step_in_epoch"] = 0
        progress.pop("torch_rng", None)
        progress.pop("numpy_rng", None)
        progress.pop("torch_rng_ranks", None)
        progress.pop("pre_batch_bank", None)
        save_last()

    if not distributed.is_main():  # rank 0 writes the run's model and log (every rank holds the same weights)
        return {"killed": False, "progress": progress}

    # ---- the best model by dev Hits@10 (or dev loss) becomes the run's model
    model.load_state_dict(load_file(str(checkpoint_dir / "best" / "model.safetensors"), device=str(device)))
    info = dict(run_info or {})
    info.update({"max_length": max_len, "scorer": model.scorer, "loss": loss_cfg.__dict__,
                 "label_splits": list(label_splits), "leaky": leak is not None, "selection": selection,
                 "best_dev_loss": progress.get("best_dev_loss"), "dev_head_ranking": head_ranking,
                 "inverse_augmentation": bool(cfg["inverse_augmentation"]), "in_batch_negatives": in_batch,
                 "batch_order": batch_order, "self_negatives": bool(cfg["self_negatives"]),
                 "hard_negatives": hard_k, "pre_batch": pre_batch,
                 "best_epoch": progress["best_epoch"], "best_dev_hits@10": progress["best_hits10"],
                 "epochs_run": progress["epoch"], "train_rows": int(len(rows)),
                 "train_subsample": cfg["train_subsample"], "dev_subsample": cfg["dev_subsample"], "seed": seed})
    if measured_shift:
        info["initial_shift"] = progress["initial_shift"]
    if leak:
        info["leak"] = leak
    with atomic_dir(model_dir) as tmp:
        save_run_model(model, tokenizer, tmp, info)
    write_log_csv(log_csv, progress["log"])
    if not cfg["keep_checkpoint"]:
        # a finished run leaves no resume state: a later rerun (e.g. after pre-training changed) starts afresh
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return {"killed": False, "progress": progress, "info": info}


def finetune_settings(finetune_cfg: dict, dataset: str, run_spec: dict | None = None) -> dict:
    """The settings of one run: config `finetune` defaults, then `finetune.per_dataset.{dataset}`, then the run's
    own switches (`in_batch_negatives`, then its `finetune:` overrides, e.g. a named alternative loss)."""
    base = {k: v for k, v in (finetune_cfg or {}).items() if k != "per_dataset"}
    base.update((finetune_cfg or {}).get("per_dataset", {}).get(dataset, {}))
    if run_spec is not None and "in_batch_negatives" in run_spec:
        base["in_batch_negatives"] = bool(run_spec["in_batch_negatives"])
    if run_spec is not None:
        base.update(run_spec.get("finetune") or {})
    return _cfg(base)


@distributed.multi_gpu_stage("finetune")  # gpus_per_job > 1: this call in K ranks
def run_finetune(dataset: str, run: str, run_spec: dict, finetune_cfg: dict, encoder_key: str, encoder_source: str,
                 text_dir, tokens_dir, pretrained_dir, model_dir, log_csv, checkpoint_dir,
                 head_ranking: str | None = None) -> dict:
    """The finetune rule: load the graph and the initial encoder (the pre-training output, or the bare encoder
    for `pretrain: none`), fine-tune, write the run's model folder and train_log.csv. `head_ranking`: the
    dataset's `score.head_ranking`, used by the per-epoch dev evaluation."""
    import logging

    from .encoders import load_encoder, load_tokenizer
    from .kg import load_tokenized_kg
    from .training import compute_record, pick_device

    logger = logging.getLogger("lpbert.finetune")
    cfg = finetune_settings(finetune_cfg, dataset, run_spec)
    device = pick_device(cfg.get("device", "auto"))
    compute = compute_record(device, cfg["precision"])
    logger.info("compute: %s", json.dumps(compute))
    kg = load_tokenized_kg(text_dir, tokens_dir)
    if pretrained_dir:
        from transformers import AutoModel, AutoTokenizer

        encoder = AutoModel.from_pretrained(str(pretrained_dir))
        tokenizer = AutoTokenizer.from_pretrained(str(pretrained_dir))
        init = str(pretrained_dir)
    else:
        encoder = load_encoder(encoder_source)
        tokenizer = load_tokenizer(encoder_source)
        init = f"{encoder_key} ({encoder_source}), no pre-training"
    logger.info("run %s on %s: init %s, device %s, settings %s", run, dataset, init, device, json.dumps(cfg))
    run_info = {"dataset": dataset, "run": run, "encoder": encoder_key, "tokens_encoder": encoder_key,
                "pretrain": run_spec.get("pretrain"), "initial_weights": init, "settings": cfg, "compute": compute}
    return finetune(kg, encoder, tokenizer, cfg, model_dir, log_csv, checkpoint_dir, device, run_info,
                    log=logger.info, head_ranking=head_ranking)
