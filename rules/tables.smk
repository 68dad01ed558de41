# Tables 1, 3 and 4 and the reproduction table (md/csv/tex) and their figures, one job per table so
# `results/tables/table4.md` builds only the runs Table 4 needs. Rows whose initial weights cannot be loaded offline
# are listed as skipped, never faked. A row whose run lists several seeds reads every instance's metrics.json.

rule tables:
    input:
        paper="resources/paper_results.csv",
        runs=table_inputs,
    output:
        md=report(paths.fill(paths.TABLE, ext="md"), caption="../report/tables.rst", category="Tables"),
        csv=report(paths.fill(paths.TABLE, ext="csv"), caption="../report/tables.rst", category="Tables"),
        tex=paths.fill(paths.TABLE, ext="tex"),
        figures=report(
            directory(paths.FIGURES),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    params:
        rows=table_rows,
        scale_note=config["tables"].get("scale_note", ""),
        attribution=table_attribution,
    wildcard_constraints:
        table="|".join(TABLES),
    log:
        "logs/tables/{table}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/tables.py"


# Beyond the paper (issue #13): the inductive table (GraIL pairs, both protocols, beside BERTRL's published table)
# and the lpbert-plus table (beside the paper's LP-BERT and SimKGC's published numbers). lpbert_core/report/beyond_tables.py
rule inductive_table:
    input:
        published="resources/inductive_published.csv",
        runs=lambda wildcards: beyond_inputs(inductive_rows()),
        hops=inductive_hops_targets,  # built with the table: where the test graph answers for itself
    output:
        md=report(paths.fill(paths.TABLE, table="inductive", ext="md"), caption="../report/tables.rst", category="Tables"),
        csv=report(paths.fill(paths.TABLE, table="inductive", ext="csv"), caption="../report/tables.rst", category="Tables"),
    params:
        pairs=lambda wildcards: inductive_pairs(),
        rows=inductive_rows,
    log:
        "logs/tables/inductive.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/beyond_tables.py"


rule plus_table:
    input:
        paper="resources/paper_results.csv",
        simkgc="resources/simkgc_published.csv",
        runs=lambda wildcards: beyond_inputs(plus_rows()),
    output:
        md=report(paths.fill(paths.TABLE, table="plus", ext="md"), caption="../report/tables.rst", category="Tables"),
        csv=report(paths.fill(paths.TABLE, table="plus", ext="csv"), caption="../report/tables.rst", category="Tables"),
    params:
        datasets=config["tables"].get("plus", {}).get("datasets", []),
        rows=plus_rows,
        scale_note=config["tables"].get("scale_note", ""),
    log:
        "logs/tables/plus.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/beyond_tables.py"


# The CPU proxy's readings against the zero-shot floor (configs/proxy.yaml; in `all` only with tables.proxy.in_all)
rule proxy_table:
    input:
        proxy_inputs,
    output:
        md=report(paths.fill(paths.TABLE, table="proxy", ext="md"), caption="../report/tables.rst", category="Tables"),
        csv=report(paths.fill(paths.TABLE, table="proxy", ext="csv"), caption="../report/tables.rst", category="Tables"),
        figure=report(paths.PROXY_FIGURE, caption="../report/tables.rst", category="Figures"),
    params:
        rows=proxy_rows,
        scale_note=config["tables"].get("scale_note", ""),
    log:
        "logs/tables/proxy.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/proxy_table.py"
