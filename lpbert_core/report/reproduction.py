"""The reproduction table: per dataset and metric of the paper's Table 1, the paper's LP-BERT, our paper-text reading
(run `tables.reproduction.paper_text`), our authors'-code reading (run `tables.reproduction.authors_code`, or "not run"),
Δ for each, the scale and an attribution of the gap read from a study summary CSV.

Attribution CSVs (tables.reproduction.attribution), either
- a plain table with columns `dataset`, `attribution` and optionally `metric` (a row without a metric covers every
  metric of its dataset), or
- the reading study's summary (`lpbert_core.report.study`, results/study/{dataset}/summary.csv: `stage`, `reading`,
  `test_{metric}_mean`; the dataset from a `dataset` column or the path): per metric, the readings that move the
  test mean most against their baseline (paper-text readings against `P`, authors'-code switches against `ac`), then
  the best reading of each longer schedule with what that schedule adds to it over its 8-epoch run.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from lpbert_core.errors import InputError
from lpbert_core.report.study import BASELINES, baseline_of
from lpbert_core.report.table_frames import FLAG_ENCODER, delta_rule, floor_comparison, read_floors
from lpbert_core.report.table_render import (COMMON_NOTES, DISPLAY, MISSING, TITLES, Layout, common_notes, floor_names,
                                             floor_notes, fmt, fmt_ours, missing, provenance, row_name, write_files)
from lpbert_core.report.table_sources import (ACCURACY, FLOOR_MARK, HEADER_SCALE_KEYS, RowSpec, canonical_dataset,
                                              paper_rows, read_row)

ROLES = ("paper_text", "authors_code")
ROLE_NAMES = {"paper_text": "paper text", "authors_code": "authors' code"}
NOT_RUN = {"authors_code": "not run (configs/authors-code.yaml)", "paper_text": "not run (tables.reproduction.paper_text)"}


# ------------------------------------------------------------------------------------------------ attribution
def read_attribution(path: str | Path | None):
    """A function (dataset, metric) -> attribution text ("–" when the CSV says nothing about it)."""
    if not path:
        return lambda dataset, metric: MISSING
    path = Path(path)
    if not path.exists():
        raise InputError(path, "attribution summary not found (tables.reproduction.attribution)")
    frame = pd.read_csv(path, keep_default_na=False)
    if "attribution" in frame.columns:
        if "dataset" not in frame.columns:
            raise InputError(path, "an attribution table needs a 'dataset' column next to 'attribution'")
        texts = {}
        for rec in frame.to_dict("records"):
            key = (canonical_dataset(rec["dataset"]), str(rec.get("metric", "")).lower())
            texts[key] = str(rec["attribution"])
        return lambda d, m: texts.get((d, m), texts.get((d, ""), MISSING))
    if {"stage", "reading"} <= set(frame.columns) and any(c.startswith("test_") for c in frame.columns):
        found = re.search(r"study[/_]([^/]+)/[^/]+$", path.as_posix())  # results/study/D/, measurements/study_D/
        datasets = ({canonical_dataset(d) for d in frame["dataset"]} if "dataset" in frame.columns
                    else {canonical_dataset(found.group(1))} if found else set())
        if not datasets:
            raise InputError(path, "study summary without a 'dataset' column: name it results/study/<dataset>/... "
                                   "or .../study_<dataset>/...")
        return lambda d, m: _study_text(frame, m) if d in datasets else MISSING
    raise InputError(path, "attribution CSV needs columns dataset, attribution (and optionally metric), or a study "
                           "summary's stage, reading, test_<metric>_mean")


def _study_text(frame: pd.DataFrame, metric: str, top: int = 3) -> str:
    """`study (8 epochs, up to 2 seeds) vs P (0.856): sigmoid-mean +0.104, raw +0.074, learnable +0.052; from
    sigmoid-mean (0.960): nopre +0.006; from nopre (0.966): nopre-mpnet +0.030; ac (leaky) -0.223 vs P, its switches
    vs ac (0.633, Δ paired by seed): ac-cosine (leaky) +0.295, ac-mean (leaky) +0.234, ac-optim (leaky) -0.178;
    study30 (30 epochs): sigmoid-mean 0.992 (+0.032 over its 8-epoch run)` (Hits@10 of the final committed study,
    measurements/study_umls/summary.csv; each `ac-<switch>` Δ turns one switch back alone: the effects interact
    and do not add up, the seven sum to +0.394 against the +0.223 gap). In the longest stage that has the paper-text
    reading P, each reading is compared with its own baseline (`study.baseline_of`: paper-text readings with P,
    `ac-<switch>` with `ac`, a chain step with the step before), the largest moves first; then the best reading (by
    dev Hits@10) of each longer stage, with what the longer schedule adds to it where the summary has that Δ."""
    column = f"test_{metric}_mean"
    if column not in frame.columns:
        return MISSING
    frame = frame.assign(_e=pd.to_numeric(frame.get("epochs", 0), errors="coerce").fillna(0))
    with_p = frame[frame.groupby("stage")["reading"].transform(lambda r: (r == "P").any())]
    if with_p.empty:
        return MISSING
    stage = with_p.sort_values("_e").iloc[-1]["stage"]  # the longest schedule with a paper-text reading
    sub = with_p[with_p["stage"] == stage]
    values = {r: float(v) for r, v in zip(sub["reading"], pd.to_numeric(sub[column], errors="coerce"))
              if not math.isnan(float(v))}
    if "P" not in values or len(values) < 2:
        return MISSING
    leaky = {r: str(v).lower() == "true" for r, v in zip(sub["reading"], sub.get("leaky", [False] * len(sub)))}
    # the study's Δ paired on the seeds both ran where the summary has it (study.summarise), else the means' difference;
    # only a Δ against the reading's own baseline in this stage (a longer stage's summary Δ is against its 8 epochs)
    delta = f"delta_test_{metric}"
    own = (sub["baseline_stage"] == stage) if "baseline_stage" in sub.columns else pd.Series(True, index=sub.index)
    paired = ({r: float(v) for r, v in zip(sub.loc[own, "reading"], pd.to_numeric(sub.loc[own, delta], errors="coerce"))
               if not math.isnan(v)} if delta in sub.columns else {})
    groups: dict[str, list[tuple[str, float]]] = {}
    for reading, value in values.items():
        base = baseline_of(reading)
        if reading != "P" and base in values:
            groups.setdefault(base, []).append((reading, paired.get(reading, value - values[base])))

    def name(reading: str) -> str:
        return f"{reading}{' (leaky)' * leaky.get(reading, False)}"

    def moves(pairs: list[tuple[str, float]]) -> str:
        pairs = sorted(pairs, key=lambda x: -abs(x[1]))[:top]
        return ", ".join(f"{name(r)} {fmt(d, metric, diff=True)}" for r, d in pairs)

    seeds = f", up to {int(sub['n_seeds'].max())} seeds" if "n_seeds" in sub.columns else ""
    def depth(reading: str) -> int:
        return 0 if reading == "P" else 1 + depth(baseline_of(reading) or "P")

    heads = sorted((b for b in groups if b != "P"), key=depth)
    # a reading whose comparisons are its own switches (ac: ac-<switch>) heads a clause of its own instead of the
    # list against P; a step of a chain named in study.BASELINES (sigmoid-mean -> nopre -> nopre-mpnet) stays in
    # its list, and its successors follow as "from <step>"
    families = [h for h in heads if not any(r in BASELINES for r, _ in groups[h])]
    parts = [moves([(r, d) for r, d in groups.get("P", []) if r not in families])]
    for head in heads:
        if head in families:
            continue
        parts.append(f"from {name(head)} ({fmt(values[head], metric)}): {moves(groups[head])}")
    for head in families:
        base = baseline_of(head)
        clause = name(head) + (f" {fmt(paired.get(head, values[head] - values[base]), metric, diff=True)} vs {base}"
                               if base in values else "")
        pairing = ", Δ paired by seed" if paired else ""  # the head's value is its mean over seeds
        parts.append(f"{clause}, its switches one at a time vs {head} ({fmt(values[head], metric)}{pairing}; "
                     "they interact and do not add up): "
                     f"{moves(groups[head])}")
    text = f"{stage} ({int(sub['_e'].max())} epochs{seeds}) vs P ({fmt(values['P'], metric)}): " + \
        "; ".join(part for part in parts if part)
    for longer, rows in frame[frame["_e"] > sub["_e"].max()].groupby("stage"):
        best = rows.sort_values("dev_hits@10_mean", ascending=False).iloc[0] if "dev_hits@10_mean" in rows \
            else rows.iloc[0]
        text += f"; {longer} ({int(best['_e'])} epochs): {best['reading']} {fmt(float(best[column]), metric)}"
        # what the longer schedule adds to that reading (study.baseline_run_of: the same reading in the screen); the
        # baseline checks make sure the Δ is against `stage`, whose epochs are sub's
        gain = pd.to_numeric(pd.Series([best.get(delta, "")]), errors="coerce").iloc[0]
        if best.get("baseline_stage") == stage and best.get("baseline") == best["reading"] and not math.isnan(gain):
            text += f" ({fmt(float(gain), metric, diff=True)} over its {int(sub['_e'].max())}-epoch run)"
    return text


# ------------------------------------------------------------------------------------------------ frame
def build_reproduction(specs: list[RowSpec], paper: pd.DataFrame, attribution=None) -> tuple[pd.DataFrame, dict]:
    """One record per (dataset, metric); the zero-shot floor runs (tables.floor) as columns `floor_{run}`, and
    `{role}_below_floor` on the dataset's floor metric where that reading is at or below its floor."""
    floor_specs = [s for s in specs if s.table == "reproduction" and s.floor]
    floors = read_floors(floor_specs)
    floor_runs = list(dict.fromkeys(s.run for s in floor_specs))
    specs = [s for s in specs if s.table == "reproduction" and not s.floor]
    lp = next((r for r in paper_rows(paper, "table1") if r["row"] == "LP-BERT"), {"values": {}})
    attribute = read_attribution(attribution)
    by_role = {(s.dataset, s.role or "paper_text"): read_row(s) for s in specs}
    records, ours, below = [], list(by_role.values()), []
    for dataset in dict.fromkeys(s.dataset for s in specs):
        paper_values = lp["values"].get(dataset)
        metrics = [m for m in ACCURACY if m in (paper_values or {})] or list(ACCURACY)
        scales = {role: row.scale(HEADER_SCALE_KEYS) for (d, role), row in by_role.items()
                  if d == dataset and row.has_numbers}
        scale = "; ".join(f"{ROLE_NAMES[r]}: {t}" for r, t in scales.items()) if len(set(scales.values())) > 1 \
            else next(iter(scales.values()), "")
        for metric in metrics:
            p = (paper_values or {}).get(metric)
            rec = {"dataset": dataset, "metric": metric, "paper": p}
            for role in ROLES:
                row = by_role.get((dataset, role))
                agg = row.values.get(metric) if row else None
                rule = delta_rule("reproduction", "LPBERT-base", row, paper_values is not None) if row else ""
                mean = agg.mean if agg else None
                rec.update({
                    f"{role}_run": row.spec.run if row else "", role: mean,
                    f"{role}_sd": agg.sd if agg else None, f"{role}_n": agg.n if agg else 0,
                    f"{role}_delta": mean - p if (rule.startswith("shown") and mean is not None and p is not None)
                    else None,
                    f"{role}_delta_rule": rule,
                    f"{role}_status": row.status if row else NOT_RUN[role],
                    f"{role}_encoder": row.encoder if row else "", f"{role}_leaky": bool(row and row.leaky),
                    f"{role}_seeds": " ".join(str(s) for s in row.seeds) if row else "",
                    f"{role}_metrics": " ".join(row.metrics_paths) if row else "",
                })
                cmp = floor_comparison(row.spec, {m: a.mean for m, a in row.values.items()}, floors) if row else {}
                on_metric = cmp.get("floor_metric") == metric
                rec[f"{role}_floor_run"] = cmp.get("floor_run", "")
                rec[f"{role}_below_floor"] = bool(on_metric and cmp["below_floor"])
                if rec[f"{role}_below_floor"]:
                    below.append({"run": row.spec.run, "dataset": dataset, "metric": metric, "value": mean,
                                  "floor_run": cmp["floor_run"], "floor_value": cmp["floor_value"]})
            for run in floor_runs:
                floor = floors.get((dataset, run))
                agg = floor.values.get(metric) if floor else None
                rec[f"floor_{run}"] = agg.mean if agg else None
                rec[f"floor_{run}_status"] = floor.status if floor else "not run"
            rec["scale"] = scale
            rec["attribution"] = attribute(dataset, metric)
            records.append(rec)
    frame = pd.DataFrame.from_records(records)
    facts = {"ours": ours + list(floors.values()),
             "scales": sorted({o.scale(HEADER_SCALE_KEYS) for o in ours if o.has_numbers}),
             "runs": {role: next((s.run for s in specs if (s.role or "paper_text") == role), None) for role in ROLES},
             "attribution": str(attribution) if attribution else None,
             "floor_runs": floor_runs, "floors": list(floors.values()), "below": below}
    return frame, facts


