"""Each job's settings, resolved from the whole config: the one place where run entries, seeds, `per_dataset`
overrides and encoder keys become the arguments of a stage.

rules/common.smk builds its rules' params from a `JobSettings` of Snakemake's `config`; the GPU check
(benchmarks/gpu_check.py) and any script that drives the stages without Snakemake build the very same arguments from
`JobSettings(load_config([...]))`. Pure Python, no Snakemake: a config error is a `ConfigError` naming the key.

Run instances: a run may list `seeds: [s1, s2, ...]`; it is trained and scored once per seed. The first seed keeps the
run's own name and paths, each further seed is the instance `{run}.s{seed}` (its own folder and target), trained and
scored exactly like the run with finetune.seed (kgbert.seed for model: kgbert) set to that seed. Pre-training is shared
by all instances (not re-seeded).
"""

from __future__ import annotations

from collections.abc import Mapping

from lpbert_core.errors import ConfigError
from lpbert_core.settings import dataset_section

# Settings renamed on 2026-11-26 (issue #12: one name per idea across stages), old -> new per section. A config
# that still uses an old name stops with the new one (check_renamed_keys), not with a schema error.
RENAMED_KEYS = {
    "pretrain": {"lr_head": "lr_new", "warmup": "warmup_fraction", "patience": "early_stop_patience",
                 "train_max_triples": "train_subsample", "dev_max_triples": "dev_subsample"},
    "finetune": {"score_chunk_size": "chunk_size"},
}
# Text file names a source may leave out.
TEXT_KEYS = {"entity_text": "entity2text.txt", "relation_text": "relation2text.txt"}


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
            src["text_from"] = {"name": src["text_from"], "archive": other["archive"], "sha256": other.get("sha256"),
                                **{key: texts.get(key) or default for key, default in TEXT_KEYS.items()}}
        return src

    def text_params(self, dataset: str) -> dict:
        """The join_text job's settings."""
        src = self.text_source(dataset)
        return {
            "entity_text": src.get("entity_text", "entity2text.txt"),
            "text_format": src.get("text_format", "name"),
            "relation_text": src.get("relation_text", "relation2text.txt"),
            "inverse_prefix": self.config["text"]["inverse_prefix"],
            # a file the config names itself must exist; the default name may be absent (ids are made readable)
            "entity_text_required": src.get("entity_text") is not None,
            "relation_text_required": src.get("relation_text") is not None,
        }

    def encoder_source(self, key: str) -> str:
        """A key of `encoders` -> the name or folder transformers loads (or an alias of lpbert_core.encoders)."""
        return self.config["encoders"][key]

    # ---------------------------------------------------------------- pre-training

    def pretrain_params(self, dataset: str, variant: str) -> dict:
        """The `pretrain:` section resolved for one dataset and variant (max_length is per dataset), every key of it;
        without `threads` (the job's granted threads are added by the caller)."""
        section = dict(self.config["pretrain"])
        lengths = section.pop("max_length")
        section["max_length"] = lengths.get(dataset, lengths["default"])
        section = dataset_section(section, dataset)
        section["variant"] = variant
        section["encoder_key"] = self.config["encoder"]
        section["encoder_source"] = self.encoder_source(self.config["encoder"])
        section.pop("threads", None)  # the job's granted threads are added by the caller
        return section

    # ---------------------------------------------------------------- fine-tuning and scoring

    def lpbert_run(self, dataset: str, run: str) -> dict:
        """The run's entry; a run instance (or a first seed other than the configured one) gets its seed as a
        run-level finetune override, which applies over finetune and finetune.per_dataset."""
        spec = self.run_entry(run)
        seed = self.run_seed(run)
        overrides = dict(spec.get("finetune") or {})
        finetune = self.config["finetune"]
        per_dataset = finetune.get("per_dataset", {}).get(dataset) or {}
        configured = overrides.get("seed", per_dataset.get("seed", finetune.get("seed", 42)))
        if seed is not None and int(seed) != int(configured):
            spec["finetune"] = {**overrides, "seed": int(seed)}
        return spec

    def training_inputs(self, dataset: str, run: str) -> dict:
        """Paths a run's training job (finetune or kgbert_train) reads: the graph, its tokens for the run's encoder
        and, unless the run starts from the encoder's own weights, the pre-training output it starts from."""
        spec = self.run_settings(run)
        if self.training_graph(dataset) != dataset:
            raise ConfigError(
                f"results/{dataset}/runs/{run}/model: {dataset!r} is an inductive test graph; its runs are trained "
                f"on {self.training_graph(dataset)!r} (score it with results/{dataset}/runs/{run}/metrics.json)")
        inputs = {
            "triples": f"results/{dataset}/text/triples.parquet",
            "manifest": f"results/{dataset}/tokens/{spec['encoder']}/manifest.json",
        }
        if spec["pretrain"] != "none":
            inputs["pretrained"] = f"results/{dataset}/pretrain/{spec['pretrain']}/model"
        return inputs

    def score_section(self, dataset: str) -> dict:
        """The `score:` section with `score.per_dataset[dataset]` merged in (e.g. head_ranking on WN18RR)."""
        return dataset_section(self.config.get("score"), dataset)

    def finetune_params(self, dataset: str, run: str) -> dict:
        """Arguments of lpbert_core.finetune.finetune_loop.run_finetune besides the paths."""
        spec = self.lpbert_run(dataset, run)
        key = self.run_settings(run)["encoder"]
        finetune = self.config.get("finetune", {})
        params = {
            "dataset": dataset,
            "run": run,
            "run_spec": dict(spec),
            "encoder_key": key,
            "encoder_source": self.encoder_source(key),
            # only this dataset's settings, so editing another dataset's entry does not re-run this job
            "finetune": {
                **{k: v for k, v in finetune.items() if k != "per_dataset"},
                "per_dataset": {dataset: finetune.get("per_dataset", {}).get(dataset, {})},
            },
        }
        head_ranking = self.score_section(dataset).get("head_ranking")
        if head_ranking is not None:  # the dev evaluation ranks head queries as the score rule does
            params["head_ranking"] = head_ranking
        return params

    def score_params(self, dataset: str, run: str) -> dict:
        """{settings: run_score's settings, run_spec, encoder_key} of a run's scoring job."""
        spec = self.run_entry(run)
        per_dataset = self.config.get("finetune", {}).get("per_dataset", {}).get(dataset, {})
        settings = self.score_section(dataset)
        settings["test_subsample"] = per_dataset.get("test_subsample", settings.get("test_subsample"))
        return {"settings": settings, "run_spec": dict(spec),
                "encoder_key": spec.get("encoder", self.config["encoder"])}

    def score_inputs(self, dataset: str, run: str) -> dict:
        """Inputs of a run's scoring job (score or kgbert_score)."""
        return {
            # an inductive test graph is scored with the model trained on its training graph (`inductive_of`)
            "model": f"results/{self.training_graph(dataset)}/runs/{run}/model",
            "triples": f"results/{dataset}/text/triples.parquet",
            "manifest": f"results/{dataset}/tokens/{self.run_settings(run)['encoder']}/manifest.json",
        }

    def kgbert_params(self, dataset: str, run: str) -> dict:
        """Arguments of the cross-encoder's training and scoring besides the paths."""
        spec = self.run_settings(run)
        settings = dataset_section(self.config.get("kgbert"), dataset)
        seed = self.run_seed(run)
        if seed is not None and int(seed) != int(settings.get("seed", 42)):
            settings["seed"] = int(seed)  # a run instance: kgbert.seed set to its seed
        return {
            "dataset": dataset,
            "run": run,
            "run_spec": spec,
            "encoder_key": spec["encoder"],
            "encoder_source": self.encoder_source(spec["encoder"]),
            "settings": settings,
        }
