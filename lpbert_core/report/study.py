"""Reading study (issue #9, item 4): several fine-tuning readings x seeds on one graph, summarised per reading.

Runs are named `{stage}-{reading}-s{seed}` (`study-...`: the 8-epoch screen; `study30-...`: the paper's 30 epochs,
configs/study-umls.yaml). Per run the inputs are the pipeline's own files: `metrics.json` (test metrics of the
realistic filtered ranks, both directions; `run.best_epoch` / `run["best_dev_hits@10"]`: the model selected by dev
Hits@10) and `train_log.csv` (dev metrics per epoch), plus an optional `provenance.json` written by the study driver
(tools/run_study_umls.sh: the git commit each run was made at).

Per (stage, reading): seeds, mean and sample sd over seeds of dev Hits@10 at the selected epoch, test Hits@10, MR,
MRR, Hits@1, the selected epochs, the git commits and the metrics.json paths. Readings are ranked within a stage by
mean dev Hits@10 (ties: mean dev MRR at the selected epoch); test metrics never enter the ranking.

    python -m lpbert_core.report.study measurements/study_umls --out measurements/study_umls/summary
summarises whatever runs a folder of `<run>/metrics.json` copies holds (the driver's interim summary).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pandas as pd

from lpbert_core.runtime.atomic import atomic_path, write_json

RUN_NAME = re.compile(r"^(?P<stage>study(?:\d+)?)-(?P<reading>.+)-s(?P<seed>\d+)$")
TEST_METRICS = ("hits@10", "mr", "mrr", "hits@1")


def parse_run_name(name: str) -> tuple[str, str, int] | None:
    """(stage, reading, seed) of a study run name, None for any other run."""
    m = RUN_NAME.match(name)
    return (m["stage"], m["reading"], int(m["seed"])) if m else None


def load_run(name: str, metrics_path, train_log_path, provenance_path=None) -> dict:
    """One study run as a flat record (+ its per-epoch dev log)."""
    parsed = parse_run_name(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a study run name (study-<reading>-s<seed> or study30-<reading>-s<seed>)")
    stage, reading, seed = parsed
    metrics = json.loads(Path(metrics_path).read_text())
    log = pd.read_csv(train_log_path)
    info = metrics.get("run", {})
    both = metrics["metrics"]["both"]
    best_epoch = int(info["best_epoch"])
    best_row = log[log["epoch"] == best_epoch]
    dev_mrr = float(best_row["dev_mrr"].iloc[0]) if len(best_row) and "dev_mrr" in log else math.nan
    provenance = {}
    if provenance_path and Path(provenance_path).exists():
        provenance = json.loads(Path(provenance_path).read_text())
    return {
        "run": name, "stage": stage, "reading": reading, "seed": seed,
        "epochs": int(info.get("settings", {}).get("epochs") or len(log)),
        "epochs_run": int(info.get("epochs_run") or len(log)),
        "best_epoch": best_epoch,
        "dev_hits@10": float(info["best_dev_hits@10"]),
        "dev_mrr": dev_mrr,
        **{f"test_{k}": float(both[k]) for k in TEST_METRICS},
        "test_queries": int(both.get("count") or 0),
        "leaky": bool(metrics.get("leaky", False)),
        "selection": info.get("selection", "dev_hits10"),
        "git_commit": provenance.get("git_commit"),
        "uncommitted_code_files": provenance.get("uncommitted_code_files"),
        "metrics_path": str(metrics_path),
        "dev_log": log[["epoch", "dev_hits@10"]].assign(run=name, reading=reading, stage=stage, seed=seed),
    }


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def summarise(runs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-run frame, per-reading frame ranked by mean dev Hits@10 within each stage)."""
    per_run = pd.DataFrame([{k: v for k, v in r.items() if k != "dev_log"} for r in runs])
    per_run = per_run.sort_values(["stage", "reading", "seed"]).reset_index(drop=True)
    rows = []
    for (stage, reading), g in per_run.groupby(["stage", "reading"], sort=False):
        row = {"stage": stage, "reading": reading, "epochs": int(g["epochs"].max()), "n_seeds": len(g),
               "seeds": " ".join(str(s) for s in g["seed"]),
               "dev_hits@10_mean": float(g["dev_hits@10"].mean()), "dev_hits@10_sd": _sd(g["dev_hits@10"]),
               "dev_mrr_mean": float(g["dev_mrr"].mean()), "leaky": bool(g["leaky"].any()),
               "selection": " ".join(sorted(set(g["selection"])))}
        for k in TEST_METRICS:
            row[f"test_{k}_mean"] = float(g[f"test_{k}"].mean())
            row[f"test_{k}_sd"] = _sd(g[f"test_{k}"])
        row["best_epochs"] = " ".join(str(e) for e in g["best_epoch"])
        row["git_commits"] = " ".join(sorted({str(c)[:10] for c in g["git_commit"] if isinstance(c, str)})) or "-"
        row["metrics_paths"] = " ".join(g["metrics_path"])
        rows.append(row)
    per_reading = pd.DataFrame(rows)
    if len(per_reading):
        per_reading = per_reading.sort_values(["stage", "dev_hits@10_mean", "dev_mrr_mean"],
                                              ascending=[True, False, False]).reset_index(drop=True)
        per_reading.insert(2, "rank", per_reading.groupby("stage").cumcount() + 1)
        per_reading = pd.concat([per_reading, _deltas(per_run, per_reading)], axis=1)
    return per_run, per_reading


