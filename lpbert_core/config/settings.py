"""The typed settings of each stage: one frozen dataclass per config section, and no default values.

Every value lives in config.yaml (the schema requires every key of every section); these classes name the keys, their
types and nothing else. `lpbert_core.config.resolve.resolve(config, stage, dataset, run)` is the one function that
applies the layers (section -> `per_dataset.{dataset}` -> the run's overrides) and returns one of these; the stages
take it (or its `as_dict()`, which is what Snakemake stores as the rule's params) and read attributes.

Pure Python: Snakefiles import it while building the DAG.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from lpbert_core.errors import ConfigError


def dataset_section(section: Mapping | None, dataset: str) -> dict:
    """`section` without `per_dataset`, with `section.per_dataset[dataset]` (if any) applied over it."""
    section = dict(section or {})
    overrides = (section.pop("per_dataset", None) or {}).get(dataset) or {}
    section.update(overrides)
    return section


# Pre-training variants (the {variant} wildcard, runs' `pretrain:`): `none` keeps the encoder's own weights.
PRETRAIN_VARIANTS = ("none", "mlm", "mem", "mem-mrm", "mem-mrm-mlm")


def _coerce(where: str, hint, value):
    """`value` as the annotation `hint` wants it: ints widened to float, lists to tuples; a ConfigError names `where`
    when the value has the wrong kind (the schema catches this in the workflow; direct callers get it here)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(where, option, value)
            except ConfigError:
                continue
        kinds = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
        raise ConfigError(f"{where}: expected {' or '.join(kinds.get(o, str(o)) for o in options)}, got {value!r}")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(f"{where}[{i}]", item, v) for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported annotation {hint!r}")


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """Base of the stage settings: construction from a mapping that must hold exactly the class's keys."""

    SECTION: ClassVar[str] = ""
    JOB_FIELDS: ClassVar[tuple[str, ...]] = ()  # fields a job adds, not keys of the config section

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, mapping: Mapping, where: str | None = None, origins: Mapping | None = None):
        """The settings from a mapping holding every key of the class and no other. `where` names the mapping in
        errors (e.g. `finetune (run lpbert on umls)`); `origins` names the config entry each key came from (e.g.
        `runs.lpbert.finetune`), so that an error points at the line to edit."""
        if isinstance(mapping, cls):
            return mapping
        where = where or cls.SECTION
        origins = origins or {}

        def place(key: str) -> str:
            return f"{origins[key]}.{key} ({where})" if key in origins else f"{where}.{key}"

        keys = cls.keys()
        missing = [k for k in keys if k not in mapping]
        unknown = [place(k) for k in mapping if k not in keys]
        if missing:
            raise ConfigError(f"{where} settings lack {', '.join(missing)}: every default lives in config.yaml's "
                              f"`{cls.SECTION}:` section; resolve the settings from the config "
                              "(lpbert_core.config.resolve.resolve)")
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(keys)})")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(place(k), hints[k], mapping[k]) for k in keys})

    def as_dict(self) -> dict:
        """The settings as plain data (tuples as lists): Snakemake params, JSON logs, run records."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _plain(value: Any):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class PretrainSettings(StageSettings):
    """`pretrain:` for one dataset and variant (max_length picked per dataset; threads = the job's granted
    threads) plus the encoder it starts from."""

    SECTION: ClassVar[str] = "pretrain"
    JOB_FIELDS: ClassVar[tuple[str, ...]] = ("variant", "encoder_key", "encoder_source")
    seed: int
    max_length: int
    batch_size: int
    epochs: int
    early_stop_patience: int
    lr_encoder: float
    lr_new: float
    warmup_fraction: float
    weight_decay: float
    mlm_probability: float
    mlm_mask_fraction: float
    mlm_random_fraction: float
    task_probabilities: dict
    em_head_norm: str
    optimizer: str
    lr_schedule: str
    mlm_mask_token: str
    segment_separators: bool
    batch_order: str
    precision: str
    threads: int
    dev_subsample: int | None
    train_subsample: int | None
    checkpoint_every_minutes: float
    keep_checkpoint: bool
    progress_bar: bool
    device: str
    variant: str
    encoder_key: str
    encoder_source: str


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(StageSettings):
    """`finetune:` for one run on one dataset: the section, its `per_dataset` entry, the run's
    `in_batch_negatives` and `finetune:` overrides, the run instance's seed."""

    SECTION: ClassVar[str] = "finetune"
    seed: int
    batch_size: int
    epochs: int
    max_length: int
    pooling: str
    loss: str
    probability: str
    temperature: float
    shift: float | str
    alpha: float
    gamma: float
    distance: str
    distance_weight: float
    infonce_temperature: float
    inverse_augmentation: bool
    lr_encoder: float
    lr_new: float
    warmup_fraction: float
    weight_decay: float
    max_grad_norm: float | None
    early_stop_patience: int
    selection: str
    dev_subsample: int | None
    dev_eval: bool
    train_subsample: int | None
    in_batch_negatives: bool
    batch_order: str
    self_negatives: bool
    scorer: str
    label_splits: tuple[str, ...]
    adam_betas: tuple[float, ...]
    adam_eps: float
    infonce_margin: float
    infonce_learnable_temperature: bool
    hard_negatives: int
    pre_batch: int
    pre_batch_weight: float
    all_entity_negatives: bool
    entity_bank: int
    mined_negatives: int
    two_towers: bool
    frozen_entity_tower: bool
    symmetric_closure: bool
    zero_shot: bool
    step_budget: int | None
    dev_points: int
    dev_diagnostics: bool
    precision: str
    eval_batch_size: int
    chunk_size: int
    checkpoint_every_steps: int
    checkpoint_every_minutes: float
    keep_checkpoint: bool
    device: str

    def __post_init__(self):
        check_finetune(self)

    def fingerprint_settings(self) -> dict:
        """The settings a checkpoint is resumed under: all but the checkpoint interval in minutes (no effect on
        results), and the settings added after checkpoints existed while they keep their default
        (FINGERPRINT_NEW_DEFAULTS), so a run interrupted before a new switch was added still resumes."""
        return {k: v for k, v in self.as_dict().items()
                if k != "checkpoint_every_minutes" and FINGERPRINT_NEW_DEFAULTS.get(k, object()) != v}

    def by_concern(self) -> dict[str, dict]:
        """The settings grouped by what they decide (FINETUNE_CONCERNS); the config keys stay flat (nesting them
        would change every run's params and rerun every finetune job of an existing results folder)."""
        values = self.as_dict()
        return {concern: {key: values[key] for key in keys} for concern, keys in FINETUNE_CONCERNS.items()}


