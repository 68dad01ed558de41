"""Snakemake adapter for rule `pretrain`: log to the rule's log file, then run lpbert_core's pre-training stage."""
# Claim this job's GPU(s) first: CUDA_VISIBLE_DEVICES must be set before anything starts CUDA.
from lpbert_core.gpu_slots import claim_gpus  # noqa: E402

claim_gpus(int(snakemake.resources.get("gpu", 0)))  # noqa: F821
from pathlib import Path

from lpbert_core.pretrain_loop import run_pretrain
from lpbert_core.stage import run_stage

sm = snakemake  # noqa: F821
settings = {**sm.params.settings, "threads": sm.threads}
run_stage(
    sm.log[0],
    lambda: run_pretrain(Path(sm.input.triples).parent, Path(sm.input.manifest).parent, settings,
                         sm.output.model, sm.params.checkpoints, sm.output.log_csv),
)
