"""Training of the KG-BERT-style cross-encoder baseline (Table 3) and the kgbert_train rule's entry point.

Training: binary cross-entropy on train triples (label 1) and k corrupted triples each (label 0), fresh negatives
every epoch; AdamW with two learning rates (encoder / classifier), linear warmup and decay; autocast on GPU; a
checkpoint after every epoch (outside the rule's outputs; the shared loop of runtime/epoch_loop.py) so a killed job
resumes at the next epoch, and mid-epoch every `checkpoint_every_minutes` and on a stop signal (lpbert_core.runtime.preemption: then the job exits non-zero; the
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
from lpbert_core.runtime.epoch_loop import LAYOUT, EpochLoop, LoopSettings
from lpbert_core.runtime.training import (
    autocast_context, build_optimizer, compute_record, build_scheduler, epoch_seed, length_sorted_batches,
    needs_grad_scaler, optimizer_step, set_seed,
)

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


class CrossEncoderStage:
    """The cross-encoder's part of the epoch loop (runtime/epoch_loop.py): fresh corrupted examples every epoch, BCE
    steps on each rank's slice, the dev loss and accuracy in the log. No selection: the last epoch is the model."""

    name = "kgbert"
    select = False

    def __init__(self, kg: TokenizedKG, encoder, cfg: KgbertSettings, device: torch.device, log: Callable[[str], None]):
        self.kg, self.cfg, self.device, self.log = kg, cfg, device, log
        set_seed(cfg.seed)
        self.model = CrossEncoder(encoder, cfg.pooling).to(device)
        self.builder = TripleSequenceBuilder(kg, cfg.max_length, self.model.two_token_types)
        self.positives = seeded_subset(kg.triples["train"], cfg.train_subsample, cfg.seed)
        if len(self.positives) == 0:
            raise ValueError("cross-encoder training: the train split is empty")
        self.known = train_triple_set(kg)  # the FULL train split is known, even when training on a subsample
        examples_per_epoch = len(self.positives) * (1 + cfg.negatives)
        self.steps_per_epoch = len(length_sorted_batches(np.ones(examples_per_epoch), cfg.batch_size, shuffle=True,
                                                         seed=0))
        self.optimizer = build_optimizer(self.model, "encoder.", cfg.lr_encoder, cfg.lr_new, cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, self.steps_per_epoch * cfg.epochs, cfg.warmup_fraction)
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, cfg.precision) else None
        self.dev_triples, self.dev_labels = dev_examples(kg, cfg.dev_subsample, cfg.seed)
        self.fingerprint = _fingerprint(cfg, self.positives, kg, self.model)

    def start(self, progress: dict) -> None:
        cfg = self.cfg
        self.progress = progress
        if progress["attempt"] == 1:
            self.log(f"cross-encoder training from scratch: {len(self.positives)} positives x (1 + {cfg.negatives} "
                     f"negatives), {self.steps_per_epoch} steps/epoch, {cfg.epochs} epochs, batch {cfg.batch_size}")
        self.log(f"truncation at max_length={self.builder.max_length}: "
                 f"{self.builder.truncation_report(self.positives)}")
        self.step_model = distributed.data_parallel(self.model)  # DDP in a multi-GPU job; the model itself in one

    def dropout_seed(self, epoch: int) -> int:
        return epoch_seed(self.cfg.seed, epoch)

    def epoch(self, epoch: int, resumed: dict | None) -> "CrossEncoderEpoch":
        return CrossEncoderEpoch(self, epoch, resumed)

    def end_epoch(self, epoch: int, steps: "CrossEncoderEpoch", first: int, train_seconds: float):
        total_loss = float(steps.loss_sum)
        if distributed.world().size > 1:
            total_loss = sum(distributed.all_gather_object(total_loss))
        t1 = time.perf_counter()
        dev = _evaluate_dev(self.model, self.builder, self.dev_triples, self.dev_labels, self.device, self.cfg)
        row = {"epoch": epoch + 1, "steps": steps.batches, "examples": int(len(steps.triples)),
               "loss": total_loss / max(steps.batches, 1), **dev, "lr_encoder": self.scheduler.get_last_lr()[-1],
               "train_seconds": round(train_seconds, 3), "dev_seconds": round(time.perf_counter() - t1, 3),
               "attempt": self.progress["attempt"], "steps_timed": steps.batches - first}  # this attempt's steps
        return row, None


