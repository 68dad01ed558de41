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
import shutil
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lpbert_core.runtime import distributed, preemption
from lpbert_core.runtime.atomic import atomic_dir, write_log_csv
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
from lpbert_core.finetune.rng_state import rank_torch_rng, set_torch_rng_state, store_rng
from lpbert_core.config.settings import FinetuneSettings
from lpbert_core.model.siamese import ENCODER_PREFIXES, SiameseModel, save_run_model
from lpbert_core.runtime.training import build_optimizer, build_scheduler, epoch_seed, needs_grad_scaler, optimizer_step, set_seed
from lpbert_core.runtime.checkpoints import resume_checkpoint, save_checkpoint

LOG_EVERY = 20  # training steps between progress lines (the only mid-epoch reads of the loss besides checkpoints)


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
    loss_cfg = LossConfig.from_settings(cfg)
    selection = cfg.selection
    label_splits = cfg.label_splits
    leak = label_leak(label_splits)
    seed = cfg.seed
    set_seed(seed)
    checkpoint_dir = Path(checkpoint_dir)
    in_batch = cfg.in_batch_negatives
    precision = cfg.precision
    max_len = cfg.max_length
    builder = SequenceBuilder(kg, max_len, max_len)

    init_scale = 1.0 / loss_cfg.temperature
    measured_shift = isinstance(loss_cfg.shift, str)  # `initial_mean`: measured below, before the first step
    model = SiameseModel(encoder, cfg.pooling, init_scale,
                         0.0 if measured_shift else -loss_cfg.shift * init_scale).to(device)
    model.set_scorer(cfg.scorer)  # pair_linear: a new layer (default init); cosine: nothing
    if cfg.two_towers:  # the query tower: a copy of the encoder (no random numbers drawn)
        model.set_two_towers()
    if cfg.infonce_learnable_temperature:
        model.set_learnable_temperature(loss_cfg.infonce_temperature)
    hard_k, pre_batch = cfg.hard_negatives, cfg.pre_batch
    if cfg.all_entity_negatives:
        log(f"all-entity negatives: {kg.num_entities} candidate columns per row, every entity encoded each step")
    rows = training_triples(kg, cfg.inverse_augmentation, cfg.train_subsample, seed)
    known = known_answers(kg, label_splits, cfg.inverse_augmentation, symmetric_closure=cfg.symmetric_closure)
    hood = Neighbourhood(kg.triples["train"], kg.num_entities) if hard_k else None
    bank = PreBatchBank(pre_batch)
    if leak:
        log(f"LEAKY labels: {leak}")
    # dev loss: the dev rows as training sees them, labelled with label_splits + dev (dev may inform selection)
    dev_rows = split_rows(kg, "dev", cfg.inverse_augmentation, cfg.dev_subsample, seed)
    dev_known = known_answers(kg, tuple(s for s in ("train", "dev", "test") if s in label_splits or s == "dev"),
                              cfg.inverse_augmentation, symmetric_closure=cfg.symmetric_closure)
    q_lengths = [builder.query_length(int(h), int(r)) for h, r, _ in rows]
    bs = cfg.batch_size
    batch_order = cfg.batch_order
    if cfg.zero_shot:  # the floor: the initial encoder as the run's model, one dev point at step 0
        return write_zero_shot(model, tokenizer, kg, builder, cfg, loss_cfg, dev_rows, dev_known, device,
                               head_ranking, model_dir, log_csv, run_info, log)
    plan = BatchPlan(q_lengths, bs, batch_order, seed, cfg.epochs, cfg.step_budget, cfg.dev_points)
    epochs, total_steps = plan.epochs, plan.total_steps
    optimizer = build_optimizer(model, ENCODER_PREFIXES, cfg.lr_encoder, cfg.lr_new,
                                cfg.weight_decay, betas=cfg.adam_betas,
                                eps=cfg.adam_eps)
    scheduler = build_scheduler(optimizer, total_steps, cfg.warmup_fraction)
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, precision) else None

    # a checkpoint is resumed only when it was written by the same settings, data and initial weights (and the same
    # number of ranks: a multi-GPU checkpoint holds one dropout stream per rank)
    world = distributed.world()
    fingerprint = hashlib.sha256(json.dumps(
        {"cfg": {k: v for k, v in cfg.as_dict().items() if k != "checkpoint_every_minutes"}, "rows": int(len(rows)), "rows_sum": int(rows.sum()), "entities": kg.num_entities,
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
        log(f"fine-tuning from scratch: {len(rows)} training rows, {len(plan.batches(0))} steps/epoch, {epochs} "
            f"{'dev segments of a step budget' if cfg.step_budget else 'epochs'}, {total_steps} steps")
    else:
        log(f"resumed from {checkpoint_dir / 'last'} at epoch {progress['epoch']} step {progress['step_in_epoch']}")
    clock = preemption.CheckpointClock(cfg.checkpoint_every_minutes, progress)  # timed / signalled checkpoints
    if progress["attempt"] > 1:  # resumed: count the checkpoint it came from
        clock.resumed_from(checkpoint_dir / "last")
    if measured_shift:
        if "initial_shift" not in progress:
            progress["initial_shift"] = measure_initial_shift(
                model, builder, rows, plan.batches(0), device, precision, all_entities=cfg.all_entity_negatives,
                mode=loss_cfg.shift, loss_cfg=loss_cfg)
            with torch.no_grad():  # the learnable mapping starts at the measured shift too (a resume restores it)
                model.prob_bias.fill_(-progress["initial_shift"]["shift"] * init_scale)
        loss_cfg.shift = progress["initial_shift"]["shift"]
        log(f"shift {cfg.shift}: {json.dumps(progress['initial_shift'])}")
    log(f"truncation at max_length={max_len}: {json.dumps(builder.truncation_report())}")
    miner = NegativeMiner(token_table(builder), cfg.mined_negatives) if cfg.mined_negatives else None
    step_module = distributed.data_parallel(FinetuneStep(model, miner))  # DDP with several GPUs; else the model

    ebank = EntityBank(cfg.entity_bank)
    if ebank.on and progress.get("entity_bank"):
        ebank.load(checkpoint_dir, progress["entity_bank"]["file"], progress["entity_bank"]["refreshed_at"], device)

    def save_last(extra_rng=None):
        if distributed.is_main():  # every rank holds the same weights and progress
            if ebank.on:  # the bank file first: the checkpoint that names it is written after it
                progress["entity_bank"] = {"file": ebank.save(checkpoint_dir, progress["global_step"]),
                                           "refreshed_at": ebank.refreshed_at}
            clock.saved(save_checkpoint(checkpoint_dir / "last", model, optimizer, scheduler, progress, scaler))
            if ebank.on:
                ebank.prune(checkpoint_dir, progress["entity_bank"]["file"])
        else:
            clock.saved(0)  # restarts the interval on every rank

    steps_this_call = 0
    while progress["epoch"] < epochs and not progress["stopped"]:
        epoch = progress["epoch"]
        es = epoch_seed(seed, epoch)
        # rebuilt from (lengths, batch size, order, epoch seed) alone: a run resumed at step_in_epoch continues the
        # same list
        batches = plan.batches(epoch)
        if progress["step_in_epoch"] == 0:
            torch.manual_seed(distributed.rank_seed(es))  # dropout: one stream per rank (rank 0: the usual one)
            rng = np.random.default_rng(es)
            progress["epoch_loss"] = [0.0, 0.0, 0.0, 0]
            progress["epoch_start"] = time.time()
            bank.clear()  # pre-batch negatives come from this epoch's batches only
        else:
            set_torch_rng_state(rank_torch_rng(progress))
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
            bank_entities(rows, batches, b, pre_batch) if pre_batch else None, ebank.on),
            range(first_step, len(batches)), prefetch)

        def read_loss():
            if loss_sum is not None:
                el[:3] = loss_sum.tolist()

        try:
            for b, prepared in zip(range(first_step, len(batches)), feed):
                if ebank.due(progress["global_step"]):
                    t_bank = time.perf_counter()
                    ebank.refresh(model, builder, device, cfg.eval_batch_size, precision, progress["global_step"])
                    log(f"entity bank: {kg.num_entities} entities re-encoded at step {progress['global_step']} "
                        f"({time.perf_counter() - t_bank:.0f} s)")
                out = step_module(prepared, loss_cfg, device, precision, in_batch, bank.vectors(), ebank.vectors)
                optimizer_step(out["loss"], step_module, optimizer, scheduler, scaler, cfg.max_grad_norm)
                if pre_batch:
                    bank.push(out["tail_vectors"])
                if ebank.on:
                    ebank.update(prepared.rows[:, 2], out["tail_vectors"])
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
                every = cfg.checkpoint_every_steps
                killed = stop_after_steps is not None and steps_this_call >= stop_after_steps
                timed, stop = clock.decide(progress["step_in_epoch"])  # wall-clock interval; SIGTERM / SIGUSR1
                if (every and progress["global_step"] % every == 0) or killed or timed:
                    read_loss()
                    store_rng(progress, last_state)
                    if pre_batch:
                        progress["pre_batch_bank"] = bank.state()
                    save_last()
                if killed:
                    log(f"stopping after {steps_this_call} steps (simulated kill)")
                    return {"killed": True, "progress": progress}
                if stop:
                    preemption.stop(checkpoint_dir / "last", log)
        finally:
            feed.close()
        read_loss()
        train_seconds = time.perf_counter() - t_epoch

        # ---- fast dev scorer: filtered Hits@10 on dev (filter: train + dev; test never influences selection)
        t_dev = time.perf_counter()
        dev_metrics = {}
        dev_loss = None
        diagnostics = {}
        if cfg.dev_eval:  # off only where selection is moot (e.g. one epoch on CPU): the last epoch is kept
            # the dev in-batch loss is logged either way (cheap: 2 encodings per dev row); the selection key under
            # `selection: dev_loss`
            dev = evaluate_dev(model, kg, builder, cfg, dev_rows, dev_known, loss_cfg, device, precision, in_batch,
                               seed, head_ranking, cfg.dev_diagnostics)
            dev_metrics, dev_loss, diagnostics = {"both": dev["metrics"]}, dev["dev_loss"], dev["diagnostics"]
            if ebank.on:  # the current weights' vectors, encoded anyway: the bank's refresh
                ebank.set(dev["entity_vecs"], progress["global_step"])
        dev_seconds = time.perf_counter() - t_dev
        both = dev_metrics.get("both", {})
        hits10 = float(both.get("hits@10") or 0.0)
        el = progress["epoch_loss"]
        k = max(el[3], 1)
        row = {"epoch": epoch + 1, "steps": el[3], "loss": el[0] / k, "focal": el[1] / k, "distance": el[2] / k,
               "dev_mrr": both.get("mrr"), "dev_mr": both.get("mr"), "dev_hits@1": both.get("hits@1"),
               "dev_hits@3": both.get("hits@3"), "dev_hits@10": hits10, "dev_loss": dev_loss, **{f"dev_{k}": v for k, v in diagnostics.items()},
               "global_step": progress["global_step"], "lr_encoder": scheduler.get_last_lr()[-1],
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
        if not cfg.dev_eval:
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
            if progress["bad_epochs"] >= cfg.early_stop_patience:
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
        if progress["epoch"] < epochs and not progress["stopped"] and clock.stop_agreed():  # signal during dev
            preemption.stop(checkpoint_dir / "last", log)

    if not distributed.is_main():  # rank 0 writes the run's model and log (every rank holds the same weights)
        return {"killed": False, "progress": progress}

    # ---- the best model by dev Hits@10 (or dev loss) becomes the run's model
    model.load_state_dict(load_file(str(checkpoint_dir / "best" / "model.safetensors"), device=str(device)))
    info = dict(run_info or {})
    info.update({"max_length": max_len, "scorer": model.scorer, "loss": loss_cfg.__dict__,
                 "label_splits": list(label_splits), "leaky": leak is not None, "selection": selection,
                 "best_dev_loss": progress.get("best_dev_loss"), "dev_head_ranking": head_ranking,
                 "inverse_augmentation": cfg.inverse_augmentation, "in_batch_negatives": in_batch,
                 "batch_order": batch_order, "self_negatives": cfg.self_negatives,
                 "hard_negatives": hard_k, "pre_batch": pre_batch, "all_entity_negatives": cfg.all_entity_negatives,
                 "entity_bank": cfg.entity_bank, "mined_negatives": cfg.mined_negatives,
                 "symmetric_closure": cfg.symmetric_closure, "step_budget": cfg.step_budget, "dev_points": cfg.dev_points if cfg.step_budget else None,
                 "best_epoch": progress["best_epoch"], "best_dev_hits@10": progress["best_hits10"],
                 "epochs_run": progress["epoch"], "train_rows": int(len(rows)),
                 "train_subsample": cfg.train_subsample, "dev_subsample": cfg.dev_subsample, "seed": seed,
                 "eval_batch_size": cfg.eval_batch_size, "two_towers": cfg.two_towers})
    if measured_shift:
        info["initial_shift"] = progress["initial_shift"]
    if leak:
        info["leak"] = leak
    with atomic_dir(model_dir) as tmp:
        save_run_model(model, tokenizer, tmp, info)
    write_log_csv(log_csv, progress["log"])
    log(clock.summary())
    if not cfg.keep_checkpoint:
        # a finished run leaves no resume state: a later rerun (e.g. after pre-training changed) starts afresh
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
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
                json.dumps(cfg.as_dict()))
    run_info = {"dataset": dataset, "run": run, "encoder": encoder_key, "tokens_encoder": encoder_key,
                "pretrain": run_spec.get("pretrain"), "initial_weights": init, "settings": cfg.as_dict(), "compute": compute}
    return finetune(kg, encoder, tokenizer, cfg, outputs["model"], outputs["train_log"], outputs["checkpoints"], device,
                    run_info, log=logger.info, head_ranking=settings["head_ranking"])
