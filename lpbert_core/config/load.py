"""The config as Snakemake sees it, without Snakemake: config.yaml, then each `--configfile` overlay deep-merged over
it (nested mappings merged key by key, anything else, lists included, replaced), as snakemake.utils.update_config
does. For scripts that drive the stages directly (lpbert_core.runtime.direct_run); the workflow validates against
schemas/config.schema.yaml, which sets no defaults, so the merged mapping is the config the rules see."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Iterable

import yaml

from lpbert_core.errors import InputError


def merge(base: Mapping, overlay: Mapping) -> dict:
    """`overlay` over `base`: mappings merged recursively, every other value (lists too) replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(paths: Iterable[str | Path]) -> dict:
    """The first file with each further one merged over it (the order of `--configfile`)."""
    config: dict = {}
    for path in paths:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise InputError(path, f"not valid YAML: {exc}", mark.line + 1 if mark else None) from None
        if not isinstance(loaded, Mapping):
            raise InputError(path, "a config file must hold a mapping (key: value) at the top")
        config = merge(config, loaded)
    return config
