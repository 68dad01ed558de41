"""The entity bank (lpbert-plus switch `finetune.entity_bank: k`; ours, after SimKGC's pre-batch negatives and MoCo's
memory): no-gradient vectors of ALL entities, scored by every training row as extra negative columns.

`all_entity_negatives` (every entity encoded with gradient every step) won on UMLS (135 entities) but costs E
encodings a step; the bank makes the same full-ranking objective affordable on WN18RR (40,943 entities): the query
side gets the gradient of the whole [n, E] matrix, the candidate side only through the batch's own columns.

- Refresh: before step 0 and then k optimizer steps after the last refresh, all entities are re-encoded in eval
  mode. A dev evaluation encodes them with the current weights in the same mode: its vectors become the bank (a
  refresh at no cost), so a step-budget run whose dev points are k steps apart encodes the bank only once itself.
- Between refreshes each step writes its freshly encoded tails (detached) into their rows.
- Columns that count as negatives of row i: every entity except the known answers of (h_i, r_i) (the row's own tail
  among them) and the batch's tails (already scored, with gradient, in the in-batch block).
- Fixed (`finetune.frozen_entity_tower`): the entity tower never changes, so the bank is encoded once, before the
  first step, and is then an exact table of every entity's vector: never refreshed, never updated; all-entity mode
  scores it instead of encoding every entity, and a dev point ranks against it.
- Resume: the bank is saved beside the checkpoint (`entity_bank.<step>.safetensors`, named in the progress dict), so
  a killed run resumes to the same result. A fixed table is written once and named by every later checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

BANK_FILE = "entity_bank.{step}.safetensors"


def bank_known_pairs(batch: np.ndarray, known) -> tuple[np.ndarray, np.ndarray]:
    """(row, entity) index pairs of every known answer of each row's query: the bank columns left out."""
    batch = np.asarray(batch, dtype=np.int64).reshape(-1, 3)
    rows, tails = known.answers_of(batch[:, 0], batch[:, 1])
    own = np.arange(len(batch))  # the row's own triple, whatever `known` holds (dev rows)
    return np.concatenate([rows, own]), np.concatenate([tails, batch[:, 2]])


def bank_valid(num_entities: int, known_rows: torch.Tensor, known_cols: torch.Tensor, tails: torch.Tensor,
               n: int, device) -> torch.Tensor:
    """[n, E] bool: True where bank column j counts as a negative of row i."""
    valid = torch.ones(n, num_entities, dtype=torch.bool, device=device)
    valid[known_rows.to(device), known_cols.to(device)] = False
    valid[:, tails.to(device)] = False
    return valid


class EntityBank:
    """All entities' vectors [E, d] without gradient, and the step they were last fully re-encoded at. `fixed`: a
    frozen entity tower's table, encoded once."""

    def __init__(self, every: int, fixed: bool = False):
        self.every = int(every)
        self.fixed = bool(fixed)
        self.vectors: torch.Tensor | None = None
        self.refreshed_at: int | None = None
        self.file: str | None = None  # the file a fixed table was last written to or loaded from

    @property
    def on(self) -> bool:
        return self.every > 0 or self.fixed

    @property
    def refreshing(self) -> bool:
        """A bank of a training entity tower: refreshed, updated with each step's tails, reset by a dev encoding."""
        return self.every > 0

    @property
    def table(self) -> torch.Tensor | None:
        """A frozen entity tower's fixed table (None for a refreshing bank or none)."""
        return self.vectors if self.fixed else None

    def due(self, step: int) -> bool:
        if self.fixed:
            return self.vectors is None
        return self.on and (self.refreshed_at is None or step - self.refreshed_at >= self.every)

    def set(self, vectors: torch.Tensor, step: int) -> None:
        self.vectors = vectors.detach().float().clone()
        self.refreshed_at = step

    def refresh(self, model, builder, device, batch_size: int, precision: str, step: int, log=None) -> None:
        """Encode every entity with the current weights (eval mode); `log` gets a line with the time it took."""
        from lpbert_core.ranking.rank_split import encode_entities

        start = time.perf_counter()
        self.set(encode_entities(model, builder, device, batch_size, precision), step)
        if log is not None:
            how = "encoded once (frozen entity tower)" if self.fixed else "re-encoded"
            log(f"entity bank: {len(self.vectors)} entities {how} at step {step} ({time.perf_counter() - start:.0f} s)")

    def update(self, entities: np.ndarray, vectors: torch.Tensor) -> None:
        if self.vectors is not None and self.refreshing:
            self.vectors[torch.as_tensor(np.asarray(entities), device=self.vectors.device)] = vectors.detach().float()

    def save(self, folder: Path, step: int) -> str | None:
        """Write the bank for a checkpoint at `step` (atomic: temp file, then rename); returns the file name. A fixed
        table already on disk is not written again."""
        if self.vectors is None:
            return None
        if self.fixed and self.file is not None and (folder / self.file).exists():
            return self.file
        name = self.file = BANK_FILE.format(step=step)
        tmp = folder / (name + ".tmp")
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": self.vectors.cpu().contiguous()}, str(tmp))
        tmp.replace(folder / name)
        return name

    def load(self, folder: Path, name: str | None, refreshed_at: int | None, device) -> None:
        if name is None:
            return
        self.vectors = load_file(str(folder / name), device=str(device))["vectors"]
        self.refreshed_at, self.file = refreshed_at, name

    @staticmethod
    def prune(folder: Path, keep: str | None) -> None:
        """Remove bank files other than `keep` (after the checkpoint naming `keep` is written)."""
        for path in folder.glob(BANK_FILE.format(step="*")):
            if path.name != keep:
                path.unlink(missing_ok=True)
