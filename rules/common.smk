# Shared by all rules: the config check (before any job runs), wildcard constraints, small lookups.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from lpbert_core.config import paths  # every results/ and checkpoints/ pattern (rules and code alike)
from lpbert_core.config.checks import check_config, configured_sources
from lpbert_core.config.resolve import JobSettings
from lpbert_core.errors import ConfigError
from lpbert_core.config.settings import PRETRAIN_VARIANTS
from lpbert_core.report import table_rows as table_rows_module


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
        f"{configured_sources(config)}); check the name, or pass the overlay that defines it with --configfile"
    )


# ---- what the tables show and read: lpbert_core/report/table_rows.py (these wrappers pass it the config's jobs,
# and turn its ConfigError into Snakemake's one-line WorkflowError)
TABLES = table_rows_module.TABLES


def _rows(function, *args):
    try:
        return function(JOBS, *args)
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


def all_targets():
    return _rows(table_rows_module.all_targets)


def inductive_pairs():
    return _rows(table_rows_module.inductive_pairs)


def inductive_rows(wildcards=None):
    return _rows(table_rows_module.inductive_rows)


def inductive_hops_rows(wildcards):
    return _rows(table_rows_module.inductive_hops_rows, wildcards.dataset)


def inductive_hops_targets(wildcards=None):
    return _rows(table_rows_module.inductive_hops_targets)


def plus_rows(wildcards=None):
    return _rows(table_rows_module.plus_rows)


beyond_inputs = table_rows_module.beyond_inputs


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


def rerank_params(wildcards):
    return JOBS.rerank_params(wildcards.dataset, wildcards.run)


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
        return {"lists": paths.fill(paths.GRAIL_LISTS, dataset=dataset)}
    if not source_settings(dataset).get("candidates"):
        raise WorkflowError(f"results/{dataset}/.../candidates: sources.{dataset} has no `candidates` lists")
    return {"raw": paths.fill(paths.RAW, dataset=dataset)}


def list_job_inputs(wildcards):
    """A run's model and graph plus the lists of {protocol} (rules kgbert_lists, score_reranked_lists)."""
    return {**score_inputs(wildcards), **lists_input(wildcards.dataset, wildcards.protocol)}


def ppr_inputs(wildcards):
    text = {"entities": paths.TEXT_ENTITIES, "relations": paths.TEXT_RELATIONS, "triples": paths.TEXT_TRIPLES}
    text = {key: paths.fill(pattern, dataset=wildcards.dataset) for key, pattern in text.items()}
    return text if wildcards.protocol == "full" else {**text, **lists_input(wildcards.dataset, wildcards.protocol)}


def ppr_params(wildcards):
    return {"protocol": wildcards.protocol, "dataset": wildcards.dataset, "ppr": inductive_eval("ppr")}


# ---- used by tables.smk, study.smk, breakdown.smk and rule all (lpbert_core/report/table_rows.py)

def table_rows(wildcards):
    return _rows(table_rows_module.table_rows, wildcards.table)


def table_inputs(wildcards):
    return _rows(table_rows_module.table_inputs, wildcards.table)


def table_attribution(wildcards):
    """The reproduction table's attribution summary (a CSV path), None for the other tables or when not configured."""
    return reproduction_spec()["attribution"] if wildcards.table == "reproduction" else None


def proxy_rows(wildcards=None):
    return _rows(table_rows_module.proxy_rows)


def proxy_inputs(wildcards=None):
    return _rows(table_rows_module.proxy_inputs)


def study_rows(wildcards):
    return _rows(table_rows_module.study_rows, wildcards.dataset)


def study_inputs(wildcards):
    return [row[key] for row in study_rows(wildcards) for key in ("metrics", "train_log")]


def breakdown_targets():
    return _rows(table_rows_module.breakdown_targets)
