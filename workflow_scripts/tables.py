"""Snakemake adapter for rule `tables`: Tables 1, 3, 4 and the reproduction table (md/csv/tex) and their figures.

Contract with the rule (all logic lives in lpbert_core.report.tables and the modules it names; lpbert_core.report.figures):

input:
  paper=        resources/paper_results.csv (the paper's numbers; may instead be given as params.paper)
  (any other inputs: the files named in params.rows and the attribution CSV, listed only so that Snakemake builds
  them first; the script reads the paths from params)
params:
  rows=         list of row specs (dicts), required. Keys:
                  table ("table1" | "table3" | "table4" | "reproduction"), dataset (config key, e.g. "umls";
                  case-insensitive),
                  row (paper row id from resources/paper_results.csv: Table 1 method, e.g. "LP-BERT"; Table 3
                       "<method>|<initial weights>", e.g. "KG-BERT|RoBERTa-base", "LP-BERT|LPBERT-base";
                       Table 4 "<pre-train>|<BatchSample>", e.g. "N|N", "MEM+MRM+MLM|Y"; None = no paper counterpart),
                  run (run name), label (optional), encoder (key of `encoders`), encoder_source (its name or folder),
                  role (reproduction only: "paper_text" | "authors_code"),
                  instances: one per seed of the run, each {run (instance name: the run, or "<run>.s<seed>"), seed,
                       metrics, train_log, finetune_benchmark, score_benchmark, ranks, pretrain_log (paths)};
                       a one-seed row may give these paths at the top level instead,
                  skipped (reason string: the row is listed as "skipped: <reason>" with no numbers),
                  kind ("lpbert" | "cross-encoder"; default from the paper row / `model: kgbert`),
                  speed_reference (bool: the LP-BERT row Table 3's Infer ratio divides by; default the first LP-BERT
                  row with the same encoder),
                  floor (bool: a zero-shot floor row of tables.floor, listed last, no paper row; its label names it),
                  floor_run (a row of ours: the floor run it is compared with on the same dataset, marked ▽ at or
                  below it); any other key (e.g. model) is kept and ignored.
  notes=        optional {table: [extra note lines]} appended to the built-in notes of each table
  scale_note=   optional string printed as the tables' "Scale:" note (e.g. "CPU-sized run, configs/cpu.yaml")
  attribution=  optional path of the reproduction table's study summary CSV (lpbert_core.report.reproduction)
  tables=       optional list of tables to build (default: every table with outputs below)
  table=        optional single table name when outputs use the keys md/csv/tex (else wildcards.table)
output:
  <table>_md, <table>_csv, <table>_tex   for each table built, e.g. table1_md="results/tables/table1.md"
  (or md/csv/tex for a one-table rule, the table taken from params.table or wildcards.table)
  figures=      optional directory(): all PNGs of the built tables ({table}_paper_vs_ours.png,
                ranks_{dataset}_{run}.png, train_{dataset}_{run}.png, pretrain_{dataset}_{variant}.png)
log:            one file
"""

from lpbert_core.runtime.stage_runner import run_stage
from lpbert_core.report.tables import TABLES

sm = snakemake  # noqa: F821


def main():
    from lpbert_core.runtime.atomic import atomic_dir
    from lpbert_core.report.figures import figures_for_tables
    from lpbert_core.report.tables import build_tables

    params = dict(sm.params.items())
    outputs = dict(sm.output.items())
    paper = dict(sm.input.items()).get("paper") or params.get("paper")
    if not paper:
        raise ValueError("rule tables: give the paper's numbers as input `paper` (resources/paper_results.csv)")
    table_outputs = {}
    if any(k in outputs for k in ("md", "csv", "tex")):
        table = params.get("table") or getattr(sm.wildcards, "table", None)
        if table not in TABLES:
            raise ValueError(f"rule tables: outputs md/csv/tex need params.table or wildcards.table in {TABLES}")
        table_outputs[table] = {k: outputs.get(k) for k in ("md", "csv", "tex")}
    for table in TABLES:
        paths = {k: outputs.get(f"{table}_{k}") for k in ("md", "csv", "tex")}
        if any(paths.values()):
            table_outputs[table] = paths
    if params.get("tables"):
        table_outputs = {t: table_outputs.get(t, {}) for t in params["tables"]}
    if not table_outputs:
        raise ValueError("rule tables: no outputs named <table>_md/_csv/_tex (or md/csv/tex)")
    rows = list(params.get("rows") or [])
    frames = build_tables(rows, paper, table_outputs, notes=params.get("notes"), scale_note=params.get("scale_note"),
                          attribution=params.get("attribution"))
    if outputs.get("figures"):
        with atomic_dir(outputs["figures"]) as tmp:
            figures_for_tables(frames, [r for r in rows if r.get("table") in frames], tmp)


run_stage(sm.log[0] if len(sm.log) else None, main)
