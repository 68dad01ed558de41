"""How long a configuration's `all` would take on a CPU, from throughputs measured on this project's 2-core machine.

The workflow prints this before any job starts when no GPU is visible (rules/common.smk), so a newcomer who types
the paper's command on a laptop learns that it means weeks, and which overlay to use instead. It is an estimate:
the rates below come from the CPU overlay's benchmark files (MiniLM, shorter maximum lengths than the paper's), and
a BERT-base-sized encoder is several times slower still.
"""

from __future__ import annotations

import contextlib
import io

from lpbert_core.config.settings import PRETRAIN_VARIANTS

# Work items per second on 2 CPU cores with MiniLM-L6, from the measured CPU-overlay run (2026-11-25, its
# benchmarks/{dataset}/{stage}/*.tsv files; README "CPU-sized run"). Batches are padded per batch, so the paper's
# longer max lengths cost less than proportionally; treat the result as a rough estimate, not a bound.
RATES = {
    "pretrain_sequences": 30.0,   # WN18RR, 2,000 triples x 2 epochs in 92-157 s at max length 64
    "finetune_rows": 20.0,        # WN18RR, 4,000 rows (2 encodings each) in ~195 s at max length 64
    "score_sequences": 250.0,     # WN18RR test: 40,943 entities + 600 queries in 154-167 s (length-sorted batches)
    "kgbert_pairs": 136.0,        # WN18RR: 2 x 40,943 (query, candidate) passes in 601 s at max length 50
}
# Graph sizes (resources/datasets/SOURCES.md): train / dev / test triples, entities.
SIZES = {
    "umls": (5216, 652, 661, 135),
    "WN18RR": (86835, 3034, 3134, 40943),
    "FB15k-237": (272115, 17535, 20466, 14541),
}
PRETRAIN_VARIANTS_WITH_WORK = set(PRETRAIN_VARIANTS) - {"none"}


def _runs_by_dataset(config: dict) -> dict[str, set[str]]:
    """dataset -> the runs `all` trains on it (table1 on every dataset; tables 3 and 4 on theirs)."""
    tables = config.get("tables", {})
    out = {d: {tables.get("table1", {}).get("run", "lpbert")} for d in config.get("datasets", [])}
    for name in ("table3", "table4"):
        spec = tables.get(name) or {}
        if spec.get("dataset") in out:
            out[spec["dataset"]].update(spec.get("rows", {}))
    return out


def cpu_hours(config: dict) -> tuple[float, list[str]]:
    """Estimated CPU hours of `all` for the benchmark datasets in `config` (others are left out), and one line per
    dataset naming where the time goes. Every run's settings come from job_settings.resolve, as its jobs' do."""
    from lpbert_core.config.resolve import JobSettings

    jobs = JobSettings(config)
    total, lines = 0.0, []
    for dataset, runs in _runs_by_dataset(config).items():
        if dataset not in SIZES:
            continue
        train, _dev, test, entities = SIZES[dataset]
        specs = {r: jobs.run_settings(r) for r in runs}
        seconds = {"pretrain": 0.0, "finetune": 0.0, "score": 0.0, "kgbert": 0.0}
        for variant in sorted({s["pretrain"] for s in specs.values()} & PRETRAIN_VARIANTS_WITH_WORK):
            pre = jobs.resolve("pretrain", dataset, variant=variant, threads=1)
            seconds["pretrain"] += min(train, pre.train_subsample or train) * pre.epochs / RATES["pretrain_sequences"]
        scored = min(test, jobs.resolve("score", dataset).test_subsample or test)
        for run, spec in specs.items():
            if spec["model"] == "lpbert":
                ft = jobs.resolve("finetune", dataset, run)
                rows = min(train, ft.train_subsample or train) * (2 if ft.inverse_augmentation else 1)
                seconds["finetune"] += rows * ft.epochs / RATES["finetune_rows"]
                seconds["score"] += (entities + 2 * scored) / RATES["score_sequences"]
            elif spec["model"] == "kgbert":
                kg = jobs.resolve("kgbert", dataset, run)
                queries = kg.score_queries or 2 * test
                pairs = min(train, kg.train_subsample or train) * (1 + kg.negatives)
                seconds["kgbert"] += (pairs * kg.epochs + queries * entities) / RATES["kgbert_pairs"]
        hours = sum(seconds.values()) / 3600
        total += hours
        parts = ", ".join(f"{k} {v / 3600:.0f} h" for k, v in seconds.items() if v >= 1800)
        lines.append(f"{dataset}: about {hours:.0f} h ({parts or 'under an hour each'})")
    return total, lines


# Snakemake flags (argparse names) whose command runs no job: a graph, a report, a listing, an unlock, a lint, ...
BUILDS_NOTHING = ("dag", "rulegraph", "filegraph", "d3dag", "report", "unlock", "touch", "list_rules",
                  "list_target_rules", "summary", "detailed_summary", "delete_all_output", "delete_temp_output",
                  "cleanup_metadata", "cleanup_shadow", "lint", "list_changes", "list_input_changes",
                  "list_params_changes", "list_untracked", "print_compilation", "containerize", "archive", "export_cwl",
                  "generate_unit_tests", "conda_create_envs_only", "edit_notebook")


def builds_all_locally(argv: list[str]) -> bool:
    """Whether a Snakemake command line builds `all` with its jobs on this machine, read the way Snakemake reads it
    (profiles and the workflow profile included, `snakemake.cli.parse_args`). The estimate is `all`'s, so one proxy run
    or one table gets no warning; a run whose jobs go to an executor (a `--profile` that sets `executor: slurm`
    included), a command that runs no job (`--dag`, `--report`, `--lint`, ...: BUILDS_NOTHING), or a job's own
    Snakemake (`--mode subprocess/remote`) gets none either. A dry run (`-n`) of `all` does: that is where a newcomer
    looks first."""
    from snakemake.cli import parse_args
    from snakemake_interface_executor_plugins.settings import ExecMode

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # parse_args announces the profiles it read
            _, args = parse_args(argv[1:])
    except (SystemExit, Exception):  # a line Snakemake itself would reject: warn rather than stay silent
        return True
    if args.mode != ExecMode.DEFAULT or args.executor not in (None, "local", "dryrun"):
        return False
    if any(getattr(args, flag, None) for flag in BUILDS_NOTHING):
        return False
    targets = set(args.targets or ())
    return not targets or "all" in targets


def no_gpu_message(config: dict, threshold_hours: float = 12.0) -> str | None:
    """The warning printed before any job starts on a machine without a GPU, or None when the run is CPU-sized."""
    hours, lines = cpu_hours(config)
    if hours < threshold_hours:
        return None
    return (
        f"No GPU visible here, and this configuration is the paper-scale protocol: on a CPU it would take about "
        f"{hours / 24:.0f} days ({'; '.join(lines)}; a rough estimate from MiniLM throughputs measured on 2 cores). "
        "For a CPU-sized run of the same DAG use:  snakemake all --cores 2 --configfile configs/cpu.yaml  "
        "(about an hour on 2 cores). To run this protocol anyway, go ahead: jobs use the CPU when device is auto."
    )
