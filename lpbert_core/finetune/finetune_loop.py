"""LP-BERT knowledge fine-tuning loop: siamese encoder, n x n in-batch negatives (or one sampled negative per
positive, "BatchSample = N"), focal + distance loss, AdamW with two learning rates and warmup, autocast on GPU,
early stopping on dev Hits@10 from the fast scorer, resumable from a checkpoint kept outside the rule's outputs.

The authors'-code reading as switches (each alone, defaults = the paper's reading; configs/authors-code.yaml sets all):
`scorer` (cosine | pair_linear, siamese.py), `label_splits` ([train] | + dev / test: in-batch labels from held-out
triples, a test leak every output states), `selection` (dev_hits10 | dev_loss: the dev in-batch loss, the same
n x n construction as training, dropout off, unshuffled dev batches), `adam_betas` / `adam_eps`, and the dev
evaluation's head ranking, which follows `score.head_ranking` (argument `head_ranking`).

Training batches (`batch_order`): `random` (default; the paper's standard BERT fine-tuning) or `length` (bucketed by
query length: less padding, but it changes which in-batch negatives meet).

The epoch loop (resume, checkpoints, dev selection, early stop, clean-up) is runtime/epoch_loop.py, shared with
pre-training and the cross-encoder; this module supplies fine-tuning's part of it (`FinetuneStage`, `FinetuneEpoch`).

Determinism (CPU): every epoch's batch order, dropout and negative draws derive from `epoch_seed(seed, epoch)`; a
mid-epoch checkpoint stores the RNG states and the position, so a killed run resumes to the uninterrupted result.

The GPU is fed (issue #11): each step's host work (`prepare_batch`: sampled negatives, token tensors, labels) runs
one batch ahead in a background thread (`BatchFeed`, in batch order, so the numpy draws are the same draws in the
same order), pinned on CUDA and copied with non_blocking; the loss is summed on the device and read to the host only
for the progress line (every LOG_EVERY steps), a checkpoint and the epoch's end (tools/bench_step_profile.py).

Several GPUs for one run (`gpus_per_job: K`, lpbert_core.runtime.distributed): `batch_size` stays the GLOBAL batch. Every rank
draws the same global batch (same seed, same sampled negatives) and encodes only its slice of the rows; all ranks'
query and candidate vectors are gathered with gradient, and every rank computes the loss on the full in-batch matrix
of the global batch (labels: known answers among the global batch's rows). The gathered backward sums each rank's
copy of the loss into the rows it owns and DistributedDataParallel averages the gradients over ranks (the step runs
through finetune_step.FinetuneStep in distributed.data_parallel), so the update is the update of one device with the
global batch (tests/test_distributed.py; dropout masks differ: each rank draws its own, rank 0 the one-process
stream). Only rank 0 writes checkpoints and outputs.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from lpbert_core.runtime import distributed, preemption
from lpbert_core.runtime.atomic import atomic_dir, write_log_csv
from lpbert_core.runtime.epoch_loop import LAYOUT, EpochLoop, LoopSettings
from lpbert_core.finetune.batch_feed import BatchFeed
from lpbert_core.finetune.extra_negatives import Neighbourhood, PreBatchBank, bank_entities
from lpbert_core.finetune.finetune_data import split_rows, training_triples
from lpbert_core.graph.known_answers import known_answers, label_leak
from lpbert_core.finetune.finetune_loss import LossConfig
from lpbert_core.model.sequences import SequenceBuilder
from lpbert_core.finetune.dev_point import evaluate_dev
from lpbert_core.finetune.entity_bank import EntityBank
from lpbert_core.finetune.finetune_step import FinetuneStep, prepare_batch, token_table
from lpbert_core.finetune.mined_negatives import NegativeMiner
from lpbert_core.finetune.step_budget import BatchPlan
from lpbert_core.finetune.step_measures import measure_initial_shift
from lpbert_core.finetune.zero_shot import write_zero_shot
from lpbert_core.graph.kg import TokenizedKG
from lpbert_core.config.settings import FinetuneSettings
from lpbert_core.model.siamese import ENCODER_PREFIXES, SiameseModel, save_run_model
from lpbert_core.runtime.training import build_optimizer, build_scheduler, epoch_seed, needs_grad_scaler, optimizer_step, set_seed

LOG_EVERY = 20  # training steps between progress lines (the only mid-epoch reads of the loss besides checkpoints)


class FinetuneStage:
    """Fine-tuning's part of the epoch loop: the model, its data and negatives, the optimiser, one epoch's steps
    (`FinetuneEpoch`) and the dev point that selects the run's model."""

    name = "finetune"
    select = True

    def __init__(self, kg: TokenizedKG, encoder, cfg: FinetuneSettings, device: torch.device, run_info: dict | None,
                 log: Callable[[str], None], head_ranking: str, prefetch: int, checkpoint_dir: Path):
        self.kg, self.cfg, self.device, self.log, self.head_ranking = kg, cfg, device, log, head_ranking
        self.prefetch, self.checkpoint_dir = prefetch, Path(checkpoint_dir)
        self.loss_cfg = loss_cfg = LossConfig.from_settings(cfg)
        self.leak = label_leak(cfg.label_splits)
        set_seed(cfg.seed)
        self.builder = SequenceBuilder(kg, cfg.max_length, cfg.max_length)
        self.init_scale = 1.0 / loss_cfg.temperature
        self.measured_shift = isinstance(loss_cfg.shift, str)  # `initial_mean`: measured before the first step
        model = SiameseModel(encoder, cfg.pooling, self.init_scale,
                             0.0 if self.measured_shift else -loss_cfg.shift * self.init_scale).to(device)
        model.set_scorer(cfg.scorer)  # pair_linear: a new layer (default init); cosine: nothing
        if cfg.two_towers:  # the query tower: a copy of the encoder (no random numbers drawn)
            model.set_two_towers()
        if cfg.frozen_entity_tower:  # only the query tower learns; the entity tower's vectors are a fixed table
            model.freeze_entity_tower()  # several ranks: each encodes a share of the table once, every rank holds it
        if cfg.infonce_learnable_temperature:
            model.set_learnable_temperature(loss_cfg.infonce_temperature)
        self.model = model
        if cfg.all_entity_negatives:
            log(f"all-entity negatives: {kg.num_entities} candidate columns per row, " +
                ("scored from the frozen entity tower's table (encoded once)" if cfg.frozen_entity_tower
                 else "every entity encoded each step"))
        self.rows = rows = training_triples(kg, cfg.inverse_augmentation, cfg.train_subsample, cfg.seed)
        self.known = known_answers(kg, cfg.label_splits, cfg.inverse_augmentation,
                                   symmetric_closure=cfg.symmetric_closure)
        self.hood = Neighbourhood(kg.triples["train"], kg.num_entities) if cfg.hard_negatives else None
        self.bank = PreBatchBank(cfg.pre_batch)
        if self.leak:
            log(f"LEAKY labels: {self.leak}")
        # dev loss: the dev rows as training sees them, labelled with label_splits + dev (dev may inform selection)
        self.dev_rows = split_rows(kg, "dev", cfg.inverse_augmentation, cfg.dev_subsample, cfg.seed)
        self.dev_known = known_answers(
            kg, tuple(s for s in ("train", "dev", "test") if s in cfg.label_splits or s == "dev"),
            cfg.inverse_augmentation, symmetric_closure=cfg.symmetric_closure)
        if cfg.zero_shot:
            return  # the floor trains nothing: no plan, no optimiser
        q_lengths = [self.builder.query_length(int(h), int(r)) for h, r, _ in rows]
        self.plan = BatchPlan(q_lengths, cfg.batch_size, cfg.batch_order, cfg.seed, cfg.epochs, cfg.step_budget,
                              cfg.dev_points)
        self.optimizer = build_optimizer(model, ENCODER_PREFIXES, cfg.lr_encoder, cfg.lr_new, cfg.weight_decay,
                                         betas=cfg.adam_betas, eps=cfg.adam_eps)
        self.scheduler = build_scheduler(self.optimizer, self.plan.total_steps, cfg.warmup_fraction)
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, cfg.precision) else None
        # a checkpoint is resumed only when it was written by the same settings, data and initial weights (and the
        # same number of ranks: a multi-GPU checkpoint holds one dropout stream per rank)
        world = distributed.world()
        self.fingerprint = hashlib.sha256(json.dumps(
            {"cfg": cfg.fingerprint_settings(),
             "rows": int(len(rows)), "rows_sum": int(rows.sum()), "entities": kg.num_entities,
             "init": (run_info or {}).get("initial_weights"), "head_ranking": head_ranking, "layout": LAYOUT,
             **({"world_size": world.size} if world.size > 1 else {})},
            sort_keys=True, default=str).encode()).hexdigest()
        self.ebank = EntityBank(cfg.entity_bank, fixed=cfg.frozen_entity_tower)

    def loop_settings(self, stop_after_steps: int | None) -> LoopSettings:
        cfg = self.cfg
        return LoopSettings(self.plan.epochs, self.checkpoint_dir, cfg.checkpoint_every_minutes, cfg.checkpoint_every_steps,
                            cfg.early_stop_patience, LOG_EVERY, progress_bar=False,
                            selection_name="loss" if cfg.selection == "dev_loss" else "Hits@10",
                            stop_after_steps=stop_after_steps)

    def start(self, progress: dict) -> None:
        """After the resume: the entity bank a checkpoint names (a frozen entity tower's table: encoded here when no
        checkpoint holds it), the measured shift of eq. 11 (once per run, kept in the progress) and the step module."""
        cfg, loss_cfg = self.cfg, self.loss_cfg
        self.progress = progress
        if self.ebank.on and progress.get("entity_bank"):
            self.ebank.load(self.checkpoint_dir, progress["entity_bank"]["file"],
                            progress["entity_bank"]["refreshed_at"], self.device)
        if self.ebank.fixed and self.ebank.due(progress["global_step"]):
            self.ebank.refresh(self.model, self.builder, self.device, cfg.eval_batch_size, cfg.precision,
                               progress["global_step"], self.log)
        if progress["attempt"] == 1:
            self.log(f"fine-tuning from scratch: {len(self.rows)} training rows, {len(self.plan.batches(0))} "
                     f"steps/epoch, {self.plan.epochs} {'dev segments of a step budget' if cfg.step_budget else 'epochs'}"
                     f", {self.plan.total_steps} steps")
        if self.measured_shift:
            if "initial_shift" not in progress:
                progress["initial_shift"] = measure_initial_shift(
                    self.model, self.builder, self.rows, self.plan.batches(0), self.device, cfg.precision,
                    all_entities=cfg.all_entity_negatives, mode=loss_cfg.shift, loss_cfg=loss_cfg,
                    table=self.ebank.table)
                with torch.no_grad():  # the learnable mapping starts at the measured shift too (a resume restores it)
                    self.model.prob_bias.fill_(-progress["initial_shift"]["shift"] * self.init_scale)
            loss_cfg.shift = progress["initial_shift"]["shift"]
            self.log(f"shift {cfg.shift}: {json.dumps(progress['initial_shift'])}")
        self.log(f"truncation at max_length={cfg.max_length}: {json.dumps(self.builder.truncation_report())}")
        miner = NegativeMiner(token_table(self.builder), cfg.mined_negatives) if cfg.mined_negatives else None
        self.step_module = distributed.data_parallel(FinetuneStep(self.model, miner))  # DDP with several GPUs

    def save_files(self, progress: dict, folder: Path) -> None:
        if self.ebank.on:  # the bank file first: the checkpoint that names it is written after it
            progress["entity_bank"] = {"file": self.ebank.save(folder, progress["global_step"]),
                                       "refreshed_at": self.ebank.refreshed_at}

    def prune_files(self, progress: dict, folder: Path) -> None:
        if self.ebank.on:
            self.ebank.prune(folder, progress["entity_bank"]["file"])

    def dropout_seed(self, epoch: int) -> int:
        return epoch_seed(self.cfg.seed, epoch)

    def epoch(self, epoch: int, resumed: dict | None) -> "FinetuneEpoch":
        return FinetuneEpoch(self, epoch, resumed)

    def end_epoch(self, epoch: int, steps: "FinetuneEpoch", first: int, train_seconds: float):
        """The dev point (fast scorer: filtered dev ranks, filter train + dev; test never influences selection), the
        epoch's log row and its selection score: (dev Hits@10, dev MRR) as the paper (equal Hits@10 broken by MRR:
        Hits@10 saturates on UMLS), or the dev in-batch loss (`selection: dev_loss`, the authors' code)."""
        cfg, model = self.cfg, self.model
        el = steps.read_loss()
        t_dev = time.perf_counter()
        both, dev_loss, diagnostics = {}, None, {}
        if cfg.dev_eval:  # off only where selection is moot (e.g. one epoch on CPU): the last epoch is kept
            dev = evaluate_dev(model, self.kg, self.builder, cfg, self.dev_rows, self.dev_known, self.loss_cfg,
                               self.device, cfg.precision, cfg.in_batch_negatives, cfg.seed, self.head_ranking,
                               cfg.dev_diagnostics, self.ebank.table)
            both, dev_loss, diagnostics = dev["metrics"], dev["dev_loss"], dev["diagnostics"]
            if self.ebank.refreshing:  # the current weights' vectors, encoded anyway: a refresh
                self.ebank.set(dev["entity_vecs"], self.progress["global_step"])
        hits10, mrr = float(both.get("hits@10") or 0.0), float(both.get("mrr") or 0.0)
        k = max(el[3], 1)
        row = {"epoch": epoch + 1, "steps": el[3], "loss": el[0] / k, "focal": el[1] / k, "distance": el[2] / k,
               "dev_mrr": both.get("mrr"), "dev_mr": both.get("mr"), "dev_hits@1": both.get("hits@1"),
               "dev_hits@3": both.get("hits@3"), "dev_hits@10": hits10, "dev_loss": dev_loss,
               **{f"dev_{k_}": v for k_, v in diagnostics.items()},
               "global_step": self.progress["global_step"], "lr_encoder": self.scheduler.get_last_lr()[-1],
               "prob_scale": float(model.prob_scale.detach()), "prob_bias": float(model.prob_bias.detach()),
               **({"infonce_temperature": model.new_layer_state()["infonce_temperature"]}
                  if model.log_inv_t is not None else {}),
               "train_seconds": round(train_seconds, 3), "dev_seconds": round(time.perf_counter() - t_dev, 3),
               # which attempt finished the epoch and how many of its steps it ran (T/Ep of resumed jobs)
               "attempt": self.progress["attempt"], "steps_timed": steps.batches - first}
        if self.measured_shift:
            row["shift"] = self.loss_cfg.shift
        if not cfg.dev_eval:
            score = (epoch,)  # no dev point: the latest epoch is the run's model
        elif cfg.selection == "dev_loss":
            score = (-dev_loss,)
        else:
            score = (hits10, mrr)
        return row, score

    def model_info(self, run_info: dict | None) -> dict:
        cfg, progress = self.cfg, self.progress
        best = progress["log"][progress["best_epoch"] - 1]
        info = dict(run_info or {})
        info.update({"max_length": cfg.max_length, "scorer": self.model.scorer, "loss": self.loss_cfg.__dict__,
                     "label_splits": list(cfg.label_splits), "leaky": self.leak is not None,
                     "selection": cfg.selection, "best_dev_loss": best["dev_loss"],
                     "dev_head_ranking": self.head_ranking, "inverse_augmentation": cfg.inverse_augmentation,
                     "in_batch_negatives": cfg.in_batch_negatives, "batch_order": cfg.batch_order,
                     "self_negatives": cfg.self_negatives, "hard_negatives": cfg.hard_negatives,
                     "pre_batch": cfg.pre_batch, "all_entity_negatives": cfg.all_entity_negatives,
                     "entity_bank": cfg.entity_bank, "mined_negatives": cfg.mined_negatives,
                     "symmetric_closure": cfg.symmetric_closure, "step_budget": cfg.step_budget,
                     "dev_points": cfg.dev_points if cfg.step_budget else None,
                     "best_epoch": progress["best_epoch"], "best_dev_hits@10": best["dev_hits@10"],
                     "epochs_run": progress["epoch"], "train_rows": int(len(self.rows)),
                     "train_subsample": cfg.train_subsample, "dev_subsample": cfg.dev_subsample, "seed": cfg.seed,
                     "eval_batch_size": cfg.eval_batch_size, "two_towers": cfg.two_towers,
                     "frozen_entity_tower": cfg.frozen_entity_tower})
        if self.measured_shift:
            info["initial_shift"] = progress["initial_shift"]
        if self.leak:
            info["leak"] = self.leak
        return info


