"""The whole config checked before any job runs, on every entry point: Snakemake (rules/common.smk, while it parses
the workflow), DirectRun and the GPU check (tools/gpu_check.py, through DirectRun).

`check_config(config)`: old key names (with their new names), the schema (schemas/config.schema.yaml: every key of
every section, their kinds; it sets no defaults, so the merged mapping is the config the rules see), then the names
one part of the config gives another (datasets, sources, runs, tables). Each problem is one ConfigError naming the key.
Flag combinations inside one stage's settings are refused when those settings are resolved (config/settings.py)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Mapping

import yaml

from lpbert_core.config.resolve import JobSettings, check_renamed_keys
from lpbert_core.errors import ConfigError

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def check_config(config: Mapping) -> None:
    check_renamed_keys(config)  # an old key name gets its new name, before the schema calls it unknown
    check_schema(config)
    check_dataset_names(config)
    check_inductive_sources(config)
    check_table_runs(config)


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def check_schema(config: Mapping) -> None:
    """The first schema violation (the deepest, most specific one), as one line naming the key path."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(dict(config)))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ConfigError(f"config {where}: {error.message} (schemas/config.schema.yaml)")


def configured_sources(config: Mapping) -> str:
    """The source names, for messages about a name that is not one."""
    return ", ".join(sorted(config["sources"], key=str.lower))


def _per_dataset_keys(node, path):
    """(key path, dataset) of every `per_dataset` entry anywhere under `node`."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "per_dataset" and isinstance(value, dict):
            for dataset in value:
                yield f"{path}.per_dataset.{dataset}", dataset
        else:
            yield from _per_dataset_keys(value, f"{path}.{key}" if path else key)


def check_dataset_names(config: Mapping) -> None:
    """Names that must be sources: `datasets`, the tables' datasets, every per_dataset key, pretrain.max_length keys.
    A name with no source would otherwise fail late and cryptically (a missing input) or be silently ignored."""
    sources = config["sources"]
    for dataset in config["datasets"]:
        if dataset not in sources:
            raise ConfigError(
                f"datasets: {dataset!r} has no entry under sources (configured sources: "
                f"{configured_sources(config)}); add sources: {{{dataset}: {{folder: ...}}}} or fix the name"
            )
    named = [(f"tables.{t}.dataset", spec["dataset"]) for t, spec in config["tables"].items()
             if isinstance(spec, dict) and "dataset" in spec]
    named += list(_per_dataset_keys(dict(config), ""))
    named += [(f"pretrain.max_length.{d}", d) for d in config["pretrain"]["max_length"] if d != "default"]
    for key_path, dataset in named:
        if dataset not in sources:
            raise ConfigError(f"{key_path}: no source named {dataset!r}, so this setting would be ignored "
                              f"(configured sources: {configured_sources(config)})")


def check_inductive_sources(config: Mapping) -> None:
    """`text_from` and `inductive_of` name other sources; an inductive test graph's training graph is not itself a
    test graph."""
    sources = config["sources"]
    for name, src in sources.items():
        for key in ("text_from", "inductive_of"):
            other = src.get(key)
            if other is not None and other not in sources:
                raise ConfigError(f"sources.{name}.{key}: no source named {other!r} "
                                  f"(configured sources: {configured_sources(config)})")
        if src.get("inductive_of") and sources[src["inductive_of"]].get("inductive_of"):
            raise ConfigError(f"sources.{name}.inductive_of: {src['inductive_of']!r} is itself a test graph")
        if src.get("text_from") and "archive" not in sources[src["text_from"]]:
            raise ConfigError(f"sources.{name}.text_from: {src['text_from']!r} must be a vendored archive source")
        if (src.get("member") or src.get("candidates")) and "archive" not in src:
            raise ConfigError(f"sources.{name}: member / candidates need an `archive`")


def check_table_runs(config: Mapping) -> None:
    """Every run a table names is a key of `runs:` (instances are not named in tables: the row lists them), and the
    zero-shot floor runs resolve."""
    jobs = JobSettings(config)
    named = [("tables.table1.run", config["tables"]["table1"]["run"])]
    named += [(f"tables.{t}.rows", run) for t in ("table3", "table4") for run in config["tables"][t]["rows"]]
    spec = jobs.reproduction_spec()
    named += [(f"tables.reproduction.{key}", spec[key]) for key in ("paper_text", "authors_code") if spec[key]]
    for key_path, run in named:
        if run not in config["runs"]:
            raise ConfigError(f"{key_path}: no run named {run!r} under runs: (configured: {', '.join(config['runs'])})")
    jobs.floor_runs()  # zero-shot lpbert runs, one per encoder and pre-training variant
