"""What each table shows and which files it reads, from the config: the row specs the table scripts receive as
`params.rows` and the inputs Snakemake builds first (rules/tables.smk, study.smk, breakdown.smk and rule all call
these through thin wrappers in rules/common.smk). Paths come from lpbert_core.config.paths.

A config problem found here (a table naming a run of the wrong kind, an inductive pair without its test graph) is
one ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

from lpbert_core.config import paths
from lpbert_core.config.resolve import JobSettings
from lpbert_core.errors import ConfigError
from lpbert_core.report.table_sources import floor_label

TABLES = ["table1", "table3", "table4", "reproduction"]
BEYOND_TABLES = ["inductive", "plus"]  # issue #13: beyond the paper (rules inductive_table / plus_table)


def all_targets(jobs: JobSettings) -> list[str]:
    """The tables of rule all: the paper's, the beyond-the-paper ones unless `in_all: false`, the proxy's only with
    `in_all: true` (the CPU proxy is its own target by default)."""
    tables = jobs.config["tables"]
    names = [(table, ("md", "csv", "tex")) for table in TABLES]
    names += [(table, ("md", "csv")) for table in BEYOND_TABLES if tables.get(table) and tables[table].get("in_all", True)]
    if (tables.get("proxy") or {}).get("in_all", False):
        names.append(("proxy", ("md", "csv")))
    return [paths.fill(paths.TABLE, table=table, ext=ext) for table, exts in names for ext in exts]


def run_skip_reason(jobs: JobSettings, run: str) -> str | None:
    """None when the run's initial weights load offline here, else why its table row is skipped."""
    from lpbert_core.model.encoders import encoder_available

    ok, reason = encoder_available(jobs.config["encoders"][jobs.run_settings(run)["encoder"]])
    return None if ok else reason


# ---------------------------------------------------------------- Tables 1, 3, 4 and the reproduction table

def table_row_specs(jobs: JobSettings, table: str) -> list[tuple]:
    """(dataset, run, paper row id, role) for every row of `table`, from the config's `tables:` section. role is the
    reproduction table's column (paper_text | authors_code), None elsewhere."""
    config = jobs.config
    if table == "reproduction":
        spec = jobs.reproduction_spec()
        return [(dataset, spec[role], "LP-BERT", role) for dataset in config["datasets"]
                for role in ("paper_text", "authors_code") if spec[role]]
    spec = config["tables"][table]
    if table == "table1":
        return [(dataset, spec["run"], "LP-BERT", None) for dataset in config["datasets"]]
    return [(spec["dataset"], run, paper_row, None) for run, paper_row in spec["rows"].items()]


def run_files(jobs: JobSettings, dataset: str, run: str) -> dict:
    """The files a table reads of one run instance: metrics, train log, ranks, the two Snakemake benchmarks and the
    pre-training log (when the run starts from one)."""
    where = {"dataset": dataset, "run": run}
    files = {
        "metrics": paths.fill(paths.RUN_METRICS, **where),
        "train_log": paths.fill(paths.RUN_TRAIN_LOG, **where),
        "ranks": paths.fill(paths.RUN_RANKS, **where),
        "finetune_benchmark": paths.fill(paths.FINETUNE_BENCHMARK, **where),
        "score_benchmark": paths.fill(paths.SCORE_BENCHMARK, **where),
    }
    pretrain = jobs.run_settings(run)["pretrain"]
    if pretrain != "none":
        files["pretrain_log"] = paths.fill(paths.PRETRAIN_LOG, dataset=dataset, variant=pretrain)
    return files


def table_floor_specs(jobs: JobSettings, table: str) -> list[tuple[str, str]]:
    """(dataset, floor run) of the zero-shot floor rows a table shows: each floor run on an encoder of its rows
    (JobSettings.floors_for), on every dataset of its rows."""
    specs = table_row_specs(jobs, table)
    datasets = dict.fromkeys(dataset for dataset, *_ in specs)
    return [(dataset, run) for run in jobs.floors_for(list(dict.fromkeys(run for _, run, *_ in specs)))
            for dataset in datasets]


