"""How a Snakemake script runs a stage: log to the rule's log file and stderr, and turn bad input into
one readable line (file:line: message) instead of a traceback; a training stage stopped by a signal after its
checkpoint (lpbert_core.runtime.preemption) exits with code 75."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from lpbert_core.errors import DeviceError, InputError


_LOG: dict = {}  # the job's log file (a multi-GPU job's rank 0 appends to it too: lpbert_core.runtime.distributed)


def current_log() -> str | None:
    """The log file setup_logging last opened (None: stderr only)."""
    return _LOG.get("path")


def setup_logging(log_path: str | Path | None) -> None:
    _LOG["path"] = str(log_path) if log_path else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))  # a resumed job keeps its history
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )


def run_stage(log_path: str | Path | None, fn: Callable[[], object]) -> None:
    setup_logging(log_path)
    from lpbert_core.runtime.gpu_slots import describe_claim

    claim = describe_claim()  # made before logging existed (it must precede CUDA start-up)
    if claim:
        logging.getLogger("lpbert").info("%s", claim)
    from lpbert_core.runtime.preemption import EXIT_CODE, Preempted

    try:
        fn()
    except (InputError, DeviceError) as exc:
        logging.getLogger("lpbert").error("%s", exc)
        sys.stderr.write(f"\nERROR: {exc}\n")
        raise SystemExit(1) from None
    except Preempted as exc:  # checkpoint written: non-zero, so a retry / --rerun-incomplete resumes the job
        logging.getLogger("lpbert").warning("PREEMPTED: %s (exit code %d)", exc, EXIT_CODE)
        raise SystemExit(EXIT_CODE) from None
