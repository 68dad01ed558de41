"""One run's chain of stages without Snakemake: download -> join_text -> tokenize -> pretrain -> finetune -> score,
with the rules' arguments (lpbert_core.config.resolve), paths and log files. For machines where the workflow manager is
not installed (a lent GPU box, a container) and for timing single stages: tools/gpu_check.py drives it.

It is not a second workflow engine: no DAG, no params/code tracking. A stage is skipped when its output exists
(rerun a stage by deleting its output); everything written goes through the stages' own atomic writers, so a killed
stage leaves no half output and its checkpoints resume, as under Snakemake. Lambda-free and JSON-friendly: each call
returns {stage, target, seconds, skipped}.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lpbert_core.config import paths
from lpbert_core.config.checks import check_config
from lpbert_core.config.resolve import JobSettings
from lpbert_core.config.settings import ScoreSettings
from lpbert_core.runtime.stage_runner import setup_logging

log = logging.getLogger("lpbert.direct")


class DirectRun:
    """The stages of one config, rooted at `root` (where results/, logs/ and checkpoints/ go)."""

    def __init__(self, jobs: JobSettings, root: str | Path = ".", threads: int = 8):
        check_config(jobs.config)  # as Snakemake does while it parses the workflow: before any stage runs
        self.jobs = jobs
        self.root = Path(root)
        self.threads = int(threads)
        self.records: list[dict] = []

    def path(self, pattern: str, **wildcards) -> Path:
        """`pattern` (lpbert_core.config.paths, or a relative path) with its wildcards filled, under the root."""
        return self.root / paths.fill(pattern, **wildcards)

    def _step(self, stage: str, target: Path, log_file: str, fn) -> dict:
        record = {"stage": stage, "target": str(target.relative_to(self.root)), "skipped": target.exists()}
        if not record["skipped"]:
            setup_logging(self.path(log_file))
            start = time.perf_counter()
            fn()
            record["seconds"] = round(time.perf_counter() - start, 2)
            log.info("%s -> %s in %.1f s", stage, record["target"], record["seconds"])
        self.records.append(record)
        return record

    # ---------------------------------------------------------------- data stages

    def data(self, dataset: str, encoder: str | None = None) -> None:
        """raw -> text tables -> token tables of `encoder` (default: the top-level encoder)."""
        from lpbert_core.data.data_stages import run_download, run_join_text, run_tokenize

        encoder = encoder or self.jobs.config["encoder"]
        raw = self.path(paths.RAW, dataset=dataset)
        self._step("download", raw, f"logs/{dataset}/download.log",
                   lambda: run_download(settings=self.jobs.download_params(dataset), outputs={"raw": raw}))
        outputs = {name: self.path(pattern, dataset=dataset) for name, pattern in (
            ("entities", paths.TEXT_ENTITIES), ("relations", paths.TEXT_RELATIONS), ("triples", paths.TEXT_TRIPLES),
            ("summary", paths.TEXT_SUMMARY))}
        self._step("join_text", outputs["summary"], f"logs/{dataset}/join_text.log",
                   lambda: run_join_text(settings=self.jobs.text_params(dataset), inputs={"raw": raw},
                                         outputs=outputs))
        token_files = {name: self.path(pattern, dataset=dataset, encoder=encoder) for name, pattern in (
            ("entities", paths.TOKEN_ENTITIES), ("relations", paths.TOKEN_RELATIONS),
            ("manifest", paths.TOKENS_MANIFEST))}
        self._step("tokenize", token_files["manifest"], f"logs/{dataset}/tokenize/{encoder}.log",
                   lambda: run_tokenize(settings={"encoder_key": encoder,
                                                  "encoder_source": self.jobs.encoder_source(encoder)},
                                        inputs={name: outputs[name] for name in ("entities", "relations")},
                                        outputs=token_files))

    # ---------------------------------------------------------------- training and scoring

    def pretrain(self, dataset: str, variant: str) -> dict:
        from lpbert_core.pretrain.pretrain_loop import run_pretrain

        settings = self.jobs.resolve("pretrain", dataset, variant=variant, threads=self.threads)
        inputs = {"triples": self.path(paths.TEXT_TRIPLES, dataset=dataset),
                  "manifest": self.path(paths.TOKENS_MANIFEST, dataset=dataset, encoder=self.jobs.config["encoder"])}
        where = {"dataset": dataset, "variant": variant}
        outputs = {"model": self.path(paths.PRETRAIN_MODEL, **where), "log_csv": self.path(paths.PRETRAIN_LOG, **where),
                   "checkpoints": self.path(paths.PRETRAIN_CHECKPOINTS, **where)}
        return self._step("pretrain", outputs["log_csv"], f"logs/{dataset}/pretrain/{variant}.log",
                          lambda: run_pretrain(settings=settings, inputs=inputs, outputs=outputs))

    def finetune(self, dataset: str, run: str) -> dict:
        from lpbert_core.finetune.finetune_loop import run_finetune
        from lpbert_core.runtime.training import torch_threads

        inputs = {key: self.path(path) for key, path in self.jobs.training_inputs(dataset, run).items()}
        settings = self.jobs.finetune_params(dataset, run)
        where = {"dataset": dataset, "run": run}
        outputs = {"model": self.path(paths.RUN_MODEL, **where), "train_log": self.path(paths.RUN_TRAIN_LOG, **where),
                   "checkpoints": self.path(paths.RUN_CHECKPOINTS, **where)}
        torch_threads(self.threads)
        return self._step("finetune", outputs["train_log"], f"logs/{dataset}/finetune/{run}.log",
                          lambda: run_finetune(settings=settings, inputs=inputs, outputs=outputs))

    def score(self, dataset: str, run: str, settings: dict | None = None) -> dict:
        """Test ranks and metrics of a run (`settings` entries override the score section, e.g. precision)."""
        from lpbert_core.evaluate.scoring import run_score
        from lpbert_core.runtime.training import torch_threads

        inputs = {key: self.path(path) for key, path in self.jobs.score_inputs(dataset, run).items()}
        section = ScoreSettings.from_mapping({**self.jobs.resolve("score", dataset).as_dict(), **(settings or {})},
                                             f"DirectRun.score({dataset!r}, {run!r}) overrides")
        where = {"dataset": dataset, "run": run}
        outputs = {"ranks": self.path(paths.RUN_RANKS, **where), "metrics": self.path(paths.RUN_METRICS, **where)}
        torch_threads(self.threads)
        return self._step("score", outputs["metrics"], f"logs/{dataset}/score/{run}.log",
                          lambda: run_score(settings=section, inputs=inputs, outputs=outputs,
                                            log=logging.getLogger("lpbert.score").info))

    def run(self, dataset: str, run: str) -> list[dict]:
        """Everything one run needs, in order: data, its pre-training (unless `pretrain: none`), fine-tuning, scoring."""
        start = len(self.records)
        spec = self.jobs.run_settings(run)
        if spec.get("model", "lpbert") != "lpbert":
            raise ValueError(f"run {run!r}: DirectRun drives lpbert runs only (model {spec.get('model')!r})")
        self.jobs.finetune_params(dataset, run)  # settings checked before any stage runs (settings.check_finetune)
        self.data(dataset, spec["encoder"])
        if spec["pretrain"] != "none":  # run_settings refused any other encoder than the top-level one here
            self.pretrain(dataset, spec["pretrain"])
        self.finetune(dataset, run)
        self.score(dataset, run)
        return self.records[start:]
