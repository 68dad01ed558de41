"""Snakemake adapter for rules `score_candidates`, `score_grail50` and `score_reranked_lists`."""
# Claim this job's GPU(s) first: CUDA_VISIBLE_DEVICES must be set before anything starts CUDA.
from lpbert_core.runtime.gpu_slots import claim_gpus  # noqa: E402

claim_gpus(int(snakemake.resources.get("gpu", 0)))  # noqa: F821
import logging

from lpbert_core.evaluate.candidate_lists import run_score_candidates
from lpbert_core.runtime.stage_runner import run_stage
from lpbert_core.runtime.training import torch_threads

sm = snakemake  # noqa: F821
torch_threads(sm.threads)
run_stage(sm.log[0], lambda: run_score_candidates(
    settings=sm.params.settings["settings"], inputs=dict(sm.input.items()), outputs=dict(sm.output.items()),
    log=logging.getLogger("lpbert.score_candidates").info,
    rerank=sm.params.settings.get("rerank")))  # rule score_reranked_lists: n-hop re-ranking (reported apart)
