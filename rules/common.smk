# Shared by all rules: the config check (before any job runs), wildcard constraints, small lookups.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from lpbert_core.config.checks import check_config
from lpbert_core.config.resolve import JobSettings
from lpbert_core.errors import ConfigError
from lpbert_core.config.settings import PRETRAIN_VARIANTS


# the whole config (old key names, the schema, the names one part gives another) before any job runs: the same
# checks and messages as DirectRun's (lpbert_core/config/checks.py)
try:
    check_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# top-level folders under results/ that are not datasets (rules tables, study)
RESULT_FOLDERS = ["tables", "figures", "study"]


def _alternatives(names):
    return "|".join(re.escape(n) for n in names)


def _configured_sources():
    return ", ".join(sorted(config["sources"], key=str.lower))


wildcard_constraints:
    dataset=_alternatives(config["sources"]),
    encoder=_alternatives(config["encoders"]),
    variant=_alternatives(PRETRAIN_VARIANTS),


# ---- every job's settings: lpbert_core.config.resolve (run instances and seeds, per_dataset overrides, encoder keys).
# The rules' params are its methods applied to the wildcards; scripts that drive the stages without Snakemake
# (tools/gpu_check.py) build the same arguments from the same class.
JOBS = JobSettings(config)
run_instances = JOBS.run_instances
run_entry = JOBS.run_entry
run_settings = JOBS.run_settings
reproduction_spec = JOBS.reproduction_spec
runs_of = JOBS.runs_of
source_settings = JOBS.source
floor_of = JOBS.floor_of
floors_for = JOBS.floors_for


# Regex alternatives of run names per model kind: the lpbert and kgbert rules write the same output paths, so
# each rule set is constrained to its own runs.
LPBERT_RUNS = _alternatives(runs_of("lpbert")) or "$^"
KGBERT_RUNS = _alternatives(runs_of("kgbert")) or "$^"


def run_encoder_key(run):
    return run_settings(run)["encoder"]


def run_skip_reason(run):
    """None when the run's initial weights load offline here, else why its table row is skipped."""
    from lpbert_core.model.encoders import encoder_available

    key = run_encoder_key(run)
    ok, reason = encoder_available(config["encoders"][key])
    return None if ok else reason


def source_params(wildcards):
    return JOBS.download_params(wildcards.dataset)


def encoder_source(wildcards):
    return JOBS.encoder_source(wildcards.encoder)


def download_inputs(wildcards):
    """The vendored archive, or every file of a bring-your-own folder (links followed), is the input; URLs have no
    local input. A missing folder or a broken link is left to the download job, which names it in one line."""
    from lpbert_core.data.archive import folder_files

    src = source_settings(wildcards.dataset)
    if "archive" in src:
        text_from = src.get("text_from")
        return [src["archive"]] + ([source_settings(text_from)["archive"]] if text_from else [])
    if "folder" in src:
        folder = Path(src["folder"])
        return [str(p) for p in folder_files(folder) if p.exists()] if folder.is_dir() else []
    return []


def download_content(wildcards):
    """A folder source's content hash (file names and SHA-256s): an edit that keeps the timestamps still reruns
    download and everything below it. None for archives (Snakemake tracks the archive file) and URLs."""
    from lpbert_core.data.archive import folder_fingerprint

    src = source_settings(wildcards.dataset)
    return folder_fingerprint(src["folder"]) if "folder" in src else None


def text_settings(wildcards):
    return JOBS.text_params(wildcards.dataset)


def unknown_dataset(wildcards):
    """Input function of the catch-all `unknown_dataset`, which matches targets of datasets with no source."""
    raise WorkflowError(
        f"results/{wildcards.unknown}/{wildcards.path}: no dataset {wildcards.unknown!r} in the config (configured: "
        f"{_configured_sources()}); check the name, or pass the overlay that defines it with --configfile"
    )


def data_targets():
    return expand(
        "results/{dataset}/tokens/{encoder}/manifest.json", dataset=config["datasets"], encoder=config["encoder"]
    )


