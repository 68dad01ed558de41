"""Snakemake adapter for rule `score_candidates`."""
# Claim this job's GPU first: CUDA_VISIBLE_DEVICES must be set before anything starts CUDA.
from lpbert_core.gpu_slots import claim_gpus  # noqa: E402

claim_gpus(int(snakemake.resources.get("gpu", 0)))  # noqa: F821
import logging
from pathlib import Path

from lpbert_core.candidate_lists import run_score_candidates
from lpbert_core.data_stages import CANDIDATES_FOLDER
from lpbert_core.stage import run_stage
from lpbert_core.training import torch_threads

sm = snakemake  # noqa: F821
torch_threads(sm.threads)
run_stage(
    sm.log[0],
    lambda: run_score_candidates(
        sm.input.model, Path(sm.input.triples).parent, Path(sm.input.manifest).parent,
        Path(sm.input.raw) / CANDIDATES_FOLDER, sm.output.ranks, sm.output.metrics, sm.params.settings["settings"],
        log=logging.getLogger("lpbert.score_candidates").info,
    ),
)
