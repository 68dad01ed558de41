"""The random-number states a mid-epoch checkpoint of fine-tuning stores and restores: numpy's (the batch draws)
and torch's (dropout; one per rank in a multi-GPU job)."""

from __future__ import annotations

from lpbert_core.runtime import distributed
from lpbert_core.runtime.training import set_torch_rng_state, torch_rng_state  # noqa: F401  (re-exported: the loop's imports)


def store_rng(progress: dict, numpy_state: dict) -> None:
    """The RNG states a mid-epoch checkpoint needs: numpy's (the same on every rank; the state right after the last
    finished step's draws, recorded by prepare_batch: the prefetch thread may have drawn further) and torch's
    (dropout; one per rank in a multi-GPU job, each rank restores its own)."""
    progress["torch_rng"] = torch_rng_state()
    progress["numpy_rng"] = numpy_state
    if distributed.world().size > 1:
        progress["torch_rng_ranks"] = distributed.all_gather_object(progress["torch_rng"])


def rank_torch_rng(progress: dict) -> dict:
    ranks = progress.get("torch_rng_ranks")
    return ranks[distributed.world().rank] if ranks else progress["torch_rng"]