def _deltas(per_run: pd.DataFrame, per_reading: pd.DataFrame) -> pd.DataFrame:
    """Per reading: its baseline (`baseline_run_of`: stage and reading) and Δ of each metric against it, paired on the
    seeds both ran (the mean of the per-seed differences: ac-hits at seed 42 is compared with ac at seed 42, not with
    ac's mean over seeds 42 and 43); the difference of the means where they share no seed; NaN without a baseline
    run."""
    columns = ["dev_hits@10"] + [f"test_{k}" for k in TEST_METRICS]
    out = []
    for _, r in per_reading.iterrows():
        base_stage, base = baseline_run_of(r["stage"], r["reading"])
        mine = per_run[(per_run["stage"] == r["stage"]) & (per_run["reading"] == r["reading"])].set_index("seed")
        theirs = per_run[(per_run["stage"] == base_stage) & (per_run["reading"] == base)].set_index("seed")
        common = sorted(set(mine.index) & set(theirs.index))
        rec = {"baseline": base if len(theirs) else "", "baseline_stage": base_stage if len(theirs) else "",
               "paired_seeds": " ".join(str(s) for s in common)}
        for c in columns:
            if not len(theirs):
                rec[f"delta_{c}"] = math.nan
            elif common:
                rec[f"delta_{c}"] = float((mine.loc[common, c] - theirs.loc[common, c]).mean())
            else:
                rec[f"delta_{c}"] = float(mine[c].mean() - theirs[c].mean())
        out.append(rec)
    return pd.DataFrame(out, index=per_reading.index)


# reading -> the reading it is compared with (None: the reference). nopre: the best reading without pre-training
# (what pre-training adds); nopre-mpnet: the same on a base-size encoder (what encoder size adds)
BASELINES = {"P": None, "ac": "P", "nopre": "sigmoid-mean", "nopre-mpnet": "nopre"}
SCREEN = "study"  # the 8-epoch screen; study<N>: a longer schedule of some of its readings


def baseline_of(reading: str) -> str | None:
    """A paper-text reading is compared with P (the paper-text reading); `ac-<switch>` (one authors'-code switch
    turned back to the paper's text) with `ac`; `ac` itself with P; the encoder-size pair as BASELINES says."""
    if reading in BASELINES:
        return BASELINES[reading]
    return "ac" if reading.startswith("ac-") else "P"


