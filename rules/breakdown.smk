# Per-relation and per-direction metrics of every table run (lpbert_core.evaluate.breakdown), from its ranks.parquet: where a
# run goes wrong. Part of `all` and of the report.


rule breakdown:
    input:
        ranks=paths.RUN_RANKS,
    output:
        csv=report(
            paths.fill(paths.RUN_BREAKDOWN, ext="csv"),
            caption="../report/breakdown.rst",
            category="Breakdown",
            subcategory="{dataset}",
            labels={"run": "{run}", "kind": "table"},
        ),
        png=report(
            paths.fill(paths.RUN_BREAKDOWN, ext="png"),
            caption="../report/breakdown.rst",
            category="Breakdown",
            subcategory="{dataset}",
            labels={"run": "{run}", "kind": "figure"},
        ),
    log:
        "logs/{dataset}/breakdown/{run}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/breakdown.py"

