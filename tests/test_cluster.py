"""The SLURM profile, dry-run with the executor plugin installed (a test extra): GPU jobs ask SLURM for their cards,
partition and account come from the environment or the command line, and no global GPU cap throttles the cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GPU_RULES = ("pretrain", "finetune", "score", "kgbert_train", "kgbert_score")


def dry_run(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    if not (tmp_path / "resources").exists():
        (tmp_path / "resources").symlink_to(REPO / "resources")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SBATCH_", "SLURM_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "all", "-n",
         "--profile", str(REPO / "profiles" / "slurm"), *args],
        cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600,
    )


def job_resources(stdout: str) -> dict[str, list[str]]:
    """rule name -> the `resources:` line of each of its jobs."""
    out: dict[str, list[str]] = {}
    for block in stdout.split("\n\n"):
        rule = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        if rule and resources:
            out.setdefault(rule.group(1), []).append(resources.group(1))
    return out


def test_slurm_plugin_is_installed():
    import snakemake_executor_plugin_slurm  # noqa: F401  (the `test` and `slurm` extras install it)


def test_default_profile_sets_no_global_cap():
    """profiles/default is loaded beside --profile profiles/slurm and wins over it: a cap there would throttle SLURM."""
    settings = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert "resources" not in settings


def test_gpu_jobs_request_their_gpus_and_partition_comes_from_the_environment(tmp_path):
    result = dry_run(tmp_path, env={"SBATCH_PARTITION": "gpuq", "SBATCH_ACCOUNT": "proj1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Provided resources: gpu" not in result.stdout + result.stderr
    jobs = job_resources(result.stdout)
    assert set(GPU_RULES) <= set(jobs)
    for rule in GPU_RULES:
        for line in jobs[rule]:
            assert re.search(r"\bgpu=1\b", line), (rule, line)
            assert "tasks_per_gpu=0" in line and "slurm_partition=gpuq" in line and "slurm_account=proj1" in line
    for line in jobs["download"]:
        assert "gpu=" not in line and "slurm_partition=gpuq" in line


def test_partition_and_account_from_the_command_line(tmp_path):
    result = dry_run(tmp_path, "--default-resources", "slurm_partition=big", "slurm_account=lab7",
                     env={"SBATCH_PARTITION": "gpuq"})
    assert result.returncode == 0, result.stderr[-3000:]
    for line in job_resources(result.stdout)["finetune"]:
        assert "slurm_partition=big" in line and "slurm_account=lab7" in line and "mem_mb=32000" in line
