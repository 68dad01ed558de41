"""Snakemake adapter for rule `study_summary` (logic: lpbert_core.report.study)."""
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821


def main():
    from lpbert_core.report.study import load_run, paper_reference, write_study

    runs = [load_run(r["run"], r["metrics"], r["train_log"], r.get("provenance")) for r in sm.params.rows]
    write_study(runs, sm.output.md, sm.output.csv, sm.output.json, sm.output.png, sm.params.title, sm.params.note,
                paper=paper_reference(sm.wildcards.dataset, sm.input.paper), dataset=sm.wildcards.dataset)


run_stage(sm.log[0], main)
