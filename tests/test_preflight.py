"""The warning a newcomer gets before any job starts when the paper protocol meets a machine with no GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from snakemake.utils import update_config

from lpbert_core.runtime.cpu_estimate import builds_all_locally, cpu_hours, no_gpu_message

REPO = Path(__file__).resolve().parents[1]


def merged(*overlays: str) -> dict:
    """config.yaml with overlays merged the way --configfile does (snakemake.utils.update_config)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for overlay in overlays:
        update_config(config, yaml.safe_load((REPO / overlay).read_text()))
    return config


def test_paper_protocol_is_weeks_and_the_cpu_overlay_is_not():
    paper_hours, lines = cpu_hours(merged())
    assert paper_hours > 7 * 24 and any(line.startswith("WN18RR") for line in lines)
    message = no_gpu_message(merged())
    assert "configs/cpu.yaml" in message and "days" in message
    assert no_gpu_message(merged("configs/cpu.yaml")) is None


def test_bring_your_own_graphs_are_left_out():
    config = merged()
    config["datasets"] = ["mykg"]
    assert cpu_hours(config) == (0.0, [])


def test_the_warning_comes_before_any_job(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "resources").symlink_to(REPO / "resources")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES",)}
    env["LPBERT_GPU_COUNT"] = "0"  # the newcomer's laptop
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert "WARNING: No GPU visible here" in result.stderr  # printed while the Snakefile is read: before any job
    # a single proxy run under the paper config's `all`: the estimate is not about it, so no warning
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                             "results/umls/runs/zero-shot/metrics.json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No GPU visible" not in result.stderr
    env["LPBERT_GPU_COUNT"] = "1"
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert "No GPU visible" not in result.stderr


def test_only_a_command_that_builds_all_gets_the_estimate_of_all():
    assert builds_all_locally(["snakemake"])
    assert builds_all_locally(["snakemake", "--cores", "2", "-n"])
    assert builds_all_locally(["snakemake", "all", "--cores", "2", "--configfile", "configs/authors-code.yaml"])
    assert builds_all_locally(["snakemake", "--configfile", "a.yaml", "b.yaml", "--", "all", "results/x.md"])
    assert not builds_all_locally(["snakemake", "results/WN18RR/runs/proxy-paper/metrics.json", "--cores", "2",
                             "--configfile", "configs/proxy.yaml"])
    assert not builds_all_locally(["snakemake", "results/tables/inductive.md", "--configfile", "configs/cpu.yaml"])


def test_jobs_sent_elsewhere_get_no_estimate():
    # the SLURM profile sets `executor: slurm` in its own file: the submit host runs no job
    assert not builds_all_locally(["snakemake", "--profile", str(REPO / "profiles/slurm"), "-n"])
    assert not builds_all_locally(["snakemake", "--executor", "slurm", "--cores", "2"])
    assert not builds_all_locally(["snakemake", "--lint"])
    # commands that run no job at all
    for flags in (["--dag"], ["--rulegraph"], ["--report", "report.html"], ["--unlock"], ["--list-rules"],
                  ["--summary"], ["--touch"]):
        assert not builds_all_locally(["snakemake", "--cores", "2", *flags]), flags
    # a job's own Snakemake (what an executor starts on a node) is not the user's command
    assert not builds_all_locally(["snakemake", "--mode", "subprocess", "--cores", "2"])
    # the local profile of the workflow sets no executor: still a local build of `all`
    assert builds_all_locally(["snakemake", "--profile", str(REPO / "profiles/default"), "--cores", "2"])
