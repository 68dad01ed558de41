"""What the tables read: the paper's numbers, the row specs the workflow passes, and our results behind each row
(every seed's metrics.json, the train logs and the Snakemake benchmark TSVs), aggregated over seeds.

- the paper's numbers: `resources/paper_results.csv` (long format: table, row, label, genre, dataset, method,
  initial_weights, pretrain, batch_sample, metric, value, value_text, unit, note);
- a *row spec* (`RowSpec`) names the paper row a run reproduces and the files of each of its instances (one per seed:
  `metrics.json`, `train_log.csv`, the finetune / score benchmark TSVs, whose column `s` is wall seconds);
- `read_row` turns a spec into `OurRow`: per metric the mean, sample sd (ddof=1) and n over the instances.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from lpbert_core.errors import InputError
from lpbert_core.ranking.results import RunResult, read_metrics

log = logging.getLogger("lpbert.tables")

TABLES = ("table1", "table3", "table4", "reproduction")
ACCURACY = ("hits@1", "hits@3", "hits@10", "mr", "mrr")  # the paper's column order
TIMES = ("t_per_epoch", "infer")  # hours, as in the paper's Table 3
DATASETS = ("WN18RR", "FB15k-237", "UMLS")  # the paper's, in its order
FILE_KEYS = ("metrics", "train_log", "finetune_benchmark", "score_benchmark", "ranks", "pretrain_log")

# The zero-shot floor (config tables.floor): the initial encoder scored without fine-tuning. A row of ours is compared
# with its floor on one metric per dataset: MRR, or Hits@10 where the paper reports no MRR (UMLS).
FLOOR_LABEL = "zero-shot (no fine-tuning)"
FLOOR_MARK = "▽"
FLOOR_METRIC = {"UMLS": "hits@10"}


def floor_label(pretrain: str | None) -> str:
    """`zero-shot (no fine-tuning): bare encoder` / `...: encoder after pre-training mem-mrm-mlm`."""
    start = "bare encoder" if pretrain in (None, "", "none") else f"encoder after pre-training {pretrain}"
    return f"{FLOOR_LABEL}: {start}"


def floor_metric(dataset: str) -> str:
    return FLOOR_METRIC.get(canonical_dataset(dataset), "mrr")


def below_floor(value, floor) -> bool:
    """At or below the floor (the compared metrics are higher-is-better); False where either is missing."""
    def ok(v):
        return v is not None and not (isinstance(v, float) and math.isnan(v))
    return ok(value) and ok(floor) and float(value) <= float(floor)


def canonical_dataset(name: str) -> str:
    """`umls` -> `UMLS`, `wn18rr` -> `WN18RR`; unknown names stay as they are."""
    for known in DATASETS:
        if str(name).lower() == known.lower():
            return known
    return str(name)


# ------------------------------------------------------------------------------------------------------ row specs
@dataclass
class Instance:
    """One trained-and-scored instance of a run (one seed). Paths may be None when the row has no such file."""

    run: str | None = None  # instance name: the run itself, or `{run}.s{seed}`
    seed: int | None = None  # None: the configured seed (the run lists no seeds)
    metrics: str | None = None
    train_log: str | None = None
    finetune_benchmark: str | None = None
    score_benchmark: str | None = None
    ranks: str | None = None  # figures only
    pretrain_log: str | None = None  # figures only

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> "Instance":
        return cls(run=spec.get("run"), seed=spec.get("seed"),
                   **{k: (str(spec[k]) if spec.get(k) is not None else None) for k in FILE_KEYS})


@dataclass
class RowSpec:
    """One row of ours (or one we meant to run): the paper row it reproduces and the instances behind it."""

    table: str
    row: str | None  # paper row id (`row` column of paper_results.csv); None = no counterpart
    dataset: str
    run: str | None = None
    label: str | None = None  # display label; default "ours (run `...`)"
    skipped: str | None = None  # reason; the row is listed without numbers
    kind: str | None = None  # "lpbert" | "cross-encoder"; default from `model` / the paper row's method
    speed_reference: bool = False  # our LP-BERT row the cross-encoder's times are divided by (Table 3)
    encoder: str | None = None  # key of `encoders`
    encoder_source: str | None = None  # Hugging Face name or folder
    role: str | None = None  # reproduction table: paper_text | authors_code
    floor: bool = False  # a zero-shot floor row (tables.floor), not a row of the paper's table
    floor_run: str | None = None  # the floor this row is compared with (same encoder and pre-training, else none)
    instances: list[Instance] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> "RowSpec":
        """From the workflow's dict. Files are given per instance (`instances: [{run, seed, metrics, ...}]`) or, for
        a one-seed row, at the top level (`metrics`, `train_log`, ...)."""
        spec = dict(spec)
        missing = [k for k in ("table", "dataset") if not spec.get(k)]
        if missing:
            raise ValueError(f"row spec {spec!r} lacks {missing}")
        if spec["table"] not in TABLES:
            raise ValueError(f"row spec {spec!r}: table must be one of {TABLES}")
        instances = [Instance.from_mapping(i) for i in spec.pop("instances", None) or []]
        top = {k: spec.pop(k) for k in FILE_KEYS if k in spec}
        if not instances and any(v is not None for v in top.values()):
            instances = [Instance.from_mapping({"run": spec.get("run"), "seed": spec.pop("seed", None), **top})]
        known = {f for f in cls.__dataclass_fields__ if f not in ("extra", "instances")}
        kwargs = {k: spec.pop(k) for k in list(spec) if k in known}
        kwargs["dataset"] = canonical_dataset(kwargs["dataset"])
        if kwargs.get("skipped"):
            instances = []
        return cls(**kwargs, instances=instances, extra=spec)

    @property
    def seeds(self) -> list[int]:
        return [i.seed for i in self.instances if i.seed is not None]


# ------------------------------------------------------------------------------------------------ paper numbers
def load_paper(path: str | Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    need = {"table", "row", "label", "dataset", "method", "metric", "value"}
    if not need <= set(frame.columns):
        raise InputError(path, f"paper results need columns {sorted(need)}, have {list(frame.columns)}")
    frame["value"] = pd.to_numeric(frame["value"], errors="raise")
    return frame


def paper_rows(paper: pd.DataFrame, table: str) -> list[dict]:
    """Paper rows of one table in paper order: id, label, method, genre, attributes, `params` and
    {dataset: {metric: value}}."""
    rows: dict[str, dict] = {}
    for rec in paper[paper["table"] == table].to_dict("records"):
        row = rows.setdefault(rec["row"], {
            "row": rec["row"], "label": rec["label"], "method": rec["method"], "genre": rec.get("genre", ""),
            "initial_weights": rec.get("initial_weights", ""), "pretrain": rec.get("pretrain", ""),
            "batch_sample": rec.get("batch_sample", ""), "params": None, "values": {},
        })
        if rec["metric"] == "params":
            row["params"] = rec.get("value_text") or f"{float(rec['value']) / 1e6:.0f}M"
        else:
            row["values"].setdefault(rec["dataset"], {})[rec["metric"]] = float(rec["value"])
    return list(rows.values())


# ------------------------------------------------------------------------------------------------ files of a run
def read_benchmark_seconds(path: str | Path | None) -> float | None:
    """Mean of column `s` of a Snakemake benchmark TSV (several lines when the rule repeats); None if absent."""
    if not path:
        return None
    path = Path(path)
    if not path.exists():
        log.warning("benchmark file %s missing; its time column stays empty", path)
        return None
    frame = pd.read_csv(path, sep="\t")
    if "s" not in frame.columns:
        raise InputError(path, f"benchmark file has no 's' column (columns: {list(frame.columns)})")
    seconds = pd.to_numeric(frame["s"], errors="coerce").dropna()
    if seconds.empty:
        raise InputError(path, "benchmark file has no numeric 's' value")
    return float(seconds.mean())


def _train_log(path: str | Path | None) -> pd.DataFrame | None:
    """A train_log.csv as a frame (empty for an empty file); None, with a warning, when it is missing."""
    if not path:
        return None
    path = Path(path)
    if not path.exists():
        log.warning("train log %s missing; T/Ep stays empty", path)
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _epoch_count(frame: pd.DataFrame) -> int:
    return int(frame["epoch"].nunique()) if "epoch" in frame.columns else int(len(frame))


def epochs_trained(path: str | Path | None) -> int | None:
    """Epochs in a train_log.csv: distinct `epoch` values, or the row count when there is no such column."""
    frame = _train_log(path)
    return None if frame is None else _epoch_count(frame)


def epochs_timed(path: str | Path | None) -> float | None:
    """Epochs that the job's Snakemake benchmark actually timed. A resumed job's benchmark covers only its last
    attempt, so only that attempt's steps count (columns `attempt`, `steps_timed`, `steps` of train_log.csv);
    logs without them count every epoch, as `epochs_trained`."""
    frame = _train_log(path)
    if frame is None:
        return None
    if frame.empty or not {"attempt", "steps_timed", "steps"} <= set(frame.columns):
        return _epoch_count(frame)
    last = frame[frame["attempt"] == frame["attempt"].max()]
    return float((last["steps_timed"] / last["steps"].clip(lower=1)).sum())


def inference_seconds(bench_seconds: float | None, raw: Mapping) -> tuple[float | None, str | None]:
    """Full inference seconds and, when the scorer ranked a sample of test queries and extrapolated (the
    cross-encoder's metrics.json: `extrapolated_from`, `inference_seconds_measured`,
    `inference_seconds_extrapolated`), a label saying from what. The result is benchmark - measured + extrapolated:
    the same wall-clock basis (model loading included) as LP-BERT's rows."""
    source = raw.get("extrapolated_from")
    if source is None:
        return bench_seconds, None
    label = f"extrapolated from {source}"
    seconds = raw.get("inference_seconds_extrapolated")
    if seconds is None:
        return None, label + " (no extrapolated time recorded)"
    measured = raw.get("inference_seconds_measured")
    if bench_seconds is not None and measured is not None and bench_seconds >= float(measured):
        return bench_seconds - float(measured) + float(seconds), label + "; plus the score rule's other wall time"
    return float(seconds), label


