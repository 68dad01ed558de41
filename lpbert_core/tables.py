"""Tables 1, 3 and 4: the paper's numbers, ours and the difference, written as Markdown, CSV and LaTeX.

Inputs
- the paper's numbers: `resources/paper_results.csv` (long format: table, row, label, genre, dataset, method,
  initial_weights, pretrain, batch_sample, metric, value, value_text, unit, note);
- a list of *row specs* (plain dicts, see `RowSpec`), one per row we ran (or meant to run), naming the paper row it
  reproduces and the files its numbers come from: `metrics.json` (accuracy, scale), `train_log.csv` (epochs trained) and
  the Snakemake `benchmark:` TSVs of the finetune and score rules (column `s` = wall seconds).

Every output row says where its numbers come from: `ours` (with the metrics.json path), `reported` (a baseline we do
not run, copied from the paper), `skipped: <reason>` (a run that cannot be made here, e.g. weights not loadable offline)
or `not run` (a paper row nobody asked for).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from .atomic import atomic_path
from .errors import InputError

log = logging.getLogger("lpbert.tables")

TABLES = ("table1", "table3", "table4")
ACCURACY = ("hits@1", "hits@3", "hits@10", "mr", "mrr")
TIMES = ("t_per_epoch", "infer")  # hours, as in the paper's Table 3
DATASETS = ("WN18RR", "FB15k-237", "UMLS")
DISPLAY = {
    "hits@1": "Hits@1",
    "hits@3": "Hits@3",
    "hits@10": "Hits@10",
    "mr": "MR",
    "mrr": "MRR",
    "t_per_epoch": "T/Ep (h)",
    "infer": "Infer (h)",
    "infer_vs_lpbert": "Infer ÷ LP-BERT",
}
TITLES = {
    "table1": "Table 1: link prediction on WN18RR, FB15k-237 and UMLS (paper vs ours)",
    "table3": "Table 3: LP-BERT vs a KG-BERT-style cross-encoder on WN18RR, accuracy and speed (paper vs ours)",
    "table4": "Table 4: ablation of LP-BERT on WN18RR (paper vs ours)",
}
COMMON_NOTES = (
    "Ranks are filtered (all train/dev/test triples known) over every entity, head and tail queries of each test "
    "triple; we report the realistic rank (mean of optimistic and pessimistic: text encoders produce ties). The paper "
    "breaks ties at random, whose expectation is the realistic rank.",
    "Δ = ours − paper. Hits and MRR are fractions; MR is a rank (lower is better).",
    "No dev or test triple is used as an in-batch label during training (the authors' code did).",
)
DEFAULT_NOTES = {
    "table1": (
        "Baselines marked 'reported' are copied from the paper's Table 1 (which took them from the original papers); "
        "we do not run them.",
        "FB15k-237 entity text: StAR's short 'name -- first sentence' descriptions (fb-entity2text-new.txt), not the "
        "authors' long Freebase descriptions, which are not distributable; expect lower FB15k-237 numbers.",
        "UMLS: the paper reports only Hits@10 and MR; entity text is the name alone.",
    ),
    "table3": (
        "Speed: the paper's hours were measured on a Tesla P40 without mixed precision; ours on this machine, with "
        "the same encoder and hardware for every one of our rows, so compare the ratio columns, not absolute hours.",
        "T/Ep = wall seconds of the finetune rule (Snakemake benchmark file) / epochs it ran (train_log.csv; a resumed "
        "job counts only its last attempt's steps); Infer = wall "
        "seconds of the score rule (benchmark file), including model loading.",
        "Our 'KG-BERT' row is a KG-BERT-style cross-encoder (one sequence per candidate triple) on our encoder; StAR is "
        "not reproduced (paper numbers only).",
        "The paper's T/Ep of LP-BERT (RoBERTa-large), '2.2', has no unit; read as hours.",
    ),
    "table4": (
        "'BatchSample = N': the paper does not define the alternative to in-batch negatives; our reading is one "
        "randomly sampled negative tail per positive, scored by the same loss (a config value).",
        "Pre-train = N: fine-tuning starts from the encoder's original weights; the other rows start from our "
        "multi-task pre-training with the tasks named.",
    ),
}


# ------------------------------------------------------------------------------------------------------ row specs
@dataclass
class RowSpec:
    """One row we ran (or meant to run). Paths may be None when the row has no such file."""

    table: str
    row: str | None  # id of the paper row it reproduces (`row` column of paper_results.csv); None = no counterpart
    dataset: str
    run: str | None = None
    label: str | None = None  # display label; default: the paper row's label
    metrics: str | None = None  # metrics.json
    train_log: str | None = None  # train_log.csv of the finetune rule
    finetune_benchmark: str | None = None  # Snakemake benchmark TSV of finetune
    score_benchmark: str | None = None  # Snakemake benchmark TSV of score
    ranks: str | None = None  # ranks.parquet (figures)
    pretrain_log: str | None = None  # pretrain log.csv (figures)
    skipped: str | None = None  # reason; the row is listed without numbers
    kind: str | None = None  # "lpbert" | "cross-encoder"; default from the paper row's method
    speed_reference: bool = False  # our LP-BERT row the cross-encoder's times are divided by (Table 3)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> "RowSpec":
        spec = dict(spec)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        missing = [k for k in ("table", "dataset") if not spec.get(k)]
        if missing:
            raise ValueError(f"row spec {spec!r} lacks {missing}")
        if spec["table"] not in TABLES:
            raise ValueError(f"row spec {spec!r}: table must be one of {TABLES}")
        kwargs = {k: spec.pop(k) for k in list(spec) if k in known}
        for key in ("metrics", "train_log", "finetune_benchmark", "score_benchmark", "ranks", "pretrain_log"):
            if kwargs.get(key) is not None:
                kwargs[key] = str(kwargs[key])
        kwargs["dataset"] = canonical_dataset(kwargs["dataset"])
        return cls(**kwargs, extra=spec)


def canonical_dataset(name: str) -> str:
    """`umls` -> `UMLS`, `wn18rr` -> `WN18RR`; unknown names stay as they are."""
    for known in DATASETS:
        if str(name).lower() == known.lower():
            return known
    return str(name)


# ------------------------------------------------------------------------------------------------ paper numbers
def load_paper(path: str | Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    need = {"table", "row", "label", "dataset", "method", "metric", "value"}
    if not need <= set(frame.columns):
        raise InputError(path, f"paper results need columns {sorted(need)}, have {list(frame.columns)}")
    frame["value"] = pd.to_numeric(frame["value"], errors="raise")
    return frame


def _paper_rows(paper: pd.DataFrame, table: str) -> list[dict]:
    """Paper rows of one table in paper order: id, label, method, dataset, attributes and {metric: value}."""
    sub = paper[paper["table"] == table]
    rows: dict[tuple[str, str], dict] = {}
    for rec in sub.to_dict("records"):
        if rec["metric"] == "params":
            continue
        key = (rec["row"], rec["dataset"])
        row = rows.setdefault(
            key,
            {
                "row": rec["row"],
                "label": rec["label"],
                "method": rec["method"],
                "dataset": rec["dataset"],
                "genre": rec.get("genre", ""),
                "initial_weights": rec.get("initial_weights", ""),
                "pretrain": rec.get("pretrain", ""),
                "batch_sample": rec.get("batch_sample", ""),
                "paper": {},
            },
        )
        row["paper"][rec["metric"]] = float(rec["value"])
    return list(rows.values())


# ------------------------------------------------------------------------------------------------ reading ours
_ALIASES = {
    "hits@1": ("hits@1", "hits_at_1", "hits1", "h@1"),
    "hits@3": ("hits@3", "hits_at_3", "hits3", "h@3"),
    "hits@10": ("hits@10", "hits_at_10", "hits10", "h@10"),
    "mr": ("mr", "mean_rank"),
    "mrr": ("mrr", "mean_reciprocal_rank"),
    "count": ("count", "queries", "n"),
}


def read_metrics_json(path: str | Path) -> dict:
    """Parse metrics.json defensively -> {"metrics": {...both...}, "scale": {...}, "run": {...}, "raw": {...}}."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "metrics file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from None
    if not isinstance(raw, dict):
        raise InputError(path, "metrics.json must hold a JSON object")
    block = raw.get("metrics", raw)
    if isinstance(block, dict) and isinstance(block.get("both"), dict):
        block = block["both"]
    elif isinstance(block, dict) and isinstance(block.get("realistic"), dict):  # {"realistic": {"both": ...}}
        inner = block["realistic"]
        block = inner.get("both", inner)
    metrics = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            for key in (alias, alias.upper(), alias.replace("hits", "Hits")):
                if isinstance(block, dict) and key in block and block[key] is not None:
                    metrics[name] = float(block[key])
                    break
            if name in metrics:
                break
    if not any(m in metrics for m in ACCURACY):
        raise InputError(path, f"no metrics found (expected keys like 'mrr', 'hits@10' under 'metrics.both'); "
                               f"top-level keys: {sorted(raw)}")
    run = raw.get("run") if isinstance(raw.get("run"), dict) else {}
    scale = raw.get("scale", run.get("scale", {}))
    if isinstance(scale, str):
        scale = {"description": scale}
    elif not isinstance(scale, dict):
        scale = {}
    scale = dict(scale)
    if "encoder" not in scale:
        encoder = run.get("encoder")
        text = " ".join(str(scale.get(k, "")) for k in FREE_TEXT)
        if encoder is None and text.strip():
            found = re.search(r"encoder ([\w./-]+)", text)
            encoder = found.group(1) if found else None
        if encoder is not None:
            scale["encoder"] = encoder
    return {"metrics": metrics, "scale": scale, "run": run, "raw": raw}


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


