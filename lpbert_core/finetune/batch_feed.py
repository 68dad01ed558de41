"""Host work one step ahead of the device: `BatchFeed` makes the items of a list in order in one background thread
(every RNG draw stays in one thread, in order), at most `depth` finished ones waiting."""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class BatchFeed:
    """`make(item)` for each item, in order. depth 0: inline, on demand. depth >= 1: one background thread makes
    them in order, at most `depth` finished ones waiting, while the caller runs the current step (the host work
    overlaps the device's; every RNG draw stays in one thread, in batch order). `wait_seconds`: how long the
    caller waited for batches (the share of host preparation the prefetch did not hide)."""

    def __init__(self, make: Callable, items, depth: int = 1):
        self._make, self._items, self.depth = make, list(items), int(depth)
        self.wait_seconds = 0.0
        self._stop = threading.Event()
        self._thread = None
        if self.depth > 0 and self._items:
            self._queue = queue.Queue(maxsize=self.depth)
            self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
            self._thread.start()

    def _put(self, obj) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set() or not self._put(self._make(item)):
                    return
        except BaseException as exc:  # re-raised in the consumer
            self._put(_Failure(exc))

    def __iter__(self):
        for item in self._items:
            t0 = time.perf_counter()
            if self._thread is None:
                out = self._make(item)
            else:
                out = self._queue.get()
                if isinstance(out, _Failure):
                    raise out.exc
            self.wait_seconds += time.perf_counter() - t0
            yield out

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
