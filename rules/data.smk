# Data stages: download (verify + extract) -> join_text (text tables) -> tokenize (token id shards).


rule download:
    input:
        download_inputs,
    output:
        directory(paths.RAW),
    params:
        source=source_params,
        content=download_content,
    log:
        "logs/{dataset}/download.log",
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/download.py"


rule join_text:
    input:
        paths.RAW,
    output:
        entities=paths.TEXT_ENTITIES,
        relations=paths.TEXT_RELATIONS,
        triples=paths.TEXT_TRIPLES,
        summary=paths.TEXT_SUMMARY,
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
        entities=paths.TEXT_ENTITIES,
        relations=paths.TEXT_RELATIONS,
    output:
        entities=paths.TOKEN_ENTITIES,
        relations=paths.TOKEN_RELATIONS,
        manifest=paths.TOKENS_MANIFEST,
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


# A target under results/ for a dataset that has no source (a typo, or a forgotten --configfile): no other rule can
# make it (`dataset` is constrained to the configured sources), so this one matches and its input function stops the
# DAG with a message listing the configured datasets instead of "No rule to produce ...". It never runs.
rule unknown_dataset:
    input:
        unknown_dataset,
    output:
        "results/{unknown}/{path}",
    wildcard_constraints:
        # any first folder but a configured source or tables/figures (the lookahead sees the "/" that follows)
        unknown=f"(?!(?:{_alternatives([*config['sources'], *RESULT_FOLDERS])})/)[^/]+",
        path=".+",
    log:
        "logs/unknown_dataset/{unknown}/{path}.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    shell:
        "exit 1"