# ------------------------------------------------------------------------------------------------ scale text
HEADER_SCALE_KEYS = ("encoder", "epochs", "train_subsample", "test_subsample", "test_triples_used",
                     "test_triples_total", "full_protocol")
ROW_SCALE_KEYS = ("encoder", "pretrain", "epochs", "epochs_run", "train_subsample", "train_rows_used",
                  "test_subsample", "test_triples_used", "test_triples_total", "full_protocol")
FREE_TEXT = ("description", "note")


def scale_text(scale: Mapping, keys: Iterable[str] | None = None) -> str:
    """`encoder=minilm, epochs=3, train_subsample=2000, test_subsample=200` (known keys first, then the rest; only
    `keys` when given). A free-text `note` (the cross-encoder's) is appended as it is."""
    if not scale:
        return "scale not recorded"
    if keys is not None:
        chosen = [k for k in keys if k in scale]
    else:
        chosen = [k for k in ROW_SCALE_KEYS if k in scale]
        chosen += sorted(k for k in scale if k not in ROW_SCALE_KEYS and k not in FREE_TEXT)
    parts = [f"{k}={_plain(scale[k])}" for k in chosen]
    if keys is None:
        parts += [str(scale[k]) for k in FREE_TEXT if scale.get(k)]
    return ", ".join(parts) if parts else "scale not recorded"


