"""Tables 1, 3 and 4 as frames laid out like the paper's: every paper row, our row(s) directly under the paper row they
reproduce, a Δ row under each of ours.

The frame is long: one record per (row, dataset, source), `source` = `paper` | `ours` | `diff` | `floor` (the
zero-shot floor rows of tables.floor, last; each row of ours carries `floor_run`, `floor_value`, `below_floor`), with
one column per metric (for ours the mean over seeds, plus `{metric}_sd` and `{metric}_n`) and the provenance columns.
Records of one paper row and its rows of ours share a `group` number; `line` numbers the displayed lines (a Table 1
line spans the datasets). The CSV is this frame; `table_render` lays it out for Markdown and LaTeX.

Δ rule (written into the notes): Table 3's rows differ by their initial weights, so a row of ours on another encoder
than its paper row gets no Δ ("encoder differs"). Tables 1 and 4 (and the reproduction table) compare against the
paper's one LP-BERT encoder (BERT-base-sized); there Δ is printed for every row of ours on the paper's dataset and
flagged ‡ where our encoder differs, so such a Δ measures method, encoder and scale together.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from lpbert_core.report.table_sources import (ACCURACY, DATASETS, FLOOR_LABEL, HEADER_SCALE_KEYS, TIMES, OurRow, RowSpec,
                                              below_floor, floor_metric, paper_rows, read_row)

log = logging.getLogger("lpbert.tables")

# our encoder keys / Hugging Face names that are the paper's initial weights (Table 3's column; "LPBERT-base" is the
# BERT-base-sized encoder of LP-BERT in Tables 1, 3, 4; the authors' code starts it from SpanBERT-base)
PAPER_ENCODERS = {
    "RoBERTa-base": ("roberta-base",),
    "RoBERTa-large": ("roberta-large",),
    "LPBERT-base": ("bert-base", "bert-base-uncased", "bert-base-cased", "spanbert-base",
                    "spanbert/spanbert-base-cased"),
}
PAPER_ENCODER_NAMES = {"LPBERT-base": "BERT-base-sized (LP-BERT base)"}
FLAG_ENCODER = "‡"
ENCODER_IS_THE_ROW = ("table3",)  # tables whose rows differ by encoder: no Δ across encoders


def table_metrics(table: str) -> list[str]:
    return list(ACCURACY) + (list(TIMES) if table == "table3" else [])


def paper_encoder(table: str, paper_row: dict | None) -> str:
    if table == "table3" and paper_row and paper_row.get("initial_weights"):
        return paper_row["initial_weights"]
    return "LPBERT-base"


def encoder_matches(paper_enc: str, ours: OurRow) -> bool:
    names = {str(n).lower() for n in (ours.spec.encoder, ours.spec.encoder_source, *ours.encoder.split(", ")) if n}
    return bool(names & set(PAPER_ENCODERS.get(paper_enc, ())))


def delta_rule(table: str, paper_enc: str, ours: OurRow, same_dataset: bool) -> str:
    """`shown`, `shown, encoder differs` or `none: <why>` for a row of ours against its paper row."""
    if not same_dataset:
        return "none: other dataset"
    if encoder_matches(paper_enc, ours):
        return "shown"
    if table in ENCODER_IS_THE_ROW:
        return "none: encoder differs"
    return "shown, encoder differs"


def kind_of(spec: RowSpec, method: str | None) -> str:
    if spec.kind:
        return spec.kind
    if str(spec.extra.get("model", "")).lower() == "kgbert" or (method or "").upper().startswith("KG-BERT"):
        return "cross-encoder"
    return "lpbert"


def _ours_fields(ours: OurRow, metrics: list[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "status": ours.status, "run": ours.spec.run or "", "seeds": " ".join(str(s) for s in ours.seeds),
        "n": ours.n, "encoder": ours.encoder, "leaky": ours.leaky, "leak": "; ".join(ours.leaks),
        "metrics_paths": " ".join(ours.metrics_paths), "scale": ours.scale() if ours.has_numbers else "",
        "infer_note": ours.infer_label or "", "test_queries": ours.count,
        "epochs_trained": " ".join(str(r.epochs) for r in ours.instances if r.epochs is not None),
    }
    for m in metrics:
        agg = ours.values.get(m)
        rec[m] = agg.mean if agg else None
        rec[f"{m}_sd"] = agg.sd if agg else None
        rec[f"{m}_n"] = agg.n if agg else 0
    return rec


def read_floors(specs: list[RowSpec]) -> dict[tuple[str, str], OurRow]:
    """(dataset, run) -> the zero-shot floor row of that run on that dataset."""
    return {(s.dataset, s.run): read_row(s) for s in specs if s.floor}


def floor_comparison(spec: RowSpec, values: dict, floors: dict[tuple[str, str], OurRow]) -> dict[str, Any]:
    """A row of ours against its floor on the dataset's floor metric: `floor_run`, `floor_metric`, `floor_value`,
    `below_floor` (at or below it). `values`: metric -> our value (the mean over seeds)."""
    floor = floors.get((spec.dataset, spec.floor_run)) if spec.floor_run else None
    metric = floor_metric(spec.dataset)
    agg = floor.values.get(metric) if floor else None
    value = agg.mean if agg else None
    return {"floor_run": spec.floor_run if floor else "", "floor_metric": metric if floor else "",
            "floor_value": value, "below_floor": below_floor(values.get(metric), value)}


def below_list(records: list[dict]) -> list[dict]:
    """The rows of ours at or below their floor, for the note under the table."""
    return [{"run": r["run"], "dataset": r["dataset"], "metric": r["floor_metric"], "value": r[r["floor_metric"]],
             "floor_run": r["floor_run"], "floor_value": r["floor_value"]} for r in records if r.get("below_floor")]


def build_table(table: str, specs: list[RowSpec], paper: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """One of Tables 1, 3, 4 as a long frame plus `facts` for the notes (scales, rows of ours, the zero-shot floor
    rows and the rows at or below them)."""
    if table not in ("table1", "table3", "table4"):
        raise ValueError(f"unknown table {table!r}; expected table1, table3 or table4")
    floor_specs = [s for s in specs if s.table == table and s.floor]
    floors = read_floors(floor_specs)
    specs = [s for s in specs if s.table == table and not s.floor]
    rows = paper_rows(paper, table)
    if table == "table1":  # the paper's section order: translational distance, then semantic matching
        genres = list(dict.fromkeys(r["genre"] for r in rows))
        rows = [r for g in genres for r in rows if r["genre"] == g]
    metrics = table_metrics(table)
    ours_by_row: dict[str | None, list[RowSpec]] = {}
    for spec in specs:
        if spec.row and not any(r["row"] == spec.row for r in rows):
            log.warning("%s: row spec names paper row %r, which the paper's table lacks", table, spec.row)
        key = spec.row if any(r["row"] == spec.row for r in rows) else None
        ours_by_row.setdefault(key, []).append(spec)
    records: list[dict] = []
    ours_rows: list[OurRow] = []
    line = 0
    for group, paper_row in enumerate(rows + [None]):
        specs_here = ours_by_row.get(paper_row["row"] if paper_row else None, [])
        if paper_row is None and not specs_here:
            break
        base = _base(table, group, paper_row)
        if paper_row is not None:
            line += 1
            datasets = list(paper_row["values"]) or [""]
            for dataset in datasets:
                values = paper_row["values"].get(dataset, {})
                records.append({**base, "line": line, "source": "paper", "label": paper_row["label"],
                                "dataset": dataset, "status": "paper", "params": paper_row["params"],
                                "paper_encoder": paper_encoder(table, paper_row),
                                **{m: values.get(m) for m in metrics}})
        # rows of ours under this paper row, one displayed line per run (Table 1: its datasets side by side)
        for run in dict.fromkeys(s.run for s in specs_here):
            line_ours, line_diff = line + 1, line + 2
            line += 2
            for spec in (s for s in specs_here if s.run == run):
                ours = read_row(spec)
                ours_rows.append(ours)
                penc = paper_encoder(table, paper_row)
                paper_values = (paper_row or {}).get("values", {}).get(spec.dataset)
                rule = ("none: no numbers of ours" if not ours.has_numbers else "none: no paper row" if not paper_row
                        else delta_rule(table, penc, ours, paper_values is not None))
                fields = _ours_fields(ours, metrics)
                common = {**base, "dataset": spec.dataset, "paper_encoder": penc, "delta": rule,
                          "paper_dataset": ", ".join((paper_row or {}).get("values", {})),
                          "kind": kind_of(spec, (paper_row or {}).get("method")),
                          "speed_reference": spec.speed_reference}
                records.append({**common, **fields, **floor_comparison(spec, fields, floors), "line": line_ours,
                                "source": "ours", "label": spec.label or "ours"})
                diff = {m: (fields[m] - paper_values[m]
                            if rule.startswith("shown") and fields[m] is not None
                            and paper_values.get(m) is not None else None) for m in metrics}
                records.append({**common, "line": line_diff, "source": "diff", "label": "Δ ours − paper",
                                "status": fields["status"], "run": fields["run"], "n": fields["n"],
                                "encoder": fields["encoder"], "leaky": fields["leaky"], **diff})
    below = below_list(records)
    # the floor rows last, one line per floor run (Table 1: its datasets side by side); no paper row, no Δ
    group = len(rows) + 1
    for run in dict.fromkeys(s.run for s in floor_specs):
        line += 1
        for spec in (s for s in floor_specs if s.run == run):
            row = floors[(spec.dataset, spec.run)]
            records.append({**_base(table, group, None), **_ours_fields(row, metrics), "dataset": spec.dataset,
                            "line": line, "source": "floor", "label": spec.label or FLOOR_LABEL,
                            "delta": "none: zero-shot floor", "kind": "floor", "paper_encoder": "",
                            "speed_reference": False})
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        frame = pd.DataFrame(columns=["table", "group", "line", "row", "label", "dataset", "source", "status", "run"])
    if table == "table3" and not frame.empty:
        _add_speed_ratios(frame)
    frame = frame[[c for c in _column_order(table, metrics) if c in frame.columns]
                  + [c for c in frame.columns if c not in _column_order(table, metrics)]]
    facts = {
        "scales": sorted({o.scale(HEADER_SCALE_KEYS) for o in ours_rows if o.has_numbers}),
        "ours": ours_rows + list(floors.values()),
        "floors": list(floors.values()),
        "below": below,
    }
    return frame, facts


def _column_order(table: str, metrics: list[str]) -> list[str]:
    """The CSV's columns: the row, the source, the numbers (mean, sd, n per metric), then provenance."""
    attrs = {"table1": ["genre"], "table3": ["initial_weights"], "table4": ["pretrain", "batch_sample"]}[table]
    return (["table", "group", "line", "row", *attrs, "dataset", "source", "label", "status", "run", "seeds", "n"]
            + [c for m in metrics for c in (m, f"{m}_sd", f"{m}_n")]
            + ["params", "infer_vs_lpbert", "delta", "floor_run", "floor_metric", "floor_value", "below_floor",
               "encoder", "paper_encoder", "paper_dataset", "leaky", "leak", "metrics_paths", "scale", "infer_note",
               "test_queries", "epochs_trained", "kind", "speed_reference"])


