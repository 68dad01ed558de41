"""One card per GPU job on a multi-GPU host (lpbert_core.gpu_slots), on CPU with a faked device count."""

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
    from lpbert_core.gpu_slots import claim_gpus
    ids = claim_gpus(int(sys.argv[1]), timeout_s=float(sys.argv[2]), poll_s=0.05)
    print(",".join(ids) + " " + __import__("os").environ.get("CUDA_VISIBLE_DEVICES", ""), flush=True)
    time.sleep(float(sys.argv[3]))
""")


def fake_host(tmp_path: Path, count: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update(LPBERT_GPU_COUNT=str(count), LPBERT_GPU_LOCK_DIR=str(tmp_path / "locks"))
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


def test_no_claim_without_gpus_or_under_a_scheduler(tmp_path, monkeypatch):
    from lpbert_core import gpu_slots

    monkeypatch.setenv("LPBERT_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("LPBERT_GPU_COUNT", "0")
    assert gpu_slots.claim_gpus(1) == []
    monkeypatch.setenv("LPBERT_GPU_COUNT", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "123")  # SLURM assigns the cards itself
    assert gpu_slots.claim_gpus(1) == []
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(RuntimeError, match="needs 3 GPUs but the host has 2"):
        gpu_slots.claim_gpus(3)


def test_inherited_visible_devices_are_kept(monkeypatch):
    from lpbert_core import gpu_slots

    monkeypatch.delenv("LPBERT_GPU_COUNT", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert gpu_slots.visible_gpu_ids() == ["2", "5"]


@pytest.mark.slow
def test_resources_gpu_2_runs_two_gpu_jobs_at_once_on_different_cards(tmp_path, fixture_builder, tiny_encoder_dir):
    """The project's own rules on the whole-DAG test config: two fine-tuning jobs, `--resources gpu=2`, 2 fake cards."""
    wd = tmp_path / "wd"
    (wd / ".test").mkdir(parents=True)
    shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    (wd / "resources").symlink_to(REPO / "resources")
    shutil.copy(REPO / ".test" / "config.yaml", wd / ".test" / "config.yaml")
    fixture_builder.write_graph(wd / ".test" / "data" / "tinykg")
    shutil.copytree(tiny_encoder_dir, wd / ".test" / "tiny-bert")
    targets = ["results/tinykg/runs/t4-none/model", "results/tinykg/runs/t4-none-nobatch/model"]
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *targets, "--cores", "2",
         "--set-threads", "finetune=1", "--configfile", ".test/config.yaml", "--resources", "gpu=2"],
        cwd=wd, env=fake_host(tmp_path, 2), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    cards, spans = {}, {}
    for run in ("t4-none", "t4-none-nobatch"):
        text = (wd / f"logs/tinykg/finetune/{run}.log").read_text()
        cards[run] = re.search(r"GPU slot: claimed (\S+) of 0,1", text).group(1)
        stamps = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in
                  re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", text, flags=re.M)]
        spans[run] = (min(stamps), max(stamps))
    assert set(cards.values()) == {"0", "1"}
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1, f"the two GPU jobs did not overlap in time: {spans}"