def _find(raw: Mapping, keys: Iterable[str]):
    """First value found under one of `keys` at the top level or inside 'timing'/'timings'/'run'."""
    places = [raw] + [raw[k] for k in ("timing", "timings", "run", "scale") if isinstance(raw.get(k), dict)]
    for place in places:
        for key in keys:
            if key in place and place[key] is not None:
                return place[key]
    return None


def inference_seconds(bench_seconds: float | None, raw: Mapping) -> tuple[float | None, str | None]:
    """Full inference seconds and, when extrapolated from a sample of test queries, a label saying from what.

    metrics.json may carry `extrapolated_from` (top level, or under timing/run): a description string (the
    cross-encoder's scoring writes "<n> of <N> queries, linear extrapolation ..."), an int (sampled queries) or a dict
    (`sampled_queries`/`queries`, `total_queries`/`of`, optionally `extrapolated_seconds`). Extrapolated seconds are
    read from `inference_seconds_extrapolated` (or `extrapolated_seconds`); when the measured ranking seconds
    (`inference_seconds_measured`) and the score rule's benchmark are both known, the result is
    benchmark - measured + extrapolated, i.e. the same wall-clock basis (model loading included) as LP-BERT's rows.
    Without any extrapolated seconds, the benchmark time is scaled by total / sampled.
    """
    source = _find(raw, ("extrapolated_from",))
    if source is None:
        return bench_seconds, None
    sampled = total = seconds = None
    if isinstance(source, dict):
        sampled = _first(source, ("sampled_queries", "queries_measured", "queries", "sample", "sampled", "n"))
        total = _first(source, ("total_queries", "queries_total", "total", "of"))
        seconds = _first(source, ("extrapolated_seconds", "inference_seconds_extrapolated", "seconds"))
    elif isinstance(source, bool):
        pass
    elif isinstance(source, (int, float)):
        sampled = source
    if sampled is None:
        sampled = _find(raw, ("queries_measured", "sampled_queries"))
    if total is None:
        total = _find(raw, ("queries_total", "total_queries"))
    if seconds is None:
        seconds = _find(raw, ("inference_seconds_extrapolated", "extrapolated_seconds"))
    measured = _find(raw, ("inference_seconds_measured",))
    if isinstance(source, str):
        label = f"extrapolated from {source}"
    elif sampled is not None and total is not None:
        label = f"extrapolated from {int(sampled)} of {int(total)} test queries"
    elif sampled is not None:
        label = f"extrapolated from {int(sampled)} test queries"
    else:
        label = "extrapolated"
    if seconds is not None:
        seconds = float(seconds)
        if bench_seconds is not None and measured is not None and bench_seconds >= float(measured):
            return bench_seconds - float(measured) + seconds, label + "; plus the score rule's other wall time"
        return seconds, label
    if bench_seconds is not None and sampled and total:
        return bench_seconds * float(total) / float(sampled), label + " (benchmark time × total/sampled)"
    return None, label + " (no extrapolated time available)"


