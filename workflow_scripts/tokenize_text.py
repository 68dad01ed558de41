"""Snakemake adapter for rule `tokenize` (not named tokenize.py: that would shadow the standard library)."""
from lpbert_core.data.data_stages import run_tokenize
from lpbert_core.runtime.stage_runner import run_stage
from lpbert_core.runtime.training import torch_threads

sm = snakemake  # noqa: F821
torch_threads(sm.threads)
run_stage(sm.log[0], lambda: run_tokenize(
    settings={"encoder_key": sm.wildcards.encoder, "encoder_source": sm.params.source},
    inputs=dict(sm.input.items()), outputs=dict(sm.output.items())))
