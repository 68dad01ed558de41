"""Each job's settings, resolved from the whole config: the one place where run entries, seeds, `per_dataset`
overrides and encoder keys become the arguments of a stage.

rules/common.smk builds its rules' params from a `JobSettings` of Snakemake's `config`; the GPU check
(tools/gpu_check.py) and any script that drives the stages without Snakemake build the very same arguments from
`JobSettings(load_config([...]))`. Pure Python, no Snakemake: a config error is a `ConfigError` naming the key.

Run instances: a run may list `seeds: [s1, s2, ...]`; it is trained and scored once per seed. The first seed keeps the
run's own name and paths, each further seed is the instance `{run}.s{seed}` (its own folder and target), trained and
scored exactly like the run with finetune.seed (kgbert.seed for model: kgbert) set to that seed. Pre-training is shared
by all instances (not re-seeded).
"""

from __future__ import annotations

from collections.abc import Mapping

from lpbert_core.config import paths
from lpbert_core.errors import ConfigError
from lpbert_core.config.settings import (FinetuneSettings, KgbertSettings, PretrainSettings, RerankSettings,
                                         ScoreSettings, StageSettings, TextSettings, dataset_section)

# Settings renamed on 2026-11-26 (issue #12: one name per idea across stages), old -> new per section. A config
# that still uses an old name stops with the new one (check_renamed_keys), not with a schema error.
RENAMED_KEYS = {
    "pretrain": {"lr_head": "lr_new", "warmup": "warmup_fraction", "patience": "early_stop_patience",
                 "train_max_triples": "train_subsample", "dev_max_triples": "dev_subsample"},
    "finetune": {"score_chunk_size": "chunk_size"},
}
# Settings that moved to the section of the stage that reads them (2026-11-26): key -> its new section.
MOVED_KEYS = {"finetune": {"test_subsample": "score"}}


def check_renamed_keys(config: Mapping) -> None:
    """ConfigError naming every old key (in a section, its per_dataset entries, or a run's finetune overrides) and
    the name that replaced it."""
    found = []
    for section, renames in RENAMED_KEYS.items():
        body = config.get(section) or {}
        places = [(section, body)]
        places += [(f"{section}.per_dataset.{d}", v or {}) for d, v in (body.get("per_dataset") or {}).items()]
        places += [(f"runs.{run}.{section}", (spec or {}).get(section) or {})
                   for run, spec in (config.get("runs") or {}).items()]
        found += [f"{where}.{old} is now {where}.{new}" for where, mapping in places
                  for old, new in renames.items() if old in mapping]
    finetune = config.get("finetune") or {}
    for key, section in MOVED_KEYS["finetune"].items():
        if key in finetune:
            found.append(f"finetune.{key} is now {section}.{key}")
        for dataset, entry in (finetune.get("per_dataset") or {}).items():
            if key in (entry or {}):
                found.append(f"finetune.per_dataset.{dataset}.{key} is now {section}.per_dataset.{dataset}.{key}")
        for run, spec in (config.get("runs") or {}).items():
            if key in ((spec or {}).get("finetune") or {}):
                found.append(f"runs.{run}.finetune.{key} is now {section}.{key} or "
                             f"{section}.per_dataset.<dataset>.{key} (scoring settings are per dataset, not per run)")
    if found:
        raise ConfigError("renamed settings (one name per idea across stages): " + "; ".join(found))