TABLES = ["table1", "table3", "table4", "reproduction"]


BEYOND_TABLES = ["inductive", "plus"]  # issue #13: beyond the paper (rules inductive_table / plus_table)


def all_targets():
    targets = expand("results/tables/{table}.{ext}", table=TABLES, ext=["md", "csv", "tex"])
    for table in BEYOND_TABLES:
        spec = config["tables"].get(table)
        if spec and spec.get("in_all", True):
            targets += expand("results/tables/{table}.{ext}", table=table, ext=["md", "csv"])
    if (config["tables"].get("proxy") or {}).get("in_all", False):  # the CPU proxy: its own target by default
        targets += ["results/tables/proxy.md", "results/tables/proxy.csv"]
    return targets


def inductive_pairs():
    """[{train, test, family, version}] of tables.inductive.pairs; the test graph is the source naming the training
    graph in `inductive_of`."""
    pairs = []
    for train in (config["tables"].get("inductive") or {}).get("pairs", []):
        tests = [name for name, src in config["sources"].items() if src.get("inductive_of") == train]
        if len(tests) != 1:
            raise WorkflowError(f"tables.inductive.pairs: {train!r} needs exactly one source with inductive_of: "
                                f"{train} (found {tests or 'none'})")
        family, _, version = train.rpartition("_")
        pairs.append({"train": train, "test": tests[0], "family": family, "version": version})
    return pairs


def _beyond_rows(table, datasets):
    """The table's rows of ours, then its zero-shot floor rows (tables.floor) on the same graphs."""
    from lpbert_core.report.table_sources import floor_label

    labels = dict(config["tables"][table]["rows"])
    for run in labels:
        if run not in config["runs"] or run_entry(run).get("model") != "lpbert":
            raise WorkflowError(f"tables.{table}.rows: {run!r} is not an lpbert run of `runs`")
    floors = floors_for(list(labels))
    labels.update({run: floor_label(run_settings(run)["pretrain"]) for run in floors})
    rows = []
    for run, label in labels.items():
        for dataset in datasets:
            candidates = grail = None
            if table == "inductive" and source_settings(dataset).get("candidates"):
                candidates = f"results/{dataset}/runs/{run}/candidates/metrics.json"
            if table == "inductive":  # GraIL's protocol on every test graph (rules grail_lists, score_grail50)
                grail = f"results/{dataset}/runs/{run}/grail50/metrics.json"
            rows.append({"dataset": dataset, "run": run, "label": label,
                         "metrics": f"results/{dataset}/runs/{run}/metrics.json", "candidates": candidates,
                         "grail": grail, "floor": run in floors,
                         "floor_run": None if run in floors else floor_of(run)})
    return rows


def inductive_baseline_rows(datasets):
    """tables.inductive.baselines on every test graph, all three protocols: `ppr` (rule ppr_score) and cross-encoder
    runs (model: kgbert; rules kgbert_score, kgbert_lists)."""
    rows = []
    for name, label in ((config["tables"].get("inductive") or {}).get("baselines") or {}).items():
        if name != "ppr" and (name not in config["runs"] or run_entry(name).get("model") != "kgbert"):
            raise WorkflowError(f"tables.inductive.baselines: {name!r} is neither `ppr` nor a kgbert run of `runs`")
        for dataset in datasets:
            base = f"results/{dataset}/baselines/ppr" if name == "ppr" else f"results/{dataset}/runs/{name}"
            rows.append({"dataset": dataset, "run": name, "label": label, "baseline": True,
                         "metrics": f"{base}/full/metrics.json" if name == "ppr" else f"{base}/metrics.json",
                         "candidates": f"{base}/candidates/metrics.json"
                         if source_settings(dataset).get("candidates") else None,
                         "grail": f"{base}/grail50/metrics.json", "floor": False, "floor_run": None})
    return rows


