"""Snakemake adapter for rule `breakdown` (per-relation and per-direction metrics of one run)."""
from lpbert_core.breakdown import run_breakdown
from lpbert_core.stage import run_stage

sm = snakemake  # noqa: F821
run_stage(
    sm.log[0],
    lambda: run_breakdown(sm.input.ranks, sm.output.csv, sm.output.png,
                          f"{sm.wildcards.dataset} / run {sm.wildcards.run}: per relation and direction"),
)
