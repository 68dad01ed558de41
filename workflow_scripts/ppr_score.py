"""Snakemake adapter for rule `ppr_score` (Personalized PageRank baseline, lpbert_core.baselines.ppr)."""
import logging

from lpbert_core.baselines.ppr import run_ppr_score
from lpbert_core.runtime.stage_runner import run_stage
from lpbert_core.runtime.training import torch_threads

sm = snakemake  # noqa: F821
torch_threads(sm.threads)
run_stage(sm.log[0], lambda: run_ppr_score(
    settings=sm.params.settings, inputs=dict(sm.input.items()), outputs=dict(sm.output.items()),
    log=logging.getLogger("lpbert.ppr").info))
