"""Snakemake adapter for rule `tokenize` (not named tokenize.py: that would shadow the standard library)."""
from pathlib import Path

from lpbert_core.data_stages import run_tokenize
from lpbert_core.stage import run_stage
from lpbert_core.training import torch_threads

sm = snakemake  # noqa: F821
torch_threads(sm.threads)
run_stage(
    sm.log[0],
    lambda: run_tokenize(Path(sm.input.entities).parent, Path(sm.output.manifest).parent, sm.wildcards.encoder,
                         sm.params.source),
)