class CrossEncoderEpoch:
    """One epoch: its examples (positives and k corruptions each) and length-bucketed batches from the epoch seed; the
    loss sum on the device (float64: the same sum as adding float(loss) each step), rank 0 carrying a resumed sum."""

    def __init__(self, stage: CrossEncoderStage, epoch: int, resumed: dict | None):
        cfg, kg = stage.cfg, stage.kg
        self.stage = stage
        es = epoch_seed(cfg.seed, epoch)
        rng = np.random.default_rng(es)
        self.triples, self.labels = training_examples(stage.positives, stage.known, kg.num_entities, cfg.negatives,
                                                      rng, cfg.negative_side)
        lengths = [stage.builder.length(int(h), int(r), int(t)) for h, r, t in self.triples]
        self.batch_list = length_sorted_batches(lengths, cfg.batch_size, shuffle=True, seed=es)
        self.batches = len(self.batch_list)
        stage.model.train()
        self.sum_device = torch.device("cpu") if stage.device.type == "mps" else stage.device  # MPS has no float64
        carried = resumed["loss_sum"] if resumed and distributed.is_main() else 0.0
        self.loss_sum = torch.tensor(carried, dtype=torch.float64, device=self.sum_device)

    def steps(self, first: int):
        st, cfg = self.stage, self.stage.cfg
        ranks = distributed.world().size
        feed = batch_loader(lambda idx: _rank_slice(st.builder, st.kg, self.triples, self.labels, idx),
                            self.batch_list[first:], st.device)
        for prepared in feed:
            loss = _slice_loss(st.step_model, prepared, st.device, cfg.precision)  # one process: weight 1
            optimizer_step(loss, st.step_model, st.optimizer, st.scheduler, st.scaler, cfg.max_grad_norm)
            self.loss_sum += loss.detach().to(self.sum_device).double() / ranks  # this rank's part of the mean
            yield

    def position(self) -> dict:
        """The loss sum so far over all ranks (a collective)."""
        return {"loss_sum": sum(distributed.all_gather_object(float(self.loss_sum)))}

    def loss_line(self) -> str:
        return f"loss sum {float(self.loss_sum):.4f}"

    def close(self) -> None:
        pass


def train_cross_encoder(kg: TokenizedKG, encoder, tokenizer, cfg: KgbertSettings | dict, model_dir: str | Path, log_csv: str | Path,
                        checkpoint_dir: str | Path, device: torch.device, run_info: dict | None = None,
                        log: Callable[[str], None] = log_.info, stop_after_epochs: int | None = None) -> dict:
    """Train the cross-encoder and write `model_dir` (HF folder + classifier + lpbert_run.json) and `log_csv`.
    `stop_after_epochs` ends this call after that many epochs without writing outputs (simulated kill, tests)."""
    cfg = KgbertSettings.from_mapping(cfg)  # a resolved mapping (the rule's params) or the settings
    stage = CrossEncoderStage(kg, encoder, cfg, device, log)
    loop = EpochLoop(stage, LoopSettings(cfg.epochs, Path(checkpoint_dir), cfg.checkpoint_every_minutes,
                                         stop_after_epochs=stop_after_epochs), log)
    progress = loop.run()
    if loop.killed or not distributed.is_main():  # rank 0 writes the model folder and the log
        return {"killed": loop.killed, "progress": progress, "model": stage.model}
    info = dict(run_info or {})
    info.update({"model": "kgbert", "max_length": stage.builder.max_length, "negatives": cfg.negatives,
                 "negative_side": cfg.negative_side, "epochs_run": progress["epoch"],
                 "train_positives": int(len(stage.positives)), "train_subsample": cfg.train_subsample,
                 "seed": cfg.seed, "two_token_types": stage.builder.two_token_types})

    def write_outputs():
        with atomic_dir(model_dir) as tmp:
            save_cross_encoder(stage.model, tokenizer, tmp, info)
        write_log_csv(log_csv, progress["log"])

    loop.finish(write_outputs, cfg.keep_checkpoint)
    return {"killed": False, "progress": progress, "info": info, "model": stage.model}


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
    digest.update(f"{kg.num_entities},{kg.num_relations},{LAYOUT}".encode())  # LAYOUT: the epoch loop's checkpoints
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
