"""Training of the KG-BERT-style cross-encoder baseline (Table 3) and the kgbert_train rule's entry point.

Training: binary cross-entropy on train triples (label 1) and k corrupted triples each (label 0), fresh negatives
every epoch; AdamW with two learning rates (encoder / classifier), linear warmup and decay; autocast on GPU; a
checkpoint after every epoch (outside the rule's outputs) so a killed job resumes at the next epoch, and mid-epoch
every `checkpoint_every_minutes` and on a stop signal (lpbert_core.runtime.preemption: then the job exits non-zero; the
checkpoint's `partial` holds the step, the epoch's loss sum so far and each rank's dropout RNG state). Determinism: an
epoch's negatives, batch order and dropout derive from `epoch_seed(seed, epoch)` only, so on CPU a resumed run ends
with the same weights as an uninterrupted one, whether it resumes at an epoch boundary or mid-epoch. Dev accuracy:
dev positives vs one fixed sampled corruption each (rejecting known train and dev triples), logit > 0 counts as
"true".

Ranking (timed, sampled): lpbert_core.baselines.cross_encoder_ranking.

Several GPUs for training (`gpus_per_job: K`, lpbert_core.runtime.distributed): every rank draws the same examples and
batches (`batch_size` is the global batch) and runs its slice of each batch; its BCE mean is weighted by K times its
share of the batch, so the gradients averaged over ranks are the global batch's (exact). The dev evaluation runs on
every rank (small); only rank 0 writes checkpoints and outputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lpbert_core.runtime import distributed, preemption
from lpbert_core.runtime.atomic import atomic_dir, write_log_csv
from lpbert_core.baselines.cross_encoder import (CrossEncoder, TripleSequenceBuilder, collate_triples, save_cross_encoder, train_triple_set, training_examples)
from lpbert_core.graph.known_answers import KnownAnswers
from lpbert_core.graph.kg import TokenizedKG, seeded_subset
from lpbert_core.config.settings import KgbertSettings
from lpbert_core.runtime.batch_loader import batch_loader
from lpbert_core.runtime.training import (
    autocast_context, build_optimizer, compute_record, build_scheduler, epoch_seed, length_sorted_batches,
    needs_grad_scaler, optimizer_step, set_seed, set_torch_rng_state, torch_rng_state,
)
from lpbert_core.runtime.checkpoints import resume_checkpoint, save_checkpoint

log_ = logging.getLogger("lpbert.kgbert")




def _batch_to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def score_triples(model: CrossEncoder, builder: TripleSequenceBuilder, triples: np.ndarray, device,
                  batch_size: int, precision: str = "auto", progress: bool = False) -> torch.Tensor:
    """Logits [n] (float32, on `device`, input order) of integer triples, length-sorted batches, no grad."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    was_training = model.training
    model.eval()
    lengths = [builder.length(int(h), int(r), int(t)) for h, r, t in triples]
    out = torch.empty(len(triples), dtype=torch.float32, device=device)
    batches = length_sorted_batches(lengths, batch_size, shuffle=False)
    iterator = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc="candidates", leave=False, mininterval=5.0)
    pad = builder.kg.special.pad
    for idx in iterator:
        batch = collate_triples([builder.build(*map(int, triples[i])) for i in idx], pad)
        with autocast_context(device, precision):
            logits = model(**_batch_to(batch, device))
        out[torch.as_tensor(idx, device=device)] = logits.float()
    model.train(was_training)
    return out


