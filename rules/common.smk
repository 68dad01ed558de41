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
    return data_targets()
