"""Snakemake adapter for rule `grail_lists` (GraIL-protocol candidate lists, lpbert_core.evaluate.sampled_negatives)."""
from lpbert_core.evaluate.sampled_negatives import run_grail_lists
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821
run_stage(sm.log[0], lambda: run_grail_lists(
    settings=sm.params.settings, inputs=dict(sm.input.items()), outputs=dict(sm.output.items())))