# ------------------------------------------------------------------------------------------------ layout / files
def _ours_cell(rec, role: str) -> str:
    status = str(rec[f"{role}_status"])
    if not status.startswith("ours"):
        return status
    text = fmt_ours(rec[role], rec[f"{role}_sd"], rec["metric"])
    if int(rec[f"{role}_n"] or 0) > 1:
        text += f" (n={int(rec[f'{role}_n'])})"
    text += f" {FLOOR_MARK}" if str(rec.get(f"{role}_below_floor")) == "True" else ""
    return text + (" ⚠ leaky" if rec[f"{role}_leaky"] else "")


def _floor_cell(rec, run: str) -> str:
    status = str(rec[f"floor_{run}_status"])
    return fmt(rec[f"floor_{run}"], rec["metric"]) if status.startswith("ours") else status


def _delta_cell(rec, role: str) -> str:
    rule = str(rec[f"{role}_delta_rule"])
    if missing(rec[f"{role}_delta"]):
        return MISSING
    return fmt(rec[f"{role}_delta"], rec["metric"], diff=True) + (f" {FLAG_ENCODER}" if "encoder" in rule else "")


def reproduction_layout(frame: pd.DataFrame, runs: dict, floor_runs: list[str] = ()) -> Layout:
    titles = ["Paper"]
    for role in ROLES:
        titles += [f"Ours: {ROLE_NAMES[role]}" + (f" (`{runs[role]}`)" if runs.get(role) else ""), "Δ"]
    titles += [f"Zero-shot, no fine-tuning (`{run}`)" for run in floor_runs]
    layout = Layout(["Dataset", "Metric"], [("", titles)], ["Scale", "Attribution"])
    shown = None
    for _, rec in frame.iterrows():
        first = rec["dataset"] != shown
        shown = rec["dataset"]
        cells = [rec["dataset"] if first else "", DISPLAY[rec["metric"]], fmt(rec["paper"], rec["metric"])]
        for role in ROLES:
            cells += [_ours_cell(rec, role), _delta_cell(rec, role)]
        cells += [_floor_cell(rec, run) for run in floor_runs]
        cells += [(rec["scale"] or MISSING) if first else "", rec["attribution"]]
        layout.lines.append(("ours", cells))
    return layout


