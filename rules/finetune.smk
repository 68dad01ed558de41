# Knowledge fine-tuning (paper section 3.3) of LP-BERT runs: siamese encoder, in-batch negatives, focal + distance
# loss, early stop on dev Hits@10. Input: the run's pre-training output, or the bare encoder when pretrain is `none`.
# Checkpoints live in checkpoints/{dataset}/runs/{run}/ (not an output: a killed job resumes from them).

def lpbert_run(wildcards):
    return config["runs"][wildcards.run]


def finetune_inputs(wildcards):
    spec = lpbert_run(wildcards)
    inputs = {
        "triples": f"results/{wildcards.dataset}/text/triples.parquet",
        "manifest": f"results/{wildcards.dataset}/tokens/{run_settings(wildcards.run)['encoder']}/manifest.json",
    }
    if spec["pretrain"] != "none":
        inputs["pretrained"] = f"results/{wildcards.dataset}/pretrain/{spec['pretrain']}/model"
    return inputs


def finetune_params(wildcards):
    spec = lpbert_run(wildcards)
    key = run_settings(wildcards.run)['encoder']
    return {
        "dataset": wildcards.dataset,
        "run": wildcards.run,
        "run_spec": dict(spec),
        "encoder_key": key,
        "encoder_source": config["encoders"][key],
        # only this dataset's settings, so editing another dataset's entry does not re-run this job
        "finetune": {
            **{k: v for k, v in config.get("finetune", {}).items() if k != "per_dataset"},
            "per_dataset": {
                wildcards.dataset: config.get("finetune", {}).get("per_dataset", {}).get(wildcards.dataset, {})
            },
        },
    }


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        model=directory("results/{dataset}/runs/{run}/model"),
        train_log="results/{dataset}/runs/{run}/train_log.csv",
    params:
        settings=finetune_params,
        checkpoint_dir="checkpoints/{dataset}/runs/{run}",
    wildcard_constraints:
        run=LPBERT_RUNS,
    log:
        "logs/{dataset}/finetune/{run}.log",
    benchmark:
        "benchmarks/{dataset}/finetune/{run}.tsv"
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/finetune.py"
