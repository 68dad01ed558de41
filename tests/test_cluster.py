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


def local_rules() -> set[str]:
    """Rules marked `localrule: True` in rules/*.smk, and the target rule `all`: never submitted to SLURM."""
    names = {"all"}
    for smk in (REPO / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), flags=re.M):
            if re.search(r"^\s+localrule: True", body, flags=re.M):
                names.add(name)
    return names


def test_every_job_has_runtime_and_memory_cpu_rules_their_partition_gpu_jobs_one_node(tmp_path):
    """`snakemake -n --profile profiles/slurm` (the plugin plans, nothing is submitted): every job SLURM would get has
    runtime and mem_mb, also when --default-resources on the command line replaces the profile's; CPU-only rules go
    to LPBERT_CPU_PARTITION, GPU rules stay on one node, the training rules ask for the advance SIGTERM, and
    pre-training comes first."""
    env = {"SBATCH_PARTITION": "gpuq", "LPBERT_CPU_PARTITION": "cpuq"}
    for args in ((), ("--default-resources", "slurm_partition=big", "slurm_account=lab7")):
        result = dry_run(tmp_path, *args, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        jobs = job_resources(result.stdout)
        submitted = set(jobs) - local_rules()  # localrules run on the submitting machine
        assert {"download", "join_text", "tokenize", "breakdown", "tables", "score_candidates", *GPU_RULES} <= submitted
        jobs = {rule: lines for rule, lines in jobs.items() if rule in submitted}
        gpu_partition = "big" if args else "gpuq"
        for rule, lines in jobs.items():  # a new rule fails here until profiles/slurm/config.yaml lists it
            for line in lines:
                assert re.search(r"\bruntime=\d+", line) and re.search(r"\bmem_mb=\d+", line), (rule, line)
                if re.search(r"\bgpu=[1-9]", line):
                    assert "nodes=1" in line and f"slurm_partition={gpu_partition}," in line, (rule, line)
                else:
                    assert "slurm_partition=cpuq," in line, (rule, line)
        for rule in ("pretrain", "finetune", "kgbert_train"):
            assert all("slurm_extra=--signal=TERM@180" in line for line in jobs[rule]), rule
    priorities = {}
    for block in result.stdout.split("\n\n"):
        rule = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
        priority = re.search(r"^\s+priority: (\d+)$", block, flags=re.M)
        if rule:
            priorities.setdefault(rule.group(1), set()).add(int(priority.group(1)) if priority else 0)
    assert min(priorities["pretrain"]) > max(priorities["finetune"] | priorities["kgbert_train"])
    assert min(priorities["finetune"]) > max(priorities["score"] | priorities["kgbert_score"]) > 0
    # the variant most runs start from (mem-mrm-mlm: Table 1's lpbert and others) before the single-run ablations
    mem_mrm_mlm = {int(p) for p in re.findall(r"variant=mem-mrm-mlm\n\s+priority: (\d+)", result.stdout)}
    assert mem_mrm_mlm == {max(priorities["pretrain"])} and len(priorities["pretrain"]) > 1


def test_gpu_job_threads_follow_cores_on_a_four_gpu_host(tmp_path):
    """Planning on a fake 4-GPU host: `--cores 4 --resources gpu=4` gives every GPU job 1 thread (4 fit at once);
    `--cores 32` gives them gpu_job_threads (8); one card and `--cores 8`: 8 (rules/common.smk gpu_threads). The real
    run of 4 jobs at once is tests/test_gpu_slots.py::test_cores_4_runs_four_gpu_jobs_at_once_on_four_cards."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "resources").symlink_to(REPO / "resources")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES" and not k.startswith("SLURM_")}
    env["LPBERT_GPU_COUNT"] = "4"
    for cores, gpus, expected in (("4", "4", 1), ("32", "4", 8), ("8", "1", 8), ("4", None, 1)):
        resources = ["--resources", f"gpu={gpus}"] if gpus else []  # no cap: the host's 4 cards
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "all", "-n", "--cores", cores,
             *resources], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        threads = {}
        for block in result.stdout.split("\n\n"):
            rule = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
            if rule and rule.group(1) in (*GPU_RULES, "score_candidates"):
                count = re.search(r"^\s+threads: (\d+)$", block, flags=re.M)  # printed when above 1
                threads.setdefault(rule.group(1), set()).add(int(count.group(1)) if count else 1)
        assert set(threads) == {*GPU_RULES, "score_candidates"}
        assert all(found == {expected} for found in threads.values()), (cores, gpus, threads)
