"""One dev evaluation of fine-tuning (after an epoch, or at a dev point of a step-budget run): filtered dev metrics
against all entities (filter: train + dev; test never informs selection), the dev in-batch loss, and with
`finetune.dev_diagnostics` what tells a reading that learns from one that does not (issue #25):

- the anchor-first rate and the MRR with the anchor left out (anchor_diagnostics.py; diagnostics, never the protocol);
- the mean positive and negative cosine and the positives' share of the loss gradient, on the n x n in-batch matrix
  of the first DIAGNOSTIC_BATCHES dev batches (file order, dropout off; no extra columns), under the run's loss
  (for the paper loss: eq. 11 with the measured shift; the distance term left out, calibration.gradient_share).

The entity vectors it encoded are returned too: an entity bank refreshed at the same step reuses them.
"""

from __future__ import annotations

import numpy as np
import torch

from lpbert_core.ranking.anchor_diagnostics import anchor_report
from lpbert_core.ranking.rank_split import evaluate_split
from lpbert_core.finetune.calibration import gradient_share
from lpbert_core.finetune.finetune_data import label_matrix
from lpbert_core.finetune.finetune_step import encode_batch
from lpbert_core.finetune.step_measures import dev_in_batch_loss

DIAGNOSTIC_BATCHES = 4


def inbatch_diagnostics(model, builder, rows: np.ndarray, known, loss_cfg, device, precision: str,
                        batch_size: int, batches: int = DIAGNOSTIC_BATCHES) -> dict:
    """Mean positive / negative in-batch cosine and the positives' gradient share over the first `batches` batches
    of `rows` (labels: `known`)."""
    was_training = model.training
    model.eval()
    pos, neg, shares = [], [], []
    measured = not isinstance(loss_cfg.shift, str)  # a zero-shot run never measured its shift: no share
    for start in range(0, min(len(rows), batches * batch_size), batch_size):
        batch = rows[start:start + batch_size]
        n = len(batch)
        if n < 2:
            break
        with torch.no_grad():
            qv, cv = encode_batch(model, builder, batch, batch[:, 2], device, precision)
            scores = model.score_matrix(qv, cv)
        labels = label_matrix(batch, known).to(device)
        cos = scores.float()
        pos.append(cos.diagonal())
        neg.append(cos[labels < 0.5])
        if measured:
            shares.append(gradient_share(cos, labels, torch.ones_like(labels, dtype=torch.bool),
                                         torch.arange(n, device=device), loss_cfg, model.prob_scale,
                                         model.prob_bias, model.inverse_temperature()))
    model.train(was_training)
    if not pos:
        return {}
    return {"positive_cosine": float(torch.cat(pos).mean()), "negative_cosine": float(torch.cat(neg).mean()),
            "positive_gradient_share": float(np.mean(shares)) if shares else None}


def evaluate_dev(model, kg, builder, cfg, dev_rows: np.ndarray, dev_known, loss_cfg, device, precision: str,
                 in_batch: bool, seed: int, head_ranking: str, diagnostics: bool,
                 table: torch.Tensor | None = None) -> dict:
    """{'metrics': dev metrics of both directions, 'dev_loss', 'diagnostics': {...} (empty when off),
    'entity_vecs': the [E, d] vectors the ranking encoded}. `table`: a frozen entity tower's fixed table of every
    entity (the vectors the ranking would encode, so it is not encoded again)."""
    vectors: dict = {}
    _, metrics, _ = evaluate_split(
        model, kg, builder, "dev", device, filter_splits=("train", "dev"), subsample=cfg.dev_subsample, seed=seed,
        batch_size=cfg.eval_batch_size, chunk_size=cfg.chunk_size, precision=precision, head_ranking=head_ranking,
        vectors=vectors, entity_vecs=table)
    dev_loss = None
    if not isinstance(loss_cfg.shift, str):  # the loss needs its shift (a zero-shot run never measured one)
        dev_loss = dev_in_batch_loss(model, builder, dev_rows, dev_known, loss_cfg, device, precision, in_batch,
                                     cfg.batch_size, seed, table if cfg.all_entity_negatives else None)
    found = {}
    if diagnostics:
        if "query_vecs" in vectors and getattr(model, "pair_head", None) is None:
            report = anchor_report(vectors["query_vecs"], vectors["entity_vecs"], vectors["queries"],
                                   vectors["filter_index"], cfg.chunk_size)
            found.update(anchor_first=report["anchor_is_top_candidate"],
                         mrr_anchor_removed=report["mrr_anchor_removed"])
        found.update(inbatch_diagnostics(model, builder, dev_rows, dev_known, loss_cfg, device, precision,
                                         cfg.batch_size))
    return {"metrics": metrics.get("both", {}), "dev_loss": dev_loss, "diagnostics": found,
            "entity_vecs": vectors.get("entity_vecs")}