def _base(table: str, group: int, paper_row: dict | None) -> dict:
    base = {"table": table, "group": group, "row": paper_row["row"] if paper_row else ""}
    if table == "table1":
        base["genre"] = paper_row["genre"] if paper_row else ""
    if table == "table3":
        base["initial_weights"] = paper_row["initial_weights"] if paper_row else ""
    if table == "table4":
        base["pretrain"] = paper_row["pretrain"] if paper_row else ""
        base["batch_sample"] = paper_row["batch_sample"] if paper_row else ""
    return base


def _add_speed_ratios(frame: pd.DataFrame) -> None:
    """infer_vs_lpbert: inference time divided by LP-BERT's (paper: same initial weights; ours: our LP-BERT row with
    the same encoder, or the one marked speed_reference)."""
    for column in ("speed_reference", "kind", "encoder"):
        if column not in frame.columns:  # no row of ours
            frame[column] = None
    paper = frame[frame["source"] == "paper"]
    paper_lp = {w: v for w, v, r in zip(paper["initial_weights"], paper["infer"], paper["row"])
                if str(r).startswith("LP-BERT") and v is not None}
    ours = frame[frame["source"] == "ours"]
    refs: dict[str, float] = {}
    for _, rec in ours[ours["speed_reference"].fillna(False).astype(bool)].iterrows():
        refs.setdefault(rec["encoder"], rec["infer"])
    for _, rec in ours[ours["kind"] == "lpbert"].iterrows():
        if _num(rec["infer"]):
            refs.setdefault(rec["encoder"], rec["infer"])
    ratios = []
    for _, rec in frame.iterrows():
        if rec["source"] == "paper":
            ref = paper_lp.get(rec["initial_weights"])
        elif rec["source"] == "ours":
            ref = refs.get(rec["encoder"], next(iter(refs.values())) if len(refs) == 1 else None)
        else:
            ratios.append(None)
            continue
        ratios.append(rec["infer"] / ref if (_num(rec["infer"]) and _num(ref)) else None)
    frame["infer_vs_lpbert"] = ratios


