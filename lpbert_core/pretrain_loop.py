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
  kill between the two writes never pairs a progress record with the wrong best weights.
* Output: the best-dev-loss encoder as a Hugging Face folder (safetensors) + tokenizer; heads are dropped.
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

from .atomic import atomic_dir, write_log_csv
from .encoders import load_encoder, load_tokenizer
from .kg import TokenizedKG, seeded_subset
from .pretrain_model import ENCODER_PREFIX, PretrainModel
from .pretrain_samples import build_samples, collate, variant_plan
from .training import (
    BATCH_ORDERS,
    autocast_context,
    build_optimizer,
    build_scheduler,
    optimizer_step,
    resume_checkpoint,
    epoch_seed,
    length_sorted_batches,
    needs_grad_scaler,
    training_batches,
    compute_record,
    pick_device,
    save_checkpoint,
    set_seed,
    torch_threads,
)

log = logging.getLogger(__name__)

TASKS = ("mem_head", "mem_tail", "mrm", "mlm")
LOG_COLUMNS = (
    ["epoch", "train_loss"] + [f"train_{t}" for t in TASKS]
    + ["dev_loss"] + [f"dev_{t}" for t in TASKS]
    + ["dev_mem_acc", "dev_mrm_acc", "lr", "lr_head", "seconds"]
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Settings that do not change the result; a checkpoint made under other values of these is still resumed.
RESULT_NEUTRAL = ("threads", "device", "keep_checkpoint", "progress_bar")

DEFAULTS = {
    "seed": 42, "max_length": 152, "batch_size": 32, "epochs": 50, "patience": 3, "lr_encoder": 5e-5,
    "lr_head": 1e-4, "warmup": 0.05, "weight_decay": 0.01, "mlm_probability": 0.15, "mlm_mask_fraction": 0.8,
    "mlm_random_fraction": 0.1, "task_probabilities": {"mem_head": 0.4, "mem_tail": 0.4, "mrm": 0.2},
    "em_head_norm": "batchnorm", "precision": "auto", "threads": None, "device": "auto", "dev_max_triples": None,
    "train_max_triples": None, "batch_order": "random",
    "keep_checkpoint": False, "progress_bar": True,
}


def train(
    kg: TokenizedKG,
    settings: dict,
    out_dir: str | Path,
    ckpt_dir: str | Path,
    log_csv: str | Path,
    step_hook: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Pre-train variant `settings["tasks"]` from encoder `settings["encoder"]`; write the HF folder `out_dir` and
    `log_csv`; return the log rows. `step_hook(epoch, step)` is called after every optimizer step (tests use it to
    simulate a kill)."""
    cfg = {**DEFAULTS, **settings}
    torch_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    log.info("compute: %s", compute_record(device, cfg["precision"]))
    variant = cfg["tasks"]
    tokenizer = load_tokenizer(cfg["encoder"])
    _check_vocabulary(kg, tokenizer)

    set_seed(cfg["seed"])  # head initialisation
    encoder = load_encoder(cfg["encoder"])
    if variant == "none":  # the ablation baseline: the initial weights, untouched
        log.info("variant 'none': saving the initial encoder %s unchanged", cfg["encoder"])
        save_encoder_folder(encoder, tokenizer, out_dir)
        write_log_csv(log_csv, [], LOG_COLUMNS)
        return []

    if cfg["batch_order"] not in BATCH_ORDERS:
        raise ValueError(f"pretrain.batch_order must be one of {BATCH_ORDERS}, got {cfg['batch_order']!r}")
    probs, use_mlm = variant_plan(variant, cfg["task_probabilities"])
    model = PretrainModel(encoder, kg.special.vocab_size, cfg["em_head_norm"], use_em=probs is not None,
                          use_mlm=use_mlm).to(device)
    train_triples = seeded_subset(kg.triples["train"], cfg.get("train_max_triples"), cfg["seed"])
    if len(train_triples) == 0:
        raise ValueError("pre-training needs a non-empty train split")
    dev_triples = seeded_subset(kg.triples["dev"], cfg.get("dev_max_triples"), cfg["seed"])

    steps_per_epoch = math.ceil(len(train_triples) / cfg["batch_size"])
    optimizer = build_optimizer(model, ENCODER_PREFIX, cfg["lr_encoder"], cfg["lr_head"], cfg["weight_decay"])
    scheduler = build_scheduler(optimizer, cfg["epochs"] * steps_per_epoch, cfg["warmup"])
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, cfg["precision"]) else None

    ckpt_dir = Path(ckpt_dir)
    progress = _resume(ckpt_dir, model, optimizer, scheduler, device, _fingerprint(cfg), scaler)
    dev_samples = _make_samples(kg, dev_triples, cfg, np.random.default_rng(epoch_seed(cfg["seed"], 0)))

    for epoch in range(progress["epoch"] + 1, cfg["epochs"] + 1):
        if progress["stopped"]:
            break
        started = time.perf_counter()
        seed = epoch_seed(cfg["seed"], epoch)
        torch.manual_seed(seed)  # dropout of this epoch
        samples = _make_samples(kg, train_triples, cfg, np.random.default_rng(seed))
        batches = training_batches([len(s.input_ids) for s in samples], cfg["batch_size"], cfg["batch_order"], seed)
        train_stats = _run_epoch(model, samples, batches, kg.special.pad, device, cfg, epoch,
                                 optimizer, scheduler, scaler, step_hook)
        dev_batches = length_sorted_batches([len(s.input_ids) for s in dev_samples], cfg["batch_size"], False)
        dev_stats = _run_epoch(model, dev_samples, dev_batches, kg.special.pad, device, cfg, epoch)
        row = _log_row(epoch, train_stats, dev_stats, optimizer, time.perf_counter() - started)
        progress["rows"].append(row)
        _update_progress(progress, row, model, ckpt_dir, cfg["patience"])
        save_checkpoint(ckpt_dir / "last", model, optimizer, scheduler, progress, scaler)
        _remove_stale_best(ckpt_dir, progress["best_dir"])
        log.info("epoch %d: %s", epoch, json.dumps(row))

    if progress["best_dir"]:
        model.load_state_dict(load_file(str(ckpt_dir / progress["best_dir"] / "model.safetensors"),
                                        device=str(device)))
        log.info("best dev loss %.4f at epoch %d", progress["best_loss"], progress["best_epoch"])
    save_encoder_folder(model.encoder, tokenizer, out_dir)
    write_log_csv(log_csv, progress["rows"], LOG_COLUMNS)
    if not cfg["keep_checkpoint"]:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return progress["rows"]


# ---------------------------------------------------------------- data

def _make_samples(kg, triples, cfg, rng):
    return build_samples(
        kg, triples, cfg["tasks"], int(cfg["max_length"]), rng, cfg["task_probabilities"],
        cfg["mlm_probability"], cfg["mlm_mask_fraction"], cfg["mlm_random_fraction"],
    )


def _check_vocabulary(kg: TokenizedKG, tokenizer) -> None:
    """The token shards must come from this encoder's tokenizer, or every id means a different word."""
    ours = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer))
    theirs = (kg.special.cls, kg.special.sep, kg.special.mask, kg.special.pad, kg.special.vocab_size)
    if ours != theirs:
        raise ValueError(f"token shards were made by another tokenizer: special ids/vocab {theirs} != encoder's {ours}")


