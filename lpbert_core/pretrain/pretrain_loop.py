"""Multi-task pre-training loop (paper section 3.2 / 4.2): resumable, deterministic on CPU, early stop on dev loss.

* Data: the train split only, original direction (no inverse rows in pre-training: the paper describes none; the
  authors added them for UMLS/FB only). The dev split only drives early stopping.
* Each epoch draws fresh tasks and masks from `epoch_seed(seed, epoch)` (numpy Generator + torch seed for dropout),
  so a run resumed from the checkpoint written after epoch k replays epoch k+1 exactly.
* Dev loss: model.eval() on dev samples built ONCE with a fixed seed (same tasks and masks every epoch), so epochs are
  compared on the same questions. The authors drew fresh dev masks with dropout on; that makes the early-stopping
  signal noisy.
* Train batches (`batch_order`): `random` (default; the paper's reading) or `length` (bucketed by sample length: the
  tasks have different lengths, so a bucket groups tasks and skews the EM-head BatchNorm's batch statistics). Dev
  batches stay length-sorted (eval mode: BatchNorm uses its running statistics, so their order changes nothing).
* Split-level loss = mean CE over all EM-labelled tokens + mean CE over all MLM-labelled tokens (eq. 8 over the split).
* Checkpoints (outside the rule's outputs): `ckpt_dir/last/` (model, optimizer, scheduler, progress) after every
  epoch and `ckpt_dir/best-EEE/` (model state of the best dev epoch). The progress dict names the best folder, so a
  kill between the two writes never pairs a progress record with the wrong best weights. Mid-epoch, `last/` is also
  written every `checkpoint_every_minutes` and on a stop signal (lpbert_core.runtime.preemption: then the job exits non-zero);
  it adds `partial` to the progress (the step, the epoch's token sums so far, each rank's dropout RNG state), and a
  resumed run continues after that step with the same samples and batches (both rebuilt from the epoch seed), so on
  CPU it ends exactly as an uninterrupted run.
* Authors'-code switches (configs/authors-code.yaml; defaults = the paper): `optimizer: adam` (torch Adam),
  `lr_schedule: plateau` (ReduceLROnPlateau on the dev loss, factor 0.5, patience 0, stepped after each epoch's dev
  loss, before the checkpoint, so a resumed run carries its halvings), `mlm_mask_token: pad`, `segment_separators:
  false` (no inner [SEP]s, no attention mask: samples padded to max_length, padding attended).
* Output: the best-dev-loss encoder as a Hugging Face folder (safetensors) + tokenizer; heads are dropped.
* Several GPUs (`gpus_per_job: K`, lpbert_core.runtime.distributed): data parallelism over the GLOBAL batch (`batch_size`).
  Every rank builds the same samples and batches and takes its slice of each batch; its loss weights each term of
  eq. 8 by the rank's share of that term's labelled tokens (K * sum on the rank / count in the global batch), so the
  gradients DistributedDataParallel averages over ranks are the global batch's. The EM-head BatchNorm normalises over
  the global batch's labelled tokens (pretrain_model.GlobalBatchNorm1d; the authors' DataParallel normalised per GPU,
  32 samples each), so the step does not depend on the number of ranks. Dev batches are spread over the ranks and their
  sums added up. Only rank 0 writes checkpoints and outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from lpbert_core.runtime import distributed, preemption
from lpbert_core.runtime.atomic import atomic_dir, write_log_csv
from lpbert_core.runtime.batch_loader import EpochAhead, batch_loader, loader_workers
from lpbert_core.model.encoders import load_encoder, load_tokenizer
from lpbert_core.graph.kg import TokenizedKG, seeded_subset
from lpbert_core.pretrain.pretrain_model import ENCODER_PREFIX, PretrainModel
from lpbert_core.pretrain.pretrain_log import LOG_COLUMNS, _log_row, _split_losses
from lpbert_core.pretrain.pretrain_samples import variant_plan
from lpbert_core.pretrain.pretrain_step import _collate, _data_parallel_update, _make_samples, _rank_batch
from lpbert_core.config.settings import PretrainSettings
from lpbert_core.runtime.training import (
    BATCH_ORDERS, autocast_context, build_epoch_scheduler, build_optimizer, optimizer_step, scheduler_epoch_end,
    epoch_seed, length_sorted_batches, needs_grad_scaler, training_batches, compute_record, pick_device, set_seed,
    torch_threads,
)
from lpbert_core.runtime.epoch_loop import LAYOUT, EpochLoop, LoopSettings

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Settings that do not change the result; a checkpoint made under other values of these is still resumed.
RESULT_NEUTRAL = ("threads", "device", "keep_checkpoint", "progress_bar", "checkpoint_every_minutes")


class PretrainStage:
    """Pre-training's part of the epoch loop (runtime/epoch_loop.py): each epoch's samples from its own seed (on a GPU
    the next epoch's built while this one trains), eq. 8 steps, the dev loss on fixed dev samples as the selection
    score (lower is better), and the plateau schedule's epoch-end step."""

    name = "pretrain"
    select = True

    def __init__(self, kg: TokenizedKG, cfg: PretrainSettings, encoder, device: torch.device,
                 step_hook: Callable[[int, int], None] | None, ckpt_dir: Path):
        self.kg, self.cfg, self.device = kg, cfg, device
        if cfg.batch_order not in BATCH_ORDERS:
            raise ValueError(f"pretrain.batch_order must be one of {BATCH_ORDERS}, got {cfg.batch_order!r}")
        probs, use_mlm = variant_plan(cfg.variant, cfg.task_probabilities)
        self.model = PretrainModel(encoder, kg.special.vocab_size, cfg.em_head_norm, use_em=probs is not None,
                                   use_mlm=use_mlm).to(device)
        self.train_triples = seeded_subset(kg.triples["train"], cfg.train_subsample, cfg.seed)
        if len(self.train_triples) == 0:
            raise ValueError("pre-training needs a non-empty train split")
        self.dev_triples = seeded_subset(kg.triples["dev"], cfg.dev_subsample, cfg.seed)
        steps_per_epoch = math.ceil(len(self.train_triples) / cfg.batch_size)
        self.optimizer = build_optimizer(self.model, ENCODER_PREFIX, cfg.lr_encoder, cfg.lr_new, cfg.weight_decay,
                                         kind=cfg.optimizer)
        self.scheduler = build_epoch_scheduler(cfg.lr_schedule, self.optimizer, cfg.epochs * steps_per_epoch,
                                               cfg.warmup_fraction)
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, cfg.precision) else None
        self.fingerprint = _fingerprint(cfg)
        self.settings = LoopSettings(cfg.epochs, Path(ckpt_dir), cfg.checkpoint_every_minutes,
                                     early_stop_patience=cfg.early_stop_patience, progress_bar=cfg.progress_bar,
                                     selection_name="loss", step_hook=step_hook)

    def start(self, progress: dict) -> None:
        cfg, kg = self.cfg, self.kg
        self.dev_samples = _make_samples(kg, self.dev_triples, cfg, np.random.default_rng(epoch_seed(cfg.seed, 0)))
        self.step_model = distributed.data_parallel(self.model)  # DDP in a multi-GPU job; the model itself in one
        # each epoch's samples from its own seed (epochs count from 1 here); on a GPU the next epoch's are built
        # while this one trains
        self.epoch_samples = EpochAhead(lambda e: _make_samples(kg, self.train_triples, cfg, np.random.default_rng(
            epoch_seed(cfg.seed, e))), cfg.epochs, ahead=loader_workers(self.device) > 0)

    def dropout_seed(self, epoch: int) -> int:
        return epoch_seed(self.cfg.seed, epoch + 1)

    def epoch(self, epoch: int, resumed: dict | None) -> "PretrainEpoch":
        self.started = time.perf_counter()  # the log's `seconds`: samples, training and dev, as before the shared loop
        samples = self.epoch_samples.get(epoch + 1)
        batches = training_batches([len(s.input_ids) for s in samples], self.cfg.batch_size, self.cfg.batch_order,
                                   self.dropout_seed(epoch))
        return PretrainEpoch(self, samples, batches, resumed)

    def end_epoch(self, epoch: int, steps: "PretrainEpoch", first: int, train_seconds: float):
        cfg = self.cfg
        dev_batches = length_sorted_batches([len(s.input_ids) for s in self.dev_samples], cfg.batch_size, False)
        dev_stats = _dev_pass(self.model, self.dev_samples, dev_batches, self.kg.special.pad, self.device, cfg, epoch + 1)
        row = _log_row(epoch + 1, steps.stats(), dev_stats, self.optimizer, time.perf_counter() - self.started)
        scheduler_epoch_end(self.scheduler, row["dev_loss"])  # plateau: halve the LR after a non-improving epoch
        return row, None if row["dev_loss"] is None else (-row["dev_loss"],)

    def close(self) -> None:
        if getattr(self, "epoch_samples", None) is not None:  # absent when the loop failed before start()
            self.epoch_samples.close()