# Settings added after checkpoints existed, with their default (FinetuneSettings.fingerprint_settings)
FINGERPRINT_NEW_DEFAULTS = {"frozen_entity_tower": False}

# Fine-tuning's keys by concern: every key in exactly one (tests/test_settings_checks.py).
FINETUNE_CONCERNS = {
    "model": ("max_length", "pooling", "scorer", "two_towers", "frozen_entity_tower"),
    "loss": ("loss", "probability", "temperature", "shift", "alpha", "gamma", "distance", "distance_weight",
             "infonce_temperature", "infonce_margin", "infonce_learnable_temperature"),
    "negatives": ("in_batch_negatives", "self_negatives", "hard_negatives", "pre_batch", "pre_batch_weight",
                  "all_entity_negatives", "entity_bank", "mined_negatives", "symmetric_closure", "label_splits"),
    "data": ("seed", "inverse_augmentation", "train_subsample", "batch_size", "batch_order", "epochs", "step_budget"),
    "optimiser": ("lr_encoder", "lr_new", "warmup_fraction", "weight_decay", "max_grad_norm", "adam_betas", "adam_eps"),
    "selection": ("selection", "early_stop_patience", "dev_eval", "dev_subsample", "dev_points", "dev_diagnostics",
                  "zero_shot"),
    "runtime": ("precision", "device", "eval_batch_size", "chunk_size", "checkpoint_every_steps",
                "checkpoint_every_minutes", "keep_checkpoint"),
}


FINETUNE_SELECTIONS = ("dev_hits10", "dev_loss")
FINETUNE_BATCH_ORDERS = ("random", "length")


