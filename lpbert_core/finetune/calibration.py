"""Calibration of eq. 11's probability mapping, and the gradient balance it is judged by (issue #25).

The sigmoid mapping p = sigmoid((cos - shift) / temperature) decides where the focal loss pulls and pushes. Centred on
the mean in-batch cosine (`initial_mean`, chosen on UMLS), it fails where positives start far above that mean: on
WN18RR without pre-training the in-batch mean is ~0.07 and the positives' ~0.42, so at temperature 0.1 a positive
starts at p ~ 0.97 and its focal weight (1 - p)^2 is ~0: only negatives get a gradient. Two measured shifts fix that:

- `midpoint`: halfway between the positives' and the negatives' mean initial cosine;
- `balanced`: the shift at which the positives carry half of the focal term's gradient with respect to the scores
  (InfoNCE's balance: there the positive's and the negatives' gradients are equal by construction).

Both are measured once, before the first step, on the same pairs as `initial_mean` (step_measures.measure_initial_shift).
`positive_gradient_share` is the diagnostic the proxy records at each dev point and the unit test checks at step 0.
"""

from __future__ import annotations

import torch

from lpbert_core.finetune.finetune_loss import LossConfig, focal_terms, masked_loss

BISECTION_STEPS = 60  # halves the bracket to well below float32 resolution


def gradient_share(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, target: torch.Tensor,
                   cfg: LossConfig, scale=None, bias=None, inv_t=None) -> float:
    """Share of |dL/d score| summed over the positive entries (labels 1, valid) of a score matrix [n, m], for the
    run's loss (`finetune_loss.masked_loss`; eq. 12's distance term is left out: it acts on distances, not on the
    mapping being calibrated). 0 = only negatives are pushed; InfoNCE gives 0.5 up to masking."""
    s = scores.detach().float().clone().requires_grad_(True)
    dist = None if cfg.loss == "infonce" else torch.zeros_like(s)
    probe = LossConfig(**{**cfg.__dict__, "distance": "none"}) if cfg.loss != "infonce" else cfg
    out = masked_loss(s, dist, labels.float(), valid, target, probe, scale, bias, inv_t)
    (grad,) = torch.autograd.grad(out["loss"], s)
    g = grad.abs() * valid
    total = float(g.sum())
    return float((g * (labels > 0.5)).sum()) / total if total > 0 else 0.0


def focal_positive_share(positives: torch.Tensor, negatives: torch.Tensor, cfg: LossConfig, shift: float) -> float:
    """The positives' share of the focal term's |d/d cos| when the sigmoid mapping is centred at `shift`; every
    positive and negative cosine counts once (as in the loss's mean over pairs)."""
    probe = LossConfig(**{**cfg.__dict__, "probability": "sigmoid", "shift": float(shift)})
    cos = torch.cat([positives, negatives]).detach().float().clone().requires_grad_(True)
    labels = torch.cat([torch.ones_like(positives), torch.zeros_like(negatives)]).float()
    (grad,) = torch.autograd.grad(focal_terms(cos, labels, probe).sum(), cos)
    g = grad.abs()
    total = float(g.sum())
    return float(g[: len(positives)].sum()) / total if total > 0 else 0.0


def balanced_shift(positives: torch.Tensor, negatives: torch.Tensor, cfg: LossConfig, target: float = 0.5) -> float:
    """The shift at which the positives carry `target` of the focal gradient. The share rises with the shift (a
    higher centre lowers every p: positives pull harder, negatives push less), so bisection over a bracket wide
    enough to reach both ends (the cosines' range +- 20 temperatures) finds it."""
    lo = float(min(positives.min(), negatives.min())) - 20 * cfg.temperature
    hi = float(max(positives.max(), negatives.max())) + 20 * cfg.temperature
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if focal_positive_share(positives, negatives, cfg, mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def measured_shift(mode: str, positives: torch.Tensor, negatives: torch.Tensor, all_pairs_mean: float,
                   cfg: LossConfig) -> float:
    """The shift of a measured mode from the initial cosines (positives: each row's own tail; negatives: the rest)."""
    if mode == "initial_mean":
        return all_pairs_mean
    if mode == "midpoint":
        return (float(positives.mean()) + float(negatives.mean())) / 2
    if mode == "balanced":
        return balanced_shift(positives, negatives, cfg)
    raise ValueError(f"unknown measured shift {mode!r}")
