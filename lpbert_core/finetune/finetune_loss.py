"""Fine-tuning loss (paper eqs. 10-13): focal loss on the cosine + distance loss on the L2 distance,
per (query, candidate) pair, averaged over all pairs scored in the batch.

Eq. 11 needs a probability, the cosine d1 is in [-1, 1]. `probability` picks the mapping p(cos):
- `affine`:     p = (1 + cos) / 2                      (the plain mapping; weak: p = 0.5 at cos = 0)
- `sigmoid`:    p = sigmoid((cos - shift) / temperature) (fixed temperature-scaled sigmoid)
- `learnable`:  p = sigmoid(scale * cos + bias), scale/bias are new-layer parameters (LR 1e-3)
- `raw`:        p = cos, clipped to [1e-4, 1 - 1e-4] inside the log only (the authors' code; the modulating
                factor sees the unclipped value, so negatives are pushed to cos <= 0 and positives to cos >= 1;
                with gamma = 2 the factors are (1 - s)^2 and s^2 for any real score s, as in the code)
With `finetune.scorer: pair_linear` the score s of the pair layer (siamese.PairLinear, unbounded) takes the cosine's
place in every mapping and in InfoNCE (logit = s / infonce_temperature); the distance term stays on the embeddings.
Focal term per pair (alpha_t = alpha for y = 1, 1 - alpha for y = 0, as in focal loss and the authors' code):
    y = 1: -alpha (1 - p)^gamma log p        y = 0: -(1 - alpha) p^gamma log(1 - p)

Eq. 12 `distance`:
- `per_pair` (default): y = 1: sigmoid(d2_ij), y = 0: 1 - sigmoid(d2_ij), each pair its own distance, so the
  term pulls positives together and pushes negatives apart (it has a gradient);
- `batch_sum` (the literal eq. 12 and the authors' code): sigmoid(sum over the batch of d2) for every pair. With
  thousands of pairs the sum is >> 10, sigmoid saturates to 1.0 and the gradient is exactly 0: a constant, not a
  loss term. Kept only as a documented switch;
- `per_pair_normalized`: the per_pair form on L2-normalised vectors, d_ij = ||u_i/|u_i| - v_j/|v_j|||_2 =
  sqrt(2 - 2 cos_ij) (eq. 13's unsquared d2, as per_pair; in [0, 2]), so the term cannot be lowered by shrinking
  or inflating the vectors' norms;
- `none`: focal term only.

`shift: initial_mean` (sigmoid / learnable init): the shift is measured once when training starts, as the mean
cosine of the in-batch pairs of the first training batches (step_measures.measure_initial_shift); the loss then
sees that number.

`loss: infonce` is a named alternative (not the paper's): cross-entropy of each query row over its candidates
at temperature tau, other known positives of the row removed from the denominator. lpbert-plus switches (SimKGC's
recipe): `infonce_margin` m subtracts m from the positive's score before the temperature (additive margin, training
only: ranks never see it); `infonce_learnable_temperature` makes 1/tau a new-layer parameter (log-parametrised,
initialised at 1/infonce_temperature, capped at 100 as SimKGC), held by the model (SiameseModel.inverse_temperature).

Extra candidate columns (lpbert-plus; extra_negatives.py builds them): graph-neighbourhood hard negatives and
pre-batch negatives are more columns of the score matrix, with labels and a validity mask (`column_loss`); the
pre-batch columns' InfoNCE logits are multiplied by `pre_batch_weight` (SimKGC: 0.5). The paper loss counts them as
more (query, candidate) pairs of eqs. 11-12. `all_entity_negatives` (small graphs) scores every entity instead of
the batch's tails: one [n, E] matrix, labelled by each row's known answers, its own tail the InfoNCE target
(finetune_step.all_entity_loss through `masked_loss`).

`self_negatives` (SimKGC's self-negatives; not in the paper, off by default): one extra column per query row, the
score of query (h_i, r_i) against its own anchor h_i encoded as a candidate, labelled 0. It is left out (not a
negative) where h_i is a known answer of the query or the row already scores h_i (`self_negative_mask`). Paper
loss: one more negative pair per row in the mean over scored pairs; InfoNCE: one more logit in the denominator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lpbert_core.model.siamese import cosine_matrix, distance_matrix, pair_cosine, pair_distance

PROBABILITIES = ("affine", "sigmoid", "learnable", "raw")
DISTANCES = ("per_pair", "per_pair_normalized", "batch_sum", "none")
SHIFTS = ("initial_mean", "midpoint", "balanced")  # measured shifts (a number is used as given)
LOSSES = ("focal_distance", "infonce")


@dataclass
class LossConfig:
    """The loss's part of a run's settings (`from_settings`). No defaults: config.yaml's finetune section holds
    them. Mutable only for `shift`, which finetune_loop sets once it has measured `initial_mean`."""

    loss: str
    probability: str
    temperature: float
    shift: float | str  # or 'initial_mean' until finetune_loop measures it
    alpha: float
    gamma: float
    distance: str
    distance_weight: float
    infonce_temperature: float
    infonce_margin: float
    self_negatives: bool
    pre_batch_weight: float
    all_entity_negatives: bool

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"finetune.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.probability not in PROBABILITIES:
            raise ValueError(f"finetune.probability must be one of {PROBABILITIES}, got {self.probability!r}")
        if self.distance not in DISTANCES:
            raise ValueError(f"finetune.distance must be one of {DISTANCES}, got {self.distance!r}")
        if isinstance(self.shift, str) and self.shift not in SHIFTS:
            raise ValueError(f"finetune.shift must be a number or one of {SHIFTS}, got {self.shift!r}")

    @classmethod
    def from_settings(cls, settings) -> "LossConfig":
        """From a FinetuneSettings (or a mapping holding every field: a ConfigError names the missing ones)."""
        from lpbert_core.config.settings import FinetuneSettings

        settings = FinetuneSettings.from_mapping(settings)
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


def _log_probs(cos: torch.Tensor, cfg: LossConfig, scale=None, bias=None):
    """(p, log p, log(1 - p)) for the chosen mapping; sigmoid-based mappings use log-sigmoid (stable)."""
    if cfg.probability in ("sigmoid", "learnable"):
        if cfg.probability == "sigmoid":
            if isinstance(cfg.shift, str):
                raise ValueError(f"shift {cfg.shift!r} has not been measured yet")
            z = (cos - cfg.shift) / cfg.temperature
        else:
            z = scale * cos + bias
        return torch.sigmoid(z), F.logsigmoid(z), F.logsigmoid(-z)
    if cfg.probability == "affine":
        p = (1.0 + cos) / 2.0
        pc = p.clamp(1e-6, 1 - 1e-6)
        return p, torch.log(pc), torch.log1p(-pc)
    # raw: authors' code, clip only inside the log, on p_t itself: log(clip(s)) and log(clip(1 - s))
    return cos, torch.log(cos.clamp(1e-4, 1 - 1e-4)), torch.log((1.0 - cos).clamp(1e-4, 1 - 1e-4))


def focal_terms(cos: torch.Tensor, labels: torch.Tensor, cfg: LossConfig, scale=None, bias=None) -> torch.Tensor:
    """Per-pair eq. 11 values (same shape as cos)."""
    p, logp, log1mp = _log_probs(cos, cfg, scale, bias)
    # cos <= 1, so 1 - p >= 0 for every mapping of a cosine; raw takes any score (pair_linear: s > 1 happens), where
    # the authors' (1 - s)^2 stays positive: |1 - s|^gamma
    one_minus = (1.0 - p).abs() if cfg.probability == "raw" else (1.0 - p).clamp_min(0)
    pos = -cfg.alpha * one_minus.pow(cfg.gamma) * logp
    neg = -(1.0 - cfg.alpha) * p.abs().pow(cfg.gamma) * log1mp
    return torch.where(labels > 0.5, pos, neg)


def distance_terms(dist: torch.Tensor, labels: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Per-pair eq. 12 values. `batch_sum` reproduces the literal form (one batch-wide sum, zero gradient)."""
    if cfg.distance == "none":
        return torch.zeros_like(dist)
    d = dist.sum() if cfg.distance == "batch_sum" else dist
    s = torch.sigmoid(d)
    return torch.where(labels > 0.5, s.expand_as(dist), (1.0 - s).expand_as(dist))