def baseline_run_of(stage: str, reading: str) -> tuple[str, str | None]:
    """(stage, reading) a reading is compared with: in the screen (`SCREEN`) its `baseline_of`; in a longer schedule
    (study30) the same reading in the screen, so that its Δ is what the longer schedule adds."""
    return (stage, baseline_of(reading)) if stage == SCREEN else (SCREEN, reading)


def family_of(reading: str) -> str:
    """`authors` for the authors'-code reading and its switches (ac, ac-<switch>), `paper` for the rest: the two
    families train differently enough to have their own seed noise (measured: sd of test Hits@10 0.037 for ac,
    0.001-0.007 for the paper-text readings). Read from the baseline chain, so the naming rule stays in
    `baseline_of`."""
    while reading is not None:
        if reading == "ac":
            return "authors"
        reading = baseline_of(reading)
    return "paper"


def pooled_sd(per_reading: pd.DataFrame, metric: str = "test_hits@10") -> dict[tuple[str, str], float]:
    """(stage, family) -> pooled sample sd of `metric` over that family's readings with several seeds."""
    out = {}
    frame = per_reading.assign(_family=per_reading["reading"].map(family_of))
    for (stage, family), g in frame.groupby(["stage", "_family"], sort=True):
        multi = g[g["n_seeds"] > 1]
        if len(multi):
            out[(stage, family)] = math.sqrt(float((multi[f"{metric}_sd"] ** 2 * (multi["n_seeds"] - 1)).sum())
                                             / float((multi["n_seeds"] - 1).sum()))
    return out


def attribution(per_reading: pd.DataFrame, metric: str = "test_hits@10") -> pd.DataFrame:
    """Per reading of each stage: Δ of `metric` (and dev Hits@10, test MR) against its baseline reading, paired on
    seeds (both from `summarise`), and whether |Δ| exceeds twice the seed sd. The seed sd is pooled per stage and
    family (`family_of`) over the readings with several seeds; a comparison across families (ac against P) or stages
    (study30 against study) takes the larger of the two sides; NaN while neither side has a reading with several
    seeds. A reading whose baseline has not run is left out."""
    rows = []
    pooled = pooled_sd(per_reading, metric)
    by = per_reading.set_index(["stage", "reading"])
    for _, r in per_reading.sort_values("stage", kind="stable").iterrows():  # stage by stage, ranked within
        stage, reading, base, base_stage = r["stage"], r["reading"], r["baseline"], r["baseline_stage"]
        if not base:  # summarise's: empty where the reading has none or it has not run
            continue
        b = by.loc[(base_stage, base)]
        sides = ((stage, family_of(reading)), (base_stage, family_of(base)))
        sds = [pooled[side] for side in sides if side in pooled]
        sd = max(sds) if sds else math.nan
        delta = float(r[f"delta_{metric}"])  # paired on the common seeds (summarise)
        rows.append({"stage": stage, "reading": reading, "baseline": base, "baseline_stage": base_stage,
                     "delta_dev_hits@10": float(r["delta_dev_hits@10"]), f"delta_{metric}": delta,
                     "delta_test_mr": float(r["delta_test_mr"]), "paired_seeds": r["paired_seeds"],
                     "seed_sd": sd, "beyond_2sd": (abs(delta) > 2 * sd) if not math.isnan(sd) else None,
                     "n_seeds": int(r["n_seeds"]), "baseline_n_seeds": int(b["n_seeds"]),
                     # each side's own leak: ac-noleak is clean, its baseline ac is not
                     "leaky": bool(r["leaky"]), "baseline_leaky": bool(b["leaky"])})
    return pd.DataFrame(rows)


