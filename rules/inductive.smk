# Issue #27: the inductive table's third protocol (GraIL's 50 sampled negatives, our seeded sample) and the baselines
# we run ourselves on every test graph vN_ind (tables.inductive.baselines). Every model ranks the same list files:
# LP-BERT runs through score_candidates' scorer, the cross-encoder (kgbert_lists) and PPR (ppr_score) through theirs.

# GraIL's protocol: lists.json + ranking_head.txt / ranking_tail.txt (BERTRL's layout), from vN_ind's triples only
# (lpbert_core/evaluate/sampled_negatives.py; config inductive_eval.grail_negatives).
rule grail_lists:
    input:
        triples=paths.TEXT_TRIPLES,
        entities=paths.TEXT_ENTITIES,
        relations=paths.TEXT_RELATIONS,
    output:
        record=paths.GRAIL_LISTS,
        head=paths.fill(paths.GRAIL_RANKING, side="head"),
        tail=paths.fill(paths.GRAIL_RANKING, side="tail"),
    params:
        settings=lambda wildcards: inductive_eval("grail_negatives"),
    wildcard_constraints:
        dataset=TEST_GRAPHS,
    log:
        "logs/{dataset}/grail_lists.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/grail_lists.py"


# LP-BERT runs on the GraIL-protocol lists: score_candidates' scorer (the run's own encodings and pair scorer).
rule score_grail50:
    input:
        unpack(score_inputs),
        lists=paths.GRAIL_LISTS,
    output:
        ranks=paths.fill(paths.RUN_LIST_RANKS, protocol="grail50"),
        metrics=paths.fill(paths.RUN_LIST_METRICS, protocol="grail50"),
    params:
        settings=score_params,
    wildcard_constraints:
        run=LPBERT_RUNS,
        dataset=TEST_GRAPHS,
    log:
        "logs/{dataset}/score_grail50/{run}.log",
    benchmark:
        "benchmarks/{dataset}/score_grail50/{run}.tsv"
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 10  # scoring last (common.smk)
    resources:
        gpu=1,  # one card, like score_candidates
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/score_candidates.py"


# The cross-encoder (model: kgbert, trained on vN) on BERTRL's lists (`candidates`, v1) or ours (`grail50`): one encoder
# pass per listed line (lpbert_core/baselines/cross_encoder_lists.py). Its full ranking is kgbert_score's seeded sample.
rule kgbert_lists:
    input:
        unpack(list_job_inputs),
    output:
        ranks=paths.RUN_LIST_RANKS,
        metrics=paths.RUN_LIST_METRICS,
    params:
        settings=kgbert_params,
    wildcard_constraints:
        run=KGBERT_RUNS,
        dataset=TEST_GRAPHS,
        protocol="candidates|grail50",
    log:
        "logs/{dataset}/kgbert_lists/{run}.{protocol}.log",
    benchmark:
        "benchmarks/{dataset}/kgbert_lists/{run}.{protocol}.tsv"
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 10  # scoring last (common.smk)
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/kgbert_lists.py"


# Personalized PageRank over vN_ind's observed triples (no text, no training; config inductive_eval.ppr), in each
# protocol: full (every entity, filtered), candidates (BERTRL's lists, v1), grail50 (our sampled lists).
rule ppr_score:
    input:
        unpack(ppr_inputs),
    output:
        ranks=paths.PPR_RANKS,
        metrics=paths.PPR_METRICS,
    params:
        settings=ppr_params,
    wildcard_constraints:
        dataset=TEST_GRAPHS,
        protocol="full|candidates|grail50",
    log:
        "logs/{dataset}/ppr_score/{protocol}.log",
    benchmark:
        "benchmarks/{dataset}/ppr_score/{protocol}.tsv"
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/ppr_score.py"


# lpbert-plus re-ranked by the n-hop graph prior over vN_ind's observed triples (config `rerank:`; a named row of ours,
# tables.inductive.reranked), on the list protocols; its full ranking is rule score_reranked.
rule score_reranked_lists:
    input:
        unpack(list_job_inputs),
    output:
        ranks=paths.RUN_RERANKED_LIST_RANKS,
        metrics=paths.RUN_RERANKED_LIST_METRICS,
    params:
        settings=rerank_params,
    wildcard_constraints:
        run=LPBERT_RUNS,
        dataset=TEST_GRAPHS,
        protocol="candidates|grail50",
    log:
        "logs/{dataset}/score_reranked_lists/{run}.{protocol}.log",
    benchmark:
        "benchmarks/{dataset}/score_reranked_lists/{run}.{protocol}.tsv"
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 10  # scoring last (common.smk)
    resources:
        gpu=1,  # one card, like score_candidates
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/score_candidates.py"
