# Tables 1, 3 and 4 (md/csv/tex) and their figures, one job per table so `results/tables/table4.md` builds only the
# runs Table 4 needs. Rows whose initial weights cannot be loaded offline are listed as skipped, never faked.


def table_row_specs(table):
    """(dataset, run, paper row id) for every row of `table`, from the config's `tables:` section."""
    spec = config["tables"][table]
    if table == "table1":
        return [(dataset, spec["run"], "LP-BERT") for dataset in config["datasets"]]
    return [(spec["dataset"], run, paper_row) for run, paper_row in spec["rows"].items()]


def run_files(dataset, run):
    settings = run_settings(run)
    files = {
        "metrics": f"results/{dataset}/runs/{run}/metrics.json",
        "train_log": f"results/{dataset}/runs/{run}/train_log.csv",
        "ranks": f"results/{dataset}/runs/{run}/ranks.parquet",
        "finetune_benchmark": f"benchmarks/{dataset}/finetune/{run}.tsv",
        "score_benchmark": f"benchmarks/{dataset}/score/{run}.tsv",
    }
    if settings["pretrain"] != "none":
        files["pretrain_log"] = f"results/{dataset}/pretrain/{settings['pretrain']}/log.csv"
    return files


def table_rows(wildcards):
    rows = []
    for dataset, run, paper_row in table_row_specs(wildcards.table):
        settings = run_settings(run)
        row = {
            "table": wildcards.table,
            "dataset": dataset,
            "run": run,
            "row": paper_row,
            "model": settings["model"],
            "encoder": settings["encoder"],
        }
        reason = run_skip_reason(run)
        if reason:
            row["skipped"] = reason
        else:
            row.update(run_files(dataset, run))
        rows.append(row)
    return rows


def table_inputs(wildcards):
    """Every file the table reads, so Snakemake builds the runs first (skipped rows need nothing)."""
    files = []
    for row in table_rows(wildcards):
        if "skipped" not in row:
            files.extend(row[key] for key in run_files(row["dataset"], row["run"]))
    return files


rule tables:
    input:
        paper="resources/paper_results.csv",
        runs=table_inputs,
    output:
        md=report("results/tables/{table}.md", caption="../report/tables.rst", category="Tables"),
        csv=report("results/tables/{table}.csv", caption="../report/tables.rst", category="Tables"),
        tex="results/tables/{table}.tex",
        figures=report(
            directory("results/figures/{table}"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    params:
        rows=table_rows,
        scale_note=config["tables"].get("scale_note", ""),
    wildcard_constraints:
        table="table1|table3|table4",
    log:
        "logs/tables/{table}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/tables.py"