def _num(value) -> bool:
    return value is not None and not pd.isna(value) and value != 0


def paired(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Our rows with their paper row's values beside them (`label`, `dataset`, `{m}_paper`, `{m}_ours`): the figures'
    input."""
    if frame.empty or "source" not in frame.columns:
        return pd.DataFrame(columns=["label", "dataset"] + [f"{m}_{s}" for m in metrics for s in ("paper", "ours")])
    paper = {(r["group"], r["dataset"]): r for _, r in frame[frame["source"] == "paper"].iterrows()}
    out = []
    for _, rec in frame[frame["source"] == "ours"].iterrows():
        ref = paper.get((rec["group"], rec["dataset"]))
        label = f"{ref['label'] if ref is not None else rec['row'] or 'extra'} ({rec['run']})"
        row = {"label": label, "dataset": rec["dataset"]}
        for m in metrics:
            row[f"{m}_ours"] = rec.get(m)
            row[f"{m}_paper"] = ref.get(m) if ref is not None else None
        out.append(row)
    return pd.DataFrame(out, columns=["label", "dataset"] + [f"{m}_{s}" for m in metrics for s in ("paper", "ours")])


def dataset_columns(table: str, frame: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """Table 1's column groups: (dataset, its metrics as the paper shows them), the paper's datasets in its order,
    then any dataset only we ran (all five metrics)."""
    groups = []
    paper = frame[frame["source"] == "paper"] if not frame.empty else frame
    for dataset in DATASETS:
        shown = [m for m in ACCURACY if m in paper.columns and paper.loc[paper["dataset"] == dataset, m].notna().any()]
        if shown:
            groups.append((dataset, shown))
    ours = frame[frame["source"] == "ours"] if not frame.empty else frame
    for dataset in dict.fromkeys(ours["dataset"] if not ours.empty else []):
        if dataset not in DATASETS:
            groups.append((dataset, list(ACCURACY)))
    return groups


__all__ = ["FLAG_ENCODER", "PAPER_ENCODERS", "PAPER_ENCODER_NAMES", "below_list", "build_table", "dataset_columns",
           "delta_rule", "encoder_matches", "floor_comparison", "paired", "paper_encoder", "read_floors",
           "table_metrics"]
