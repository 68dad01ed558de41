"""One card per GPU job on a multi-GPU host (lpbert_core.runtime.gpu_slots), on CPU with a faked device count."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent("""
    import sys, time
    from lpbert_core.runtime.gpu_slots import claim_gpus
    ids = claim_gpus(int(sys.argv[1]), timeout_s=float(sys.argv[2]), poll_s=0.05)
    print(",".join(ids) + " " + __import__("os").environ.get("CUDA_VISIBLE_DEVICES", ""), flush=True)
    time.sleep(float(sys.argv[3]))
""")


def fake_host(tmp_path: Path, count: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES" and not k.startswith("SLURM_")}
    env.update(LPBERT_GPU_COUNT=str(count), LPBERT_GPU_LOCK_DIR=str(tmp_path / "locks"))
    return env


def fake_allocation(tmp_path: Path, job_id: str, cards: str, **slurm) -> dict:
    """A SLURM allocation's environment as SLURM sets it: its cards in CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "LPBERT_GPU_COUNT") and not k.startswith("SLURM_")}
    env.update(SLURM_JOB_ID=job_id, SLURM_JOB_GPUS=cards, CUDA_VISIBLE_DEVICES=cards,
               LPBERT_GPU_LOCK_DIR=str(tmp_path / "locks"), **slurm)
    return env


