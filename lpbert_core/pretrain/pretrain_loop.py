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
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lpbert_core.runtime import distributed, preemption
from lpbert_core.runtime.atomic import atomic_dir, write_log_csv
from lpbert_core.runtime.batch_loader import EpochAhead, batch_loader, loader_workers
from lpbert_core.model.encoders import load_encoder, load_tokenizer
from lpbert_core.graph.kg import TokenizedKG, seeded_subset
from lpbert_core.pretrain.pretrain_model import ENCODER_PREFIX, PretrainModel
from lpbert_core.pretrain.pretrain_log import LOG_COLUMNS, _log_row
from lpbert_core.pretrain.pretrain_samples import variant_plan
from lpbert_core.pretrain.pretrain_step import _collate, _data_parallel_update, _make_samples, _rank_batch
from lpbert_core.config.settings import PretrainSettings
from lpbert_core.runtime.training import (
    BATCH_ORDERS, autocast_context, build_epoch_scheduler, build_optimizer, optimizer_step, scheduler_epoch_end,
    epoch_seed, length_sorted_batches, needs_grad_scaler, training_batches, compute_record, pick_device, set_seed,
    set_torch_rng_state, torch_rng_state, torch_threads,
)
from lpbert_core.runtime.checkpoints import resume_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Settings that do not change the result; a checkpoint made under other values of these is still resumed.
RESULT_NEUTRAL = ("threads", "device", "keep_checkpoint", "progress_bar", "checkpoint_every_minutes")


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
    variant = cfg.variant
    tokenizer = load_tokenizer(cfg.encoder_source)
    _check_vocabulary(kg, tokenizer)

    set_seed(cfg.seed)  # head initialisation
    encoder = load_encoder(cfg.encoder_source)
    if variant == "none":  # the ablation baseline: the initial weights, untouched
        log.info("variant 'none': saving the initial encoder %s unchanged", cfg.encoder_source)
        if distributed.is_main():
            save_encoder_folder(encoder, tokenizer, out_dir)
            write_log_csv(log_csv, [], LOG_COLUMNS)
        return []

    if cfg.batch_order not in BATCH_ORDERS:
        raise ValueError(f"pretrain.batch_order must be one of {BATCH_ORDERS}, got {cfg.batch_order!r}")
    probs, use_mlm = variant_plan(variant, cfg.task_probabilities)
    model = PretrainModel(encoder, kg.special.vocab_size, cfg.em_head_norm, use_em=probs is not None,
                          use_mlm=use_mlm).to(device)
    train_triples = seeded_subset(kg.triples["train"], cfg.train_subsample, cfg.seed)
    if len(train_triples) == 0:
        raise ValueError("pre-training needs a non-empty train split")
    dev_triples = seeded_subset(kg.triples["dev"], cfg.dev_subsample, cfg.seed)

    steps_per_epoch = math.ceil(len(train_triples) / cfg.batch_size)
    optimizer = build_optimizer(model, ENCODER_PREFIX, cfg.lr_encoder, cfg.lr_new, cfg.weight_decay,
                                kind=cfg.optimizer)
    scheduler = build_epoch_scheduler(cfg.lr_schedule, optimizer, cfg.epochs * steps_per_epoch, cfg.warmup_fraction)
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, cfg.precision) else None

    ckpt_dir = Path(ckpt_dir)
    progress = distributed.main_first(  # rank 0 discards a stale checkpoint before the others read
        lambda: _resume(ckpt_dir, model, optimizer, scheduler, device, _fingerprint(cfg), scaler))
    clock = preemption.CheckpointClock(cfg.checkpoint_every_minutes, progress)  # timed / signalled checkpoints
    if progress.get("attempt"):  # resumed: count the checkpoint it came from
        clock.resumed_from(ckpt_dir / "last")
    dev_samples = _make_samples(kg, dev_triples, cfg, np.random.default_rng(epoch_seed(cfg.seed, 0)))
    step_model = distributed.data_parallel(model)  # DDP in a multi-GPU job; the model itself in one process
    # each epoch's samples from its own seed; on a GPU the next epoch's are built while this one trains
    epoch_samples = EpochAhead(lambda e: _make_samples(kg, train_triples, cfg, np.random.default_rng(
        epoch_seed(cfg.seed, e))), cfg.epochs, ahead=loader_workers(device) > 0)

    for epoch in range(progress["epoch"] + 1, cfg.epochs + 1):
        if progress["stopped"]:
            break
        started = time.perf_counter()
        seed = epoch_seed(cfg.seed, epoch)
        partial = progress.pop("partial", None)  # a mid-epoch checkpoint of this epoch: continue after its step
        if partial is None:
            torch.manual_seed(distributed.rank_seed(seed))  # dropout of this epoch (one stream per rank)
        else:
            _restore_rng(partial, seed)
        samples = epoch_samples.get(epoch)
        batches = training_batches([len(s.input_ids) for s in samples], cfg.batch_size, cfg.batch_order, seed)

        def boundary(step, totals, epoch=epoch):
            save, stop = clock.decide(step)
            if save:  # mid-epoch: `last` with the epoch's position (a collective in a multi-rank job)
                progress["partial"] = _partial_state(epoch, step, totals)
                written = save_checkpoint(ckpt_dir / "last", model, optimizer, scheduler, progress, scaler) \
                    if distributed.is_main() else 0
                clock.saved(written)
                del progress["partial"]
            if stop:
                preemption.stop(ckpt_dir / "last", log.warning)

        train_stats = _run_epoch(step_model, samples, batches, kg.special.pad, device, cfg, epoch,
                                 optimizer, scheduler, scaler, step_hook, boundary, partial)
        dev_batches = length_sorted_batches([len(s.input_ids) for s in dev_samples], cfg.batch_size, False)
        dev_stats = _run_epoch(model, dev_samples, dev_batches, kg.special.pad, device, cfg, epoch)
        row = _log_row(epoch, train_stats, dev_stats, optimizer, time.perf_counter() - started)
        scheduler_epoch_end(scheduler, row["dev_loss"])  # plateau: halve the LR after a non-improving epoch
        progress["rows"].append(row)
        best_before = progress["best_dir"]
        _update_progress(progress, row, model, ckpt_dir, cfg.early_stop_patience)
        if distributed.is_main():
            if progress["best_dir"] != best_before:
                clock.saved(preemption.folder_bytes(ckpt_dir / progress["best_dir"]))
            clock.saved(save_checkpoint(ckpt_dir / "last", model, optimizer, scheduler, progress, scaler))
            _remove_stale_best(ckpt_dir, progress["best_dir"])
        else:
            clock.saved(0)
        log.info("epoch %d: %s", epoch, json.dumps(row))
        if epoch < cfg.epochs and not progress["stopped"] and clock.stop_agreed():  # a signal during the epoch's end
            preemption.stop(ckpt_dir / "last", log.warning)

    epoch_samples.close()
    if not distributed.is_main():  # rank 0 writes the encoder folder and the log
        return progress["rows"]
    if progress["best_dir"]:
        model.load_state_dict(load_file(str(ckpt_dir / progress["best_dir"] / "model.safetensors"),
                                        device=str(device)))
        log.info("best dev loss %.4f at epoch %d", progress["best_loss"], progress["best_epoch"])
    save_encoder_folder(model.encoder, tokenizer, out_dir)
    write_log_csv(log_csv, progress["rows"], LOG_COLUMNS)
    log.info("%s", clock.summary())
    if not cfg.keep_checkpoint:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return progress["rows"]


