"""One rank of a multi-GPU job: `python -m torch.distributed.run --standalone --nproc_per_node K -m lpbert_core.runtime.launch
CALL.json` (distributed.launch_ranks writes CALL.json: the stage's name, its keyword arguments, the job's log file
and the CPU threads per rank). Each rank joins the process group, re-creates the same stage call and leaves the group;
rank 0 logs to the job's log file, the other ranks only warnings and errors to stderr."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

# stage name -> (module, function, extra keyword arguments that cannot travel as JSON)
STAGES = {
    "pretrain": ("lpbert_core.pretrain.pretrain_loop", "run_pretrain", None),
    "finetune": ("lpbert_core.finetune.finetune_loop", "run_finetune", None),
    "kgbert_train": ("lpbert_core.baselines.cross_encoder_loop", "run_kgbert_train", None),
    "score": ("lpbert_core.evaluate.scoring", "run_score", lambda: {"log": logging.getLogger("lpbert.score").info}),
}


def stage_function(stage: str):
    """The stage's callable, with its non-JSON arguments (e.g. a log function) bound."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    module, name, extra = STAGES[stage]
    fn = getattr(importlib.import_module(module), name)
    if extra is None:
        return fn
    bound = extra()
    return lambda **kwargs: fn(**{**bound, **kwargs})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    call = json.loads(Path(argv[0]).read_text())
    from lpbert_core.runtime.distributed import barrier, init_from_env, shutdown
    from lpbert_core.errors import DeviceError, InputError
    from lpbert_core.runtime.preemption import EXIT_CODE, Preempted
    from lpbert_core.runtime.stage_runner import setup_logging
    from lpbert_core.runtime.training import torch_threads

    w = init_from_env()
    torch_threads(call.get("threads"))
    if w.rank == 0:
        setup_logging(call.get("log"))
    else:
        logging.basicConfig(level=logging.WARNING, force=True,
                            format=f"%(asctime)s %(levelname)s rank {w.rank} %(name)s: %(message)s")
    logging.getLogger("lpbert").info("rank %d of %d (local rank %d): %s", w.rank, w.size, w.local_rank,
                                     call["stage"])
    try:
        stage_function(call["stage"])(**call["kwargs"])
        # all ranks leave together: a rank that tore the gloo group down while rank 0 was still writing its outputs
        # aborted now and then ("terminate called without an active exception", SIGABRT; seen twice on 2 CPU cores)
        barrier()
    except (InputError, DeviceError) as exc:
        logging.getLogger("lpbert").error("%s", exc)
        sys.stderr.write(f"\nERROR (rank {w.rank}): {exc}\n")
        return 1
    except Preempted as exc:  # every rank stops at the same step (preemption.CheckpointClock); rank 0 saved
        logging.getLogger("lpbert").warning("PREEMPTED (rank %d): %s", w.rank, exc)
        return EXIT_CODE
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
