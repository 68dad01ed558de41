# KG-BERT-style cross-encoder baseline (Table 3): the triple as one sequence, a classifier on [CLS], BCE with k
# sampled corruptions per train triple. Ranking needs one encoder pass per (query, candidate) pair, so `kgbert_score`
# ranks a fixed seeded sample of test triples (both directions, every entity a candidate), times each query and
# extrapolates linearly to the whole test set (metrics.json says so). Runs: the `runs:` entries with model: kgbert.
# Checkpoints live in checkpoints/{dataset}/runs/{run}/ (not an output: a killed job resumes after its last epoch).

rule kgbert_train:
    input:
        unpack(training_inputs),
    output:
        model=directory(paths.RUN_MODEL),
        train_log=paths.RUN_TRAIN_LOG,
    params:
        settings=kgbert_params,
        checkpoint_dir=paths.RUN_CHECKPOINTS,
    wildcard_constraints:
        run=KGBERT_RUNS,
    log:
        "logs/{dataset}/kgbert_train/{run}.log",
    benchmark:
        paths.FINETUNE_BENCHMARK  # same pattern as rule finetune: Table 3 reads both alike
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 50  # after pre-training, before scoring (common.smk)
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/kgbert_train.py"


rule kgbert_score:
    input:
        unpack(score_inputs),
    output:
        ranks=paths.RUN_RANKS,
        metrics=paths.RUN_METRICS,
    params:
        settings=kgbert_params,
    wildcard_constraints:
        run=KGBERT_RUNS,
    log:
        "logs/{dataset}/kgbert_score/{run}.log",
    benchmark:
        paths.SCORE_BENCHMARK
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 10  # scoring last (common.smk)
    resources:
        gpu=1,  # one card whatever gpus_per_job: its per-query time is Table 3's
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/kgbert_score.py"
