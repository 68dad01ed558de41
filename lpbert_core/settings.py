"""Config sections resolved for one dataset: the one place where `per_dataset` overrides are applied.

Every stage's section (pretrain, finetune, score, kgbert) is a map of defaults plus `per_dataset: {dataset: {...}}`;
`dataset_section` returns the defaults with the dataset's entry applied over them (and without `per_dataset`).
rules/common.smk (the rules' params), lpbert_core.finetune.finetune_loop (a run's own overrides on top), the cross-encoder
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


# Pre-training variants (the {variant} wildcard, runs' `pretrain:`): `none` keeps the encoder's own weights.
PRETRAIN_VARIANTS = ("none", "mlm", "mem", "mem-mrm", "mem-mrm-mlm")


# The keys of each training stage's config section. Their values (the defaults) live in config.yaml alone, which the
# schema makes hold every one of them; code names the keys it needs and never supplies a value
# (tests/test_workflow.py::test_every_setting_has_its_default_in_config_yaml keeps the three lists equal).
SECTION_KEYS = {
    "pretrain": ("seed", "max_length", "batch_size", "epochs", "early_stop_patience", "lr_encoder", "lr_new",
                 "warmup_fraction", "weight_decay", "mlm_probability", "mlm_mask_fraction", "mlm_random_fraction",
                 "task_probabilities", "em_head_norm", "optimizer", "lr_schedule", "mlm_mask_token",
                 "segment_separators", "batch_order", "precision", "threads", "dev_subsample", "train_subsample",
                 "keep_checkpoint", "progress_bar", "device"),
    "finetune": ("seed", "batch_size", "epochs", "max_length", "pooling", "loss", "probability", "temperature",
                 "shift", "alpha", "gamma", "distance", "distance_weight", "infonce_temperature",
                 "inverse_augmentation", "lr_encoder", "lr_new", "warmup_fraction", "weight_decay", "max_grad_norm",
                 "early_stop_patience", "selection", "dev_subsample", "dev_eval", "train_subsample",
                 "in_batch_negatives", "batch_order", "self_negatives", "scorer", "label_splits", "adam_betas",
                 "adam_eps", "infonce_margin", "infonce_learnable_temperature", "hard_negatives", "pre_batch",
                 "pre_batch_weight", "precision", "eval_batch_size", "chunk_size", "checkpoint_every_steps",
                 "keep_checkpoint", "device"),
    "kgbert": ("seed", "max_length", "pooling", "negatives", "negative_side", "batch_size", "epochs", "lr_encoder",
               "lr_new", "warmup_fraction", "weight_decay", "max_grad_norm", "train_subsample", "dev_subsample",
               "eval_batch_size", "precision", "score_queries", "keep_checkpoint", "device"),
}


def require(section: str, settings: Mapping) -> dict:
    """`settings` as a plain dict, or a ConfigError naming every key of the section it lacks."""
    from lpbert_core.errors import ConfigError

    missing = [key for key in SECTION_KEYS[section] if key not in settings]
    if missing:
        raise ConfigError(f"{section} settings lack {', '.join(missing)}: every default lives in config.yaml's "
                          f"`{section}:` section; resolve the settings from the config "
                          "(lpbert_core.job_settings.JobSettings)")
    return dict(settings)