class PretrainEpoch:
    """One epoch's training steps: per-task token sums (on the device, read at checkpoints and the epoch's end; a
    resumed epoch starts from the checkpoint's sums on rank 0). In a multi-rank job each rank trains on its slice of
    every global batch."""

    def __init__(self, stage: PretrainStage, samples, batches, resumed: dict | None):
        self.stage, self.samples, self.batch_list, self.batches = stage, samples, batches, len(batches)
        self.totals: dict[str, dict[str, torch.Tensor]] = _resumed_totals(resumed, stage.device)

    def steps(self, first: int):
        st, cfg, device = self.stage, self.stage.cfg, self.stage.device
        st.model.train()
        samples, pad_id = self.samples, st.kg.special.pad
        sliced = distributed.world().size > 1  # each rank trains on its slice of the global batch
        feed = batch_loader((lambda idx: _rank_batch(samples, idx, pad_id, cfg)) if sliced else
                            (lambda idx: _collate(samples, idx, pad_id, cfg)), self.batch_list[first:], device)
        for prepared in feed:
            if sliced:  # forward and update on this rank's slice (out None: an empty slice)
                out = _data_parallel_update(st.step_model, prepared, device, cfg, st.optimizer, st.scheduler,
                                            st.scaler)
            else:
                batch = {k: v.to(device, non_blocking=True) for k, v in prepared.items()}
                with autocast_context(device, cfg.precision):
                    out = st.step_model(**batch)
                optimizer_step(out["loss"], st.step_model, st.optimizer, st.scheduler, st.scaler)
            _add_stats(self.totals, out)
            yield

    def position(self) -> dict:
        """The epoch's token sums so far, summed over ranks, with their dtypes (a resumed run adds to exactly these
        values; a collective)."""
        local = {task: {key: [value.item(), str(value.dtype).removeprefix("torch.")] for key, value in entry.items()}
                 for task, entry in self.totals.items()}
        merged: dict = {}
        for part in distributed.all_gather_object(local):
            for task, entry in part.items():
                for key, (value, dtype) in entry.items():
                    before = merged.setdefault(task, {}).get(key)
                    merged[task][key] = [value if before is None else before[0] + value, dtype]
        return {"totals": merged}

    def stats(self) -> dict:
        return _merge_ranks({task: {k: float(v) for k, v in entry.items()} for task, entry in self.totals.items()})

    def loss_line(self) -> str:
        loss, _ = _split_losses({task: {k: float(v) for k, v in entry.items()} for task, entry in self.totals.items()})
        return f"loss {loss:.4f}" if loss is not None else ""

    def close(self) -> None:
        pass


