"""The one epoch loop every training stage runs (pre-training, fine-tuning, the cross-encoder baseline).

The loop owns what the stages share: resuming from `checkpoint_dir/last` under the stage's fingerprint, the torch
RNG stream of each epoch (dropout; one per rank), progress lines, mid-epoch checkpoints (every
`checkpoint_every_steps`, every `checkpoint_every_minutes`, on a stop signal), model selection on the stage's dev
score with early stopping, the best weights, the epoch-end checkpoint and the clean-up after the outputs are written.
A stage supplies its model and optimiser, its fingerprint, one epoch's steps (`EpochSteps`), its dev evaluation and
its outputs (`TrainingStage`).

Progress (the JSON in every checkpoint): `epoch` (finished epochs), `step_in_epoch` (steps of the next epoch done;
0 at an epoch's end), `global_step`, `log` (one row per finished epoch), `best_epoch` / `best_score` / `best_dir`
(selection), `bad_epochs`, `stopped`, `attempt`, the checkpoint tally, the stage's own keys, and in a mid-epoch
checkpoint `partial`: {`epoch` (1-based), `step`, `torch_rng` (each rank's), `stage` (EpochSteps.position())}.
A resumed run continues after that step with the same batches and draws, so on CPU it ends exactly as an
uninterrupted run (tests/test_finetune_loop.py, test_pretrain_loop.py, test_preemption.py).

The best weights go to `best-EEE/` (named in the progress, written before the `last/` that names them, so a kill
between the two writes never pairs a progress record with another epoch's weights); stale ones are removed after
`last/` is written. Epoch numbers in the loop are 0-based (`progress["epoch"]` is the next one); logs and folder
names count from 1.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lpbert_core.runtime import distributed, preemption
from lpbert_core.runtime.atomic import atomic_dir
from lpbert_core.runtime.checkpoints import resume_checkpoint, save_checkpoint
from lpbert_core.runtime.training import set_torch_rng_state, torch_rng_state

_log = logging.getLogger(__name__)

# The checkpoint layout of this loop (progress keys, `partial`, best-EEE/), part of every stage's fingerprint: a
# checkpoint written by the stages' former loops is discarded (with a warning) instead of resumed into the wrong keys.
LAYOUT = "epoch-loop-1"


class EpochSteps(Protocol):
    """One epoch of a stage: `steps` runs the training steps after `first` (forward, backward, update) and yields
    after each; `position` is what a mid-epoch checkpoint needs to continue after the last step (called on every
    rank: it may be a collective); `loss_line` the running loss for a progress line (a host read)."""
    batches: int

    def steps(self, first: int) -> Iterator[None]: ...

    def position(self) -> dict: ...

    def loss_line(self) -> str: ...

    def close(self) -> None: ...


class TrainingStage(Protocol):
    """What a training stage gives the loop. `select`: keep the best epoch by the dev score `end_epoch` returns (a
    tuple, higher is better, or None: no improvement); without it the last epoch's weights are the run's. Optional:
    `save_files(progress, folder)` / `prune_files(progress, folder)`, the stage's own files written before each
    checkpoint that names them and pruned after it (fine-tuning's entity bank)."""
    name: str
    model: torch.nn.Module
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    fingerprint: str
    select: bool

    def start(self, progress: dict) -> None: ...

    def dropout_seed(self, epoch: int) -> int: ...

    def epoch(self, epoch: int, resumed: dict | None) -> EpochSteps: ...

    def end_epoch(self, epoch: int, steps: EpochSteps, first: int, train_seconds: float) -> tuple[dict, tuple | None]: ...


@dataclass
class LoopSettings:
    epochs: int
    checkpoint_dir: Path
    checkpoint_every_minutes: float = 0.0
    checkpoint_every_steps: int = 0  # 0: at epoch ends (and timed / signalled) only
    early_stop_patience: int | None = None  # epochs without a better dev score; None: never stop early
    log_every: int = 0  # steps between progress lines; 0: four per epoch
    progress_bar: bool = True
    selection_name: str = "score"  # what the early-stop line names
    # simulated kills (tests): end this call after so many steps / epochs with the checkpoint written, or call
    # step_hook(epoch (1-based), step) after every step
    stop_after_steps: int | None = None
    stop_after_epochs: int | None = None
    step_hook: Callable[[int, int], None] | None = None


class EpochLoop:
    """Runs `stage` for `settings.epochs` epochs (resuming where a checkpoint left off); `finish` writes the outputs."""

    def __init__(self, stage: TrainingStage, settings: LoopSettings, log: Callable[[str], None] = _log.info):
        self.stage, self.cfg, self.log = stage, settings, log
        self.dir = Path(settings.checkpoint_dir)
        self.killed = False

    # ------------------------------------------------------------ resume

    def _resume(self) -> dict:
        stage = self.stage
        progress = resume_checkpoint(self.dir / "last", stage.fingerprint, stage.model, stage.optimizer,
                                     stage.scheduler, stage.device, stage.scaler, discard=self.dir, warn=self.log)
        if progress is not None:
            partial = progress.get("partial")
            where = f" step {partial['step']} of epoch {partial['epoch']}" if partial else ""
            self.log(f"resuming from {self.dir / 'last'} after epoch {progress['epoch']}{where}")
            if distributed.is_main():
                self._remove_stale_best(progress.get("best_dir"))
            return progress
        if self.dir.exists() and distributed.is_main():
            shutil.rmtree(self.dir)  # leftovers of a run killed before its first checkpoint
        return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "log": [], "best_epoch": None, "best_score": None,
                "best_dir": None, "bad_epochs": 0, "stopped": False, "fingerprint": stage.fingerprint, "attempt": 1}

    def _remove_stale_best(self, keep: str | None) -> None:
        for path in self.dir.glob("best-*"):
            if path.name != keep:
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------ checkpoints

    def _save_last(self, progress: dict) -> None:
        """`last/` (a collective in a multi-rank job only through the stage's save hook; rank 0 writes)."""
        if distributed.is_main():
            save_files = getattr(self.stage, "save_files", None)
            if save_files is not None:  # the stage's own files first: the checkpoint that names them comes after
                save_files(progress, self.dir)
            self.clock.saved(save_checkpoint(self.dir / "last", self.stage.model, self.stage.optimizer,
                                             self.stage.scheduler, progress, self.stage.scaler))
            prune = getattr(self.stage, "prune_files", None)
            if prune is not None:
                prune(progress, self.dir)
        else:
            self.clock.saved(0)  # restarts the interval on every rank

    def _save_partial(self, progress: dict, epoch: int, step: int, steps: EpochSteps) -> None:
        """A mid-epoch checkpoint: the position after `step` (each rank's dropout stream; the stage's state)."""
        progress["partial"] = {"epoch": epoch + 1, "step": step,
                               "torch_rng": distributed.all_gather_object(torch_rng_state()),
                               "stage": steps.position()}
        self._save_last(progress)
        del progress["partial"]

    def _seed_dropout(self, epoch: int, partial: dict | None) -> None:
        seed = self.stage.dropout_seed(epoch)
        if partial is None:
            torch.manual_seed(distributed.rank_seed(seed))  # one stream per rank (rank 0: the one-process stream)
            return
        states, w = partial["torch_rng"], distributed.world()
        if len(states) == w.size:
            set_torch_rng_state(states[w.rank])
        else:  # another number of ranks: dropout streams differ anyway
            self.log(f"resumed with {w.size} ranks from a checkpoint of {len(states)}: fresh dropout streams")
            torch.manual_seed(distributed.rank_seed(seed + int(partial["step"])))

    # ------------------------------------------------------------ the loop

    def run(self) -> dict:
        cfg, stage = self.cfg, self.stage
        progress = distributed.main_first(self._resume)  # rank 0 discards a stale checkpoint before others read
        self.progress = progress
        self.clock = preemption.CheckpointClock(cfg.checkpoint_every_minutes, progress)
        if progress["attempt"] > 1:  # resumed: count the checkpoint it came from
            self.clock.resumed_from(self.dir / "last")
        stage.start(progress)
        steps_this_call = epochs_this_call = 0
        while progress["epoch"] < cfg.epochs and not progress["stopped"]:
            epoch = progress["epoch"]
            partial = progress.pop("partial", None)
            self._seed_dropout(epoch, partial)
            steps = stage.epoch(epoch, partial["stage"] if partial else None)
            first = partial["step"] if partial else 0
            every_line = cfg.log_every or max(steps.batches // 4, 1)
            bar = tqdm(total=steps.batches, initial=first, desc=f"{stage.name} epoch {epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress_bar or not distributed.is_main(), file=sys.stderr, mininterval=5,
                       leave=False)
            t0 = time.perf_counter()
            try:
                for step, _ in enumerate(steps.steps(first), start=first + 1):
                    progress["step_in_epoch"] = step
                    progress["global_step"] += 1
                    steps_this_call += 1
                    bar.update(1)
                    if step % every_line == 0:
                        self.log(f"{stage.name} epoch {epoch + 1} step {step}/{steps.batches} {steps.loss_line()} "
                                 f"({time.perf_counter() - t0:.0f} s)")
                    if cfg.step_hook is not None:
                        cfg.step_hook(epoch + 1, step)
                    killed = cfg.stop_after_steps is not None and steps_this_call >= cfg.stop_after_steps
                    timed, stop = self.clock.decide(step)  # wall-clock interval; SIGTERM / SIGUSR1
                    every = cfg.checkpoint_every_steps
                    if (every and progress["global_step"] % every == 0) or killed or timed:
                        self._save_partial(progress, epoch, step, steps)
                    if killed:
                        self.log(f"stopping after {steps_this_call} steps (simulated kill)")
                        self.killed = True
                        return progress
                    if stop:
                        preemption.stop(self.dir / "last", self.log)
            finally:
                bar.close()
                steps.close()
            row, score = stage.end_epoch(epoch, steps, first, time.perf_counter() - t0)
            progress["log"].append(row)
            self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if stage.select:
                self._select(progress, epoch, score)
            progress["epoch"], progress["step_in_epoch"] = epoch + 1, 0
            self._save_last(progress)
            if distributed.is_main() and stage.select:
                self._remove_stale_best(progress["best_dir"])
            epochs_this_call += 1
            more = progress["epoch"] < cfg.epochs and not progress["stopped"]
            if cfg.stop_after_epochs is not None and epochs_this_call >= cfg.stop_after_epochs and more:
                self.log(f"stopping after {epochs_this_call} epoch(s) (simulated kill)")
                self.killed = True
                return progress
            if more and self.clock.stop_agreed():  # a signal during the epoch's end (dev evaluation)
                preemption.stop(self.dir / "last", self.log)
        return progress

    def _select(self, progress: dict, epoch: int, score: tuple | None) -> None:
        """Keep the epoch's weights when its dev score beats the best so far; count epochs without improvement."""
        best = progress["best_score"]
        if score is not None and (best is None or tuple(score) > tuple(best)):
            name = f"best-{epoch + 1:03d}"
            if distributed.is_main():
                with atomic_dir(self.dir / name) as tmp:
                    state = {k: v.detach().cpu().contiguous() for k, v in self.stage.model.state_dict().items()}
                    save_file(state, str(tmp / "model.safetensors"))
                self.clock.saved(preemption.folder_bytes(self.dir / name))
            progress.update(best_score=list(score), best_epoch=epoch + 1, best_dir=name, bad_epochs=0)
            return
        progress["bad_epochs"] += 1
        patience = self.cfg.early_stop_patience
        if patience is not None and progress["bad_epochs"] >= patience:
            progress["stopped"] = True
            self.log(f"early stop: dev {self.cfg.selection_name} did not improve for {progress['bad_epochs']} "
                     f"epoch(s)")

    # ------------------------------------------------------------ the end

    def finish(self, write_outputs: Callable[[], None], keep_checkpoint: bool) -> None:
        """Rank 0: the best epoch's weights into the model (when the stage selects), `write_outputs()`, the checkpoint
        tally, and the resume state removed (unless kept): a finished run leaves nothing to resume, so a later rerun
        (e.g. after its input changed) starts afresh."""
        if not distributed.is_main():
            return
        best = self.progress.get("best_dir")
        if self.stage.select and best:
            model = self.stage.model
            model.load_state_dict(load_file(str(self.dir / best / "model.safetensors"), device=str(self.stage.device)))
        write_outputs()
        self.log(self.clock.summary())
        if not keep_checkpoint:
            shutil.rmtree(self.dir, ignore_errors=True)