def infonce_logits(scores: torch.Tensor, is_target: torch.Tensor, cfg: LossConfig, inv_t=None) -> torch.Tensor:
    """Scores -> logits: the additive margin on the targets (if any), then 1 / temperature (fixed, or the learnable
    inverse temperature `inv_t`). Without margin and with a fixed temperature: scores / temperature, exactly."""
    if cfg.infonce_margin:
        scores = scores - cfg.infonce_margin * is_target.to(scores.dtype)
    return scores * inv_t if inv_t is not None else scores / cfg.infonce_temperature


def infonce_loss(cos: torch.Tensor, labels: torch.Tensor, cfg: LossConfig, inv_t=None) -> torch.Tensor:
    """Rows are queries; positive = the diagonal; other known positives are removed from the denominator."""
    n = cos.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=cos.device)
    logits = infonce_logits(cos, eye, cfg, inv_t)
    logits = logits.masked_fill((labels > 0.5) & ~eye, -math.inf)
    return F.cross_entropy(logits, torch.arange(n, device=cos.device))


def pair_loss(cos: torch.Tensor, dist: torch.Tensor, labels: torch.Tensor, cfg: LossConfig,
              scale=None, bias=None) -> dict[str, torch.Tensor]:
    """Loss over any set of scored pairs (cos, dist, labels of the same shape): n x n in-batch matrix,
    n positives, or positives + sampled negatives."""
    focal = focal_terms(cos, labels, cfg, scale, bias).mean()
    if cfg.distance == "per_pair_normalized":  # ||u/|u| - v/|v||| from the cosine (eps as in pair_distance)
        dist = torch.sqrt((2.0 - 2.0 * cos).clamp_min(0.0) + 1e-8)
    distance = distance_terms(dist, labels, cfg).mean()
    return {"loss": focal + cfg.distance_weight * distance, "focal": focal, "distance": distance}


