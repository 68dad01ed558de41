"""The random-number states a mid-epoch checkpoint of fine-tuning stores and restores: numpy's (the batch draws)
and torch's (dropout; one per rank in a multi-GPU job)."""

from __future__ import annotations

import torch

from lpbert_core import distributed


def torch_rng_state() -> dict:
    state = {"cpu": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


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


def set_torch_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["cpu"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
