"""Preemption-safe training: a stop signal makes a training loop write its checkpoint at the next step boundary and
exit non-zero, so that a requeue, Snakemake's `retries` or `--rerun-incomplete` resumes it (the checkpoint lives
outside the rule's outputs). Plus the wall-clock checkpoint interval and the tally of checkpoint bytes written.

* Signals: SIGTERM (SLURM at the time limit, `scancel`, preemption; SIGKILL follows after KillWait, 30 s by
  default) and SIGUSR1 (a common advance-warning choice). profiles/slurm asks for `--signal=TERM@180`: three minutes
  ahead, to every process of the job step (see the profile for why not `B:USR1`).
* `watching()` installs the handlers (which only set a flag) while a training stage runs; `preemptible` wraps a
  stage's entry point in it. Everywhere else the signals keep their default action (a scoring job still dies at once).
* A loop asks `CheckpointClock.decide(step)` at each step boundary: (save now, stop now). It writes its checkpoint
  when either is true, then calls `stop(...)`, which raises `Preempted`; `lpbert_core.runtime.stage_runner.run_stage` turns that
  into one log line and exit code EXIT_CODE.
* Several ranks (lpbert_core.runtime.distributed): a rank may see the signal a step later than another, so the decision is
  one all-reduce (max) every SYNC_EVERY steps: every rank saves and stops at the same step (no rank is left waiting
  in a collective). One process decides at every step, with no collective.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"; any non-zero code makes Snakemake retry or mark the job incomplete
SYNC_EVERY = 10  # steps between the ranks' agreements (one tiny all-reduce); one process checks every step

_STATE: dict = {"signal": None, "depth": 0, "previous": {}}


class Preempted(Exception):
    """A training loop stopped on a stop signal after writing its checkpoint (run_stage: exit code EXIT_CODE)."""


def requested() -> bool:
    """True once a stop signal arrived (or `request()` was called) in this process."""
    return _STATE["signal"] is not None


def signal_name() -> str | None:
    sig = _STATE["signal"]
    return None if sig is None else signal.Signals(sig).name


def request(signum: int = signal.SIGTERM) -> None:
    """Ask the running loop to checkpoint and stop (the signal handler; tests call it directly)."""
    _STATE["signal"] = int(signum)


def clear() -> None:
    _STATE["signal"] = None


def _handler(signum, frame) -> None:  # noqa: ARG001
    if _STATE["signal"] is None:  # no logging here: a handler may interrupt the logging module holding its lock
        os.write(2, f"\n{signal.Signals(signum).name}: checkpoint at the next step boundary, then stop\n".encode())
    request(signum)


@contextlib.contextmanager
def watching(signals=STOP_SIGNALS) -> Iterator[None]:
    """While inside, the stop signals only set the flag (nested uses share one installation). Outside the main
    thread signal handlers cannot be installed: the block then runs with the defaults."""
    main = threading.current_thread() is threading.main_thread()
    if main and _STATE["depth"] == 0:
        _STATE["previous"] = {sig: signal.signal(sig, _handler) for sig in signals}
    _STATE["depth"] += main
    try:
        yield
    finally:
        if main:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                for sig, previous in _STATE["previous"].items():
                    signal.signal(sig, previous)
                _STATE["previous"] = {}
                clear()


def preemptible(fn: Callable) -> Callable:
    """Decorator of a training stage's entry point (outermost, above `distributed.multi_gpu_stage`): the call runs
    inside `watching()`. In a multi-GPU job's launching process the call only waits for torchrun, whose ranks stop
    (each inside its own `watching()`) and fail; that failure is reported as `Preempted` when a signal came."""

    @functools.wraps(fn)
    def entry(*args, **kwargs):
        with watching():
            try:
                return fn(*args, **kwargs)
            except Preempted:
                raise
            except Exception as exc:
                if requested():
                    raise Preempted(f"{signal_name()} during the run ({exc})") from exc
                raise

    return entry


def stop(where: str | Path, log: Callable[[str], None] | None = None) -> None:
    """Raise Preempted after the caller wrote its checkpoint `where` (the message run_stage logs)."""
    message = f"stopped on {signal_name() or 'a stop request'}: checkpoint written to {where}; a rerun resumes from it"
    if log is not None:
        log(message)
    raise Preempted(message)


def folder_bytes(path: str | Path) -> int:
    """Bytes of the files under `path` (0 when absent)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


class CheckpointClock:
    """When to write a checkpoint besides the loop's own schedule (epoch ends, `checkpoint_every_steps`): every
    `every_minutes` of wall-clock time (0 = never) and on a stop signal; and the bytes written, kept in the resumable
    `progress` dict (`checkpoint_bytes`, `checkpoint_writes`) so the total covers every attempt of a run.

    progress["checkpoint_bytes"] counts the writes before the checkpoint that holds it; `resumed_from(folder)` adds
    that checkpoint's own size, so the tally is exact across attempts."""

    def __init__(self, every_minutes: float, progress: dict, sync_every: int | None = None):
        self.every_s = float(every_minutes or 0) * 60.0
        self.progress = progress
        self.sync_every = max(int(sync_every or SYNC_EVERY), 1)
        self.last = time.monotonic()
        progress.setdefault("checkpoint_bytes", 0)
        progress.setdefault("checkpoint_writes", 0)

    def resumed_from(self, folder: str | Path) -> None:
        self.progress["checkpoint_bytes"] += folder_bytes(folder)
        self.progress["checkpoint_writes"] += 1

    def due(self) -> bool:
        return bool(self.every_s) and time.monotonic() - self.last >= self.every_s

    def decide(self, step: int) -> tuple[bool, bool]:
        """(save, stop) at the boundary after step `step` (1-based within the epoch). `stop` implies `save`."""
        from lpbert_core.runtime import distributed

        if distributed.world().size == 1:
            stop_now = requested()
            return stop_now or self.due(), stop_now
        if step % self.sync_every:
            return False, False
        code = distributed.max_int(2 if requested() else 1 if self.due() else 0)  # max: stop (2) wins over save (1)
        return code >= 1, code == 2

    def stop_agreed(self) -> bool:
        """Whether any rank got a stop signal (a collective in a multi-rank job: call it on every rank)."""
        from lpbert_core.runtime import distributed

        if distributed.world().size == 1:
            return requested()
        return distributed.max_int(int(requested())) == 1

    def saved(self, nbytes: int) -> None:
        """Count a checkpoint write of `nbytes` (0 on ranks that do not write) and restart the interval."""
        self.progress["checkpoint_bytes"] += int(nbytes)
        self.progress["checkpoint_writes"] += int(nbytes > 0)
        self.last = time.monotonic()

    def summary(self) -> str:
        """The end-of-training log line (benchmarks parse `checkpoint_bytes=`)."""
        total = int(self.progress["checkpoint_bytes"])
        return (f"checkpoints written: checkpoint_bytes={total} ({total / 1e9:.3f} GB) "
                f"checkpoint_writes={int(self.progress['checkpoint_writes'])} (all attempts of this run)")

