# Multi-task pre-training (paper section 3.2): one target per ablation variant {variant} (none|mlm|mem|mem-mrm|mem-mrm-mlm).
# Checkpoints live in checkpoints/{dataset}/pretrain/{variant}/, outside the declared outputs, so a killed job keeps
# them and the rerun (`--rerun-incomplete`) resumes after the last finished epoch.

rule pretrain:
    input:
        triples=paths.TEXT_TRIPLES,
        entities=paths.fill(paths.TOKEN_ENTITIES, encoder=config["encoder"]),
        relations=paths.fill(paths.TOKEN_RELATIONS, encoder=config["encoder"]),
        manifest=paths.fill(paths.TOKENS_MANIFEST, encoder=config["encoder"]),
    output:
        model=directory(paths.PRETRAIN_MODEL),
        log_csv=paths.PRETRAIN_LOG,
    params:
        settings=pretrain_settings,
        checkpoints=paths.PRETRAIN_CHECKPOINTS,
    log:
        "logs/{dataset}/pretrain/{variant}.log",
    benchmark:
        "benchmarks/{dataset}/pretrain/{variant}.tsv"
    threads: gpu_threads(config["pretrain"]["threads"])  # at most --cores per GPU slot (common.smk)
    priority: pretrain_priority  # the critical path first (common.smk)
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/pretrain.py"
