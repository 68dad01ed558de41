# Multi-task pre-training (paper section 3.2): one target per ablation variant {variant} (none|mlm|mem|mem-mrm|mem-mrm-mlm).
# Checkpoints live in checkpoints/{dataset}/pretrain/{variant}/, outside the declared outputs, so a killed job keeps
# them and the rerun (`--rerun-incomplete`) resumes after the last finished epoch.

rule pretrain:
    input:
        triples="results/{dataset}/text/triples.parquet",
        entities=f"results/{{dataset}}/tokens/{config['encoder']}/entities.parquet",
        relations=f"results/{{dataset}}/tokens/{config['encoder']}/relations.parquet",
        manifest=f"results/{{dataset}}/tokens/{config['encoder']}/manifest.json",
    output:
        model=directory("results/{dataset}/pretrain/{variant}/model"),
        log_csv="results/{dataset}/pretrain/{variant}/log.csv",
    params:
        settings=pretrain_settings,
        checkpoints="checkpoints/{dataset}/pretrain/{variant}",
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
