"""The one definition of a run's result: the metric keys of `metrics.json`, how the scorers build them from ranks and
how the tables read them back.

Keys are PyKEEN-style: side (`both` | `head` | `tail`) x rank type (`realistic` | `optimistic` | `pessimistic`) x
metric (`mrr`, `mr`, `hits@1`, `hits@3`, `hits@10`, plus `count`, which has no rank type). In `metrics.json` they sit
in one block per side, the realistic rank unsuffixed (the layout every reader has always used):

    {"metrics": {"both": {"mrr": .., "mr": .., "hits@1": .., "hits@3": .., "hits@10": .., "count": ..,
                          "mrr_optimistic": .., "mr_optimistic": .., ..., "hits@10_pessimistic": ..},
                 "head": {...}, "tail": {...}},
     "scale": {...}, "run": {...}, "leaky": false, ...}

`json_key(metric, rank_type)` is that in-block key; `flat_key(side, rank_type, metric)` the flat PyKEEN name
(`both.realistic.hits@10`). Files written before optimistic/pessimistic were added for every metric (only
`mrr_optimistic` / `mrr_pessimistic`) read the same way: absent keys are None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lpbert_core.errors import InputError

SIDES = ("both", "head", "tail")
RANK_TYPES = ("realistic", "optimistic", "pessimistic")
DEFAULT_RANK_TYPE = "realistic"
HITS_AT = (1, 3, 10)
METRICS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")  # rank-based metrics, each per side and rank type
COUNT = "count"  # queries of a side (no rank type)


def json_key(metric: str, rank_type: str = DEFAULT_RANK_TYPE) -> str:
    """The key inside `metrics.{side}` of metrics.json: `mrr` (realistic), `mrr_optimistic`, ...; `count`."""
    if metric == COUNT:
        return COUNT
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; expected one of {METRICS + (COUNT,)}")
    if rank_type not in RANK_TYPES:
        raise KeyError(f"unknown rank type {rank_type!r}; expected one of {RANK_TYPES}")
    return metric if rank_type == DEFAULT_RANK_TYPE else f"{metric}_{rank_type}"


def flat_key(side: str, rank_type: str, metric: str) -> str:
    """PyKEEN-style flat name, e.g. `both.realistic.hits@10` (`both.count` for the count)."""
    if side not in SIDES:
        raise KeyError(f"unknown side {side!r}; expected one of {SIDES}")
    return f"{side}.{COUNT}" if metric == COUNT else f"{side}.{rank_type}.{metric}"


# ------------------------------------------------------------------------------------------------------ writing
def side_block(ranks: Mapping[str, np.ndarray]) -> dict:
    """One side's block from its ranks per rank type (`realistic` required; `optimistic`/`pessimistic` optional).
    Plain floats/ints, None for every metric when the side has no query (valid JSON)."""
    realistic = np.asarray(ranks[DEFAULT_RANK_TYPE], dtype=np.float64)
    block: dict[str, Any] = {}
    for rank_type in RANK_TYPES:
        if rank_type not in ranks:
            continue
        values = np.asarray(ranks[rank_type], dtype=np.float64)
        for metric in METRICS:
            block[json_key(metric, rank_type)] = _metric(values, metric) if len(values) else None
        if rank_type == DEFAULT_RANK_TYPE:
            block[COUNT] = int(len(realistic))
    return block


def _metric(ranks: np.ndarray, metric: str) -> float:
    if metric == "mrr":
        return float(np.mean(1.0 / ranks))
    if metric == "mr":
        return float(np.mean(ranks))
    return float(np.mean(ranks <= int(metric.split("@")[1])))


# ------------------------------------------------------------------------------------------------------ reading
@dataclass
class RunResult:
    """A metrics.json as the tables need it."""

    path: str
    metrics: dict[str, dict[str, Any]]  # side -> in-block key -> value (the file's `metrics`)
    scale: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    leaky: bool = False
    leak: Any = None  # what leaked, as the writer describes it (only when leaky)
    raw: dict = field(default_factory=dict)  # the whole file (timing fields of the cross-encoder, ...)

    def get(self, metric: str, side: str = "both", rank_type: str = DEFAULT_RANK_TYPE) -> float | None:
        value = self.metrics.get(side, {}).get(json_key(metric, rank_type))
        return None if value is None else float(value)

    def count(self, side: str = "both") -> int | None:
        value = self.metrics.get(side, {}).get(COUNT)
        return None if value is None else int(value)

    def flat(self) -> dict[str, float | None]:
        """Every key as `side.rank_type.metric` (PyKEEN's flat naming)."""
        out: dict[str, float | None] = {}
        for side in SIDES:
            for rank_type in RANK_TYPES:
                for metric in METRICS:
                    out[flat_key(side, rank_type, metric)] = self.get(metric, side, rank_type)
            out[flat_key(side, DEFAULT_RANK_TYPE, COUNT)] = self.count(side)
        return out

    @property
    def encoder(self) -> str | None:
        return self.scale.get("encoder") or self.run.get("encoder")


def read_metrics(path: str | Path) -> RunResult:
    """Read a metrics.json written by the score or kgbert_score rule; InputError names the file when it is not one."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "metrics file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("metrics"), dict):
        raise InputError(path, "metrics.json must hold an object with a 'metrics' object (metrics.both.mrr, ...)")
    metrics = raw["metrics"]
    unknown = sorted(set(metrics) - set(SIDES))
    if unknown or not isinstance(metrics.get("both"), dict):
        raise InputError(path, f"'metrics' must hold the sides {list(SIDES)} ('both' required); found {sorted(metrics)}")
    if all(metrics["both"].get(m) is None for m in METRICS):
        raise InputError(path, f"metrics.both has none of {list(METRICS)} (keys: {sorted(metrics['both'])})")
    scale = raw.get("scale") if isinstance(raw.get("scale"), dict) else {}
    run = raw.get("run") if isinstance(raw.get("run"), dict) else {}
    return RunResult(path=str(path), metrics={s: dict(b) for s, b in metrics.items() if isinstance(b, dict)},
                     scale=dict(scale), run=dict(run), leaky=bool(raw.get("leaky", False)), leak=raw.get("leak"),
                     raw=raw)


__all__ = ["COUNT", "DEFAULT_RANK_TYPE", "HITS_AT", "METRICS", "RANK_TYPES", "SIDES", "RunResult", "flat_key",
           "json_key", "read_metrics", "side_block"]