def inductive_rows(wildcards=None):
    tests = [p["test"] for p in inductive_pairs()]
    return _beyond_rows("inductive", tests) + inductive_baseline_rows(tests)


def plus_rows(wildcards=None):
    datasets = config["tables"]["plus"]["datasets"]
    for dataset in datasets:
        if dataset not in config["sources"]:
            raise WorkflowError(f"tables.plus.datasets: no source named {dataset!r}")
    return _beyond_rows("plus", datasets)


def beyond_inputs(rows):
    """The rows' metrics files, and each run's per-relation breakdown (built with the table: every run a table shows
    has one)."""
    paths = [path for row in rows for path in (row["metrics"], row["candidates"], row.get("grail")) if path]
    return paths + [f"results/{row['dataset']}/runs/{row['run']}/breakdown.{ext}" for row in rows
                    if not row.get("baseline") for ext in ("csv", "png")]


# ---- GPUs per job (config `gpus_per_job`): rules pretrain, finetune, kgbert_train and score request gpu=K, and the
# job's stage runs in K torchrun ranks (lpbert_core.runtime.distributed). A resource, not a param: batches stay global, so K
# changes no result beyond float rounding and dropout masks, and changing it reruns nothing.
GPUS_PER_JOB = int(config["gpus_per_job"])  # config.yaml (the schema requires it)


