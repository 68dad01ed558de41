# Data stages: download (verify + extract) -> join_text (text tables) -> tokenize (token id shards).


rule download:
    input:
        download_inputs,
    output:
        directory("results/{dataset}/raw"),
    params:
        source=source_params,
    log:
        "logs/{dataset}/download.log",
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/download.py"


rule join_text:
    input:
        "results/{dataset}/raw",
    output:
        entities="results/{dataset}/text/entities.parquet",
        relations="results/{dataset}/text/relations.parquet",
        triples="results/{dataset}/text/triples.parquet",
    params:
        settings=text_settings,
    log:
        "logs/{dataset}/join_text.log",
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/join_text.py"


rule tokenize:
    input:
        entities="results/{dataset}/text/entities.parquet",
        relations="results/{dataset}/text/relations.parquet",
    output:
        entities="results/{dataset}/tokens/{encoder}/entities.parquet",
        relations="results/{dataset}/tokens/{encoder}/relations.parquet",
        manifest="results/{dataset}/tokens/{encoder}/manifest.json",
    params:
        source=encoder_source,
    log:
        "logs/{dataset}/tokenize/{encoder}.log",
    benchmark:
        "benchmarks/{dataset}/tokenize/{encoder}.tsv"
    threads: 2
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/tokenize_text.py"
