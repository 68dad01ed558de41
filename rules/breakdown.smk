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



# Each inductive test graph: every full-ranking row's metrics by the answer's hop distance from the query's entity in
# the graph's observed triples (the edges PPR walks; lpbert_core.evaluate.hop_breakdown). Built with the inductive
# table: it shows where PPR's lead comes from (docs/inductive.md).
rule inductive_hops:
    input:
        triples=paths.TEXT_TRIPLES,
        ranks=lambda wildcards: list(inductive_hops_rows(wildcards).values()),
    output:
        csv=report(
            paths.fill(paths.INDUCTIVE_HOPS, ext="csv"),
            caption="../report/inductive_hops.rst",
            category="Breakdown",
            subcategory="{dataset}",
            labels={"run": "by hop distance", "kind": "table"},
        ),
        png=report(
            paths.fill(paths.INDUCTIVE_HOPS, ext="png"),
            caption="../report/inductive_hops.rst",
            category="Breakdown",
            subcategory="{dataset}",
            labels={"run": "by hop distance", "kind": "figure"},
        ),
    params:
        settings=lambda wildcards: {"rows": inductive_hops_rows(wildcards),
                                    "graph_splits": inductive_eval("ppr")["graph_splits"],
                                    "title": f"{wildcards.dataset}: full-ranking MRR by the answer's distance "
                                             "from the query's entity"},
    log:
        "logs/{dataset}/inductive_hops.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/inductive_hops.py"