class FinetuneEpoch:
    """One epoch's steps: its batches (rebuilt from the epoch seed alone, so a resumed run continues the same list),
    the negative draws from one numpy stream in batch order (prepared one batch ahead by `BatchFeed`), the pre-batch
    and entity banks, and the epoch's loss sums, kept on the device (float64: the same sums as adding float(loss)
    each step) and read back only for progress lines, checkpoints and the epoch's end."""

    def __init__(self, stage: FinetuneStage, epoch: int, resumed: dict | None):
        self.stage, self.epoch_index = stage, epoch
        self.batch_list = stage.plan.batches(epoch)
        self.batches = len(self.batch_list)
        if resumed is None:
            self.rng = np.random.default_rng(epoch_seed(stage.cfg.seed, epoch))
            self.el = [0.0, 0.0, 0.0, 0]
            stage.bank.clear()  # pre-batch negatives come from this epoch's batches only
            self.last_state = self.rng.bit_generator.state
        else:
            self.rng = np.random.default_rng()
            self.rng.bit_generator.state = resumed["numpy_rng"]
            self.el = list(resumed["epoch_loss"])
            stage.bank.load(resumed.get("pre_batch_bank"), stage.device)
            self.last_state = resumed["numpy_rng"]
        stage.model.train()
        device = stage.device
        self.loss_sum = None if device.type == "mps" else torch.tensor(self.el[:3], dtype=torch.float64, device=device)
        self.feed = None

    def read_loss(self) -> list:
        if self.loss_sum is not None:
            self.el[:3] = self.loss_sum.tolist()
        return self.el

    def loss_line(self) -> str:
        el = self.read_loss()
        return f"loss {el[0] / max(el[3], 1):.4f}"

    def position(self) -> dict:
        """numpy's state right after the last finished step's draws (recorded by prepare_batch: the prefetch thread
        may have drawn further), the loss sums and the pre-batch bank."""
        return {"numpy_rng": self.last_state, "epoch_loss": list(self.read_loss()),
                "pre_batch_bank": self.stage.bank.state() if self.stage.cfg.pre_batch else None}

    def steps(self, first: int):
        st, cfg = self.stage, self.stage.cfg
        rows, batches, pre_batch, ebank = st.rows, self.batch_list, cfg.pre_batch, st.ebank
        pin = st.device.type == "cuda"
        self.feed = BatchFeed(lambda b: prepare_batch(
            st.builder, rows[batches[b]], st.known, st.loss_cfg, cfg.in_batch_negatives, self.rng, pin, st.hood,
            cfg.hard_negatives, bank_entities(rows, batches, b, pre_batch) if pre_batch else None,
            cfg.entity_bank > 0, ebank.fixed and cfg.all_entity_negatives),
            range(first, len(batches)), st.prefetch)
        for prepared in self.feed:
            step = st.progress["global_step"]
            if ebank.due(step):
                ebank.refresh(st.model, st.builder, st.device, cfg.eval_batch_size, cfg.precision, step, st.log)
            out = st.step_module(prepared, st.loss_cfg, st.device, cfg.precision, cfg.in_batch_negatives,
                                 st.bank.vectors(), ebank.vectors)
            optimizer_step(out["loss"], st.step_module, st.optimizer, st.scheduler, st.scaler, cfg.max_grad_norm)
            if pre_batch:
                st.bank.push(out["tail_vectors"])
            if ebank.refreshing:
                ebank.update(prepared.rows[:, 2], out["tail_vectors"])
            self.last_state = prepared.rng_state
            parts = [out[k].detach() for k in ("loss", "focal", "distance")]
            if self.loss_sum is not None:
                self.loss_sum += torch.stack([t.double() for t in parts])
            else:
                for i, t in enumerate(parts):
                    self.el[i] += float(t)
            self.el[3] += 1
            yield

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()