def table_rows(jobs: JobSettings, table: str) -> list[dict]:
    """Row specs of lpbert_core.report.tables (workflow_scripts/tables.py documents the keys): one per row, listing the
    files of every instance (seed) of its run; then the table's zero-shot floor rows (`floor: true`, no paper row)."""
    rows = []
    specs = [(dataset, run, paper_row, role, False) for dataset, run, paper_row, role in table_row_specs(jobs, table)]
    specs += [(dataset, run, None, None, True) for dataset, run in table_floor_specs(jobs, table)]
    for dataset, run, paper_row, role, floor in specs:
        settings = jobs.run_settings(run)
        row = {"table": table, "dataset": dataset, "run": run, "row": paper_row, "model": settings["model"],
               "encoder": settings["encoder"], "encoder_source": jobs.config["encoders"][settings["encoder"]]}
        if floor:
            row.update(floor=True, label=floor_label(settings["pretrain"]))
        else:
            row["floor_run"] = jobs.floor_of(run)
        if role:
            row["role"] = role
        reason = run_skip_reason(jobs, run)
        if reason:
            row["skipped"] = reason
        else:
            row["instances"] = [{"run": name, "seed": seed, **run_files(jobs, dataset, name)}
                                for name, seed in jobs.run_instances(run)]
        rows.append(row)
    return rows


def table_inputs(jobs: JobSettings, table: str) -> list[str]:
    """Every file the table reads, so Snakemake builds the runs first (skipped rows need nothing); the reproduction
    table's attribution summary too, when the config names one."""
    files = [path for row in table_rows(jobs, table) for instance in row.get("instances", [])
             for key, path in instance.items() if key not in ("run", "seed")]
    if table == "reproduction" and jobs.reproduction_spec()["attribution"]:
        files.append(jobs.reproduction_spec()["attribution"])
    return files


def breakdown_targets(jobs: JobSettings) -> list[str]:
    """breakdown.csv and .png of every run a table shows (rows that are skipped offline have no ranks)."""
    config, tables = jobs.config, jobs.config["tables"]
    pairs = {(dataset, tables["table1"]["run"]) for dataset in config["datasets"]}
    for table in ("table3", "table4"):
        pairs |= {(tables[table]["dataset"], run) for run in tables[table]["rows"]}
    spec = jobs.reproduction_spec()
    pairs |= {(dataset, spec[key]) for key in ("paper_text", "authors_code") if spec[key]
              for dataset in config["datasets"]}
    pairs |= {pair for table in TABLES for pair in table_floor_specs(jobs, table)}
    return [paths.fill(paths.RUN_BREAKDOWN, dataset=dataset, run=run, ext=ext)
            for dataset, run in sorted(pairs) if run_skip_reason(jobs, run) is None for ext in ("csv", "png")]


# ---------------------------------------------------------------- beyond the paper: inductive and lpbert-plus

def inductive_pairs(jobs: JobSettings) -> list[dict]:
    """[{train, test, family, version}] of tables.inductive.pairs; the test graph is the source naming the training
    graph in `inductive_of`."""
    config, pairs = jobs.config, []
    for train in (config["tables"].get("inductive") or {}).get("pairs", []):
        tests = [name for name, src in config["sources"].items() if src.get("inductive_of") == train]
        if len(tests) != 1:
            raise ConfigError(f"tables.inductive.pairs: {train!r} needs exactly one source with inductive_of: "
                              f"{train} (found {tests or 'none'})")
        family, _, version = train.rpartition("_")
        pairs.append({"train": train, "test": tests[0], "family": family, "version": version})
    return pairs


def beyond_rows(jobs: JobSettings, table: str, datasets: list[str]) -> list[dict]:
    """The table's rows of ours, then its zero-shot floor rows (tables.floor) on the same graphs."""
    config = jobs.config
    labels = dict(config["tables"][table]["rows"])
    for run in labels:
        if run not in config["runs"] or jobs.run_entry(run).get("model") != "lpbert":
            raise ConfigError(f"tables.{table}.rows: {run!r} is not an lpbert run of `runs`")
    floors = jobs.floors_for(list(labels))
    labels.update({run: floor_label(jobs.run_settings(run)["pretrain"]) for run in floors})
    rows = []
    for run, label in labels.items():
        for dataset in datasets:
            where = {"dataset": dataset, "run": run}
            candidates = grail = None
            if table == "inductive" and jobs.source(dataset).get("candidates"):
                candidates = paths.fill(paths.RUN_LIST_METRICS, protocol="candidates", **where)
            if table == "inductive":  # GraIL's protocol on every test graph (rules grail_lists, score_grail50)
                grail = paths.fill(paths.RUN_LIST_METRICS, protocol="grail50", **where)
            rows.append({"dataset": dataset, "run": run, "label": label,
                         "metrics": paths.fill(paths.RUN_METRICS, **where), "candidates": candidates,
                         "grail": grail, "floor": run in floors,
                         "floor_run": None if run in floors else jobs.floor_of(run)})
    return rows


