"""One device setting and mixed precision (lpbert_core.runtime.training): no silent CPU fallback, bf16 only where the GPU has it
natively, CPU bf16 autocast on request (how the whole-DAG test runs every loop under autocast)."""

from __future__ import annotations

import os

import pytest
import torch

from lpbert_core.runtime import training
from lpbert_core.runtime.training import autocast_context, compute_record, needs_grad_scaler, pick_device, resolve_precision

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def test_auto_and_cpu_devices():
    assert pick_device("cpu") == CPU
    assert pick_device("auto") == (CUDA if torch.cuda.is_available() else CPU)
    with pytest.raises(ValueError, match="device must be one of"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_asking_for_cuda_without_cuda_is_an_error_not_a_cpu_run():
    with pytest.raises(RuntimeError, match="CUDA is not available here"):
        pick_device("cuda")


def test_cpu_precisions():
    assert resolve_precision(CPU, "auto") == "fp32"
    assert resolve_precision(CPU, "fp32") == "fp32"
    assert resolve_precision(CPU, "bf16") == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision(CPU, "fp16")
    assert not needs_grad_scaler(CPU, "bf16")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp16")])
def test_gpu_bf16_only_where_the_card_has_it(monkeypatch, native, expected):
    monkeypatch.setattr(training, "gpu_has_native_bf16", lambda: native)
    assert resolve_precision(CUDA, "auto") == expected
    assert resolve_precision(CUDA, "bf16") == expected
    assert resolve_precision(CUDA, "fp16") == "fp16" and resolve_precision(CUDA, "fp32") == "fp32"
    assert needs_grad_scaler(CUDA, "auto") == (not native)


def test_cpu_bf16_autocast_really_casts():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast_context(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.bfloat16
    with autocast_context(CPU, "auto"):
        assert (a @ b).dtype == torch.float32


def test_compute_record_names_what_ran():
    record = compute_record(CPU, "bf16", world_size=2)
    assert record["device"] == "cpu" and record["gpu_name"] is None
    assert record["precision"] == "bf16" and record["world_size"] == 2


def test_auto_on_a_gpu_machine_with_a_torch_without_cuda_stops_with_one_line(monkeypatch, tmp_path):
    """NVIDIA cards present (nvidia-smi lists one, or LPBERT_GPU_COUNT says so) but torch cannot use CUDA (a CPU-only
    wheel, a driver mismatch): `auto` must not train for days on the CPU; GPUs hidden on purpose still mean the CPU."""
    import subprocess
    import sys

    from lpbert_core.errors import DeviceError

    # a stage stops with the one line (run_stage), not a traceback; this machine's torch may have CUDA: faked off
    code = ("import torch; torch.cuda.is_available = lambda: False\n"
            "from lpbert_core.runtime.stage_runner import run_stage\nfrom lpbert_core.runtime.training import pick_device\n"
            "run_stage(None, lambda: pick_device('auto'))\n")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["LPBERT_GPU_COUNT"] = "1"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "install a CUDA build of torch" in errors[0] and "device: cpu" in errors[0]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LPBERT_GPU_COUNT", "2")
    with pytest.raises(DeviceError, match=r"has 2 NVIDIA GPU\(s\) but torch .* install a CUDA build of torch .*"
                                          r"set `device: cpu`") as caught:
        pick_device("auto")
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # hidden on purpose
    assert pick_device("auto") == CPU
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")

    monkeypatch.delenv("LPBERT_GPU_COUNT")  # the real detection: a (fake) nvidia-smi on PATH listing one card
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0000)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    with pytest.raises(DeviceError, match=r"has 1 NVIDIA GPU\(s\)"):
        pick_device("auto")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi, no driver: a CPU machine
    if not os.path.isdir("/proc/driver/nvidia/gpus"):
        assert pick_device("auto") == CPU