def train(
    kg: TokenizedKG,
    settings: PretrainSettings | dict,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    log_csv: str | Path,
    step_hook: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Pre-train variant `settings.variant` from encoder `settings.encoder_source`; write the HF folder `out_dir` and
    `log_csv`; return the log rows. `step_hook(epoch, step)` is called after every optimizer step (tests use it to
    simulate a kill)."""
    cfg = PretrainSettings.from_mapping(settings)  # a resolved mapping (the rule's params + threads) or the settings
    torch_threads(cfg.threads)
    device = pick_device(cfg.device)
    log.info("compute: %s", compute_record(device, cfg.precision))
    tokenizer = load_tokenizer(cfg.encoder_source)
    _check_vocabulary(kg, tokenizer)

    set_seed(cfg.seed)  # head initialisation
    encoder = load_encoder(cfg.encoder_source)
    if cfg.variant == "none":  # the ablation baseline: the initial weights, untouched
        log.info("variant 'none': saving the initial encoder %s unchanged", cfg.encoder_source)
        if distributed.is_main():
            save_encoder_folder(encoder, tokenizer, out_dir)
            write_log_csv(log_csv, [], LOG_COLUMNS)
        return []
    stage = PretrainStage(kg, cfg, encoder, device, step_hook, ckpt_dir)
    loop = EpochLoop(stage, stage.settings, log.info)
    try:
        progress = loop.run()
    finally:
        stage.close()
    if not distributed.is_main():  # rank 0 writes the encoder folder and the log
        return progress["log"]

    def write_outputs():
        if progress["best_dir"]:
            log.info("best dev loss %.4f at epoch %d", -progress["best_score"][0], progress["best_epoch"])
        save_encoder_folder(stage.model.encoder, tokenizer, out_dir)
        write_log_csv(log_csv, progress["log"], LOG_COLUMNS)

    loop.finish(write_outputs, cfg.keep_checkpoint)
    return progress["log"]


# ---------------------------------------------------------------- data


def _check_vocabulary(kg: TokenizedKG, tokenizer) -> None:
    """The token shards must come from this encoder's tokenizer, or every id means a different word."""
    ours = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer))
    theirs = (kg.special.cls, kg.special.sep, kg.special.mask, kg.special.pad, kg.special.vocab_size)
    if ours != theirs:
        raise ValueError(f"token shards were made by another tokenizer: special ids/vocab {theirs} != encoder's {ours}")


