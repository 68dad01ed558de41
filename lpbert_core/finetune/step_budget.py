"""The batch plan of a fine-tuning run: `epochs` epochs (the paper), or a fixed step budget (the CPU proxy, issue #25).

A step budget S draws batches from the WHOLE train graph without repetition: pass p over the rows is the epoch
batch list of `epoch_seed(seed, p)` (the same list an epoch-based run trains on in epoch p), passes follow each other
until S batches are taken, and the S batches are cut into `dev_points` consecutive segments of (nearly) equal length.
The loop treats a segment as it treats an epoch (dev evaluation, selection, early stop, checkpoint); the learning-rate
schedule spans the S steps, so the reading's whole warmup / decay is compressed into the budget. Everything depends
only on (lengths, batch size, order, seed, S, dev_points): a resumed run rebuilds the same plan.
"""

from __future__ import annotations

import numpy as np

from lpbert_core.runtime.training import epoch_seed, training_batches


def budget_segments(lengths, batch_size: int, order: str, seed: int, budget: int, points: int) -> list[list[np.ndarray]]:
    """`points` segments holding the first `budget` batches of consecutive seeded passes."""
    if budget < 1 or points < 1:
        raise ValueError(f"finetune.step_budget and dev_points must be >= 1, got {budget} and {points}")
    if points > budget:
        raise ValueError(f"finetune.dev_points ({points}) exceeds step_budget ({budget}): a dev point needs a step")
    plan: list[np.ndarray] = []
    p = 0
    while len(plan) < budget:
        plan.extend(training_batches(lengths, batch_size, order, epoch_seed(seed, p)))
        p += 1
    plan = plan[:budget]
    bounds = np.linspace(0, budget, points + 1).round().astype(int)
    return [plan[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class BatchPlan:
    """Which batches epoch (or segment) e trains on, how many there are, and the schedule's length."""

    def __init__(self, lengths, batch_size: int, order: str, seed: int, epochs: int, budget: int | None,
                 points: int):
        self.lengths, self.batch_size, self.order, self.seed = lengths, batch_size, order, seed
        self.segments = budget_segments(lengths, batch_size, order, seed, budget, points) if budget else None
        self.epochs = len(self.segments) if self.segments else epochs
        per_epoch = len(training_batches(lengths, batch_size, order, seed=0))
        self.total_steps = budget if budget else per_epoch * epochs

    def batches(self, epoch: int) -> list[np.ndarray]:
        if self.segments is not None:
            return self.segments[epoch]
        return training_batches(self.lengths, self.batch_size, self.order, epoch_seed(self.seed, epoch))