def add_self_column(cos: torch.Tensor, dist: torch.Tensor | None, labels: torch.Tensor, queries: torch.Tensor,
                    anchors: torch.Tensor, self_mask, scorer=None) -> tuple:
    """Append the self-negative column to a score matrix [n, m]: column m = cosine / distance of query i and its
    own anchor's candidate vector anchors[i], label 0. Returns (cos, dist, labels, valid), each [n, m + 1];
    valid is False only in the extra column of rows where `self_mask` is False (known answer or already scored).
    `scorer`: an object with `score_pairs(u, v)` (the SiameseModel) for a score other than the cosine."""
    n, m = cos.shape
    mask = torch.as_tensor(self_mask, dtype=torch.bool, device=cos.device).reshape(n, 1)
    own = pair_cosine(queries, anchors) if scorer is None else scorer.score_pairs(queries, anchors)
    cos = torch.cat([cos, own.unsqueeze(1)], 1)
    if dist is not None:
        dist = torch.cat([dist, pair_distance(queries, anchors).unsqueeze(1)], 1)
    labels = torch.cat([labels, labels.new_zeros(n, 1)], 1)
    valid = torch.cat([torch.ones(n, m, dtype=torch.bool, device=cos.device), mask], 1)
    return cos, dist, labels, valid