def check_finetune(s: "FinetuneSettings") -> None:
    """Flag combinations that cannot work, refused where settings are made (every entry point: Snakemake's params,
    DirectRun, the GPU check, a direct finetune() call), before any training starts. Same messages everywhere."""
    held_out = [x for x in s.label_splits if x != "train"]
    leak = f"label_splits {list(s.label_splits)}" if held_out else None
    problems = []
    if s.selection not in FINETUNE_SELECTIONS:
        problems.append(f"finetune.selection must be one of {FINETUNE_SELECTIONS}, got {s.selection!r}")
    if s.batch_order not in FINETUNE_BATCH_ORDERS:
        problems.append(f"finetune.batch_order must be one of {FINETUNE_BATCH_ORDERS}, got {s.batch_order!r}")
    if s.scorer != "cosine" and s.distance == "per_pair_normalized":
        problems.append("finetune.distance per_pair_normalized is computed from the cosine; with scorer "
                        f"{s.scorer!r} use per_pair, batch_sum or none")
    if s.infonce_learnable_temperature and s.loss != "infonce":
        problems.append("finetune.infonce_learnable_temperature needs loss: infonce")
    if (s.hard_negatives or s.pre_batch) and not s.in_batch_negatives:
        problems.append("finetune.hard_negatives / pre_batch add columns to the in-batch matrix: they need "
                        "in_batch_negatives: true")
    if s.hard_negatives < 0 or s.pre_batch < 0:
        problems.append("finetune.hard_negatives and finetune.pre_batch are counts >= 0")
    if s.all_entity_negatives:
        if not s.in_batch_negatives:
            problems.append("finetune.all_entity_negatives replaces the in-batch candidates: it needs "
                            "in_batch_negatives: true")
        if s.hard_negatives or s.pre_batch or s.self_negatives:
            problems.append("finetune.all_entity_negatives already scores every entity: set self_negatives: false, "
                            "hard_negatives: 0 and pre_batch: 0")
        if leak:  # in-batch labels leak a held-out answer only when it is a batch's tail; here every one, every step
            problems.append("finetune.all_entity_negatives would make every dev / test answer a positive column of "
                            f"every step ({leak}): use label_splits: [train]")
    if s.entity_bank:
        if not s.in_batch_negatives or s.all_entity_negatives:
            problems.append("finetune.entity_bank adds columns to the in-batch matrix: it needs in_batch_negatives: "
                            "true and all_entity_negatives: false")
        if s.scorer != "cosine":
            problems.append("finetune.entity_bank scores [batch x all entities]: use scorer: cosine (pair_linear "
                            "builds a feature vector per pair)")
        if leak:
            problems.append(f"finetune.entity_bank would make held-out answers positive columns ({leak}): use "
                            "label_splits: [train]")
    if s.frozen_entity_tower:
        if not s.two_towers:
            problems.append("finetune.frozen_entity_tower freezes the entity side of two towers: set two_towers: true "
                            "(one shared encoder cannot be frozen on one side)")
        if s.entity_bank:
            problems.append("finetune.frozen_entity_tower keeps an exact table of every entity's vector: use "
                            "all_entity_negatives: true for its columns instead of entity_bank")
    if s.mined_negatives and not s.entity_bank:
        problems.append("finetune.mined_negatives mines from the entity bank: set entity_bank (its refresh interval "
                        "in steps) above 0")
    if s.step_budget is not None and s.dev_points > s.step_budget:
        problems.append(f"finetune.dev_points ({s.dev_points}) exceeds step_budget ({s.step_budget}): a dev point "
                        "needs a step")
    if problems:
        raise ConfigError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class KgbertSettings(StageSettings):
    """`kgbert:` (the KG-BERT cross-encoder) for one run on one dataset."""

    SECTION: ClassVar[str] = "kgbert"
    seed: int
    max_length: int
    pooling: str
    negatives: int
    negative_side: str
    batch_size: int
    epochs: int
    lr_encoder: float
    lr_new: float
    warmup_fraction: float
    weight_decay: float
    max_grad_norm: float | None
    train_subsample: int | None
    dev_subsample: int | None
    eval_batch_size: int
    precision: str
    score_queries: int | None
    checkpoint_every_minutes: float
    keep_checkpoint: bool
    device: str


@dataclasses.dataclass(frozen=True)
class ScoreSettings(StageSettings):
    """`score:` for one dataset (test ranking of a run; also the predictor's replay of it)."""

    SECTION: ClassVar[str] = "score"
    head_ranking: str
    batch_size: int
    chunk_size: int
    test_subsample: int | None
    seed: int
    precision: str
    device: str


@dataclasses.dataclass(frozen=True)
class RerankSettings(StageSettings):
    """`rerank:` for one dataset: n-hop re-ranking of a run's test scores (rule score_reranked; reported apart)."""

    SECTION: ClassVar[str] = "rerank"
    hops: int
    weight: float


@dataclasses.dataclass(frozen=True)
class TextSettings(StageSettings):
    """join_text for one source: `text:`, then the text keys of the source its `text_from` names, then its own."""

    SECTION: ClassVar[str] = "text"
    JOB_FIELDS: ClassVar[tuple[str, ...]] = ("entity_text_required", "relation_text_required")
    entity_text: str | None  # file in the raw folder; None or an absent default file -> readable ids
    text_format: str  # how a line splits into name and description
    relation_text: str | None
    inverse_prefix: str
    # True when the source names the file itself (not the default): then a missing file is an error, not a fallback
    entity_text_required: bool
    relation_text_required: bool


STAGES = {cls.SECTION: cls
          for cls in (TextSettings, PretrainSettings, FinetuneSettings, KgbertSettings, ScoreSettings, RerankSettings)}
# The keys a config section holds (without what a job adds; tests/test_workflow.py checks that config.yaml holds
# each, the one place their values live).
SECTION_KEYS = {name: tuple(k for k in cls.keys() if k not in cls.JOB_FIELDS) for name, cls in STAGES.items()}