def _plain(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


# ------------------------------------------------------------------------------------------------ our rows
@dataclass
class Aggregate:
    """A metric over a row's seeds: mean, sample sd (ddof=1; None for one seed) and n."""

    mean: float | None
    sd: float | None
    n: int


def aggregate(values: Iterable[float | None]) -> Aggregate:
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(present)
    if n == 0:
        return Aggregate(None, None, 0)
    mean = sum(present) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in present) / (n - 1)) if n > 1 else None
    return Aggregate(mean, sd, n)


@dataclass
class InstanceResult:
    instance: Instance
    result: RunResult
    values: dict[str, float | None]  # accuracy metrics (both sides, realistic) + t_per_epoch / infer (hours)
    epochs: int | None
    infer_label: str | None


def read_instance(instance: Instance) -> InstanceResult:
    result = read_metrics(instance.metrics)
    values: dict[str, float | None] = {m: result.get(m) for m in ACCURACY}
    finetune_s = read_benchmark_seconds(instance.finetune_benchmark)
    timed = epochs_timed(instance.train_log)
    values["t_per_epoch"] = finetune_s / timed / 3600.0 if (finetune_s is not None and timed) else None
    infer_s, label = inference_seconds(read_benchmark_seconds(instance.score_benchmark), result.raw)
    values["infer"] = None if infer_s is None else infer_s / 3600.0
    return InstanceResult(instance, result, values, epochs_trained(instance.train_log), label)