def masked_loss(cos: torch.Tensor, dist: torch.Tensor | None, labels: torch.Tensor, valid: torch.Tensor,
                target: torch.Tensor, cfg: LossConfig, scale=None, bias=None, inv_t=None,
                logit_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss over a score matrix [n, m] whose invalid entries are not scored. Paper loss: eqs. 11-12 averaged over
    the valid pairs. InfoNCE: row i's positive is column target[i]; other known positives and invalid entries
    are removed from the denominator; `logit_weight` [m] multiplies each column's logit (pre-batch columns)."""
    if cfg.loss == "infonce":
        n = cos.shape[0]
        is_target = torch.zeros_like(valid)
        is_target[torch.arange(n, device=cos.device), target] = True
        logits = infonce_logits(cos, is_target, cfg, inv_t)
        if logit_weight is not None:
            logits = logits * logit_weight
        logits = logits.masked_fill(~valid | ((labels > 0.5) & ~is_target), -math.inf)
        loss = F.cross_entropy(logits, target)
        zero = loss.new_zeros(())
        return {"loss": loss, "focal": zero, "distance": zero}
    return pair_loss(cos[valid], dist[valid], labels[valid], cfg, scale, bias)


def batch_loss(queries: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor, cfg: LossConfig,
               scale=None, bias=None, anchors: torch.Tensor | None = None, self_mask=None,
               scorer=None, inv_t=None) -> dict[str, torch.Tensor]:
    """The in-batch loss: n queries x n candidates, labels [n, n] (known answers of `finetune.label_splits`). With
    `anchors` ([n, d], the candidate vectors of each row's head entity) and `self_mask` ([n] bool): the self-negative
    column. `scorer`: an object with `score_matrix` / `score_pairs` (the SiameseModel); None = the cosine."""
    cos = cosine_matrix(queries, candidates) if scorer is None else scorer.score_matrix(queries, candidates)
    if anchors is not None:
        dist = None if cfg.loss == "infonce" else distance_matrix(queries, candidates)
        cos, dist, labels, valid = add_self_column(cos, dist, labels, queries, anchors, self_mask, scorer)
        target = torch.arange(cos.shape[0], device=cos.device)
        return masked_loss(cos, dist, labels, valid, target, cfg, scale, bias, inv_t)
    if cfg.loss == "infonce":
        loss = infonce_loss(cos, labels, cfg, inv_t)
        zero = loss.new_zeros(())
        return {"loss": loss, "focal": zero, "distance": zero}
    dist = distance_matrix(queries, candidates)
    return pair_loss(cos, dist, labels, cfg, scale, bias)


@dataclass
class ScoreColumns:
    """One block of candidate columns of a row-wise score matrix: scores [n, m], L2 distances [n, m] (None for
    InfoNCE), labels [n, m] (1 = known answer of the row), valid [n, m] bool (False = not scored), and the InfoNCE
    logit weight of the block."""

    scores: torch.Tensor
    dist: torch.Tensor | None
    labels: torch.Tensor
    valid: torch.Tensor
    weight: float = 1.0


def column_loss(blocks: list[ScoreColumns], cfg: LossConfig, scale=None, bias=None,
                inv_t=None) -> dict[str, torch.Tensor]:
    """The loss of a score matrix made of column blocks side by side (in-batch tails | hard negatives | self column
    | pre-batch bank): row i's target is column i of the first block. One `masked_loss` over the joined blocks."""
    n = blocks[0].scores.shape[0]
    cat = lambda name: torch.cat([getattr(b, name) for b in blocks], 1)  # noqa: E731
    scores, labels, valid = cat("scores"), cat("labels"), cat("valid")
    dist = None if cfg.loss == "infonce" else cat("dist")
    weight = None
    if any(b.weight != 1.0 for b in blocks):
        weight = torch.cat([scores.new_full((b.scores.shape[1],), float(b.weight)) for b in blocks])
    target = torch.arange(n, device=scores.device)
    return masked_loss(scores, dist, labels, valid, target, cfg, scale, bias, inv_t, weight)
