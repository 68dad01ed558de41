"""One GPU (or K) per job on a multi-GPU host: Snakemake counts `gpu` resources but never says WHICH card a local job
may use, so without this every job would run on GPU 0. A job claims free GPU ids under file locks and sets
`CUDA_VISIBLE_DEVICES` before CUDA starts; the locks are `flock`s held by the job's process, so the kernel releases
them when the job ends, however it ends (a crash or `kill -9` included).

With `--resources gpu=N` on an N-GPU host, Snakemake runs at most N GPU jobs at once and each claims its own card.
Without a `--resources gpu=N` limit, surplus GPU jobs start and wait here for a card.
Inside a SLURM allocation (`SLURM_JOB_ID` set) jobs claim the same way among the allocation's cards only (SLURM's
`CUDA_VISIBLE_DEVICES`, else `SLURM_STEP_GPUS` / `SLURM_JOB_GPUS`; none of them: no card), with one lock folder per
allocation: several jobs of one `salloc --gpus=4` land on 4 cards, and a job that SLURM gave its own card (the executor
plugin: one sbatch per job) claims that card at once, whatever other allocations on the node hold.

A job that claims K > 1 cards runs its stage as K processes, one per card (lpbert_core.runtime.distributed: the stage's entry
point asks `requested_gpus()` and starts K ranks under torchrun, which inherit `CUDA_VISIBLE_DEVICES`).

Device count: `LPBERT_GPU_COUNT` (tests fake a multi-GPU host with it; also for hosts where `nvidia-smi` is absent),
else the ids in an inherited `CUDA_VISIBLE_DEVICES` (the user's own restriction is kept), else (in a SLURM
allocation) its GPU list, else `nvidia-smi -L`.
torch is not asked: `torch.cuda.device_count()` is cached for the process and would go stale once we narrow it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_HELD: list[int] = []  # open lock descriptors: the claim lasts as long as the process
_CLAIM: dict = {}  # what claim_gpus did, for the job's log once logging is set up (see describe_claim)
_REQUESTED: dict = {}  # {"count": K}: the job's request (resources gpu), also where no card is claimed (CPU)


def requested_gpus() -> int:
    """How many GPUs this job asked claim_gpus for (0 when it never asked): its number of ranks, where > 1."""
    return int(_REQUESTED.get("count", 0))


def lock_dir() -> Path:
    """One lock folder per user and host, shared by every workflow run there (two runs must not share a card); in a
    SLURM allocation one per allocation (its card ids are its own: another job's `0` may be another card)."""
    folder = Path(os.environ.get("LPBERT_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / f"lpbert-gpu-locks-{os.getuid()}")
    if os.environ.get("SLURM_JOB_ID"):
        folder = folder / f"slurm-{os.environ['SLURM_JOB_ID']}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def visible_gpu_ids() -> list[str]:
    """The GPU ids this job may choose from (see the module docstring for the order of sources)."""
    fake = os.environ.get("LPBERT_GPU_COUNT")
    if fake is not None:
        return [str(i) for i in range(int(fake))]
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None:
        return _id_list(inherited)
    if os.environ.get("SLURM_JOB_ID"):  # the allocation's cards only, never the whole node's
        return _id_list(os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS") or "")
    return [str(i) for i in range(nvidia_gpu_count())]


def _id_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip() and part.strip() != "-1"]


def nvidia_gpu_count() -> int:
    """NVIDIA cards in this machine, whatever torch can use: `LPBERT_GPU_COUNT`, else `nvidia-smi -L`, else the
    driver's /proc folder (0 where none answers)."""
    fake = os.environ.get("LPBERT_GPU_COUNT")
    if fake is not None:
        return int(fake)
    if shutil.which("nvidia-smi") is not None:
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
            return sum(line.startswith("GPU ") for line in listing.splitlines())
        except (OSError, subprocess.SubprocessError):
            pass
    driver = Path("/proc/driver/nvidia/gpus")  # one folder per card where the driver is loaded (no nvidia-smi needed)
    return len(list(driver.iterdir())) if driver.is_dir() else 0


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}\n".encode())
    return fd


def claim_gpus(count: int, *, timeout_s: float | None = None, poll_s: float = 1.0) -> list[str]:
    """Claim `count` free GPU ids for this process and narrow `CUDA_VISIBLE_DEVICES` to them.

    Returns the claimed ids ([] when nothing was claimed: count 0, or no GPU on the host / in the SLURM allocation).
    Waits while no card is free (more GPU jobs than cards, or another workflow run on the same host):
    for ever by default, logging once a minute, or `timeout_s` (env `LPBERT_GPU_WAIT_S`), then raises with the
    lock holders' pids. Waiting is safe: a lock dies with its process, so a card can never stay taken by a dead job.
    """
    if timeout_s is None and os.environ.get("LPBERT_GPU_WAIT_S"):
        timeout_s = float(os.environ["LPBERT_GPU_WAIT_S"])
    if count <= 0:
        _REQUESTED["count"] = 0
        return []
    ids = visible_gpu_ids()
    if not ids:
        _REQUESTED["count"] = int(count)  # no GPU here: the stage runs `count` CPU ranks (gloo)
        return []
    if count > len(ids):
        raise RuntimeError(f"this job needs {count} GPUs but the host has {len(ids)} ({', '.join(ids)})")
    _REQUESTED["count"] = int(count)
    folder = lock_dir()
    start = time.monotonic()
    next_note = start + 60
    while True:
        got: list[tuple[str, int]] = []
        for gpu in ids:
            fd = _try_lock(folder / f"gpu{gpu}.lock")
            if fd is not None:
                got.append((gpu, fd))
                if len(got) == count:
                    break
        if len(got) == count:
            _HELD.extend(fd for _, fd in got)
            claimed = [gpu for gpu, _ in got]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(claimed)
            _CLAIM.update(claimed=claimed, of=ids, lock_dir=str(folder))
            log.info("%s", describe_claim())
            return claimed
        for _, fd in got:  # all or nothing: never sit on part of a multi-GPU request
            os.close(fd)
        now = time.monotonic()
        if timeout_s is not None and now - start > timeout_s:
            holders = {p.name: p.read_text().strip() for p in sorted(folder.glob("gpu*.lock"))}
            raise RuntimeError(f"no {count} free GPU(s) of {ids} after {timeout_s:.0f} s; locks in {folder}: {holders}")
        if now > next_note:
            sys.stderr.write(f"waiting for {count} free GPU(s) of {ids} ({now - start:.0f} s so far; locks in {folder})\n")
            next_note = now + 60
        time.sleep(poll_s)


def describe_claim() -> str | None:
    """One log line for the job's log: which cards it claimed (None when it claimed none)."""
    if not _CLAIM:
        return None
    return (f"GPU slot: claimed {','.join(_CLAIM['claimed'])} of {','.join(_CLAIM['of'])} "
            f"(CUDA_VISIBLE_DEVICES={','.join(_CLAIM['claimed'])}; locks in {_CLAIM['lock_dir']})")


def release_gpus() -> None:
    """Give the claimed cards back early (normally the process's exit does it)."""
    while _HELD:
        os.close(_HELD.pop())
    _CLAIM.clear()