def _first(mapping: Mapping, keys: Iterable[str]):
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


HEADER_SCALE_KEYS = ("encoder", "epochs", "train_subsample", "test_subsample", "test_triples_used",
                     "test_triples_total", "full_protocol")
ROW_SCALE_KEYS = ("encoder", "pretrain", "epochs", "epochs_run", "train_subsample", "train_rows_used",
                  "test_subsample", "test_triples_used", "test_triples_total", "full_protocol")


FREE_TEXT = ("description", "note")


def scale_text(scale: Mapping, keys: Iterable[str] | None = None) -> str:
    """`encoder=minilm, epochs=3, train_subsample=2000, test_subsample=200` (known keys first, then the rest; only
    `keys` when given). A free-text `description` (e.g. the cross-encoder's) is appended as it is."""
    if not scale:
        return "scale not recorded"
    order = list(ROW_SCALE_KEYS)
    if keys is not None:
        chosen = [k for k in keys if k in scale]
    else:
        chosen = [k for k in order if k in scale] + sorted(k for k in scale if k not in order and k not in FREE_TEXT)
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


# ------------------------------------------------------------------------------------------------ building frames
def _kind_of(method: str | None, spec: RowSpec) -> str:
    if spec.kind:
        return spec.kind
    if str(spec.extra.get("model", "")).lower() == "kgbert":
        return "cross-encoder"
    if method and method.upper().startswith("KG-BERT"):
        return "cross-encoder"
    return "lpbert"


