# Candidate scoring of LP-BERT runs: every entity and every test query encoded once, chunked matrix products and
# filtered ranks (train+dev+test) on the device, both directions; writes ranks.parquet and metrics.json.

def score_params(wildcards):
    spec = config["runs"][wildcards.run]
    per_dataset = config.get("finetune", {}).get("per_dataset", {}).get(wildcards.dataset, {})
    settings = dict(config.get("score", {}))
    settings["test_subsample"] = per_dataset.get("test_subsample", settings.get("test_subsample"))
    settings.pop("per_dataset", None)
    return {"settings": settings, "run_spec": dict(spec), "encoder_key": spec.get("encoder", config["encoder"])}


def score_inputs(wildcards):
    spec = config["runs"][wildcards.run]
    return {
        "model": f"results/{wildcards.dataset}/runs/{wildcards.run}/model",
        "triples": f"results/{wildcards.dataset}/text/triples.parquet",
        "manifest": f"results/{wildcards.dataset}/tokens/{spec.get('encoder', config['encoder'])}/manifest.json",
    }


rule score:
    input:
        unpack(score_inputs),
    output:
        ranks="results/{dataset}/runs/{run}/ranks.parquet",
        metrics="results/{dataset}/runs/{run}/metrics.json",
    params:
        settings=score_params,
    wildcard_constraints:
        run=LPBERT_RUNS,
    log:
        "logs/{dataset}/score/{run}.log",
    benchmark:
        "benchmarks/{dataset}/score/{run}.tsv"
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/score.py"
