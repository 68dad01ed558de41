"""Training and sampled ranking of the KG-BERT-style cross-encoder baseline (Table 3).

Training: binary cross-entropy on train triples (label 1) and k corrupted triples each (label 0), fresh negatives
every epoch; AdamW with two learning rates (encoder / classifier), linear warmup and decay; autocast on GPU; a
checkpoint after every epoch (outside the rule's outputs) so a killed job resumes at the next epoch. Determinism: an
epoch's negatives, batch order and dropout derive from `epoch_seed(seed, epoch)` only, so on CPU a resumed run ends
with the same weights as an uninterrupted one. Dev accuracy: dev positives vs one fixed sampled corruption each
(rejecting known train and dev triples), logit > 0 counts as "true".

Ranking: a cross-encoder has no reusable entity vectors, so ranking one query costs one encoder pass per candidate
(40,943 for WN18RR). We rank a fixed seeded sample of test triples in both directions against every entity, time each
query, and extrapolate linearly to all 2 x |test| queries. Metrics are on the sampled queries only (labelled).

Several GPUs for training (`gpus_per_job: K`, lpbert_core.distributed): every rank draws the same examples and
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
import pandas as pd
import torch

from . import distributed
from .atomic import atomic_dir, write_json, write_log_csv, write_parquet
from .cross_encoder import (CrossEncoder, TripleSequenceBuilder, collate_triples, corrupt_triples,
                            load_cross_encoder, save_cross_encoder, train_triple_set, training_examples)
from .finetune_data import KnownAnswers
from .kg import TokenizedKG, seeded_subset
from .ranking import assert_finite_metrics, build_filter_index, filtered_ranks, metrics_from_ranks
from .training import (autocast_context, build_optimizer, compute_record, build_scheduler, epoch_seed, length_sorted_batches,
                       needs_grad_scaler, optimizer_step, resume_checkpoint, save_checkpoint, set_seed)

log_ = logging.getLogger("lpbert.kgbert")

DEFAULTS = {
    "max_length": 50,
    "pooling": "pooler",
    "negatives": 5,
    "negative_side": "per_positive",
    "batch_size": 32,
    "epochs": 5,
    "lr_encoder": 5e-5,
    "lr_new": 5e-5,
    "weight_decay": 0.01,
    "warmup_fraction": 0.1,
    "max_grad_norm": 1.0,
    "train_subsample": None,
    "dev_subsample": 2000,
    "eval_batch_size": 512,
    "score_queries": 5,
    "precision": "auto",
    "device": "auto",
    "keep_checkpoint": False,
    "seed": 42,
}


def merged_config(cfg: dict | None) -> dict:
    out = dict(DEFAULTS)
    for key, value in (cfg or {}).items():
        if key == "per_dataset":
            continue
        if value is not None or key in ("train_subsample", "dev_subsample", "score_queries"):
            out[key] = value
    return out


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
    logits = score_triples(model, builder, triples, device, int(cfg["eval_batch_size"]), cfg["precision"])
    y = torch.as_tensor(labels, device=device)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    acc = ((logits > 0).float() == y).float().mean()
    return {"dev_loss": float(loss), "dev_accuracy": float(acc)}


def train_cross_encoder(kg: TokenizedKG, encoder, tokenizer, cfg: dict, model_dir: str | Path, log_csv: str | Path,
                        checkpoint_dir: str | Path, device: torch.device, run_info: dict | None = None,
                        log: Callable[[str], None] = log_.info, stop_after_epochs: int | None = None) -> dict:
    """Train the cross-encoder and write `model_dir` (HF folder + classifier + lpbert_run.json) and `log_csv`.
    `stop_after_epochs` ends this call after that many epochs without writing outputs (simulated kill, tests)."""
    cfg = merged_config(cfg)
    seed = int(cfg["seed"])
    set_seed(seed)
    checkpoint_dir = Path(checkpoint_dir)
    precision = cfg["precision"]
    model = CrossEncoder(encoder, cfg["pooling"]).to(device)
    builder = TripleSequenceBuilder(kg, int(cfg["max_length"]), model.two_token_types)
    positives = seeded_subset(kg.triples["train"], cfg["train_subsample"], seed)
    if len(positives) == 0:
        raise ValueError("cross-encoder training: the train split is empty")
    known = train_triple_set(kg)  # the FULL train split is known, even when training on a subsample
    k = int(cfg["negatives"])
    bs = int(cfg["batch_size"])
    epochs = int(cfg["epochs"])
    examples_per_epoch = len(positives) * (1 + k)
    steps_per_epoch = len(length_sorted_batches(np.ones(examples_per_epoch), bs, shuffle=True, seed=0))
    total_steps = steps_per_epoch * epochs
    optimizer = build_optimizer(model, "encoder.", float(cfg["lr_encoder"]), float(cfg["lr_new"]),
                                float(cfg["weight_decay"]))
    scheduler = build_scheduler(optimizer, total_steps, float(cfg["warmup_fraction"]))
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, precision) else None
    dev_triples, dev_labels = dev_examples(kg, cfg["dev_subsample"], seed)

    fingerprint = _fingerprint(cfg, positives, kg, model)
    progress = distributed.main_first(lambda: resume_checkpoint(  # rank 0 discards a stale one first
        checkpoint_dir / "last", fingerprint, model, optimizer, scheduler, device, scaler, warn=log))
    if progress is None:
        progress = {"epoch": 0, "global_step": 0, "log": [], "fingerprint": fingerprint, "attempt": 1}
        log(f"cross-encoder training from scratch: {len(positives)} positives x (1 + {k} negatives), "
            f"{steps_per_epoch} steps/epoch, {epochs} epochs, batch {bs}")
    else:
        log(f"resumed from {checkpoint_dir / 'last'} after epoch {progress['epoch']}")
    log(f"truncation at max_length={builder.max_length}: {builder.truncation_report(positives)}")

    from tqdm import tqdm

    epochs_this_call = 0
    while progress["epoch"] < epochs:
        epoch = progress["epoch"]
        es = epoch_seed(seed, epoch)
        rng = np.random.default_rng(es)
        torch.manual_seed(distributed.rank_seed(es))  # dropout: one stream per rank (rank 0: the usual one)
        triples, labels = training_examples(positives, known, kg.num_entities, k, rng, cfg["negative_side"])
        lengths = [builder.length(int(h), int(r), int(t)) for h, r, t in triples]
        batches = length_sorted_batches(lengths, bs, shuffle=True, seed=es)
        model.train()
        t0 = time.perf_counter()
        total_loss, steps = 0.0, 0
        ranks = distributed.world()
        for idx in tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, mininterval=10.0,
                        disable=not distributed.is_main()):
            if ranks.size > 1:
                loss = _rank_slice_loss(model, builder, kg, triples, labels, idx, device, precision)
                optimizer_step(loss, model, optimizer, scheduler, scaler, cfg["max_grad_norm"])
                total_loss += float(loss.detach()) / ranks.size  # this rank's part of the global batch's mean
                steps += 1
                progress["global_step"] += 1
                continue
            batch = _batch_to(collate_triples([builder.build(*map(int, triples[i])) for i in idx],
                                              kg.special.pad), device)
            y = torch.as_tensor(labels[idx], device=device)
            with autocast_context(device, precision):
                logits = model(**batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer_step(loss, model, optimizer, scheduler, scaler, cfg["max_grad_norm"])
            total_loss += float(loss.detach())
            steps += 1
            progress["global_step"] += 1
        if ranks.size > 1:
            total_loss = sum(distributed.all_gather_object(total_loss))
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        dev = _evaluate_dev(model, builder, dev_triples, dev_labels, device, cfg)
        row = {"epoch": epoch + 1, "steps": steps, "examples": int(len(triples)),
               "loss": total_loss / max(steps, 1), **dev, "lr_encoder": scheduler.get_last_lr()[-1],
               "train_seconds": round(train_seconds, 3), "dev_seconds": round(time.perf_counter() - t1, 3),
               "attempt": progress["attempt"], "steps_timed": steps}  # resumes happen between epochs here
        progress["log"].append(row)
        progress["epoch"] = epoch + 1
        log(" ".join(f"{k_}={v:.4g}" if isinstance(v, float) else f"{k_}={v}" for k_, v in row.items()))
        if distributed.is_main():
            save_checkpoint(checkpoint_dir / "last", model, optimizer, scheduler, progress, scaler)
        epochs_this_call += 1
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs and progress["epoch"] < epochs:
            log(f"stopping after {epochs_this_call} epoch(s) (simulated kill)")
            return {"killed": True, "progress": progress, "model": model}

    if not distributed.is_main():  # rank 0 writes the model folder and the log (every rank holds the same weights)
        return {"killed": False, "progress": progress, "model": model}
    info = dict(run_info or {})
    info.update({"model": "kgbert", "max_length": builder.max_length, "negatives": k,
                 "negative_side": cfg["negative_side"], "epochs_run": progress["epoch"],
                 "train_positives": int(len(positives)), "train_subsample": cfg["train_subsample"],
                 "seed": seed, "two_token_types": builder.two_token_types})
    with atomic_dir(model_dir) as tmp:
        save_cross_encoder(model, tokenizer, tmp, info)
    write_log_csv(log_csv, progress["log"])
    if not cfg["keep_checkpoint"]:  # outputs are complete: the resume state is no longer needed
        import shutil

        shutil.rmtree(checkpoint_dir / "last", ignore_errors=True)
    return {"killed": False, "progress": progress, "info": info, "model": model}


def _rank_slice_loss(model, builder, kg, triples, labels, idx, device, precision) -> torch.Tensor:
    """A multi-GPU step's loss on this rank: the BCE mean over its slice of the global batch `idx`, times K * (slice
    size / batch size); averaged over ranks, the global batch's BCE mean. An empty slice (a last batch shorter than K)
    gives a zero loss that still takes part in the gradient average."""
    size = distributed.world().size
    lo, hi = distributed.shard_range(len(idx))
    if hi == lo:
        return torch.zeros((), device=device, requires_grad=True)
    mine = idx[lo:hi]
    batch = _batch_to(collate_triples([builder.build(*map(int, triples[i])) for i in mine], kg.special.pad), device)
    y = torch.as_tensor(labels[mine], device=device)
    with autocast_context(device, precision):
        logits = model(**batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
    return loss * (size * len(mine) / len(idx))


def _fingerprint(cfg: dict, positives: np.ndarray, kg: TokenizedKG, model: CrossEncoder) -> str:
    """Hash of everything a resumed run must share with the checkpoint: training settings, the training triples,
    the graph size, and the initial weights (a sample of the encoder's parameters)."""
    import hashlib
    import json

    digest = hashlib.sha256()
    keys = ("max_length", "pooling", "negatives", "negative_side", "batch_size", "epochs", "lr_encoder", "lr_new",
            "weight_decay", "warmup_fraction", "max_grad_norm", "train_subsample", "seed")
    digest.update(json.dumps({k: cfg.get(k) for k in keys}, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(positives, dtype=np.int64).tobytes())
    digest.update(f"{kg.num_entities},{kg.num_relations}".encode())
    with torch.no_grad():
        for _, param in list(model.encoder.named_parameters())[:3]:
            digest.update(param.detach().float().cpu().flatten()[:64].numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- ranking
def sample_test_triples(kg: TokenizedKG, count: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed seeded sample of `count` test triples: (their row numbers in the test split, the triples)."""
    test = kg.triples["test"]
    count = len(test) if count is None else min(int(count), len(test))  # None: the whole test split
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(test), size=count, replace=False)) if count else np.zeros(0, dtype=np.int64)
    return rows.astype(np.int64), test[rows]


def candidate_triples(h: int, r: int, t: int, direction: str, num_entities: int) -> np.ndarray:
    """Every entity in the missing slot: (h, r, e) for a tail query, (e, r, t) for a head query."""
    cand = np.empty((num_entities, 3), dtype=np.int64)
    cand[:, 0], cand[:, 1], cand[:, 2] = h, r, t
    cand[:, 2 if direction == "tail" else 0] = np.arange(num_entities)
    return cand


def extrapolate(seconds_measured: float, queries_measured: int, queries_total: int) -> dict:
    """Linear extrapolation of the measured ranking time to all queries of the test set."""
    if queries_measured <= 0:
        raise ValueError("extrapolate: no query was measured")
    per_query = seconds_measured / queries_measured
    return {
        "inference_seconds_measured": float(seconds_measured),
        "queries_measured": int(queries_measured),
        "queries_total": int(queries_total),
        "seconds_per_query": float(per_query),
        "inference_seconds_extrapolated": float(per_query * queries_total),
        "extrapolated_from": f"{queries_measured} of {queries_total} queries, linear extrapolation "
                             f"({per_query:.3f} s per query x {queries_total})",
    }


def rank_sampled_queries(model: CrossEncoder, kg: TokenizedKG, builder: TripleSequenceBuilder, device, *,
                         score_queries: int | None, seed: int, batch_size: int, precision: str = "auto",
                         filter_splits=("train", "dev", "test"), progress: bool = True,
                         log: Callable[[str], None] = log_.info) -> tuple[pd.DataFrame, dict]:
    """Filtered ranks of `score_queries` sampled test triples, tail and head direction each, every entity a
    candidate (one encoder pass per candidate). Returns the ranks frame and the timing summary."""
    rows, sample = sample_test_triples(kg, score_queries, seed)
    index = build_filter_index(np.concatenate([kg.triples[s] for s in filter_splits]), kg.num_entities)
    E = kg.num_entities
    records, per_query = [], []
    for row, (h, r, t) in zip(rows, sample):
        h, r, t = int(h), int(r), int(t)
        for direction in ("tail", "head"):
            anchor, gold = (h, t) if direction == "tail" else (t, h)
            _sync(device)
            t0 = time.perf_counter()
            scores = score_triples(model, builder, candidate_triples(h, r, t, direction, E), device, batch_size,
                                   precision, progress)
            mask = index.mask(torch.tensor([anchor]), torch.tensor([r]), direction, device)
            ranks = filtered_ranks(scores.unsqueeze(0), torch.tensor([gold], device=device), mask)
            ranks = {k: float(v[0]) for k, v in ranks.items()}
            seconds = time.perf_counter() - t0
            per_query.append(seconds)
            log(f"query {row} ({direction}): realistic rank {ranks['realistic']:.1f} of "
                f"{int(ranks['num_candidates'])} candidates, {seconds:.2f} s")
            records.append({"query": int(row), "direction": direction, "head": kg.entity_ids[h],
                            "relation": kg.relation_ids[r], "tail": kg.entity_ids[t], "gold": kg.entity_ids[gold],
                            "optimistic": ranks["optimistic"], "pessimistic": ranks["pessimistic"],
                            "realistic": ranks["realistic"], "num_candidates": int(ranks["num_candidates"])})
    columns = ["query", "direction", "head", "relation", "tail", "gold", "optimistic", "pessimistic", "realistic",
               "num_candidates"]
    frame = pd.DataFrame(records, columns=columns)
    frame["num_candidates"] = frame["num_candidates"].astype(np.int64)
    timing = extrapolate(sum(per_query), len(per_query), 2 * len(kg.triples["test"]))
    timing["per_query_seconds"] = [round(s, 4) for s in per_query]
    timing["candidates_per_query"] = int(E)
    return frame, timing


def score_run(kg: TokenizedKG, model_dir: str | Path, cfg: dict, ranks_path: str | Path, metrics_path: str | Path,
              device: torch.device, run_info: dict | None = None, dataset: str | None = None,
              log: Callable[[str], None] = log_.info) -> dict:
    """Load a trained cross-encoder, rank the sampled test queries, write ranks.parquet and metrics.json.

    metrics.json follows the LP-BERT score rule's layout (`metrics`, `rank_type`, `protocol`, `scale`, `settings`,
    `run`, `timings_s`, `device`) plus the Table 3 inference fields at the top level: `inference_seconds_measured`,
    `queries_measured`, `queries_total`, `seconds_per_query`, `inference_seconds_extrapolated`, `extrapolated_from`.
    ranks.parquet: `query` is the row of the triple in the full test split."""
    cfg = merged_config(cfg)
    model, info = load_cross_encoder(model_dir, device)
    builder = TripleSequenceBuilder(kg, int(info.get("max_length", cfg["max_length"])), model.two_token_types)
    n_test = len(kg.triples["test"])
    wanted = n_test if cfg["score_queries"] is None else min(int(cfg["score_queries"]), n_test)
    log(f"ranking {wanted} sampled test triples x 2 directions against "
        f"{kg.num_entities} entities each (one encoder pass per candidate)")
    t0 = time.perf_counter()
    frame, timing = rank_sampled_queries(model, kg, builder, device, score_queries=cfg["score_queries"],
                                         seed=int(cfg["seed"]), batch_size=int(cfg["eval_batch_size"]),
                                         precision=cfg["precision"], log=log)
    total = time.perf_counter() - t0
    metrics = metrics_from_ranks(frame)
    assert_finite_metrics(metrics)
    q = timing["queries_measured"]
    note = (f"{'all' if q == 2 * n_test else 'sampled'}: metrics on {q} of {timing['queries_total']} test queries ({q // 2} seeded test triples x "
            f"head and tail), filtered, realistic ranks; inference time extrapolated linearly from those {q} "
            f"queries; trained on {info.get('train_positives')} train triples for {info.get('epochs_run')} "
            f"epoch(s), encoder {info.get('encoder', '?')}")
    per_query = timing.pop("per_query_seconds")
    out = {
        "metrics": metrics,
        "rank_type": "realistic (mean of optimistic and pessimistic filtered ranks)",
        "protocol": "filtered by train+dev+test; both directions; all entities are candidates, each scored by one "
                    "cross-encoder pass over [CLS] head [SEP] relation [SEP] tail [SEP]; sampled test queries only",
        "head_direction_trained": True,  # corruptions replace heads and tails alike
        "scale": {
            "note": note,
            "sampled_queries": True,
            "queries_measured": int(q),
            "test_triples_used": int(q // 2),
            "test_triples_total": int(n_test),
            "num_entities": int(kg.num_entities),
            "train_rows_used": info.get("train_positives"),
            "train_subsample": info.get("train_subsample"),
            "epochs_run": info.get("epochs_run"),
            "encoder": info.get("encoder"),
            "pretrain": info.get("pretrain"),
            "full_protocol": q == 2 * n_test and info.get("train_subsample") is None,
        },
        "settings": {k: cfg[k] for k in ("score_queries", "eval_batch_size", "precision", "seed")},
        "run": {**info, **(run_info or {}), "dataset": dataset, "model": "kgbert", "scorer": "cross_encoder"},
        "timings_s": {"total_s": round(total, 4), "per_query_s": per_query},
        "device": str(device),
        "compute": compute_record(device, cfg["precision"]),  # scoring's; the training job's is run.compute
        **timing,
    }
    write_parquet(ranks_path, frame)
    write_json(metrics_path, out)
    both = metrics["both"]
    log(f"{dataset}: MRR {both['mrr']:.4f} Hits@10 {both['hits@10']:.3f} on {q} sampled queries; "
        f"{timing['seconds_per_query']:.2f} s/query -> {timing['inference_seconds_extrapolated'] / 3600:.2f} h "
        f"extrapolated to {timing['queries_total']} queries")
    return out


# ---------------------------------------------------------------------------------------- rule entry points
def kgbert_settings(section: dict | None, dataset: str) -> dict:
    """The `kgbert:` config section resolved for one dataset (per_dataset values override the defaults)."""
    section = dict(section or {})
    per = dict((section.pop("per_dataset", None) or {}).get(dataset) or {})
    section.update(per)
    return section


@distributed.multi_gpu_stage("kgbert_train")  # gpus_per_job > 1: this call in K ranks
def run_kgbert_train(dataset: str, run: str, run_spec: dict, settings: dict, encoder_key: str, encoder_source: str,
                     text_dir, tokens_dir, pretrained_dir, model_dir, log_csv, checkpoint_dir) -> dict:
    """The kgbert_train rule: load the graph and the initial encoder (bare, or the run's pre-trained one), train."""
    from .encoders import load_encoder, load_tokenizer
    from .kg import load_tokenized_kg
    from .training import pick_device

    kg = load_tokenized_kg(text_dir, tokens_dir)
    source = str(pretrained_dir) if pretrained_dir else encoder_source
    encoder = load_encoder(source)
    tokenizer = load_tokenizer(source)
    device = pick_device(settings.get("device", "auto"))
    compute = compute_record(device, settings.get("precision", "auto"))
    log_.info("compute: %s", compute)
    info = {"dataset": dataset, "run": run, "encoder": encoder_key, "encoder_source": encoder_source,
            "pretrain": run_spec.get("pretrain", "none"), "in_batch_negatives": False, "compute": compute}
    log_.info(f"{dataset}/{run}: cross-encoder on {device}, encoder {encoder_key} ({source}), settings {settings}")
    return train_cross_encoder(kg, encoder, tokenizer, settings, model_dir, log_csv, checkpoint_dir, device, info)


def run_kgbert_score(dataset: str, run: str, settings: dict, model_dir, text_dir, tokens_dir, ranks_path,
                     metrics_path) -> dict:
    from .kg import load_tokenized_kg
    from .training import pick_device

    kg = load_tokenized_kg(text_dir, tokens_dir)
    device = pick_device(settings.get("device", "auto"))
    return score_run(kg, model_dir, settings, ranks_path, metrics_path, device, {"run": run}, dataset)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


__all__ = ["DEFAULTS", "merged_config", "train_cross_encoder", "score_run", "kgbert_settings", "run_kgbert_train",
           "run_kgbert_score", "rank_sampled_queries", "extrapolate",
           "score_triples", "sample_test_triples", "candidate_triples", "corrupt_triples"]