def _ours_record(spec: RowSpec) -> dict:
    """Our numbers for one spec (empty when skipped), with provenance."""
    rec: dict[str, Any] = {"ours": {}, "status": "ours", "scale": "", "scale_dict": {}, "infer_label": None}
    if spec.skipped:
        rec["status"] = f"skipped: {spec.skipped}"
        return rec
    if not spec.metrics:
        rec["status"] = "not run: no metrics.json named"
        return rec
    parsed = read_metrics_json(spec.metrics)
    rec["ours"].update({m: parsed["metrics"][m] for m in ACCURACY if m in parsed["metrics"]})
    rec["count"] = parsed["metrics"].get("count")
    rec["scale_dict"] = parsed["scale"]
    rec["scale"] = scale_text(parsed["scale"])
    rec["header_scale"] = scale_text(parsed["scale"], HEADER_SCALE_KEYS)
    finetune_s = read_benchmark_seconds(spec.finetune_benchmark)
    epochs = epochs_trained(spec.train_log)
    timed = epochs_timed(spec.train_log)
    score_s = read_benchmark_seconds(spec.score_benchmark)
    rec["finetune_seconds"], rec["epochs"], rec["score_seconds"] = finetune_s, epochs, score_s
    if finetune_s is not None and timed:
        rec["ours"]["t_per_epoch"] = finetune_s / timed / 3600.0
    infer_s, label = inference_seconds(score_s, parsed["raw"])
    if infer_s is not None:
        rec["ours"]["infer"] = infer_s / 3600.0
    rec["infer_label"] = label
    if label:
        rec["status"] = "ours (metrics on a sample of test queries; inference time " + label + ")"
    return rec


