# Multi-task pre-training (paper section 3.2): one target per ablation variant {tasks} (none|mlm|mem|mem-mrm|mem-mrm-mlm).
# Checkpoints live in checkpoints/{dataset}/pretrain/{tasks}/, outside the declared outputs, so a killed job keeps
# them and the rerun (`--rerun-incomplete`) resumes after the last finished epoch.

rule pretrain:
    input:
        triples="results/{dataset}/text/triples.parquet",
        entities=f"results/{{dataset}}/tokens/{config['encoder']}/entities.parquet",
        relations=f"results/{{dataset}}/tokens/{config['encoder']}/relations.parquet",
        manifest=f"results/{{dataset}}/tokens/{config['encoder']}/manifest.json",
    output:
        model=directory("results/{dataset}/pretrain/{tasks}/model"),
        log_csv="results/{dataset}/pretrain/{tasks}/log.csv",
    params:
        settings=pretrain_settings,
        checkpoints="checkpoints/{dataset}/pretrain/{tasks}",
    log:
        "logs/{dataset}/pretrain/{tasks}.log",
    benchmark:
        "benchmarks/{dataset}/pretrain/{tasks}.tsv"
    threads: config["pretrain"]["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/pretrain.py"
