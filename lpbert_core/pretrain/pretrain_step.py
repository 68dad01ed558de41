"""Pre-training batches and the multi-GPU step: an epoch's samples from its seed, a batch's collate (dynamic
padding, or the authors' fixed length), and a rank's slice of a global batch with its eq. 8 weighting (the host half
runs ahead in the batch loader; the device half steps through DistributedDataParallel)."""

from __future__ import annotations

import torch

from lpbert_core.pretrain.pretrain_samples import IGNORE, build_samples, collate, with_label_positions
from lpbert_core.runtime import distributed
from lpbert_core.runtime.training import autocast_context, optimizer_step


def _make_samples(kg, triples, cfg, rng):
    return build_samples(
        kg, triples, cfg.variant, cfg.max_length, rng, cfg.task_probabilities,
        cfg.mlm_probability, cfg.mlm_mask_fraction, cfg.mlm_random_fraction,
        cfg.mlm_mask_token, cfg.segment_separators,
    )


def _collate(samples, idx, pad_id, cfg) -> dict:
    """segment_separators false = the authors' input: no attention mask, padded to max_length (see collate)."""
    if cfg.segment_separators:
        return collate([samples[i] for i in idx], pad_id)
    return collate([samples[i] for i in idx], pad_id, attention_mask=False, pad_to=cfg.max_length)


def _labelled_counts(samples, idx) -> dict[str, int]:
    """Labelled tokens of each eq. 8 term (EM-head: MEM/MRM, MLM) in the samples idx."""
    return {"em": int(sum(int((samples[i].em_labels != IGNORE).sum()) for i in idx)),
            "mlm": int(sum(int((samples[i].mlm_labels != IGNORE).sum()) for i in idx))}


def _rank_batch(samples, idx, pad_id, cfg) -> dict:
    """The host half of a multi-GPU step (run ahead by the batch loader): this rank's slice of the GLOBAL batch `idx`
    collated, and the labelled-token counts of the slice and of the global batch. An empty slice (a short last batch
    with fewer samples than ranks) holds the batch's first sample with every label removed (see
    _data_parallel_update)."""
    lo, hi = distributed.shard_range(len(idx))
    mine = idx[lo:hi]
    batch = _collate(samples, mine if len(mine) else idx[:1], pad_id, cfg)
    if not len(mine):
        batch["em_labels"] = torch.full_like(batch["em_labels"], IGNORE)
        batch["mlm_labels"] = torch.full_like(batch["mlm_labels"], IGNORE)
        with_label_positions(batch)  # no labelled position left
    return {"batch": batch, "total": _labelled_counts(samples, idx), "mine": _labelled_counts(samples, mine),
            "empty": not len(mine)}


def _data_parallel_update(model, prepared: dict, device, cfg, optimizer, scheduler, scaler):
    """One multi-GPU step through the step's data_parallel wrapper `model` on this rank's slice (`_rank_batch`). Each
    eq. 8 term is the rank's mean times K * (its labelled tokens / the global batch's), so the gradient DDP averages
    over ranks is that of the global batch's loss. Returns the forward output (None for an empty slice: the rank runs a
    sample without labels, a zero loss whose backward reaches every parameter, and its heads join the global BatchNorm
    with no rows)."""
    size = distributed.world().size
    total, counts = prepared["total"], prepared["mine"]
    batch = {k: v.to(device, non_blocking=True) for k, v in prepared["batch"].items()}
    with autocast_context(device, cfg.precision):
        out = model(**batch, global_heads={term: count > 0 for term, count in total.items()})
    loss = out["loss"].new_zeros(())
    for term, mean in out["head_losses"].items():
        loss = loss + mean * (size * counts[term] / total[term])
    optimizer_step(loss, model, optimizer, scheduler, scaler)
    return None if prepared["empty"] else out


def _data_parallel_step(model, samples, idx, pad_id, device, cfg, optimizer, scheduler, scaler):
    """`_rank_batch` then `_data_parallel_update`: one multi-GPU step on the GLOBAL batch `idx`."""
    return _data_parallel_update(model, _rank_batch(samples, idx, pad_id, cfg), device, cfg, optimizer, scheduler,
                                 scaler)