def build_table(table: str, specs: list[RowSpec], paper: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """One table as a flat frame (one row per paper row / spec) plus facts for the header (scales, provenance)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")
    specs = [s for s in specs if s.table == table]
    paper_rows = _paper_rows(paper, table)
    paper_by_key = {(r["row"], r["dataset"]): r for r in paper_rows}
    metrics = list(ACCURACY) + (list(TIMES) if table == "table3" else [])
    records: list[dict] = []
    used_specs: set[int] = set()

    def emit(paper_row: dict | None, spec: RowSpec | None):
        label = (spec.label if spec and spec.label else None) or (paper_row["label"] if paper_row else spec.row or spec.run)
        rec: dict[str, Any] = {
            "table": table,
            "row": paper_row["row"] if paper_row else (spec.row or ""),
            "label": label,
            "dataset": paper_row["dataset"] if paper_row else spec.dataset,
            "run": spec.run if spec and spec.run else "",
            "kind": _kind_of(paper_row["method"] if paper_row else spec.row, spec) if spec else "",
        }
        if table == "table3":
            rec["initial_weights"] = paper_row["initial_weights"] if paper_row else ""
        if table == "table4":
            rec["pretrain"] = paper_row["pretrain"] if paper_row else ""
            rec["batch_sample"] = paper_row["batch_sample"] if paper_row else ""
        paper_values = paper_row["paper"] if paper_row else {}
        if spec is None:
            reported = table == "table1" and paper_row is not None and paper_row["method"] != "LP-BERT"
            ours = {"ours": {}, "status": "reported" if reported else "not run (paper only)", "scale": ""}
        else:
            ours = _ours_record(spec)
        rec["status"] = ours["status"]
        for m in metrics:
            p = paper_values.get(m)
            o = ours["ours"].get(m)
            rec[f"{m}_paper"] = p
            rec[f"{m}_ours"] = o
            rec[f"{m}_diff"] = (o - p) if (p is not None and o is not None) else None
        rec["scale"] = ours.get("scale", "")
        rec["encoder"] = str(ours.get("scale_dict", {}).get("encoder") or "")
        rec["metrics_path"] = spec.metrics if spec and not spec.skipped else ""
        rec["train_log"] = spec.train_log if spec and not spec.skipped else ""
        rec["finetune_benchmark"] = spec.finetune_benchmark if spec and not spec.skipped else ""
        rec["score_benchmark"] = spec.score_benchmark if spec and not spec.skipped else ""
        rec["epochs_trained"] = ours.get("epochs")
        rec["test_queries"] = ours.get("count")
        rec["infer_note"] = ours.get("infer_label") or ""
        rec["_scale_dict"] = ours.get("scale_dict", {})
        rec["_header_scale"] = ours.get("header_scale", "")
        rec["_speed_reference"] = bool(spec.speed_reference) if spec else False
        records.append(rec)

    # Paper rows in paper order; for Table 1 group by dataset (baselines, then LP-BERT).
    if table == "table1":
        order = [r for ds in DATASETS for r in paper_rows if r["dataset"] == ds]
    else:
        order = paper_rows
    for paper_row in order:
        matches = [i for i, s in enumerate(specs) if s.row == paper_row["row"] and s.dataset == paper_row["dataset"]]
        if not matches:
            emit(paper_row, None)
        for i in matches:
            used_specs.add(i)
            emit(paper_row, specs[i])
    for i, spec in enumerate(specs):  # our rows with no paper counterpart (or a dataset the paper lacks)
        if i not in used_specs:
            if spec.row and not any(r["row"] == spec.row for r in paper_rows):
                log.warning("%s: row spec names paper row %r, which the paper's table lacks", table, spec.row)
            emit(paper_by_key.get((spec.row, spec.dataset)), spec)

    frame = pd.DataFrame.from_records(records)
    if table == "table3":
        _add_speed_ratios(frame, paper_rows)
    facts = {
        "scales": sorted({r["_header_scale"] for r in records if r.get("_header_scale")}),
        "provenance": [
            (r["label"], r["dataset"], r["run"], r["status"], r["metrics_path"], r["scale"], r["infer_note"])
            for r in records
            if r["status"] != "reported"
        ],
    }
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])
    return frame, facts


def _add_speed_ratios(frame: pd.DataFrame, paper_rows: list[dict]) -> None:
    """infer_vs_lpbert: each row's inference time divided by LP-BERT's (paper: same initial weights; ours: our
    LP-BERT row with the same encoder, or the one marked speed_reference)."""
    paper_lp = {r["initial_weights"]: r["paper"].get("infer") for r in paper_rows if r["method"] == "LP-BERT"}
    frame["infer_vs_lpbert_paper"] = [
        (p / paper_lp[w]) if (p is not None and paper_lp.get(w)) else None
        for p, w in zip(frame["infer_paper"], frame["initial_weights"])
    ]
    encoders = [d.get("encoder") for d in frame["_scale_dict"]]
    refs = {}
    for idx in frame.index[frame["_speed_reference"]]:
        refs.setdefault(encoders[idx], frame.at[idx, "infer_ours"])
    for idx in frame.index:
        if frame.at[idx, "kind"] == "lpbert" and frame.at[idx, "infer_ours"] is not None:
            refs.setdefault(encoders[idx], frame.at[idx, "infer_ours"])
    ours_ratio = []
    for idx in frame.index:
        value, ref = frame.at[idx, "infer_ours"], refs.get(encoders[idx])
        if ref is None and len(refs) == 1:  # encoder not recorded on one side: the only reference there is
            ref = next(iter(refs.values()))
        ours_ratio.append(value / ref if (_num(value) and _num(ref)) else None)
    frame["infer_vs_lpbert_ours"] = ours_ratio


def _num(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != 0


# ------------------------------------------------------------------------------------------------ formatting
def _fmt(value, metric: str, diff: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    value = float(value)
    if metric in ("t_per_epoch", "infer"):
        text = f"{value:+.3g}" if diff else (f"{value:,.0f}" if value >= 1000 else f"{value:.3g}")
    elif metric == "infer_vs_lpbert":
        text = f"{value:,.0f}×" if value >= 100 else f"{value:.3g}×"
    elif metric == "mr":
        text = f"{value:+.1f}" if diff else (f"{value:.0f}" if value >= 100 or value.is_integer() else f"{value:.2f}")
    else:
        text = f"{value:+.3f}" if diff else f"{value:.3f}"
    return text


def display_frame(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Human-readable strings: label columns, then per metric `paper`, `ours`, `Δ`."""
    metrics = list(ACCURACY) + (list(TIMES) if table == "table3" else [])
    cols: dict[str, list[str]] = {"Row": list(frame["label"])}
    if table in ("table1",):
        cols["Dataset"] = list(frame["dataset"])
    if table == "table4":
        cols["Pre-train"] = list(frame["pretrain"])
        cols["BatchSample"] = list(frame["batch_sample"])
    cols["Run"] = [r or "–" for r in frame["run"]]
    cols["Our encoder"] = [e or "–" for e in frame["encoder"]]
    cols["Source"] = list(frame["status"].map(_short_status))
    for m in metrics:
        name = DISPLAY[m]
        cols[f"{name} paper"] = [_fmt(v, m) for v in frame[f"{m}_paper"]]
        cols[f"{name} ours"] = [
            _fmt(v, m) + ("†" if (m == "infer" and note and v is not None and not _isnan(v)) else "")
            for v, note in zip(frame[f"{m}_ours"], frame["infer_note"])
        ]
        cols[f"{name} Δ"] = [_fmt(v, m, diff=True) for v in frame[f"{m}_diff"]]
    if table == "table3":
        cols["Infer ÷ LP-BERT paper"] = [_fmt(v, "infer_vs_lpbert") for v in frame["infer_vs_lpbert_paper"]]
        cols["Infer ÷ LP-BERT ours"] = [_fmt(v, "infer_vs_lpbert") for v in frame["infer_vs_lpbert_ours"]]
    return pd.DataFrame(cols)


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _short_status(status: str) -> str:
    if status.startswith("ours ("):
        return "ours (sampled)"
    return status


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def render_markdown(table: str, frame: pd.DataFrame, facts: dict, notes: list[str], scale_note: str | None) -> str:
    out = [f"# {TITLES[table]}", ""]
    scales = facts["scales"]
    if scale_note:
        out.append(f"**Scale:** {scale_note}")
    if len(scales) == 1:
        out.append(f"**Scale of our rows:** {scales[0]}.")
    elif scales:
        out.append("**Scale of our rows (differs per row):** " + "; ".join(scales) + ".")
    else:
        out.append("**Scale of our rows:** no row of ours has results yet.")
    out.append("")
    out.append(_markdown_table(display_frame(frame, table)))
    out.append("")
    out.append("**Notes and known departures**")
    out.append("")
    for note in notes:
        out.append(f"- {note}")
    if (frame.get("infer_note") is not None) and frame["infer_note"].astype(bool).any():
        out.append("- † inference time extrapolated from a sample of test queries (see provenance); the accuracy of "
                   "that row is measured on the same sample.")
    out.append("")
    out.append("**Provenance** (where each of our numbers comes from)")
    out.append("")
    for label, dataset, run, status, path, scale, infer_note in facts["provenance"]:
        where = f"`{path}`" if path else "no metrics file"
        extra = f"; {scale}" if scale else ""
        extra += f"; inference time {infer_note}" if infer_note else ""
        out.append(f"- {label} · {dataset} · run `{run or '–'}` · {status}: {where}{extra}")
    if not facts["provenance"]:
        out.append("- (no rows of ours)")
    out.append("")
    return "\n".join(out)


def render_latex(table: str, frame: pd.DataFrame, facts: dict, scale_note: str | None) -> str:
    shown = display_frame(frame, table)
    caption = TITLES[table]
    scales = facts["scales"]
    if scale_note:
        caption += f". Scale: {scale_note}"
    if scales:
        caption += ". Our rows: " + "; ".join(scales)
    caption += ". Δ = ours − paper."
    shown.columns = [str(c).replace("Δ", "$\\Delta$").replace("÷", "/") for c in shown.columns]
    for col in shown.columns:
        shown[col] = shown[col].astype(str).str.replace("–", "--").str.replace("×", "x").str.replace("†", "*")
    body = shown.to_latex(index=False, escape=False, caption=_latex_escape(caption), label=f"tab:{table}")
    return body


def _latex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"),
                 ("Δ", "$\\Delta$"), ("−", "-"), ("–", "--")):
        text = text.replace(a, b)
    return text


