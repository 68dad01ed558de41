"""Snakemake adapter for rule `join_text`."""
from lpbert_core.data.data_stages import run_join_text
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821
run_stage(sm.log[0], lambda: run_join_text(settings=dict(sm.params.settings), inputs={"raw": sm.input[0]},
                                           outputs=dict(sm.output.items())))
