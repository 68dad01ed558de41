"""Snakemake adapter for rule `download`."""
from lpbert_core.data.data_stages import run_download
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821
run_stage(sm.log[0], lambda: run_download(settings=sm.params.source, outputs={"raw": sm.output[0]}))
