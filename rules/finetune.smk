# Knowledge fine-tuning (paper section 3.3) of LP-BERT runs: siamese encoder, in-batch negatives, focal + distance
# loss, early stop on dev Hits@10. Input: the run's pre-training output, or the bare encoder when pretrain is `none`.
# Checkpoints live in checkpoints/{dataset}/runs/{run}/ (not an output: a killed job resumes from them).

rule finetune:
    input:
        unpack(training_inputs),
    output:
        model=directory(paths.RUN_MODEL),
        train_log=paths.RUN_TRAIN_LOG,
    params:
        settings=finetune_params,
        checkpoint_dir=paths.RUN_CHECKPOINTS,
    wildcard_constraints:
        run=LPBERT_RUNS,
    log:
        "logs/{dataset}/finetune/{run}.log",
    benchmark:
        paths.FINETUNE_BENCHMARK
    threads: GPU_JOB_THREADS  # gpu_job_threads, at most --cores per GPU slot (common.smk)
    priority: 50  # after pre-training, before scoring (common.smk)
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/finetune.py"