def dev_examples(kg: TokenizedKG, size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed dev set: dev positives + one corruption each, rejecting known train and dev triples."""
    dev = seeded_subset(kg.triples["dev"], size, seed)
    known = KnownAnswers(np.concatenate([kg.triples["train"], kg.triples["dev"]]), kg.num_entities,
                         max(kg.num_relations, 1))
    return training_examples(dev, known, kg.num_entities, 1, np.random.default_rng(seed + 7), "per_negative")


def _evaluate_dev(model, builder, triples, labels, device, cfg) -> dict:
    if len(triples) == 0:
        return {"dev_loss": None, "dev_accuracy": None}
    logits = score_triples(model, builder, triples, device, cfg.eval_batch_size, cfg.precision)
    y = torch.as_tensor(labels, device=device)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    acc = ((logits > 0).float() == y).float().mean()
    return {"dev_loss": float(loss), "dev_accuracy": float(acc)}


def train_cross_encoder(kg: TokenizedKG, encoder, tokenizer, cfg: KgbertSettings | dict, model_dir: str | Path, log_csv: str | Path,
                        checkpoint_dir: str | Path, device: torch.device, run_info: dict | None = None,
                        log: Callable[[str], None] = log_.info, stop_after_epochs: int | None = None) -> dict:
    """Train the cross-encoder and write `model_dir` (HF folder + classifier + lpbert_run.json) and `log_csv`.
    `stop_after_epochs` ends this call after that many epochs without writing outputs (simulated kill, tests)."""
    cfg = KgbertSettings.from_mapping(cfg)  # a resolved mapping (the rule's params) or the settings
    seed = cfg.seed
    set_seed(seed)
    checkpoint_dir = Path(checkpoint_dir)
    precision = cfg.precision
    model = CrossEncoder(encoder, cfg.pooling).to(device)
    builder = TripleSequenceBuilder(kg, cfg.max_length, model.two_token_types)
    positives = seeded_subset(kg.triples["train"], cfg.train_subsample, seed)
    if len(positives) == 0:
        raise ValueError("cross-encoder training: the train split is empty")
    known = train_triple_set(kg)  # the FULL train split is known, even when training on a subsample
    k = cfg.negatives
    bs = cfg.batch_size
    epochs = cfg.epochs
    examples_per_epoch = len(positives) * (1 + k)
    steps_per_epoch = len(length_sorted_batches(np.ones(examples_per_epoch), bs, shuffle=True, seed=0))
    total_steps = steps_per_epoch * epochs
    optimizer = build_optimizer(model, "encoder.", cfg.lr_encoder, cfg.lr_new,
                                cfg.weight_decay)
    scheduler = build_scheduler(optimizer, total_steps, cfg.warmup_fraction)
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, precision) else None
    dev_triples, dev_labels = dev_examples(kg, cfg.dev_subsample, seed)

    fingerprint = _fingerprint(cfg, positives, kg, model)
    progress = distributed.main_first(lambda: resume_checkpoint(  # rank 0 discards a stale one first
        checkpoint_dir / "last", fingerprint, model, optimizer, scheduler, device, scaler, warn=log))
    resumed = progress is not None
    if progress is None:
        progress = {"epoch": 0, "global_step": 0, "log": [], "fingerprint": fingerprint, "attempt": 1}
        log(f"cross-encoder training from scratch: {len(positives)} positives x (1 + {k} negatives), "
            f"{steps_per_epoch} steps/epoch, {epochs} epochs, batch {bs}")
    else:
        step = f" step {progress['partial']['step']}" if progress.get("partial") else ""
        log(f"resumed from {checkpoint_dir / 'last'} after epoch {progress['epoch']}{step}")
    clock = preemption.CheckpointClock(cfg.checkpoint_every_minutes, progress)  # timed / signalled checkpoints
    if resumed:
        clock.resumed_from(checkpoint_dir / "last")
    log(f"truncation at max_length={builder.max_length}: {builder.truncation_report(positives)}")

    from tqdm import tqdm

    step_model = distributed.data_parallel(model)  # DDP in a multi-GPU job; the model itself in one process
    epochs_this_call = 0
    while progress["epoch"] < epochs:
        epoch = progress["epoch"]
        es = epoch_seed(seed, epoch)
        rng = np.random.default_rng(es)
        partial = progress.pop("partial", None)  # a mid-epoch checkpoint of this epoch: continue after its step
        ranks = distributed.world()
        if partial is None:
            torch.manual_seed(distributed.rank_seed(es))  # dropout: one stream per rank (rank 0: the usual one)
        elif len(partial["torch_rng"]) == ranks.size:
            set_torch_rng_state(partial["torch_rng"][ranks.rank])
        else:  # another number of ranks: dropout streams differ anyway
            torch.manual_seed(distributed.rank_seed(es + partial["step"]))
        triples, labels = training_examples(positives, known, kg.num_entities, k, rng, cfg.negative_side)
        lengths = [builder.length(int(h), int(r), int(t)) for h, r, t in triples]
        batches = length_sorted_batches(lengths, bs, shuffle=True, seed=es)
        model.train()
        t0 = time.perf_counter()
        first = partial["step"] if partial else 0
        # the loss sum so far: rank 0 carries the ranks' sum (added up at the epoch's end)
        total_loss = partial["loss_sum"] if partial and distributed.is_main() else 0.0
        steps = first

        def boundary(step, loss_sum, epoch=epoch):
            save, stop = clock.decide(step)
            if save:  # mid-epoch: `last` with the epoch's position (a collective in a multi-rank job)
                parts = distributed.all_gather_object({"loss_sum": float(loss_sum), "rng": torch_rng_state()})
                progress["partial"] = {"epoch": epoch, "step": step, "loss_sum": sum(x["loss_sum"] for x in parts),
                                       "torch_rng": [x["rng"] for x in parts]}
                written = save_checkpoint(checkpoint_dir / "last", model, optimizer, scheduler, progress, scaler) \
                    if distributed.is_main() else 0
                clock.saved(written)
                del progress["partial"]
            if stop:
                preemption.stop(checkpoint_dir / "last", log)

        # the loss sum on the device (float64: the same sum as adding float(loss) each step), read at checkpoints
        sum_device = torch.device("cpu") if device.type == "mps" else device  # MPS has no float64
        loss_sum = torch.tensor(total_loss, dtype=torch.float64, device=sum_device)
        feed = batch_loader(lambda idx: _rank_slice(builder, kg, triples, labels, idx), batches[first:], device)
        for b, (idx, prepared) in enumerate(zip(tqdm(batches[first:], desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                                                     mininterval=10.0, disable=not distributed.is_main(),
                                                     initial=first, total=len(batches)), feed), start=first + 1):
            # one process: the slice is the whole batch and its weight 1
            loss = _slice_loss(step_model, prepared, device, precision)
            optimizer_step(loss, step_model, optimizer, scheduler, scaler, cfg.max_grad_norm)
            loss_sum += loss.detach().to(sum_device).double() / ranks.size  # this rank's part of the global batch's mean
            steps += 1
            progress["global_step"] += 1
            boundary(b, loss_sum)
        total_loss = float(loss_sum)
        if ranks.size > 1:
            total_loss = sum(distributed.all_gather_object(total_loss))
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        dev = _evaluate_dev(model, builder, dev_triples, dev_labels, device, cfg)
        row = {"epoch": epoch + 1, "steps": steps, "examples": int(len(triples)),
               "loss": total_loss / max(steps, 1), **dev, "lr_encoder": scheduler.get_last_lr()[-1],
               "train_seconds": round(train_seconds, 3), "dev_seconds": round(time.perf_counter() - t1, 3),
               "attempt": progress["attempt"], "steps_timed": steps - first}  # this attempt's steps of the epoch
        progress["log"].append(row)
        progress["epoch"] = epoch + 1
        log(" ".join(f"{k_}={v:.4g}" if isinstance(v, float) else f"{k_}={v}" for k_, v in row.items()))
        clock.saved(save_checkpoint(checkpoint_dir / "last", model, optimizer, scheduler, progress, scaler)
                    if distributed.is_main() else 0)
        epochs_this_call += 1
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs and progress["epoch"] < epochs:
            log(f"stopping after {epochs_this_call} epoch(s) (simulated kill)")
            return {"killed": True, "progress": progress, "model": model}
        if progress["epoch"] < epochs and clock.stop_agreed():  # a signal during the epoch's dev evaluation
            preemption.stop(checkpoint_dir / "last", log)

    if not distributed.is_main():  # rank 0 writes the model folder and the log (every rank holds the same weights)
        return {"killed": False, "progress": progress, "model": model}
    info = dict(run_info or {})
    info.update({"model": "kgbert", "max_length": builder.max_length, "negatives": k,
                 "negative_side": cfg.negative_side, "epochs_run": progress["epoch"],
                 "train_positives": int(len(positives)), "train_subsample": cfg.train_subsample,
                 "seed": seed, "two_token_types": builder.two_token_types})
    with atomic_dir(model_dir) as tmp:
        save_cross_encoder(model, tokenizer, tmp, info)
    write_log_csv(log_csv, progress["log"])
    log(clock.summary())
    if not cfg.keep_checkpoint:  # outputs are complete: the resume state is no longer needed
        import shutil

        shutil.rmtree(checkpoint_dir / "last", ignore_errors=True)
    return {"killed": False, "progress": progress, "info": info, "model": model}


def _rank_slice(builder, kg, triples, labels, idx) -> dict:
    """The host half of a step (run ahead by the batch loader): this rank's slice of the global batch `idx` (one
    process: all of it) as token tensors and labels, with the slice's weight K * (slice size / batch size). An empty
    slice (a last batch shorter than K) holds no tensors."""
    size = distributed.world().size
    lo, hi = distributed.shard_range(len(idx))
    mine = idx[lo:hi]
    if hi == lo:
        return {"weight": 0.0}
    return {"batch": collate_triples([builder.build(*map(int, triples[i])) for i in mine], kg.special.pad),
            "labels": torch.as_tensor(labels[mine]), "weight": size * len(mine) / len(idx)}


def _slice_loss(model, prepared: dict, device, precision) -> torch.Tensor:
    """The BCE mean over this rank's slice times its weight; averaged over ranks (DDP), the global batch's BCE mean.
    `model` is the step's data_parallel wrapper (the model itself in one process, weight 1). An empty slice: one
    padding token through the model, none of it kept, a zero loss whose backward reaches every parameter as on the
    other ranks."""
    if "batch" not in prepared:
        with autocast_context(device, precision):
            return model(**distributed.padding_row(device))[:0].float().sum()
    batch = _batch_to(prepared["batch"], device)
    y = prepared["labels"].to(device, non_blocking=True)
    with autocast_context(device, precision):
        logits = model(**batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
    return loss * prepared["weight"]


def _rank_slice_loss(model, builder, kg, triples, labels, idx, device, precision) -> torch.Tensor:
    """`_rank_slice` then `_slice_loss`: a multi-GPU step's loss on this rank for the global batch `idx`."""
    return _slice_loss(model, _rank_slice(builder, kg, triples, labels, idx), device, precision)


