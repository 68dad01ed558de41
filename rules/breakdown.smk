# Per-relation and per-direction metrics of every table run (lpbert_core.breakdown), from its ranks.parquet: where a
# run goes wrong. Part of `all` and of the report.


rule breakdown:
    input:
        ranks="results/{dataset}/runs/{run}/ranks.parquet",
    output:
        csv=report(
            "results/{dataset}/runs/{run}/breakdown.csv",
            caption="../report/breakdown.rst",
            category="Breakdown",
            subcategory="{dataset}",
            labels={"run": "{run}", "kind": "table"},
        ),
        png=report(
            "results/{dataset}/runs/{run}/breakdown.png",
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


def breakdown_targets():
    """breakdown.csv and .png of every run a table shows (rows that are skipped offline have no ranks)."""
    tables = config["tables"]
    pairs = {(dataset, tables["table1"]["run"]) for dataset in config["datasets"]}
    for table in ("table3", "table4"):
        pairs |= {(tables[table]["dataset"], run) for run in tables[table]["rows"]}
    return [
        f"results/{dataset}/runs/{run}/breakdown.{ext}"
        for dataset, run in sorted(pairs)
        if run_skip_reason(run) is None
        for ext in ("csv", "png")
    ]
