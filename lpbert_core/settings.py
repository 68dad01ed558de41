"""Config sections resolved for one dataset: the one place where `per_dataset` overrides are applied.

Every stage's section (pretrain, finetune, score, kgbert) is a map of defaults plus `per_dataset: {dataset: {...}}`;
`dataset_section` returns the defaults with the dataset's entry applied over them (and without `per_dataset`).
rules/common.smk (the rules' params), lpbert_core.finetune_loop (a run's own overrides on top), the cross-encoder
and the CPU preflight all resolve through it. Pure Python: Snakefiles import it while building the DAG.
"""

from __future__ import annotations

from collections.abc import Mapping


def dataset_section(section: Mapping | None, dataset: str) -> dict:
    """`section` without `per_dataset`, with `section.per_dataset[dataset]` (if any) applied over it."""
    section = dict(section or {})
    overrides = (section.pop("per_dataset", None) or {}).get(dataset) or {}
    section.update(overrides)
    return section