def finetune(kg: TokenizedKG, encoder, tokenizer, cfg: FinetuneSettings | dict, model_dir: str | Path,
             log_csv: str | Path, checkpoint_dir: str | Path, device: torch.device, run_info: dict | None = None,
             log: Callable[[str], None] = print, stop_after_steps: int | None = None, *,
             head_ranking: str, prefetch: int = 1) -> dict:
    """Fine-tune `encoder` (a transformers model, already loaded) and write the best model (by dev Hits@10, or the
    dev loss) to `model_dir` and the per-epoch log to `log_csv`. `stop_after_steps` simulates a kill (tests).
    `cfg`: the run's settings (JobSettings.resolve("finetune", ...), or a mapping holding every key of them).
    `head_ranking`: how the per-epoch dev evaluation ranks head queries (the dataset's `score.head_ranking`).
    `prefetch`: batches prepared ahead of the step by a background thread (0: inline); pinned on CUDA. Not a
    setting of the run (no effect on results: the same batches and RNG draws in the same order)."""
    cfg = FinetuneSettings.from_mapping(cfg)
    stage = FinetuneStage(kg, encoder, cfg, device, run_info, log, head_ranking, prefetch, checkpoint_dir)
    if cfg.zero_shot:  # the floor: the initial encoder as the run's model, one dev point at step 0
        return write_zero_shot(stage.model, tokenizer, kg, stage.builder, cfg, stage.loss_cfg, stage.dev_rows,
                               stage.dev_known, device, head_ranking, model_dir, log_csv, run_info, log)
    loop = EpochLoop(stage, stage.loop_settings(stop_after_steps), log)
    progress = loop.run()
    if loop.killed or not distributed.is_main():  # rank 0 writes the run's model and log
        return {"killed": loop.killed, "progress": progress}
    info = {}

    def write_outputs():  # the best model by dev Hits@10 (or dev loss), loaded by the loop, becomes the run's model
        info.update(stage.model_info(run_info))
        with atomic_dir(model_dir) as tmp:
            save_run_model(stage.model, tokenizer, tmp, info)
        write_log_csv(log_csv, progress["log"])

    loop.finish(write_outputs, cfg.keep_checkpoint)
    return {"killed": False, "progress": progress, "info": info}