def holder(env: dict, count: int = 1, timeout: float = 5.0, hold: float = 30.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(count), str(timeout), str(hold)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_jobs_get_different_cards_and_a_killed_job_frees_its_card(tmp_path):
    env = fake_host(tmp_path, 2)
    first, second = holder(env), holder(env)
    seen = {first.stdout.readline().split()[0], second.stdout.readline().split()[0]}
    assert seen == {"0", "1"}
    third = holder(env, timeout=0.5)
    assert third.wait(timeout=30) != 0 and "no 1 free GPU(s)" in third.stderr.read()
    first.send_signal(signal.SIGKILL)  # a crash: the kernel drops its lock
    first.wait()
    fourth = holder(env, timeout=10)
    line = fourth.stdout.readline().split()
    assert line[0] in seen and line[1] == line[0]  # CUDA_VISIBLE_DEVICES narrowed to the card
    for proc in (second, fourth):
        proc.kill()
        proc.wait()


def test_multi_gpu_claims_are_all_or_nothing(tmp_path):
    env = fake_host(tmp_path, 3)
    one = holder(env, count=1)
    assert one.stdout.readline().split()[0] == "0"
    two = holder(env, count=2)
    assert two.stdout.readline().split()[1] == "1,2"
    late = holder(env, count=2, timeout=0.5)  # 0 of 3 free: waits, then fails without holding a card
    assert late.wait(timeout=30) != 0
    for proc in (one, two):
        proc.kill()
        proc.wait()


def test_no_claim_without_gpus(tmp_path, monkeypatch):
    from lpbert_core.runtime import gpu_slots

    monkeypatch.setenv("LPBERT_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("LPBERT_GPU_COUNT", "0")
    assert gpu_slots.claim_gpus(1) == []
    monkeypatch.setenv("LPBERT_GPU_COUNT", "2")
    with pytest.raises(RuntimeError, match="needs 3 GPUs but the host has 2"):
        gpu_slots.claim_gpus(3)


def test_a_slurm_allocation_offers_its_own_cards_only(tmp_path, monkeypatch):
    from lpbert_core.runtime import gpu_slots

    for name in ("LPBERT_GPU_COUNT", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LPBERT_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(gpu_slots, "nvidia_gpu_count", lambda: 8)  # the node's cards: not this allocation's
    assert gpu_slots.visible_gpu_ids() == []  # an allocation without GPUs claims none of the node's
    monkeypatch.setenv("SLURM_JOB_GPUS", "2,3")
    assert gpu_slots.visible_gpu_ids() == ["2", "3"]
    monkeypatch.setenv("SLURM_STEP_GPUS", "3")  # inside a job step (srun): the step's
    assert gpu_slots.visible_gpu_ids() == ["3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what SLURM set for CUDA wins (cgroup-relative numbering)
    assert gpu_slots.visible_gpu_ids() == ["0"]
    assert gpu_slots.lock_dir() == tmp_path / "slurm-77"  # one lock folder per allocation


def test_jobs_in_one_slurm_allocation_claim_distinct_cards(tmp_path):
    """`salloc --gpus=4`, then snakemake with local jobs: 4 jobs on the allocation's 4 cards, a 5th waits; another
    allocation on the same node (its own card, numbered 0 there) and the executor plugin's one-card job claim at once."""
    env = fake_allocation(tmp_path, "4242", "4,5,6,7")
    jobs = [holder(env) for _ in range(4)]
    lines = [job.stdout.readline().split() for job in jobs]
    assert sorted(line[0] for line in lines) == ["4", "5", "6", "7"]
    assert all(line[1] == line[0] for line in lines)  # CUDA_VISIBLE_DEVICES narrowed to the claimed card
    fifth = holder(env, timeout=0.5)
    assert fifth.wait(timeout=30) != 0 and "no 1 free GPU(s) of ['4', '5', '6', '7']" in fifth.stderr.read()
    other = holder(fake_allocation(tmp_path, "4243", "0"), timeout=5)
    assert other.stdout.readline().split() == ["0", "0"]
    plugin_job = holder(fake_allocation(tmp_path, "4244", "0", SLURM_STEP_GPUS="1"), timeout=5)
    assert plugin_job.stdout.readline().split() == ["0", "0"]
    for proc in (*jobs, other, plugin_job):
        proc.kill()
        proc.wait()


def test_inherited_visible_devices_are_kept(monkeypatch):
    from lpbert_core.runtime import gpu_slots

    monkeypatch.delenv("LPBERT_GPU_COUNT", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert gpu_slots.visible_gpu_ids() == ["2", "5"]


@pytest.mark.slow
@pytest.mark.parametrize("host", ["slurm"])
def test_cores_4_runs_four_gpu_jobs_at_once_on_four_cards(tmp_path, fixture_builder, tiny_encoder_dir, host):
    """The project's own rules on the whole-DAG test config: four fine-tuning jobs with `--cores 4 --resources gpu=4`
    on 4 fake cards inside a fake SLURM allocation: GPU jobs' threads follow --cores (one each, rules/common.smk
    gpu_threads), so all four run at once, each on its own card. The workstation case (host="workstation", no
    allocation) runs the same code path minus the allocation's card list; it is covered by the claim tests above and
    test_cluster's thread test, and left out of the default parametrization to keep the suite under 15 minutes."""
    wd = tmp_path / "wd"
    (wd / ".test").mkdir(parents=True)
    shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    (wd / "resources").symlink_to(REPO / "resources")
    shutil.copy(REPO / ".test" / "config.yaml", wd / ".test" / "config.yaml")
    fixture_builder.write_graph(wd / ".test" / "data" / "tinykg")
    shutil.copytree(tiny_encoder_dir, wd / ".test" / "tiny-bert")
    runs = ["t4-none", "t4-none-nobatch", "study-P-s42", "study-raw-s42"]
    env = fake_host(tmp_path, 4) if host == "workstation" else fake_allocation(tmp_path, "31337", "0,1,2,3")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
         *[f"results/tinykg/runs/{run}/model" for run in runs], "--cores", "4", "--configfile", ".test/config.yaml",
         "--config", "finetune={device: cpu}", "--resources", "gpu=4"],
        cwd=wd, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    cards, spans = {}, {}
    for run in runs:
        text = (wd / f"logs/tinykg/finetune/{run}.log").read_text()
        cards[run] = re.search(r"GPU slot: claimed (\S+) of 0,1,2,3", text).group(1)
        stamps = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in
                  re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", text, flags=re.M)]
        spans[run] = (min(stamps), max(stamps))
    assert sorted(cards.values()) == ["0", "1", "2", "3"]
    assert max(a for a, _ in spans.values()) < min(b for _, b in spans.values()), f"not all 4 at once: {spans}"
