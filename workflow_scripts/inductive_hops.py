"""Snakemake adapter for rule `inductive_hops` (a test graph's rows by the answer's hop distance)."""
import logging

from lpbert_core.evaluate.hop_breakdown import run_hop_breakdown
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821
run_stage(sm.log[0], lambda: run_hop_breakdown(
    settings=sm.params.settings, inputs=dict(sm.input.items()), outputs=dict(sm.output.items()),
    log=logging.getLogger("lpbert.hops").info))