def write_table(table: str, frame: pd.DataFrame, facts: dict, md_path, csv_path, tex_path,
                notes: list[str] | None = None, scale_note: str | None = None) -> None:
    """Write the three files atomically."""
    all_notes = list(COMMON_NOTES) + list(DEFAULT_NOTES.get(table, ())) + list(notes or [])
    if md_path:
        with atomic_path(md_path) as tmp:
            tmp.write_text(render_markdown(table, frame, facts, all_notes, scale_note))
    if csv_path:
        with atomic_path(csv_path) as tmp:
            frame.to_csv(tmp, index=False)
    if tex_path:
        shown_frame = frame.copy()
        for col in ("label", "run", "status", "dataset"):
            shown_frame[col] = shown_frame[col].map(lambda v: _latex_escape(str(v)))
        with atomic_path(tex_path) as tmp:
            tmp.write_text(render_latex(table, shown_frame, facts, scale_note))


# ------------------------------------------------------------------------------------------------ entry point
def build_tables(
    specs: Iterable[Mapping | RowSpec],
    paper_csv: str | Path,
    outputs: Mapping[str, Mapping[str, str | None]],
    notes: Mapping[str, list[str]] | None = None,
    scale_note: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Build and write every table named in `outputs` ({table: {"md": path, "csv": path, "tex": path}})."""
    specs = [s if isinstance(s, RowSpec) else RowSpec.from_mapping(s) for s in specs]
    paper = load_paper(paper_csv)
    frames = {}
    for table, paths in outputs.items():
        frame, facts = build_table(table, specs, paper)
        write_table(table, frame, facts, paths.get("md"), paths.get("csv"), paths.get("tex"),
                    notes=list((notes or {}).get(table, [])), scale_note=scale_note)
        frames[table] = frame
        log.info("%s: %d rows (%d of ours) -> %s", table, len(frame), int((frame["status"].str.startswith("ours")).sum()),
                 ", ".join(str(p) for p in paths.values() if p))
    return frames


__all__ = [
    "RowSpec",
    "build_table",
    "build_tables",
    "canonical_dataset",
    "display_frame",
    "epochs_timed",
    "epochs_trained",
    "inference_seconds",
    "load_paper",
    "read_benchmark_seconds",
    "read_metrics_json",
    "scale_text",
    "write_table",
]