def _fingerprint(cfg: KgbertSettings, positives: np.ndarray, kg: TokenizedKG, model: CrossEncoder) -> str:
    """Hash of everything a resumed run must share with the checkpoint: training settings, the training triples,
    the graph size, and the initial weights (a sample of the encoder's parameters)."""
    import hashlib
    import json

    digest = hashlib.sha256()
    keys = ("max_length", "pooling", "negatives", "negative_side", "batch_size", "epochs", "lr_encoder", "lr_new",
            "weight_decay", "warmup_fraction", "max_grad_norm", "train_subsample", "seed")
    digest.update(json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(positives, dtype=np.int64).tobytes())
    digest.update(f"{kg.num_entities},{kg.num_relations}".encode())
    with torch.no_grad():
        for _, param in list(model.encoder.named_parameters())[:3]:
            digest.update(param.detach().float().cpu().flatten()[:64].numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- ranking
@preemption.preemptible  # SIGTERM / SIGUSR1: checkpoint at the next step boundary, then exit non-zero
@distributed.multi_gpu_stage("kgbert_train")  # gpus_per_job > 1: this call in K ranks
def run_kgbert_train(*, settings: dict, inputs: dict, outputs: dict) -> dict:
    """The kgbert_train rule: load the graph and the initial encoder (bare, or the run's pre-trained one), train.

    settings: JobSettings.kgbert_params (dataset, run, run_spec, encoder_key, encoder_source, settings). inputs and
    outputs: as run_finetune's (outputs.train_log is the per-epoch log)."""
    from lpbert_core.model.encoders import load_encoder, load_tokenizer
    from lpbert_core.graph.kg import load_tokenized_kg
    from lpbert_core.runtime.training import pick_device

    dataset, run, run_spec = settings["dataset"], settings["run"], settings["run_spec"]
    encoder_key, encoder_source = settings["encoder_key"], settings["encoder_source"]
    pretrained_dir = inputs.get("pretrained")
    settings = KgbertSettings.from_mapping(settings["settings"], f"kgbert (run {run} on {dataset})")
    kg = load_tokenized_kg(Path(inputs["triples"]).parent, Path(inputs["manifest"]).parent)
    source = str(pretrained_dir) if pretrained_dir else encoder_source
    encoder = load_encoder(source)
    tokenizer = load_tokenizer(source)
    device = pick_device(settings.device)
    compute = compute_record(device, settings.precision)
    log_.info("compute: %s", compute)
    info = {"dataset": dataset, "run": run, "encoder": encoder_key, "encoder_source": encoder_source,
            "pretrain": run_spec.get("pretrain", "none"), "in_batch_negatives": False, "compute": compute}
    log_.info(f"{dataset}/{run}: cross-encoder on {device}, encoder {encoder_key} ({source}), settings {settings.as_dict()}")
    return train_cross_encoder(kg, encoder, tokenizer, settings, outputs["model"], outputs["train_log"],
                               outputs["checkpoints"], device, info)