# ---- Threads of a GPU job: the configured count (`gpu_job_threads`; pre-training: `pretrain.threads`), but at most
# --cores divided by the GPU jobs that fit at once (cards from `--resources gpu=N`, else the host's, / gpus_per_job),
# so that N cards run N GPU jobs under --cores N (a fixed 8 took every core of --cores 4: one GPU job at a time).
# Under a cluster executor --cores is not a local limit (each job is granted its own cores): the configured count.
def gpu_threads(wanted):
    def threads(wildcards):
        from lpbert_core.runtime.gpu_slots import visible_gpu_ids

        cores = workflow.global_resources.get("_cores").value
        if not cores or cores >= 2**31:  # unlimited (e.g. --executor slurm without --cores)
            return int(wanted)
        cards = workflow.global_resources.get("gpu").value or len(visible_gpu_ids())
        slots = max(int(cards) // GPUS_PER_JOB, 1)
        return max(1, min(int(wanted), int(cores) // slots))

    return threads


GPU_JOB_THREADS = gpu_threads(config["gpu_job_threads"])  # config.yaml (the schema requires it)


# ---- Priorities (rules pretrain 100+, finetune / kgbert_train 50, score / kgbert_score / score_candidates 10): among
# ready GPU jobs, pre-training first (the longest jobs; every run but `pretrain: none` waits for one), and among
# pre-training variants the one most runs start from; scoring last (short, and nothing but the tables waits for it).
def pretrain_priority(wildcards):
    return 100 + sum(JOBS.run_entry(run).get("pretrain") == wildcards.variant for run in config["runs"])


# ---- used by pretrain.smk

def pretrain_settings(wildcards):
    """The `pretrain:` config section resolved for one dataset and variant."""
    return JOBS.pretrain_params(wildcards.dataset, wildcards.variant)


# ---- used by finetune.smk

def training_inputs(wildcards):
    """Inputs of a run's training job (finetune or kgbert_train)."""
    return JOBS.training_inputs(wildcards.dataset, wildcards.run)


def finetune_params(wildcards):
    return JOBS.finetune_params(wildcards.dataset, wildcards.run)


# ---- used by score.smk

def score_params(wildcards):
    return JOBS.score_params(wildcards.dataset, wildcards.run)


def score_inputs(wildcards):
    """Inputs of a run's scoring job (score or kgbert_score)."""
    return JOBS.score_inputs(wildcards.dataset, wildcards.run)


# ---- used by kgbert.smk

def kgbert_params(wildcards):
    return JOBS.kgbert_params(wildcards.dataset, wildcards.run)


# ---- used by inductive.smk (issue #27: GraIL's sampled negatives, PPR, the cross-encoder on the lists)

TEST_GRAPHS = _alternatives([n for n, s in config["sources"].items() if s.get("inductive_of")]) or "$^"


def inductive_eval(key):
    spec = (config.get("inductive_eval") or {}).get(key)
    if spec is None:
        raise WorkflowError(f"inductive_eval.{key} is not configured (config.yaml sets it)")
    return dict(spec)


def lists_input(dataset, protocol):
    """The candidate lists a list-protocol job ranks: BERTRL's (in the raw folder) or our GraIL-protocol sample."""
    if protocol == "grail50":
        return {"lists": f"results/{dataset}/lists/grail50/lists.json"}
    if not source_settings(dataset).get("candidates"):
        raise WorkflowError(f"results/{dataset}/.../candidates: sources.{dataset} has no `candidates` lists")
    return {"raw": f"results/{dataset}/raw"}


def kgbert_list_inputs(wildcards):
    return {**score_inputs(wildcards), **lists_input(wildcards.dataset, wildcards.protocol)}


def ppr_inputs(wildcards):
    text = {k: f"results/{wildcards.dataset}/text/{k}.parquet" for k in ("entities", "relations", "triples")}
    return text if wildcards.protocol == "full" else {**text, **lists_input(wildcards.dataset, wildcards.protocol)}


def ppr_params(wildcards):
    return {"protocol": wildcards.protocol, "dataset": wildcards.dataset, "ppr": inductive_eval("ppr")}


# ---- used by tables.smk

def table_row_specs(table):
    """(dataset, run, paper row id, role) for every row of `table`, from the config's `tables:` section. role is the
    reproduction table's column (paper_text | authors_code), None elsewhere."""
    if table == "reproduction":
        spec = reproduction_spec()
        return [(dataset, spec[role], "LP-BERT", role) for dataset in config["datasets"]
                for role in ("paper_text", "authors_code") if spec[role]]
    spec = config["tables"][table]
    if table == "table1":
        return [(dataset, spec["run"], "LP-BERT", None) for dataset in config["datasets"]]
    return [(spec["dataset"], run, paper_row, None) for run, paper_row in spec["rows"].items()]


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


def table_floor_specs(table):
    """(dataset, floor run) of the zero-shot floor rows a table shows: each floor run on an encoder of its rows
    (JobSettings.floors_for), on every dataset of its rows."""
    specs = table_row_specs(table)
    datasets = dict.fromkeys(dataset for dataset, *_ in specs)
    return [(dataset, run) for run in floors_for(list(dict.fromkeys(run for _, run, *_ in specs)))
            for dataset in datasets]


def table_rows(wildcards):
    """Row specs of lpbert_core.report.tables (workflow_scripts/tables.py documents the keys): one per row, listing the
    files of every instance (seed) of its run; then the table's zero-shot floor rows (`floor: true`, no paper row)."""
    from lpbert_core.report.table_sources import floor_label

    rows = []
    specs = [(dataset, run, paper_row, role, False) for dataset, run, paper_row, role in
             table_row_specs(wildcards.table)]
    specs += [(dataset, run, None, None, True) for dataset, run in table_floor_specs(wildcards.table)]
    for dataset, run, paper_row, role, floor in specs:
        settings = run_settings(run)
        row = {
            "table": wildcards.table,
            "dataset": dataset,
            "run": run,
            "row": paper_row,
            "model": settings["model"],
            "encoder": settings["encoder"],
            "encoder_source": config["encoders"][settings["encoder"]],
        }
        if floor:
            row.update(floor=True, label=floor_label(settings["pretrain"]))
        else:
            row["floor_run"] = floor_of(run)
        if role:
            row["role"] = role
        reason = run_skip_reason(run)
        if reason:
            row["skipped"] = reason
        else:
            row["instances"] = [{"run": name, "seed": seed, **run_files(dataset, name)}
                                for name, seed in run_instances(run)]
        rows.append(row)
    return rows


def table_inputs(wildcards):
    """Every file the table reads, so Snakemake builds the runs first (skipped rows need nothing); the reproduction
    table's attribution summary too, when the config names one."""
    files = []
    for row in table_rows(wildcards):
        for instance in row.get("instances", []):
            files.extend(instance[key] for key in run_files(row["dataset"], instance["run"]))
    if wildcards.table == "reproduction" and reproduction_spec()["attribution"]:
        files.append(reproduction_spec()["attribution"])
    return files


def table_attribution(wildcards):
    """The reproduction table's attribution summary (a CSV path), None for the other tables or when not configured."""
    return reproduction_spec()["attribution"] if wildcards.table == "reproduction" else None


# ---- used by tables.smk's proxy_table (issue #25: the CPU proxy, configs/proxy.yaml)

def proxy_rows(wildcards=None):
    """The floor (tables.floor) and every reading of tables.proxy.rows on each of tables.proxy.datasets, each with
    its seed instances' files."""
    spec = config["tables"].get("proxy") or {}
    labels = dict(spec.get("rows") or {})
    floors = [run for run in config["tables"].get("floor", []) if run in config["runs"]]
    rows = []
    for dataset in spec.get("datasets", []):
        for run in floors + list(labels):
            if run not in config["runs"]:
                raise WorkflowError(f"tables.proxy.rows: {run!r} is not a run of `runs`")
            rows.append({"dataset": dataset, "run": run, "floor": run in floors,
                         "label": labels.get(run, "zero-shot (no fine-tuning)"),
                         "instances": [{"run": name, "seed": seed, **run_files(dataset, name)}
                                       for name, seed in run_instances(run)]})
    return rows


def proxy_inputs(wildcards=None):
    keys = ("metrics", "train_log", "finetune_benchmark", "score_benchmark")
    return [inst[k] for row in proxy_rows() for inst in row["instances"] for k in keys]


# ---- used by study.smk

def study_runs():
    from lpbert_core.report.study import parse_run_name

    return [name for name, spec in config["runs"].items() if spec["model"] == "lpbert" and parse_run_name(name)]


def study_rows(wildcards):
    """One entry per study run: its files (inputs) and the driver's provenance.json where it exists (git commit)."""
    runs = study_runs()
    if not runs:
        raise WorkflowError(
            "the study target needs study runs (runs named study-<reading>-s<seed> or study30-<reading>-s<seed>): "
            "add --configfile configs/cpu.yaml configs/study-umls.yaml"
        )
    rows = []
    for run in runs:
        provenance = Path(f"measurements/study_{wildcards.dataset}/{run}/provenance.json")
        rows.append({
            "run": run,
            "metrics": f"results/{wildcards.dataset}/runs/{run}/metrics.json",
            "train_log": f"results/{wildcards.dataset}/runs/{run}/train_log.csv",
            "provenance": str(provenance) if provenance.exists() else None,
        })
    return rows


def study_inputs(wildcards):
    return [row[key] for row in study_rows(wildcards) for key in ("metrics", "train_log")]


# ---- used by breakdown.smk and rule all
def breakdown_targets():
    """breakdown.csv and .png of every run a table shows (rows that are skipped offline have no ranks)."""
    tables = config["tables"]
    pairs = {(dataset, tables["table1"]["run"]) for dataset in config["datasets"]}
    for table in ("table3", "table4"):
        pairs |= {(tables[table]["dataset"], run) for run in tables[table]["rows"]}
    spec = reproduction_spec()
    pairs |= {(dataset, spec[key]) for key in ("paper_text", "authors_code") if spec[key]
              for dataset in config["datasets"]}
    pairs |= {pair for table in TABLES for pair in table_floor_specs(table)}
    return [
        f"results/{dataset}/runs/{run}/breakdown.{ext}"
        for dataset, run in sorted(pairs)
        if run_skip_reason(run) is None
        for ext in ("csv", "png")
    ]
