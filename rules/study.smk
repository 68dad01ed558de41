# Reading study (configs/study-umls.yaml): runs named study-{reading}-s{seed} (8-epoch screen) and
# study30-{reading}-s{seed} (30 epochs) are summarised per reading (mean ± sd over seeds, ranked by dev Hits@10) with
# a figure. Defined only when an overlay defines study runs:
#   snakemake study --cores 2 --configfile configs/cpu.yaml configs/study-umls.yaml
# tools/run_study_umls.sh runs the study's runs one at a time in priority order (resumable), then this target.


rule study:
    input:
        expand(paths.fill(paths.STUDY, name="summary.md"), dataset=config["datasets"]),
    localrule: True


rule study_summary:
    input:
        study_inputs,
        paper="resources/paper_results.csv",  # the paper's numbers, drawn in the figure
    output:
        md=paths.fill(paths.STUDY, name="summary.md"),
        csv=paths.fill(paths.STUDY, name="summary.csv"),
        json=paths.fill(paths.STUDY, name="summary.json"),
        png=paths.fill(paths.STUDY, name="study.png"),
    params:
        rows=study_rows,
        title=lambda wildcards: f"{wildcards.dataset} reading study",
        note=config["tables"].get("scale_note", ""),
    log:
        "logs/study/{dataset}.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/study.py"
