"""Snakemake adapter for rule `breakdown` (per-relation and per-direction metrics of one run)."""
from lpbert_core.evaluate.breakdown import run_breakdown
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821
run_stage(sm.log[0], lambda: run_breakdown(
    settings={"title": f"{sm.wildcards.dataset} / run {sm.wildcards.run}: per relation and direction"},
    inputs=dict(sm.input.items()), outputs=dict(sm.output.items())))
