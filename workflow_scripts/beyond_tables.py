"""Snakemake adapter for rules `inductive_table` and `plus_table` (lpbert_core.report.beyond_tables)."""
from lpbert_core.report.beyond_tables import OurRun, build_inductive, build_plus
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821


def main():
    rows = [OurRun(**row) for row in sm.params.rows]
    paths = {"md": sm.output.md, "csv": sm.output.csv}
    if sm.rule == "inductive_table":
        build_inductive(sm.params.pairs, rows, sm.input.published, paths)
    else:
        build_plus(sm.params.datasets, rows, sm.input.paper, sm.input.simkgc, paths, sm.params.scale_note)


run_stage(sm.log[0], main)