@dataclass
class OurRow:
    """A row of ours: its spec, what each instance measured and the aggregate over instances."""

    spec: RowSpec
    status: str  # "ours" | "ours (sampled)" | "skipped: <reason>" | "not run: <why>"
    instances: list[InstanceResult] = field(default_factory=list)
    values: dict[str, Aggregate] = field(default_factory=dict)

    @property
    def has_numbers(self) -> bool:
        return bool(self.instances)

    @property
    def encoder(self) -> str:
        recorded = {r.result.encoder for r in self.instances if r.result.encoder}
        return ", ".join(sorted(recorded)) or (self.spec.encoder or "")

    @property
    def leaky(self) -> bool:
        return any(r.result.leaky for r in self.instances)

    @property
    def leaks(self) -> list[str]:
        return [f"{r.instance.run}: {r.result.leak}" if r.result.leak else str(r.instance.run)
                for r in self.instances if r.result.leaky]

    @property
    def n(self) -> int:
        return len(self.instances)

    @property
    def seeds(self) -> list[int]:
        return [r.instance.seed for r in self.instances if r.instance.seed is not None]

    @property
    def metrics_paths(self) -> list[str]:
        return [r.instance.metrics for r in self.instances]

    @property
    def infer_label(self) -> str | None:
        labels = [r.infer_label for r in self.instances if r.infer_label]
        return labels[0] if labels else None

    def scale(self, keys: Iterable[str] | None = None) -> str:
        texts = list(dict.fromkeys(scale_text(r.result.scale, keys) for r in self.instances))
        return "; ".join(texts)

    @property
    def count(self) -> int | None:
        counts = {r.result.count() for r in self.instances}
        return counts.pop() if len(counts) == 1 else None


def read_row(spec: RowSpec) -> OurRow:
    if spec.skipped:
        return OurRow(spec, f"skipped: {spec.skipped}")
    instances = [i for i in spec.instances if i.metrics]
    if not instances:
        return OurRow(spec, "not run: no metrics.json named")
    results = [read_instance(i) for i in instances]
    status = "ours (sampled)" if any(r.infer_label for r in results) else "ours"
    if any(r.result.leaky for r in results):  # e.g. finetune.label_splits with dev/test: never a clean number
        status += " [LEAKY: see metrics.json `leak`]"
    metrics = list(ACCURACY) + list(TIMES)
    values = {m: aggregate(r.values.get(m) for r in results) for m in metrics}
    return OurRow(spec, status, results, values)


__all__ = ["ACCURACY", "DATASETS", "FLOOR_LABEL", "FLOOR_MARK", "TABLES", "TIMES", "Aggregate", "Instance",
           "InstanceResult", "OurRow", "RowSpec", "aggregate", "below_floor", "canonical_dataset", "epochs_timed",
           "epochs_trained", "floor_label", "floor_metric", "inference_seconds", "load_paper", "paper_rows",
           "read_benchmark_seconds", "read_instance", "read_row", "scale_text"]
