"""Snakemake adapter for rule `pretrain`: log to the rule's log file, then run lpbert_core's pre-training stage."""
# Claim this job's GPU(s) first: CUDA_VISIBLE_DEVICES must be set before anything starts CUDA.
from lpbert_core.runtime.gpu_slots import claim_gpus  # noqa: E402

claim_gpus(int(snakemake.resources.get("gpu", 0)))  # noqa: F821
from lpbert_core.pretrain.pretrain_loop import run_pretrain
from lpbert_core.runtime.stage_runner import run_stage

sm = snakemake  # noqa: F821
run_stage(sm.log[0], lambda: run_pretrain(
    settings={**sm.params.settings, "threads": sm.threads}, inputs=dict(sm.input.items()),
    outputs={**dict(sm.output.items()), "checkpoints": sm.params.checkpoints}))
