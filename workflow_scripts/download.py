"""Snakemake adapter for rule `download`."""
from lpbert_core.data_stages import run_download
from lpbert_core.stage import run_stage

run_stage(snakemake.log[0], lambda: run_download(snakemake.params.source, snakemake.output[0]))  # noqa: F821