@preemption.preemptible  # SIGTERM / SIGUSR1: checkpoint at the next step boundary, then exit non-zero
@distributed.multi_gpu_stage("finetune")  # gpus_per_job > 1: this call in K ranks
def run_finetune(*, settings: dict, inputs: Mapping, outputs: Mapping) -> dict:
    """The finetune rule: load the graph and the initial encoder (the pre-training output, or the bare encoder
    for `pretrain: none`), fine-tune, write the run's model folder and train_log.csv.

    settings: JobSettings.finetune_params (dataset, run, run_spec, encoder_key, encoder_source, finetune: the run's
    resolved settings, head_ranking: the dataset's `score.head_ranking`, used by the per-epoch dev evaluation).
    inputs: triples (text/triples.parquet), manifest (tokens/<encoder>/manifest.json), pretrained (optional: the pre-trained model
    folder). outputs: model, train_log, checkpoints (the resume state; not a declared output of the rule)."""
    import logging

    from lpbert_core.model.encoders import load_encoder, load_tokenizer
    from lpbert_core.graph.kg import load_tokenized_kg
    from lpbert_core.runtime.training import compute_record, pick_device

    logger = logging.getLogger("lpbert.finetune")
    dataset, run, run_spec = settings["dataset"], settings["run"], settings["run_spec"]
    encoder_key, encoder_source = settings["encoder_key"], settings["encoder_source"]
    text_dir, tokens_dir = Path(inputs["triples"]).parent, Path(inputs["manifest"]).parent
    pretrained_dir = inputs.get("pretrained")
    cfg = FinetuneSettings.from_mapping(settings["finetune"], f"finetune (run {run} on {dataset})")
    device = pick_device(cfg.device)
    compute = compute_record(device, cfg.precision)
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
    logger.info("run %s on %s: init %s, device %s, settings %s", run, dataset, init, device,
                json.dumps(cfg.by_concern()))
    run_info = {"dataset": dataset, "run": run, "encoder": encoder_key, "tokens_encoder": encoder_key,
                "pretrain": run_spec.get("pretrain"), "initial_weights": init, "settings": cfg.as_dict(), "compute": compute}
    return finetune(kg, encoder, tokenizer, cfg, outputs["model"], outputs["train_log"], outputs["checkpoints"], device,
                    run_info, log=logger.info, head_ranking=settings["head_ranking"])
