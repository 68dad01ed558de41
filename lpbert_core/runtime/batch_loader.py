"""Batches built off the training process's critical path: a torch DataLoader over a list of batch descriptions, and
the next epoch's pre-training samples built while this epoch trains.

Where the work of a batch is deterministic once its description is known (pre-training's collate of fixed samples, the
cross-encoder's sequences of fixed triples), `batch_loader` hands it to DataLoader workers, in order, pinned for a
non-blocking copy. Fine-tuning keeps its own one-thread prefetch (finetune/batch_feed.py): its batches draw negatives
from one numpy stream in batch order, which workers would have to reseed per batch (every run's numbers would change).

How many workers (`loader_workers`): none on a CPU device, where the host work is small next to the CPU step and a
worker would take a core from the model; 2 on a GPU, where the step is host-bound (tools/bench_host_prep.py). The
batches are the same either way (tests/test_batch_loader.py), so this is a speed choice, not a setting.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

GPU_WORKERS = 2  # a GPU step of MiniLM waits for its batch at 0 workers (52 ms a step, host-bound; issue #26)


def loader_workers(device: torch.device) -> int:
    return GPU_WORKERS if torch.device(device).type == "cuda" else 0


class _Batches(Dataset):
    """Item i is make(items[i]): one whole batch (DataLoader's own batching is off)."""

    def __init__(self, make: Callable, items: Sequence):
        self.make, self.items = make, list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.make(self.items[i])


def batch_loader(make: Callable, items: Sequence, device: torch.device, workers: int | None = None):
    """An iterable of make(item) for each item, in order: inline with 0 workers, else DataLoader worker processes (a
    worker inherits `make`'s data by fork) at most 2 batches ahead each; tensors pinned when the device is a GPU, so
    `.to(device, non_blocking=True)` overlaps the copy with the step."""
    workers = loader_workers(device) if workers is None else int(workers)
    pin = torch.device(device).type == "cuda"
    if workers == 0 and not pin:
        return (make(item) for item in items)
    # fork: workers inherit `make` and its data (closures need no pickling; Python 3.14 defaults to forkserver); they
    # never touch CUDA
    # generator: a DataLoader iterator draws its workers' base seed from this generator, or else from torch's global
    # stream, which would shift the training process's dropout masks (the batches use no torch randomness)
    return DataLoader(_Batches(make, items), batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin,
                      prefetch_factor=2 if workers else None,
                      multiprocessing_context="fork" if workers else None, generator=torch.Generator())


class EpochAhead:
    """`get(epoch)` returns build(epoch); with `ahead`, build(epoch + 1) then starts in a background thread, so the next
    epoch's samples are ready when it begins (pre-training rebuilds its samples every epoch: 27.7 s on FB15k-237).
    build must be deterministic in its epoch alone (its own seeded generator), so the thread changes no number."""

    def __init__(self, build: Callable[[int], object], last_epoch: int, ahead: bool):
        self.build, self.last_epoch, self.ahead = build, int(last_epoch), bool(ahead)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="epoch-ahead") if ahead else None
        self._pending: dict[int, Future] = {}

    def get(self, epoch: int):
        pending = self._pending.pop(epoch, None)
        out = pending.result() if pending is not None else self.build(epoch)
        if self._pool is not None and epoch + 1 <= self.last_epoch and epoch + 1 not in self._pending:
            self._pending[epoch + 1] = self._pool.submit(self.build, epoch + 1)
        return out

    def close(self) -> None:
        if self._pool is not None:
            for pending in self._pending.values():
                pending.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