# ---------------------------------------------------------------- data


def _check_vocabulary(kg: TokenizedKG, tokenizer) -> None:
    """The token shards must come from this encoder's tokenizer, or every id means a different word."""
    ours = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer))
    theirs = (kg.special.cls, kg.special.sep, kg.special.mask, kg.special.pad, kg.special.vocab_size)
    if ours != theirs:
        raise ValueError(f"token shards were made by another tokenizer: special ids/vocab {theirs} != encoder's {ours}")


# ---------------------------------------------------------------- one pass

def _run_epoch(model, samples, batches, pad_id, device, cfg, epoch, optimizer=None, scheduler=None, scaler=None,
               step_hook=None, boundary=None, partial=None) -> dict:
    """Train (when an optimizer is given) or evaluate over `batches`; returns per-task token sums and counts.
    Training: `boundary(step, totals)` after every step (timed / signalled checkpoints); `partial` (a mid-epoch
    checkpoint's) starts after its step with its token sums."""
    training = optimizer is not None
    model.train(training)
    totals: dict[str, dict[str, torch.Tensor]] = _resumed_totals(partial, device)
    first = partial["step"] if partial else 0
    ranks = distributed.world()
    if ranks.size > 1 and not training:
        batches = batches[ranks.rank::ranks.size]  # dev: whole batches spread over the ranks, sums added up below
    desc = f"pretrain epoch {epoch} {'train' if training else 'dev'}"
    bar = tqdm(batches[first:], desc=desc, disable=not cfg.progress_bar or not distributed.is_main(), file=sys.stderr,
               mininterval=5, leave=False, initial=first, total=len(batches))
    sliced = ranks.size > 1 and training  # each rank trains on its slice of the global batch
    feed = batch_loader((lambda idx: _rank_batch(samples, idx, pad_id, cfg)) if sliced else
                        (lambda idx: _collate(samples, idx, pad_id, cfg)), batches[first:], device)
    for step, (idx, prepared) in enumerate(zip(bar, feed), start=first + 1):
        if sliced:  # forward and update on this rank's slice (out None: an empty slice)
            out = _data_parallel_update(model, prepared, device, cfg, optimizer, scheduler, scaler)
        else:
            batch = {k: v.to(device, non_blocking=True) for k, v in prepared.items()}
            with torch.set_grad_enabled(training), autocast_context(device, cfg.precision):
                out = model(**batch)
        if training:
            if ranks.size == 1:
                optimizer_step(out["loss"], model, optimizer, scheduler, scaler)
            if step % 50 == 0 and out is not None:
                bar.set_postfix(loss=f"{out['loss'].item():.3f}")
            if step % max(len(batches) // 4, 1) == 0:  # a heartbeat in the rule's log even without tqdm
                log.info("epoch %d: step %d/%d", epoch, step, len(batches))
            if step_hook is not None:
                step_hook(epoch, step)
        for task, entry in (out["stats"] if out is not None else {}).items():
            acc = totals.setdefault(task, {})
            for key, value in entry.items():
                acc[key] = acc.get(key, 0) + value.detach()
        if training and boundary is not None:
            boundary(step, totals)
    stats = {task: {k: float(v) for k, v in entry.items()} for task, entry in totals.items()}
    if ranks.size > 1:  # every rank gets the sums over all ranks (a rank may have seen no token of some task)
        merged: dict[str, dict[str, float]] = {}
        for part in distributed.all_gather_object(stats):
            for task, entry in part.items():
                for key, value in entry.items():
                    merged.setdefault(task, {})[key] = merged.get(task, {}).get(key, 0.0) + value
        stats = {task: merged[task] for task in sorted(merged)}
    return stats


def _partial_state(epoch: int, step: int, totals: dict) -> dict:
    """A mid-epoch checkpoint's position: the step, the epoch's token sums so far (summed over ranks, with their
    dtypes: a resumed run adds to exactly these values) and each rank's torch RNG state (dropout)."""
    local = {task: {key: [value.item(), str(value.dtype).removeprefix("torch.")] for key, value in entry.items()}
             for task, entry in totals.items()}
    parts = distributed.all_gather_object({"totals": local, "rng": torch_rng_state()})
    merged: dict = {}
    for part in parts:
        for task, entry in part["totals"].items():
            for key, (value, dtype) in entry.items():
                before = merged.setdefault(task, {}).get(key)
                merged[task][key] = [value if before is None else before[0] + value, dtype]
    return {"epoch": epoch, "step": step, "totals": merged, "torch_rng": [part["rng"] for part in parts]}


def _resumed_totals(partial: dict | None, device) -> dict:
    """The token sums a resumed epoch starts from (rank 0 carries the ranks' sum; the epoch end adds ranks up)."""
    if not partial or not distributed.is_main():
        return {}
    return {task: {key: torch.tensor(value, dtype=getattr(torch, dtype), device=device)
                   for key, (value, dtype) in entry.items()} for task, entry in partial["totals"].items()}


def _restore_rng(partial: dict, seed: int) -> None:
    """Each rank's dropout stream where the checkpoint left it; another number of ranks: a fresh seeded stream."""
    states, w = partial["torch_rng"], distributed.world()
    if len(states) == w.size:
        set_torch_rng_state(states[w.rank])
    else:
        log.warning("resumed with %d ranks from a checkpoint of %d: fresh dropout streams", w.size, len(states))
        torch.manual_seed(distributed.rank_seed(seed + int(partial["step"])))


# ---------------------------------------------------------------- progress, checkpoints, output

def _fingerprint(cfg: PretrainSettings) -> str:
    # Unset (None) options are left out, so adding a new optional setting does not orphan existing checkpoints.
    relevant = {k: v for k, v in cfg.as_dict().items() if k not in RESULT_NEUTRAL and v is not None}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fresh_progress(fingerprint: str) -> dict:
    return {"epoch": 0, "best_loss": None, "best_epoch": None, "best_dir": None, "bad_epochs": 0,
            "stopped": False, "rows": [], "fingerprint": fingerprint}


def _resume(ckpt_dir: Path, model, optimizer, scheduler, device, fingerprint: str, scaler=None) -> dict:
    """Continue from `ckpt_dir/last` when it was written under the same settings; otherwise start fresh."""
    last = ckpt_dir / "last"
    progress = resume_checkpoint(last, fingerprint, model, optimizer, scheduler, device, scaler, discard=ckpt_dir,
                                 warn=log.warning)
    if progress is not None:
        partial = progress.get("partial")
        step = f" step {partial['step']} of epoch {partial['epoch']}" if partial else ""
        log.info("resuming from %s after epoch %d%s", last, progress["epoch"], step)
        _remove_stale_best(ckpt_dir, progress["best_dir"])
        return progress
    if ckpt_dir.exists() and distributed.is_main():
        shutil.rmtree(ckpt_dir)  # only a best-* from a run killed before its first checkpoint
    return _fresh_progress(fingerprint)


def _update_progress(progress: dict, row: dict, model, ckpt_dir: Path, patience: int) -> None:
    """Early stopping on dev loss (patience epochs without improvement); keeps the best model state on disk."""
    loss = row["dev_loss"]
    progress["epoch"] = row["epoch"]
    if loss is not None and (progress["best_loss"] is None or loss < progress["best_loss"]):
        name = f"best-{row['epoch']:03d}"
        if distributed.is_main():
            with atomic_dir(ckpt_dir / name) as tmp:
                state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
                save_file(state, str(tmp / "model.safetensors"))
        progress.update(best_loss=loss, best_epoch=row["epoch"], best_dir=name, bad_epochs=0)
    else:
        progress["bad_epochs"] += 1
        if progress["bad_epochs"] >= patience:
            progress["stopped"] = True
            log.info("early stop: %d epochs without dev-loss improvement", progress["bad_epochs"])


def _remove_stale_best(ckpt_dir: Path, keep: str | None) -> None:
    for path in ckpt_dir.glob("best-*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


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