# ---------------------------------------------------------------- one pass

def _run_epoch(model, samples, batches, pad_id, device, cfg, epoch, optimizer=None, scheduler=None, scaler=None,
               step_hook=None) -> dict:
    """Train (when an optimizer is given) or evaluate over `batches`; returns per-task token sums and counts."""
    training = optimizer is not None
    model.train(training)
    totals: dict[str, dict[str, torch.Tensor]] = {}
    desc = f"pretrain epoch {epoch} {'train' if training else 'dev'}"
    bar = tqdm(batches, desc=desc, disable=not cfg["progress_bar"], file=sys.stderr, mininterval=5, leave=False)
    for step, idx in enumerate(bar, start=1):
        batch = {k: v.to(device, non_blocking=True) for k, v in collate([samples[i] for i in idx], pad_id).items()}
        with torch.set_grad_enabled(training), autocast_context(device, cfg["precision"]):
            out = model(**batch)
        if training:
            optimizer_step(out["loss"], model, optimizer, scheduler, scaler)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{out['loss'].item():.3f}")
            if step % max(len(batches) // 4, 1) == 0:  # a heartbeat in the rule's log even without tqdm
                log.info("epoch %d: step %d/%d", epoch, step, len(batches))
            if step_hook is not None:
                step_hook(epoch, step)
        for task, entry in out["stats"].items():
            acc = totals.setdefault(task, {})
            for key, value in entry.items():
                acc[key] = acc.get(key, 0) + value.detach()
    return {task: {k: float(v) for k, v in entry.items()} for task, entry in totals.items()}


def _split_losses(stats: dict) -> tuple[float | None, dict]:
    """Per-task mean token loss and the split loss L = mean EM-token CE + mean MLM-token CE."""
    per_task = {t: (stats[t]["loss_sum"] / stats[t]["count"] if stats.get(t, {}).get("count") else None) for t in TASKS}
    em = [stats[t] for t in ("mem_head", "mem_tail", "mrm") if t in stats]
    em_count = sum(s["count"] for s in em)
    total = None
    if em_count:
        total = sum(s["loss_sum"] for s in em) / em_count
    if per_task["mlm"] is not None:
        total = (total or 0.0) + per_task["mlm"]
    return total, per_task


def _accuracy(stats: dict, tasks: tuple[str, ...]) -> float | None:
    count = sum(stats.get(t, {}).get("count", 0) for t in tasks)
    return sum(stats.get(t, {}).get("correct", 0) for t in tasks) / count if count else None


def _log_row(epoch, train_stats, dev_stats, optimizer, seconds) -> dict:
    train_loss, train_tasks = _split_losses(train_stats)
    dev_loss, dev_tasks = _split_losses(dev_stats)
    row = {"epoch": epoch, "train_loss": train_loss}
    row.update({f"train_{t}": v for t, v in train_tasks.items()})
    row["dev_loss"] = dev_loss
    row.update({f"dev_{t}": v for t, v in dev_tasks.items()})
    row["dev_mem_acc"] = _accuracy(dev_stats, ("mem_head", "mem_tail"))
    row["dev_mrm_acc"] = _accuracy(dev_stats, ("mrm",))
    row["lr"], row["lr_head"] = _group_lrs(optimizer)
    row["seconds"] = round(seconds, 3)
    return row


def _group_lrs(optimizer) -> tuple[float, float]:
    """Current (encoder, head) learning rates: the groups were created with lr_encoder / lr_head as initial_lr."""
    groups = optimizer.param_groups
    low = min(groups, key=lambda g: g["initial_lr"])
    high = max(groups, key=lambda g: g["initial_lr"])
    return low["lr"], high["lr"]


# ---------------------------------------------------------------- progress, checkpoints, output

def _fingerprint(cfg: dict) -> str:
    # Unset (None) options are left out, so adding a new optional setting does not orphan existing checkpoints.
    relevant = {k: v for k, v in cfg.items() if k not in RESULT_NEUTRAL and v is not None}
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
        log.info("resuming from %s after epoch %d", last, progress["epoch"])
        _remove_stale_best(ckpt_dir, progress["best_dir"])
        return progress
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # only a best-* from a run killed before its first checkpoint
    return _fresh_progress(fingerprint)


def _update_progress(progress: dict, row: dict, model, ckpt_dir: Path, patience: int) -> None:
    """Early stopping on dev loss (patience epochs without improvement); keeps the best model state on disk."""
    loss = row["dev_loss"]
    progress["epoch"] = row["epoch"]
    if loss is not None and (progress["best_loss"] is None or loss < progress["best_loss"]):
        name = f"best-{row['epoch']:03d}"
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


def run_pretrain(text_dir: str | Path, tokens_dir: str | Path, settings: dict, out_dir: str | Path,
                 ckpt_dir: str | Path, log_csv: str | Path) -> list[dict]:
    """The `pretrain` stage: load the tokenized graph and train (the Snakemake script calls only this)."""
    from .kg import load_tokenized_kg

    kg = load_tokenized_kg(text_dir, tokens_dir)
    log.info("pre-training %s on %d train / %d dev triples with encoder %s", settings["tasks"],
             len(kg.triples["train"]), len(kg.triples["dev"]), settings["encoder"])
    return train(kg, settings, out_dir, ckpt_dir, log_csv)
