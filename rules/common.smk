# Shared by all rules: config validation (before any job runs), wildcard constraints, small lookups.
import re

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

PRETRAIN_TASKS = ["none", "mlm", "mem", "mem-mrm", "mem-mrm-mlm"]


def _alternatives(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    dataset=_alternatives(config["sources"]),
    encoder=_alternatives(config["encoders"]),
    tasks=_alternatives(PRETRAIN_TASKS),


def runs_of(model):
    return [name for name, run in config["runs"].items() if run["model"] == model]


# Regex alternatives of run names per model kind: the lpbert and kgbert rules write the same output paths, so
# each rule set is constrained to its own runs.
LPBERT_RUNS = _alternatives(runs_of("lpbert")) or "$^"
KGBERT_RUNS = _alternatives(runs_of("kgbert")) or "$^"


def run_settings(run):
    """The run's entry with its encoder filled in (key of `encoders`)."""
    settings = dict(config["runs"][run])
    settings.setdefault("encoder", config["encoder"])
    return settings


def run_encoder_key(run):
    return run_settings(run)["encoder"]


def run_skip_reason(run):
    """None when the run's initial weights load offline here, else why its table row is skipped."""
    from lpbert_core.encoders import encoder_available

    key = run_encoder_key(run)
    ok, reason = encoder_available(config["encoders"][key])
    return None if ok else reason


def source_settings(dataset):
    return config["sources"][dataset]


def source_params(wildcards):
    return source_settings(wildcards.dataset)


def encoder_source(wildcards):
    return config["encoders"][wildcards.encoder]


def download_inputs(wildcards):
    """The vendored archive (or a bring-your-own folder) is the input; URLs have no local input."""
    src = source_settings(wildcards.dataset)
    if "archive" in src:
        return [src["archive"]]
    if "folder" in src:
        return [src["folder"]]
    return []


def text_settings(wildcards):
    src = source_settings(wildcards.dataset)
    return {
        "entity_text": src.get("entity_text", "entity2text.txt"),
        "text_format": src.get("text_format", "name"),
        "relation_text": src.get("relation_text", "relation2text.txt"),
        "inverse_prefix": config["text"]["inverse_prefix"],
    }


def data_targets():
    return expand(
        "results/{dataset}/tokens/{encoder}/manifest.json", dataset=config["datasets"], encoder=config["encoder"]
    )


def all_targets():
    return expand("results/tables/{table}.{ext}", table=["table1", "table3", "table4"], ext=["md", "csv", "tex"])
