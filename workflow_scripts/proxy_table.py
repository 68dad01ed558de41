"""Snakemake adapter for rule proxy_table (lpbert_core.report.proxy_table)."""
from lpbert_core.report.proxy_table import build_proxy
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821


def main():
    build_proxy(list(sm.params.rows), {"md": sm.output.md, "csv": sm.output.csv, "figure": sm.output.figure},
                sm.params.scale_note)


run_stage(sm.log[0], main)