def write_reproduction(frame: pd.DataFrame, facts: dict, paths: dict, scale_note: str | None = None,
                       notes: list[str] | None = None) -> None:
    runs = facts["runs"]
    authors = (f"run `{runs['authors_code']}`: the pipeline with the authors' code's switches (configs/authors-code.yaml, "
               f"which sets them for every run, or a run's own finetune overrides)" if runs.get("authors_code") else
               "not run: set tables.reproduction.authors_code to a run that carries the authors' code's switches "
               "(configs/authors-code.yaml; README, 'Reproduction table')")
    paper = (f"run `{runs['paper_text']}` (config.yaml's reading of the paper's text)" if runs.get("paper_text") else
             "not run here (tables.reproduction.paper_text is null: an overlay such as configs/authors-code.yaml "
             "changes every run's reading, pre-training included, so the paper-text column comes from a build "
             "without it)")
    all_notes = common_notes("reproduction", facts["ours"], scale_note, facts["scales"]) + [
        "**Paper:** the LP-BERT row of the paper's Table 1, with the metrics Table 1 reports for each dataset "
        "(UMLS: Hits@10 and MR); a dataset the paper lacks lists all five, paper '–'.",
        f"**Paper text:** {paper}. "
        f"**Authors' code:** {authors}.",
        f"**Attribution:** {'`' + facts['attribution'] + '`' if facts['attribution'] else 'none configured'} "
        "(tables.reproduction.attribution: a study summary CSV; '–' = nothing to attribute the gap to).",
    ] + floor_notes(floor_names(facts.get("floors", [])), facts.get("below", []))
    all_notes += list(COMMON_NOTES) + list(notes or [])
    caption = (f"Scale: {scale_note}. " if scale_note else "") + "Δ = ours − paper."

    def label_of(row):
        return row_name(row) if row.spec.floor else ROLE_NAMES.get(row.spec.role or "paper_text", "ours")

    layout = reproduction_layout(frame, runs, facts.get("floor_runs", []))
    write_files(paths, TITLES["reproduction"], layout, all_notes,
                provenance(facts["ours"], label_of), frame, "reproduction", caption)


def paired_reproduction(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure input: one row per (dataset, reading) with `{metric}_paper` and `{metric}_ours`."""
    out = []
    for dataset, sub in frame.groupby("dataset", sort=False) if not frame.empty else []:
        for role in ROLES:
            if not sub[f"{role}_status"].astype(str).str.startswith("ours").any():
                continue
            row = {"label": f"{ROLE_NAMES[role]} ({sub[f'{role}_run'].iloc[0]})", "dataset": dataset}
            for _, rec in sub.iterrows():
                row[f"{rec['metric']}_paper"] = rec["paper"]
                row[f"{rec['metric']}_ours"] = rec[role]
            out.append(row)
    columns = ["label", "dataset"] + [f"{m}_{s}" for m in ACCURACY for s in ("paper", "ours")]
    return pd.DataFrame(out).reindex(columns=columns)


__all__ = ["build_reproduction", "paired_reproduction", "read_attribution", "reproduction_layout",
           "write_reproduction"]