def inductive_baseline_rows(jobs: JobSettings, datasets: list[str]) -> list[dict]:
    """tables.inductive.baselines on every test graph, all three protocols: `ppr` (rule ppr_score) and cross-encoder
    runs (model: kgbert; rules kgbert_score, kgbert_lists)."""
    config, rows = jobs.config, []
    for name, label in ((config["tables"].get("inductive") or {}).get("baselines") or {}).items():
        if name != "ppr" and (name not in config["runs"] or jobs.run_entry(name).get("model") != "kgbert"):
            raise ConfigError(f"tables.inductive.baselines: {name!r} is neither `ppr` nor a kgbert run of `runs`")
        for dataset in datasets:
            if name == "ppr":
                metrics = {protocol: paths.fill(paths.PPR_METRICS, dataset=dataset, protocol=protocol)
                           for protocol in ("full", "candidates", "grail50")}
            else:
                metrics = {"full": paths.fill(paths.RUN_METRICS, dataset=dataset, run=name),
                           **{protocol: paths.fill(paths.RUN_LIST_METRICS, dataset=dataset, run=name,
                                                   protocol=protocol) for protocol in ("candidates", "grail50")}}
            rows.append({"dataset": dataset, "run": name, "label": label, "baseline": True,
                         "metrics": metrics["full"],
                         "candidates": metrics["candidates"] if jobs.source(dataset).get("candidates") else None,
                         "grail": metrics["grail50"], "floor": False, "floor_run": None})
    return rows


def inductive_reranked_rows(jobs: JobSettings, datasets: list[str]) -> list[dict]:
    """tables.inductive.reranked: lpbert runs again, their scores re-ranked by the n-hop graph prior (config
    `rerank:`; rules score_reranked, score_reranked_lists), all three protocols."""
    rows = []
    for run, label in ((jobs.config["tables"].get("inductive") or {}).get("reranked") or {}).items():
        if run not in jobs.config["runs"] or jobs.run_entry(run).get("model") != "lpbert":
            raise ConfigError(f"tables.inductive.reranked: {run!r} is not an lpbert run of `runs`")
        for dataset in datasets:
            where = {"dataset": dataset, "run": run}
            lists = {protocol: paths.fill(paths.RUN_RERANKED_LIST_METRICS, protocol=protocol, **where)
                     for protocol in ("candidates", "grail50")}
            rows.append({"dataset": dataset, "run": run, "label": label, "reranked": True,
                         "metrics": paths.fill(paths.RUN_RERANKED_METRICS, **where),
                         "candidates": lists["candidates"] if jobs.source(dataset).get("candidates") else None,
                         "grail": lists["grail50"], "floor": False, "floor_run": jobs.floor_of(run)})
    return rows


def inductive_rows(jobs: JobSettings) -> list[dict]:
    tests = [pair["test"] for pair in inductive_pairs(jobs)]
    return (beyond_rows(jobs, "inductive", tests) + inductive_reranked_rows(jobs, tests)
            + inductive_baseline_rows(jobs, tests))