def attribution_markdown(frame: pd.DataFrame) -> list[str]:
    if not len(frame):
        return []
    lines = ["## Attribution", "",
             "Each reading against its baseline: a paper-text reading against P; the authors'-code reading (ac) "
             "against P; `ac-<switch>` (one authors'-code switch turned back to the paper's text) against ac, so its Δ "
             "is that switch's effect one at a time, sign reversed (the switches interact: their effects do not add up "
             "to the gap between P and ac); a reading of a longer schedule (study30) "
             "against the same reading in the 8-epoch screen (what the schedule adds). Δ is paired on the seeds both "
             "ran (the mean of the per-seed differences). Seed sd: pooled sample sd of test Hits@10 "
             "over the readings of its stage and family with several seeds (the authors'-code readings `ac`, "
             "`ac-<switch>` and the rest apart: they differ in seed noise; a comparison across families or stages "
             "takes the larger side); `> 2 sd` marks a Δ beyond twice it (– while no reading has 2 seeds).", "",
             "| stage | reading | vs | Δ dev Hits@10 | Δ test Hits@10 | Δ test MR | seeds (reading / baseline) | "
             "Δ paired on seeds | seed sd | > 2 sd |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        flag = "–" if r["beyond_2sd"] is None or (isinstance(r["beyond_2sd"], float) and math.isnan(r["beyond_2sd"])) \
            else ("yes" if r["beyond_2sd"] else "no")
        leak = " ⚠ leaky" if r["leaky"] else ""
        base_leak = " ⚠ leaky" if r["baseline_leaky"] else ""
        base_leak += f" ({r['baseline_stage']})" if r["baseline_stage"] != r["stage"] else ""
        lines.append(f"| {r['stage']} | {r['reading']}{leak} | {r['baseline']}{base_leak} | "
                     f"{r['delta_dev_hits@10']:+.3f} | {r['delta_test_hits@10']:+.3f} | {r['delta_test_mr']:+.2f} | "
                     f"{r['n_seeds']} / {r['baseline_n_seeds']} | {r['paired_seeds'] or 'none: means'} | "
                     f"{_sd_text(r['seed_sd'])} | {flag} |")
    return lines + [""]


def _sd_text(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4f}"


def _pm(mean: float, sd: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def summary_markdown(per_run: pd.DataFrame, per_reading: pd.DataFrame, title: str, note: str = "") -> str:
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["Ranked by mean dev Hits@10 at the selected epoch (filtered by train+dev, both directions); test "
              "metrics (realistic filtered ranks, both directions, full test split) never enter the ranking. "
              "mean ± sample sd over seeds.", ""]
    for stage, g in per_reading.groupby("stage", sort=True):
        epochs = int(g["epochs"].max())
        lines += [f"## {stage}: {epochs} epochs", "",
                  "| rank | reading | seeds | dev Hits@10 | test Hits@10 | test MR | test MRR | test Hits@1 | "
                  "best epochs | commits |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in g.iterrows():
            leak = " ⚠ leaky" if r["leaky"] else ""
            lines.append(
                f"| {r['rank']} | {r['reading']}{leak} | {r['seeds']} | {_pm(r['dev_hits@10_mean'], r['dev_hits@10_sd'], 3)} "
                f"| {_pm(r['test_hits@10_mean'], r['test_hits@10_sd'], 3)} "
                f"| {_pm(r['test_mr_mean'], r['test_mr_sd'], 2)} | {_pm(r['test_mrr_mean'], r['test_mrr_sd'], 3)} "
                f"| {_pm(r['test_hits@1_mean'], r['test_hits@1_sd'], 3)} | {r['best_epochs']} | {r['git_commits']} |")
        lines.append("")
    lines += attribution_markdown(attribution(per_reading))
    if per_reading["leaky"].any():
        lines += ["⚠ leaky: the run's in-batch labels took dev and test triples (the authors' code, label_splits "
                  "train+dev+test); its test numbers are not a clean held-out measurement.", ""]
    lines += ["## Runs", "", "| run | seed | best epoch / run | dev Hits@10 | test Hits@10 | test MR | test MRR | "
              "test Hits@1 | commit | metrics.json |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in per_run.iterrows():
        commit = str(r["git_commit"])[:10] if isinstance(r["git_commit"], str) else "-"
        if isinstance(r["uncommitted_code_files"], list) and r["uncommitted_code_files"]:
            commit += " (+uncommitted)"
        lines.append(f"| {r['run']} | {r['seed']} | {r['best_epoch']} / {r['epochs_run']} | {r['dev_hits@10']:.3f} | "
                     f"{r['test_hits@10']:.3f} | {r['test_mr']:.2f} | {r['test_mrr']:.3f} | {r['test_hits@1']:.3f} | "
                     f"{commit} | `{r['metrics_path']}` |")
    return "\n".join(lines) + "\n"


def paper_reference(dataset: str, paper_csv="resources/paper_results.csv") -> dict:
    """The paper's LP-BERT test numbers for `dataset` (Table 1): {metric: value}; {} when the paper has none."""
    table = pd.read_csv(paper_csv)
    rows = table[(table["table"] == "table1") & (table["row"] == "LP-BERT")
                 & (table["dataset"].str.lower() == dataset.lower())]
    return {str(r["metric"]): float(r["value"]) for _, r in rows.iterrows()}


def _json_ready(frame: pd.DataFrame) -> list[dict]:
    out = json.loads(frame.to_json(orient="records"))  # NaN -> null
    return out


def write_study(runs: list[dict], md, csv, json_path, png, title: str, note: str = "",
                paper: dict | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Write the summary (md, csv per reading, json with readings and runs) and the figure (unless `png` is None;
    `paper`: the paper's numbers drawn in it); returns the per-reading frame. `dataset` becomes the CSV's first column
    (the reproduction table reads its attribution from it: tables.reproduction.attribution)."""
    if not runs:
        raise ValueError("no study runs to summarise")
    per_run, per_reading = summarise(runs)
    if dataset:
        per_reading.insert(0, "dataset", dataset)
    with atomic_path(md) as tmp:
        tmp.write_text(summary_markdown(per_run, per_reading, title, note))
    with atomic_path(csv) as tmp:
        per_reading.to_csv(tmp, index=False)
    write_json(json_path, {"title": title, "note": note, "readings": _json_ready(per_reading),
                           "runs": _json_ready(per_run)})
    if png:
        from lpbert_core.report.study_figure import study_figure  # it imports this module's helpers

        study_figure(runs, per_reading, png, paper)
    return per_reading


def runs_in_folder(folder) -> list[dict]:
    """Every `<run>/metrics.json` + `train_log.csv` (+ provenance.json) under `folder` whose name is a study run."""
    runs = []
    for metrics in sorted(Path(folder).glob("*/metrics.json")):
        name = metrics.parent.name
        if parse_run_name(name) and (metrics.parent / "train_log.csv").exists():
            runs.append(load_run(name, metrics, metrics.parent / "train_log.csv", metrics.parent / "provenance.json"))
    return runs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="folder of <run>/metrics.json, train_log.csv (optional provenance.json)")
    ap.add_argument("--out", required=True, help="output prefix: writes PREFIX.md/.csv/.json and PREFIX.png")
    ap.add_argument("--title", default="UMLS reading study (interim: the finished runs)")
    ap.add_argument("--figure", action="store_true", help="also PREFIX.png")
    ap.add_argument("--dataset", default="umls", help="the graph studied (its paper numbers are drawn in the figure)")
    args = ap.parse_args(argv)
    runs = runs_in_folder(args.folder)
    out = args.out
    write_study(runs, f"{out}.md", f"{out}.csv", f"{out}.json", f"{out}.png" if args.figure else None, args.title,
                note=f"{len(runs)} finished runs read from {args.folder}/", paper=paper_reference(args.dataset),
                dataset=args.dataset)
    print(f"{len(runs)} runs summarised -> {out}.md")


if __name__ == "__main__":
    main()
