# Candidate scoring of LP-BERT runs: every entity and every test query encoded once, chunked matrix products and
# filtered ranks (train+dev+test) on the device, both directions; writes ranks.parquet and metrics.json.

rule score:
    input:
        unpack(score_inputs),
    output:
        ranks=paths.RUN_RANKS,
        metrics=paths.RUN_METRICS,
    params:
        settings=score_params,
    wildcard_constraints:
        run=LPBERT_RUNS,
    log:
        "logs/{dataset}/score/{run}.log",
    benchmark:
        paths.SCORE_BENCHMARK
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 10  # scoring last (common.smk)
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/score.py"


# The presampled-candidate protocol (BERTRL's 50 candidates per test triple and side, sources with `candidates:`):
# the same model ranks the true triple among its listed corruptions, used exactly as given (lpbert_core/evaluate/candidate_lists.py).
# GraIL's protocol (our sampled lists, every test graph): rule score_grail50 in rules/inductive.smk, the same scorer.
rule score_candidates:
    input:
        unpack(score_inputs),
        raw=paths.RAW,
    output:
        ranks=paths.fill(paths.RUN_LIST_RANKS, protocol="candidates"),
        metrics=paths.fill(paths.RUN_LIST_METRICS, protocol="candidates"),
    params:
        settings=score_params,
    wildcard_constraints:
        run=LPBERT_RUNS,
    log:
        "logs/{dataset}/score_candidates/{run}.log",
    benchmark:
        "benchmarks/{dataset}/score_candidates/{run}.tsv"
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 10  # scoring last (common.smk)
    resources:
        gpu=1,  # one card, claimed like the other GPU jobs' (a small job: never split over gpus_per_job ranks)
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/score_candidates.py"


# n-hop re-ranking (beyond the paper, SimKGC's test-time graph prior; config `rerank:`): the run's test ranking with
# +weight on every candidate within `hops` hops of the query's entity in the train graph. Reported apart, never a
# table's protocol row; targets: results/{dataset}/runs/{run}/rerank/metrics.json.
rule score_reranked:
    input:
        unpack(score_inputs),
    output:
        ranks=paths.RUN_RERANKED_RANKS,
        metrics=paths.RUN_RERANKED_METRICS,
    params:
        settings=rerank_params,
    wildcard_constraints:
        run=LPBERT_RUNS,
    log:
        "logs/{dataset}/score_reranked/{run}.log",
    benchmark:
        "benchmarks/{dataset}/score_reranked/{run}.tsv"
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 10  # scoring last (common.smk)
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/score.py"