# ---------------------------------------------------------------- the dev pass, sums over ranks

def _dev_pass(model, samples, batches, pad_id, device, cfg, epoch) -> dict:
    """The dev loss's per-task token sums (eval mode, no grad); in a multi-rank job whole batches are spread over the
    ranks and the sums added up."""
    model.eval()
    totals: dict[str, dict[str, torch.Tensor]] = {}
    ranks = distributed.world()
    if ranks.size > 1:
        batches = batches[ranks.rank::ranks.size]
    bar = tqdm(batches, desc=f"pretrain epoch {epoch} dev", disable=not cfg.progress_bar or not distributed.is_main(),
               file=sys.stderr, mininterval=5, leave=False)
    feed = batch_loader(lambda idx: _collate(samples, idx, pad_id, cfg), batches, device)
    for _, prepared in zip(bar, feed):
        batch = {k: v.to(device, non_blocking=True) for k, v in prepared.items()}
        with torch.no_grad(), autocast_context(device, cfg.precision):
            _add_stats(totals, model(**batch))
    return _merge_ranks({task: {k: float(v) for k, v in entry.items()} for task, entry in totals.items()})


def _add_stats(totals: dict, out: dict | None) -> None:
    for task, entry in (out["stats"] if out is not None else {}).items():
        acc = totals.setdefault(task, {})
        for key, value in entry.items():
            acc[key] = acc.get(key, 0) + value.detach()


def _merge_ranks(stats: dict) -> dict:
    """Every rank gets the sums over all ranks (a rank may have seen no token of some task)."""
    if distributed.world().size == 1:
        return stats
    merged: dict[str, dict[str, float]] = {}
    for part in distributed.all_gather_object(stats):
        for task, entry in part.items():
            for key, value in entry.items():
                merged.setdefault(task, {})[key] = merged.get(task, {}).get(key, 0.0) + value
    return {task: merged[task] for task in sorted(merged)}


def _resumed_totals(resumed: dict | None, device) -> dict:
    """The token sums a resumed epoch starts from (rank 0 carries the ranks' sum; the epoch end adds ranks up)."""
    if not resumed or not distributed.is_main():
        return {}
    return {task: {key: torch.tensor(value, dtype=getattr(torch, dtype), device=device)
                   for key, (value, dtype) in entry.items()} for task, entry in resumed["totals"].items()}


# ---------------------------------------------------------------- progress, output

def _fingerprint(cfg: PretrainSettings) -> str:
    # Unset (None) options are left out, so adding a new optional setting does not orphan existing checkpoints.
    relevant = {k: v for k, v in cfg.as_dict().items() if k not in RESULT_NEUTRAL and v is not None}
    relevant["layout"] = LAYOUT  # the epoch loop's checkpoint layout
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_encoder_folder(encoder, tokenizer, out_dir: str | Path) -> None:
    """A Hugging Face folder (config, safetensors weights, tokenizer files) that AutoModel.from_pretrained loads."""
    with atomic_dir(out_dir) as tmp:
        encoder.save_pretrained(tmp)  # transformers 5 writes safetensors only
        tokenizer.save_pretrained(tmp)
        pickles = [p.name for p in tmp.rglob("*") if p.suffix in PICKLE_SUFFIXES]
        if pickles or not list(tmp.glob("*.safetensors")):
            raise RuntimeError(f"encoder folder must hold safetensors and no pickle files; found {pickles}")


@preemption.preemptible  # SIGTERM / SIGUSR1: checkpoint at the next step boundary, then exit non-zero
@distributed.multi_gpu_stage("pretrain")  # gpus_per_job > 1: this call in K ranks
def run_pretrain(*, settings: PretrainSettings | dict, inputs: dict, outputs: dict) -> list[dict]:
    """The `pretrain` stage: load the tokenized graph and train (the Snakemake script calls only this).

    settings: JobSettings.resolve("pretrain", ...) (or JobSettings.pretrain_params plus `threads`). inputs: triples (text/triples.parquet), manifest
    (tokens/<encoder>/manifest.json). outputs: model, log_csv, checkpoints (the resume state; not a declared
    output of the rule)."""
    from lpbert_core.graph.kg import load_tokenized_kg

    settings = PretrainSettings.from_mapping(settings)
    kg = load_tokenized_kg(Path(inputs["triples"]).parent, Path(inputs["manifest"]).parent)
    log.info("pre-training %s on %d train / %d dev triples with encoder %s", settings.variant,
             len(kg.triples["train"]), len(kg.triples["dev"]), settings.encoder_source)
    return train(kg, settings, outputs["model"], outputs["checkpoints"], outputs["log_csv"])