def inductive_hops_rows(jobs: JobSettings, dataset: str) -> dict[str, str]:
    """Rule inductive_hops on one test graph: name -> ranks.parquet of each inductive-table row whose full ranking
    covers the whole test split (PPR first, then every lpbert run with its floors, then the re-ranked runs). The
    cross-encoder's full ranking is a sample of `kgbert.score_queries` triples, so it is left out."""
    tests = [pair["test"] for pair in inductive_pairs(jobs)]
    if dataset not in tests:
        raise ConfigError(f"inductive_hops: {dataset!r} is not a test graph of tables.inductive.pairs "
                          f"({', '.join(tests) or 'none configured'})")
    rows = [row for row in inductive_rows(jobs) if row["dataset"] == dataset]
    where = {"dataset": dataset}
    out = {"PPR": paths.fill(paths.PPR_RANKS, protocol="full", **where)
           for row in rows if row.get("baseline") and row["run"] == "ppr"}
    out.update({row["run"]: paths.fill(paths.RUN_RANKS, run=row["run"], **where)
                for row in rows if not (row.get("baseline") or row.get("reranked"))})
    out.update({f"{row['run']} re-ranked": paths.fill(paths.RUN_RERANKED_RANKS, run=row["run"], **where)
                for row in rows if row.get("reranked")})
    return out


def inductive_hops_targets(jobs: JobSettings) -> list[str]:
    """Each test graph's hop-distance breakdown, built with the inductive table."""
    return [paths.fill(paths.INDUCTIVE_HOPS, dataset=pair["test"], ext=ext)
            for pair in inductive_pairs(jobs) for ext in ("csv", "png")]


def plus_rows(jobs: JobSettings) -> list[dict]:
    datasets = jobs.config["tables"]["plus"]["datasets"]
    for dataset in datasets:
        if dataset not in jobs.config["sources"]:
            raise ConfigError(f"tables.plus.datasets: no source named {dataset!r}")
    return beyond_rows(jobs, "plus", datasets)


def beyond_inputs(rows: list[dict]) -> list[str]:
    """The rows' metrics files, and each run's per-relation breakdown (built with the table: every run a table shows
    has one)."""
    files = [path for row in rows for path in (row["metrics"], row["candidates"], row.get("grail")) if path]
    return files + [paths.fill(paths.RUN_BREAKDOWN, dataset=row["dataset"], run=row["run"], ext=ext)
                    for row in rows if not (row.get("baseline") or row.get("reranked")) for ext in ("csv", "png")]


# ---------------------------------------------------------------- the CPU proxy and the reading study

def proxy_rows(jobs: JobSettings) -> list[dict]:
    """The floor (tables.floor) and every reading of tables.proxy.rows on each of tables.proxy.datasets, each with
    its seed instances' files."""
    config = jobs.config
    spec = config["tables"].get("proxy") or {}
    labels = dict(spec.get("rows") or {})
    floors = [run for run in config["tables"].get("floor", []) if run in config["runs"]]
    rows = []
    for dataset in spec.get("datasets", []):
        for run in floors + list(labels):
            if run not in config["runs"]:
                raise ConfigError(f"tables.proxy.rows: {run!r} is not a run of `runs`")
            rows.append({"dataset": dataset, "run": run, "floor": run in floors,
                         "label": labels.get(run, "zero-shot (no fine-tuning)"),
                         "instances": [{"run": name, "seed": seed, **run_files(jobs, dataset, name)}
                                       for name, seed in jobs.run_instances(run)]})
    return rows


def proxy_inputs(jobs: JobSettings) -> list[str]:
    keys = ("metrics", "train_log", "finetune_benchmark", "score_benchmark")
    return [instance[key] for row in proxy_rows(jobs) for instance in row["instances"] for key in keys]


def study_runs(jobs: JobSettings) -> list[str]:
    from lpbert_core.report.study import parse_run_name

    return [name for name, spec in jobs.config["runs"].items() if spec["model"] == "lpbert" and parse_run_name(name)]


def study_rows(jobs: JobSettings, dataset: str) -> list[dict]:
    """One entry per study run: its files (inputs) and the driver's provenance.json where it exists (git commit)."""
    runs = study_runs(jobs)
    if not runs:
        raise ConfigError(
            "the study target needs study runs (runs named study-<reading>-s<seed> or study30-<reading>-s<seed>): "
            "add --configfile configs/cpu.yaml configs/study-umls.yaml"
        )
    rows = []
    for run in runs:
        provenance = Path(f"measurements/study_{dataset}/{run}/provenance.json")
        rows.append({"run": run, "metrics": paths.fill(paths.RUN_METRICS, dataset=dataset, run=run),
                     "train_log": paths.fill(paths.RUN_TRAIN_LOG, dataset=dataset, run=run),
                     "provenance": str(provenance) if provenance.exists() else None})
    return rows
