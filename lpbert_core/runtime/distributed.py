"""Several GPUs for one job (config `gpus_per_job: K`): torch.distributed primitives, with K processes ("ranks").

A job that asked for K > 1 GPUs (`claim_gpus(K)` in its workflow script) runs its stage's entry point in K processes,
one per card: `multi_gpu_stage` writes the call's arguments to JSON and starts torchrun (`launch_ranks`), and each
rank re-creates the call (lpbert_core.runtime.launch). Without an initialised process group every function here is the
single-process identity (`world()` is rank 0 of 1), so a job with K = 1 runs exactly the code and numbers of before.

* Backend: NCCL for CUDA tensors and gloo for CPU tensors (`cpu:gloo,cuda:nccl`); gloo alone where CUDA is absent
  (the tests run 2 CPU ranks). Each rank uses the card `LOCAL_RANK` of the job's `CUDA_VISIBLE_DEVICES` (the parent
  claimed K cards, see gpu_slots; torchrun's children inherit the variable).
* Batches are GLOBAL: every rank draws the same global batch (same seed) and takes its contiguous slice
  (`shard_range`). Fine-tuning gathers all ranks' embeddings with gradient (`gather_rows`: all_gather forward, the
  summed gradient back to the owner) and computes the loss on the full in-batch matrix; pre-training and the
  cross-encoder weight each rank's mean loss by its share of the global batch.
* Gradients: every training stage runs its step through `data_parallel` (torch's DistributedDataParallel), whose
  bucketed all-reduce overlaps the backward pass and makes every rank's update the update of one device with the
  global batch. The stage's whole loss is computed inside the wrapped module's forward, so DDP sees every parameter the
  loss uses (fine-tuning's logit mapping lives outside the encoder: finetune_step.FinetuneStep). A rank whose slice of a
  short last batch is empty still runs its forward on one padding row and keeps none of it: every parameter takes part
  in its backward pass with a zero gradient, so all ranks reduce the same buckets in the same order.
* Batch statistics: the pre-training head's BatchNorm normalises over the GLOBAL batch's labelled tokens
  (`sum_with_grad`, pretrain_model.GlobalBatchNorm1d), as one device would: its statistics and running averages do
  not depend on the number of ranks.
* Only rank 0 writes (checkpoints, logs, outputs); all ranks read the same checkpoint on resume (`main_first`).
* Scoring: entity and query encoding is split by whole length-sorted batches, so every vector is computed exactly as
  in one process, and summed back (`sum_disjoint_rows`); rank chunks come back with `gather_variable`.
* Why not torch.distributed.nn.functional.all_gather / all_reduce: deprecated since torch 2.13 (inside this project's
  pin), and on gloo their backward goes through all_to_all. `gather_rows` and `sum_with_grad` are the same maths on
  all_gather / all_reduce, which every backend has.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0


def world() -> World:
    """(rank, world size, local rank) of this process: from the initialised process group, else (0, 1, 0)."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return World(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    return World()


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, logs and outputs."""
    return world().rank == 0


def init_from_env() -> World:
    """Join the process group torchrun describes (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR/PORT`); a no-op
    outside torchrun or with WORLD_SIZE 1. On CUDA hosts the rank's card is `LOCAL_RANK`."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or dist.is_initialized():
        return world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return world()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """A rank's own card: `cuda` becomes `cuda:LOCAL_RANK` in a multi-process job (an explicit index is kept)."""
    if device.type == "cuda" and device.index is None and world().size > 1:
        return torch.device("cuda", world().local_rank)
    return device


def _collective_device() -> torch.device:
    """Where small bookkeeping tensors live for a collective: the rank's GPU under NCCL, else the CPU."""
    if torch.cuda.is_available() and dist.is_initialized() and "nccl" in str(dist.get_backend()).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------- sharding

def shard_sizes(n: int, size: int | None = None) -> list[int]:
    """How many of n items each rank takes: contiguous slices, the first n % size ranks one more."""
    size = world().size if size is None else int(size)
    base, extra = divmod(int(n), size)
    return [base + (1 if r < extra else 0) for r in range(size)]


def shard_range(n: int, rank: int | None = None, size: int | None = None) -> tuple[int, int]:
    """The slice [lo, hi) of n items that `rank` takes (rank order = item order; empty when n < size)."""
    w = world()
    rank = w.rank if rank is None else int(rank)
    sizes = shard_sizes(n, w.size if size is None else size)
    lo = sum(sizes[:rank])
    return lo, lo + sizes[rank]


def rank_seed(seed: int) -> int:
    """A per-rank torch seed (dropout): rank 0 keeps `seed` (one process = today's stream), rank r > 0 gets an
    independent stream derived from (seed, r)."""
    rank = world().rank
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % (2**63), rank]).generate_state(1, np.uint64)[0] % (2**63))


# ---------------------------------------------------------------- collectives

class _GatherRows(torch.autograd.Function):
    """all_gather with gradient: forward concatenates every rank's equally shaped tensor in rank order; backward sums
    the gradient of the whole result over ranks (every rank's loss used every rank's rows) and keeps this rank's part.
    The same maths as torch.distributed.nn.functional.all_gather (deprecated in torch 2.13); all_reduce works on
    every backend."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.rank, ctx.rows = dist.get_rank(), local.shape[0]
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_rows(local: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """All ranks' rows, concatenated in rank order, WITH gradient: rank r holds counts[r] rows of `local` (the same
    trailing shape everywhere). The backward pass sums the gradient of every rank's copy into the rank that owns the
    rows. Identity in one process."""
    if world().size == 1:
        return local
    width = max(int(c) for c in counts)
    if local.shape[0] < width:  # all_gather needs equal shapes: pad, then cut each part back to its count
        local = torch.cat([local, local.new_zeros((width - local.shape[0], *local.shape[1:]))])
    if torch.is_grad_enabled() and not local.requires_grad:
        # a rank without rows (or without grad) must still take part in the others' backward all-reduce
        local = local.detach().requires_grad_()
    gathered = _GatherRows.apply(local)
    return torch.cat([gathered[r * width:r * width + int(c)] for r, c in enumerate(counts)])


def gather_variable(local: torch.Tensor) -> torch.Tensor:
    """All ranks' rows (any count per rank, no gradient), concatenated in rank order."""
    if world().size == 1:
        return local
    count = torch.tensor([local.shape[0]], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(world().size)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    width = max(counts)
    padded = local
    if local.shape[0] < width:
        padded = torch.cat([local, local.new_zeros((width - local.shape[0], *local.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:c] for part, c in zip(parts, counts)])


def sum_disjoint_rows(tensor: torch.Tensor) -> torch.Tensor:
    """In place: every rank filled its own rows of a zero tensor; afterwards every rank holds all rows. Exact (x + 0
    is x), so the result equals the one process's bit for bit."""
    if world().size > 1:
        dist.all_reduce(tensor)
    return tensor


def max_int(value: int) -> int:
    """The largest `value` over all ranks."""
    if world().size == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.long, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_object(obj) -> list:
    """Every rank's picklable `obj`, in rank order."""
    if world().size == 1:
        return [obj]
    out: list = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def main_first(fn: Callable[[], object]):
    """Run `fn` on rank 0, then on the other ranks (e.g. resuming a checkpoint: rank 0 discards a stale one before
    anyone reads)."""
    if world().size == 1:
        return fn()
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


class _SumWithGrad(torch.autograd.Function):
    """all_reduce (sum) with gradient: every rank's loss uses the sum, so the gradient of each rank's input is the sum
    of all ranks' gradients of the output."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = local.contiguous().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def sum_with_grad(local: torch.Tensor) -> torch.Tensor:
    """The sum of every rank's equally shaped `local`, differentiable (identity in one process)."""
    if world().size == 1:
        return local
    return _SumWithGrad.apply(local)


def data_parallel(module: torch.nn.Module) -> torch.nn.Module:
    """The module a training step runs through: DistributedDataParallel in a multi-rank job, the module itself in one
    process (the same code and numbers as before). Inputs are placed by the caller (device_ids None: DDP moves
    nothing). find_unused_parameters: a run's module holds parameters its loss may not use (the pooler under mean
    pooling, the logit mapping under InfoNCE); those keep no gradient, exactly as in one process. Buffers are not
    broadcast: the only ones a step changes are the pre-training BatchNorm's, identical on every rank already
    (GlobalBatchNorm1d)."""
    if world().size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=None, broadcast_buffers=False, find_unused_parameters=True)


def padding_row(device) -> dict:
    """The inputs a rank without rows runs through its model (one padding token; the caller keeps none of the output),
    so that every parameter takes part in its backward pass with a zero gradient, as on the other ranks (DDP)."""
    return {"input_ids": torch.zeros((1, 1), dtype=torch.long, device=device),
            "attention_mask": torch.ones((1, 1), dtype=torch.long, device=device)}


def is_data_parallel(module: torch.nn.Module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(module, DistributedDataParallel)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a data_parallel wrapper (the module itself otherwise)."""
    return module.module if is_data_parallel(module) else module


# ---------------------------------------------------------------- launching K ranks

def rank_threads(threads: int | None, ranks: int) -> int | None:
    """CPU threads per rank: the job's threads shared among its ranks."""
    if not threads:
        return threads
    return max(int(threads) // max(int(ranks), 1), 1)


def launch_ranks(stage: str, kwargs: dict, nproc: int, log_path: str | Path | None = None,
                 threads: int | None = None, extra_env: dict | None = None) -> None:
    """Run `stage` (a name of lpbert_core.runtime.launch.STAGES) with `kwargs` in `nproc` processes under torchrun
    (`--standalone`: one node, a free local port). The call's arguments travel as a JSON file; each rank re-creates
    the call (lpbert_core.runtime.launch). Raises when a rank fails (torchrun then stops the others)."""
    with tempfile.TemporaryDirectory(prefix="lpbert-ranks-") as folder:
        spec = Path(folder) / "call.json"
        spec.write_text(json.dumps({"stage": stage, "kwargs": kwargs, "log": str(log_path) if log_path else None,
                                    "threads": rank_threads(threads, nproc)}, default=str))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
               "-m", "lpbert_core.runtime.launch", str(spec)]
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(rank_threads(threads, nproc))
        env.update(extra_env or {})
        log.info("%s: %d ranks under torchrun (CUDA_VISIBLE_DEVICES=%s): %s", stage, nproc,
                 env.get("CUDA_VISIBLE_DEVICES"), " ".join(cmd))
        done = subprocess.run(cmd, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{stage}: {nproc} ranks under torchrun failed (exit code {done.returncode}); "
                               "each rank's error is above, rank 0's also in the job's log")


def multi_gpu_stage(stage: str):
    """Decorator of a stage's entry point (run_pretrain, run_finetune, run_kgbert_train, run_score). Called in a job
    that asked for K > 1 GPUs (`claim_gpus(K)` at the top of its workflow script; config `gpus_per_job`), the call
    writes its arguments to a JSON file and runs itself in K ranks under torchrun (launch_ranks), rank 0 logging to
    the job's log file, and returns None. Otherwise (K <= 1, or inside a rank) it is the plain call. Arguments that
    are functions (a log callback) stay behind: lpbert_core.runtime.launch binds its own."""

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def entry(*args, **kwargs):
            from lpbert_core.runtime.gpu_slots import requested_gpus

            nproc = requested_gpus()
            if nproc <= 1 or world().size > 1:
                return fn(*args, **kwargs)
            call = {name: value for name, value in signature.bind(*args, **kwargs).arguments.items()
                    if not callable(value)}
            threads = torch.get_num_threads()
            settings = call.get("settings")
            if hasattr(settings, "as_dict"):  # typed settings (lpbert_core.config.settings) travel to the ranks as plain data
                settings = call["settings"] = settings.as_dict()
            if isinstance(settings, dict) and settings.get("threads"):  # pre-training sets its threads itself
                threads = int(settings["threads"])
                call["settings"] = {**settings, "threads": rank_threads(threads, nproc)}
            from lpbert_core.runtime.stage_runner import current_log

            launch_ranks(stage, call, nproc, current_log(), threads)
            return None

        return entry

    return wrap
