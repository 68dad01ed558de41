"""Extra negatives of the in-batch matrix beyond the batch's own tails (lpbert-plus switches; not in the paper):

- **graph-neighbourhood hard negatives** (`finetune.hard_negatives: k`): for each training row (h, r, t), k entities
  drawn uniformly from h's neighbours in the TRAIN graph (either direction, any relation), never h itself and never a
  known answer of (h, r). They are the candidates a text encoder confuses most (same topic, linked to the anchor).
  A row whose anchor has no such neighbour (after 20 draws) gets a uniform random non-answer instead: the batch keeps
  its n x (n + n k) shape. Each drawn entity becomes a candidate column scored by every row of the batch (as the
  in-batch tails are), labelled by the known answers of each row.
- **pre-batch negatives** (`finetune.pre_batch: P`, SimKGC's): the tail vectors of the last P training batches of the
  epoch, kept without gradient, as extra candidate columns. A column is left out for row i where its entity is a known
  answer of (h_i, r_i) (or is t_i). The bank empties at each epoch's start and is stored in mid-epoch checkpoints, so a
  resumed run repeats an uninterrupted one.

Everything here is host-side numpy on the numpy generator of the training loop (drawn in batch order in one thread),
except the bank, which holds device tensors.
"""

from __future__ import annotations

import base64

import numpy as np
import torch

NEIGHBOUR_TRIES = 20  # draws per row before the uniform fallback


class Neighbourhood:
    """Undirected 1-hop neighbours of every entity in a triple set, as CSR arrays (self-loops dropped)."""

    def __init__(self, triples: np.ndarray, num_entities: int):
        t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        src = np.concatenate([t[:, 0], t[:, 2]])
        dst = np.concatenate([t[:, 2], t[:, 0]])
        keep = src != dst
        pairs = np.unique(np.stack([src[keep], dst[keep]], 1), axis=0)  # each neighbour once per entity
        self.num_entities = int(num_entities)
        counts = np.bincount(pairs[:, 0], minlength=self.num_entities)
        self.indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.indices = pairs[:, 1].astype(np.int64)

    def degree(self, entities) -> np.ndarray:
        e = np.asarray(entities, dtype=np.int64)
        return self.indptr[e + 1] - self.indptr[e]

    def neighbours(self, entity: int) -> np.ndarray:
        return self.indices[self.indptr[entity]:self.indptr[entity + 1]]


def sample_hard_negatives(batch: np.ndarray, known, hood: Neighbourhood, k: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """[n, k] entity ids: for row (h, r, t), k neighbours of h that are neither h nor a known answer of (h, r) (nor
    t), drawn with replacement; rows without one get a uniform random non-answer. Returns (ids, fallback count)."""
    batch = np.asarray(batch, dtype=np.int64).reshape(-1, 3)
    n = len(batch)
    h, r, t = np.repeat(batch[:, 0], k), np.repeat(batch[:, 1], k), np.repeat(batch[:, 2], k)
    deg = hood.degree(h)
    out = np.full(n * k, -1, dtype=np.int64)
    todo = np.flatnonzero(deg > 0)
    for _ in range(NEIGHBOUR_TRIES):
        if not len(todo):
            break
        pick = hood.indices[hood.indptr[h[todo]] + (rng.random(len(todo)) * deg[todo]).astype(np.int64)]
        ok = (pick != h[todo]) & (pick != t[todo]) & ~known.contains(h[todo], r[todo], pick)
        out[todo[ok]] = pick[ok]
        todo = todo[~ok]
    missing = np.flatnonzero(out < 0)
    fallbacks = len(missing)  # isolated anchors and anchors whose every neighbour is an answer
    for _ in range(50):  # uniform fallback, as sample_negative_tails
        if not len(missing):
            break
        pick = rng.integers(0, hood.num_entities, size=len(missing))
        ok = (pick != h[missing]) & (pick != t[missing]) & ~known.contains(h[missing], r[missing], pick)
        out[missing[ok]] = pick[ok]
        missing = missing[~ok]
    out[missing] = rng.integers(0, hood.num_entities, size=len(missing))  # a graph where all are answers: keep it
    return out.reshape(n, k), fallbacks


def column_labels(batch: np.ndarray, known, columns: np.ndarray) -> np.ndarray:
    """[n, m] bool: column entity j is a known answer of row i's query (h_i, r_i)."""
    batch = np.asarray(batch, dtype=np.int64).reshape(-1, 3)
    return known.matrix(batch[:, 0], batch[:, 1], columns)


def hard_negative_columns(batch: np.ndarray, known, hard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, valid), each [n, n k] in column order block-major (column b n + j = the b-th hard negative drawn for
    row j), as `prepare_batch` lays the candidates out. Labels: known answers of each row (1 = positive, as an
    in-batch tail that answers the row). valid: False where the column's entity is one of the batch's tails (that
    pair is already scored in the row)."""
    columns = np.asarray(hard, dtype=np.int64).T.reshape(-1)
    labels = column_labels(batch, known, columns)
    tails = np.asarray(batch, dtype=np.int64).reshape(-1, 3)[:, 2]
    valid = np.broadcast_to(~np.isin(columns, tails), labels.shape).copy()
    return labels, valid


def pre_batch_valid(batch: np.ndarray, known, bank_entities: np.ndarray) -> np.ndarray:
    """[n, B] bool: the bank column counts as a negative of row i unless its entity is a known answer of (h_i, r_i)
    or t_i itself."""
    batch = np.asarray(batch, dtype=np.int64).reshape(-1, 3)
    bank_entities = np.asarray(bank_entities, dtype=np.int64).reshape(-1)
    return ~column_labels(batch, known, bank_entities) & (bank_entities[None, :] != batch[:, 2:3])


class PreBatchBank:
    """The tail vectors of the last `size` batches (detached), oldest first."""

    def __init__(self, size: int):
        self.size = int(size)
        self._vectors: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._vectors)

    def clear(self) -> None:
        self._vectors = []

    def push(self, vectors: torch.Tensor) -> None:
        if self.size <= 0:
            return
        self._vectors.append(vectors.detach().float())
        del self._vectors[:-self.size]

    def vectors(self) -> torch.Tensor | None:
        return torch.cat(self._vectors) if self._vectors else None

    def state(self) -> list[dict]:
        """JSON-safe exact copy (base64 of the float32 bytes) for a mid-epoch checkpoint."""
        return [{"shape": list(v.shape), "data": base64.b64encode(v.cpu().numpy().tobytes()).decode("ascii")}
                for v in self._vectors]

    def load(self, state: list[dict] | None, device) -> None:
        self._vectors = [torch.from_numpy(np.frombuffer(base64.b64decode(s["data"]), dtype=np.float32)
                                          .reshape(s["shape"]).copy()).to(device) for s in (state or [])]


def bank_entities(rows: np.ndarray, batches: list, b: int, size: int) -> np.ndarray:
    """Entity ids of the bank before batch b of an epoch: the tails of batches max(0, b - size) .. b - 1, oldest
    first (the order `PreBatchBank.push` keeps)."""
    if size <= 0 or b == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([rows[batches[j]][:, 2] for j in range(max(0, b - size), b)]).astype(np.int64)