class JobSettings:
    """Settings lookups over one (validated) config mapping."""

    def __init__(self, config: Mapping):
        check_renamed_keys(config)
        self.config = config
        self.instances = self._instance_table()  # instance name -> (configured run, seed or None)

    # ---------------------------------------------------------------- runs and run instances

    def run_instances(self, run: str) -> list[tuple[str, int | None]]:
        """(instance name, seed) of every instance of a configured run, the run itself first. seed is None when the
        run lists no seeds (it trains with the configured seed)."""
        seeds = self.config["runs"][run].get("seeds") or [None]
        return [(run, seeds[0])] + [(f"{run}.s{seed}", seed) for seed in seeds[1:]]

    def _instance_table(self) -> dict:
        table = {}
        for run in self.config["runs"]:
            for name, seed in self.run_instances(run):
                if name != run and name in self.config["runs"]:
                    raise ConfigError(
                        f"runs: {name!r} is both a configured run and the instance of run {run!r} for seed {seed} "
                        f"(runs.{run}.seeds); rename the run"
                    )
                table[name] = (run, seed)
        return table

    def run_entry(self, name: str) -> dict:
        """The config entry of a run or run instance, without `seeds` (listing seeds changes no existing job's
        params)."""
        if name not in self.instances:
            raise ConfigError(f"no run named {name!r} under runs: (configured: {', '.join(self.config['runs'])})")
        base, _ = self.instances[name]
        return {key: value for key, value in self.config["runs"][base].items() if key != "seeds"}

    def run_seed(self, name: str) -> int | None:
        """The seed a run instance trains with; None = the configured default (the run lists no seeds)."""
        return self.instances[name][1]

    def runs_of(self, model: str) -> list[str]:
        """Run instances of one model kind (a run with several seeds contributes one name per seed)."""
        return [name for name, (run, _) in self.instances.items() if self.config["runs"][run]["model"] == model]

    def run_settings(self, run: str) -> dict:
        """The entry of a run (or run instance) with its encoder filled in (key of `encoders`)."""
        settings = self.run_entry(run)
        settings.setdefault("encoder", self.config["encoder"])
        if settings["pretrain"] != "none" and settings["encoder"] != self.config["encoder"]:
            # pre-training outputs (results/{dataset}/pretrain/{variant}) are built from the top-level encoder only
            raise ConfigError(
                f"run {run!r}: encoder {settings['encoder']!r} with pretrain {settings['pretrain']!r}; pre-training "
                f"uses the top-level encoder {self.config['encoder']!r}: set pretrain: none or change the top-level "
                "encoder"
            )
        return settings

    def reproduction_spec(self) -> dict:
        """tables.reproduction with its defaults: the paper-text run is Table 1's; no authors'-code run, no
        attribution."""
        spec = {"paper_text": self.config["tables"]["table1"]["run"], "authors_code": None, "attribution": None}
        spec.update(self.config["tables"].get("reproduction") or {})
        return spec

    # ---------------------------------------------------------------- the zero-shot floor (tables.floor)

    def floor_runs(self) -> list[str]:
        """tables.floor, checked: lpbert runs with finetune.zero_shot true, at most one per (encoder, pretrain)."""
        names = list((self.config["tables"].get("floor") or []))
        seen: dict[tuple[str, str], str] = {}
        for name in names:
            if name not in self.config["runs"]:
                raise ConfigError(f"tables.floor: no run named {name!r} under runs: "
                                  f"(configured: {', '.join(self.config['runs'])})")
            spec = self.run_settings(name)
            if spec["model"] != "lpbert" or not (spec.get("finetune") or {}).get("zero_shot"):
                raise ConfigError(f"tables.floor: run {name!r} must be an lpbert run with finetune: "
                                  "{zero_shot: true} (a trained run is no floor)")
            key = (spec["encoder"], spec["pretrain"])
            if key in seen:
                raise ConfigError(f"tables.floor: {seen[key]!r} and {name!r} are both the floor of encoder "
                                  f"{key[0]!r} with pretrain {key[1]!r}; keep one")
            seen[key] = name
        return names

    def floor_of(self, run: str) -> str | None:
        """The floor a row of `run` is compared with: the floor run on its encoder and pre-training variant, else
        the one on its encoder with pretrain none (the untrained encoder is below every run); None for a floor run
        itself or where no floor shares its encoder."""
        floors = self.floor_runs()
        base = self.instances[run][0] if run in self.instances else run
        if base in floors:
            return None
        spec = self.run_settings(run)
        by_key = {(self.run_settings(f)["encoder"], self.run_settings(f)["pretrain"]): f for f in floors}
        return by_key.get((spec["encoder"], spec["pretrain"])) or by_key.get((spec["encoder"], "none"))

    def floors_for(self, runs) -> list[str]:
        """The floor runs a table whose rows are `runs` shows: every floor run on an encoder one of them uses."""
        encoders = {self.run_settings(run)["encoder"] for run in runs}
        return [f for f in self.floor_runs() if self.run_settings(f)["encoder"] in encoders and f not in runs]

    # ---------------------------------------------------------------- sources and data stages

    def source(self, dataset: str) -> dict:
        return self.config["sources"][dataset]

    def training_graph(self, dataset: str) -> str:
        """The graph a dataset's runs are trained on: itself, or for an inductive test graph its `inductive_of`."""
        return self.source(dataset).get("inductive_of") or dataset

    def text_source(self, dataset: str) -> dict:
        """A source's own text settings, or those of its `text_from` source (its own keys win)."""
        src = self.source(dataset)
        other = self.source(src["text_from"]) if src.get("text_from") else {}
        return {key: src.get(key, other.get(key)) for key in ("entity_text", "relation_text", "text_format")
                if key in src or key in other}

    def download_params(self, dataset: str) -> dict:
        """The download job's source, with `text_from` resolved to the other archive and the text file names."""
        src = dict(self.source(dataset))
        src.pop("inductive_of", None)  # not the download's business (changing it reruns no data stage)
        if src.get("text_from"):
            other = self.source(src["text_from"])
            texts = self.text_source(dataset)
            # the files to cut from the other archive (a source without a file of its own: the default name)
            src["text_from"] = {"name": src["text_from"], "archive": other["archive"], "sha256": other.get("sha256"),
                                **{key: texts.get(key) or self.config["text"][key]
                                   for key in ("entity_text", "relation_text")}}
        return src

    def text_params(self, dataset: str) -> dict:
        """The join_text job's settings (plain data)."""
        return self.resolve("text", dataset).as_dict()

    def encoder_source(self, key: str) -> str:
        """A key of `encoders` -> the name or folder transformers loads (or an alias of lpbert_core.model.encoders)."""
        return self.config["encoders"][key]

    # ---------------------------------------------------------------- the stages' settings

    def resolve(self, stage: str, dataset: str, run: str | None = None, *, variant: str | None = None,
                threads: int | None = None) -> StageSettings:
        """The typed settings of one job: `stage`'s section, then its `per_dataset.{dataset}` entry, then (finetune)
        the run's `in_batch_negatives` and `finetune:` overrides, then the run instance's seed (finetune, kgbert).
        The only place these layers are applied. pretrain needs `variant` and the job's granted `threads`."""
        if dataset not in (self.config.get("sources") or {}):
            raise ConfigError(f"{stage} settings for {dataset!r}: no source of that name (configured sources: "
                              f"{', '.join(sorted(self.config.get('sources') or {}, key=str.lower))})")
        if stage == "pretrain":
            if variant is None or threads is None:
                raise ConfigError("pretrain settings need the variant and the job's granted threads: "
                                  "resolve(config, 'pretrain', dataset, variant=..., threads=...)")
            return PretrainSettings.from_mapping({**self.pretrain_params(dataset, variant), "threads": threads},
                                                 f"pretrain ({dataset}, {variant})")
        if stage == "text":
            own = self.text_source(dataset)
            settings = {**self.config["text"], **own,
                        # a file the source names itself must exist; the default name may be absent (readable ids)
                        "entity_text_required": own.get("entity_text") is not None,
                        "relation_text_required": own.get("relation_text") is not None}
            origins = {**{k: "text" for k in self.config["text"]}, **{k: f"sources.{dataset}" for k in own}}
            return TextSettings.from_mapping(settings, f"text ({dataset})", origins)
        if stage == "score":
            return ScoreSettings.from_mapping(dataset_section(self.config["score"], dataset), f"score ({dataset})",
                                              self._origins("score", dataset))
        if stage == "rerank":
            return RerankSettings.from_mapping(dataset_section(self.config["rerank"], dataset), f"rerank ({dataset})",
                                               self._origins("rerank", dataset))
        if stage not in ("finetune", "kgbert"):
            raise ConfigError(f"no stage {stage!r} (stages: text, pretrain, finetune, kgbert, score, rerank)")
        if run is None:
            raise ConfigError(f"{stage} settings are per run: name the run")
        spec = self.run_entry(run)
        settings = dataset_section(self.config[stage], dataset)
        origins = self._origins(stage, dataset)
        base = self.instances[run][0]
        if stage == "finetune":
            if "in_batch_negatives" in spec:
                settings["in_batch_negatives"] = bool(spec["in_batch_negatives"])
                origins["in_batch_negatives"] = f"runs.{base}"
            settings.update(spec.get("finetune") or {})
            origins.update({key: f"runs.{base}.finetune" for key in spec.get("finetune") or {}})
        if self.run_seed(run) is not None:  # a run instance (runs.{run}.seeds): its own seed
            settings["seed"] = int(self.run_seed(run))
            origins["seed"] = f"runs.{base}.seeds"
        cls = FinetuneSettings if stage == "finetune" else KgbertSettings
        return cls.from_mapping(settings, f"{stage} (run {run} on {dataset})", origins)

    def _origins(self, stage: str, dataset: str) -> dict:
        """key -> the config entry its value comes from: `{stage}` or `{stage}.per_dataset.{dataset}`."""
        section = self.config.get(stage) or {}
        per_dataset = (section.get("per_dataset") or {}).get(dataset) or {}
        origins = {key: stage for key in section if key != "per_dataset"}
        origins.update({key: f"{stage}.per_dataset.{dataset}" for key in per_dataset})
        return origins

    def pretrain_params(self, dataset: str, variant: str) -> dict:
        """The `pretrain:` section resolved for one dataset and variant (max_length is per dataset), every key of it
        but `threads` (the job's granted threads, which the job adds: `resolve` with `threads`)."""
        section = dict(self.config["pretrain"])
        lengths = section.pop("max_length")
        section["max_length"] = lengths.get(dataset, lengths["default"])
        section = dataset_section(section, dataset)
        section["variant"] = variant
        section["encoder_key"] = self.config["encoder"]
        section["encoder_source"] = self.encoder_source(self.config["encoder"])
        section.pop("threads", None)  # granted per job (a different machine grants others: no rerun for that)
        # checked here, while the DAG is built, not first when the job runs (1: any count; the job adds its own)
        PretrainSettings.from_mapping({**section, "threads": 1}, f"pretrain ({dataset}, {variant})",
                                      self._origins("pretrain", dataset))
        return section

    # ---------------------------------------------------------------- fine-tuning and scoring

    def training_inputs(self, dataset: str, run: str) -> dict:
        """Paths a run's training job (finetune or kgbert_train) reads: the graph, its tokens for the run's encoder
        and, unless the run starts from the encoder's own weights, the pre-training output it starts from."""
        spec = self.run_settings(run)
        if self.training_graph(dataset) != dataset:
            raise ConfigError(
                f"results/{dataset}/runs/{run}/model: {dataset!r} is an inductive test graph; its runs are trained "
                f"on {self.training_graph(dataset)!r} (score it with results/{dataset}/runs/{run}/metrics.json)")
        inputs = {
            "triples": paths.fill(paths.TEXT_TRIPLES, dataset=dataset),
            "manifest": paths.fill(paths.TOKENS_MANIFEST, dataset=dataset, encoder=spec["encoder"]),
        }
        if spec["pretrain"] != "none":
            inputs["pretrained"] = paths.fill(paths.PRETRAIN_MODEL, dataset=dataset, variant=spec["pretrain"])
        return inputs

    def finetune_params(self, dataset: str, run: str) -> dict:
        """Arguments of lpbert_core.finetune.finetune_loop.run_finetune besides the paths: the run's resolved
        settings (`finetune`, plain data) and what the job records about the run."""
        key = self.run_settings(run)["encoder"]
        settings = self.resolve("finetune", dataset, run)
        if settings.mined_negatives and int(self.config.get("gpus_per_job") or 1) > 1:
            raise ConfigError(f"finetune (run {run} on {dataset}): mined_negatives runs in one process; set "
                              "gpus_per_job: 1 (every rank would encode every rank's mined entities)")
        return {
            "dataset": dataset,
            "run": run,
            "run_spec": self.run_entry(run),
            "encoder_key": key,
            "encoder_source": self.encoder_source(key),
            "finetune": settings.as_dict(),
            # the per-epoch dev evaluation ranks head queries as the score rule does
            "head_ranking": self.resolve("score", dataset).head_ranking,
        }

    def score_params(self, dataset: str, run: str) -> dict:
        """{settings: run_score's settings (plain data), run_spec, encoder_key} of a run's scoring job."""
        spec = self.run_entry(run)
        return {"settings": self.resolve("score", dataset).as_dict(), "run_spec": dict(spec),
                "encoder_key": spec.get("encoder", self.config["encoder"])}

    def rerank_params(self, dataset: str, run: str) -> dict:
        """score_params plus the n-hop re-ranking's settings (rule score_reranked)."""
        return {**self.score_params(dataset, run), "rerank": self.resolve("rerank", dataset).as_dict()}

    def score_inputs(self, dataset: str, run: str) -> dict:
        """Inputs of a run's scoring job (score or kgbert_score)."""
        return {
            # an inductive test graph is scored with the model trained on its training graph (`inductive_of`)
            "model": paths.fill(paths.RUN_MODEL, dataset=self.training_graph(dataset), run=run),
            "triples": paths.fill(paths.TEXT_TRIPLES, dataset=dataset),
            "manifest": paths.fill(paths.TOKENS_MANIFEST, dataset=dataset, encoder=self.run_settings(run)["encoder"]),
        }

    def kgbert_params(self, dataset: str, run: str) -> dict:
        """Arguments of the cross-encoder's training and scoring besides the paths."""
        spec = self.run_settings(run)
        return {
            "dataset": dataset,
            "run": run,
            "run_spec": spec,
            "encoder_key": spec["encoder"],
            "encoder_source": self.encoder_source(spec["encoder"]),
            "settings": self.resolve("kgbert", dataset, run).as_dict(),
        }


def resolve(config: Mapping, stage: str, dataset: str, run: str | None = None, **job) -> StageSettings:
    """`JobSettings(config).resolve(...)`: the typed settings of one stage's job (see there)."""
    return JobSettings(config).resolve(stage, dataset, run, **job)
