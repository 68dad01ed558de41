"""Pickle-free resumable checkpoints (safetensors + JSON): model, optimizer, scheduler, the fp16 grad scaler and the
loop's progress, written atomically and resumed only under the same fingerprint (settings, data, initial weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lpbert_core.runtime.atomic import atomic_dir


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"param_groups": state["param_groups"], "state": {}}
    for pid, pstate in state["state"].items():
        meta["state"][str(pid)] = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                meta["state"][str(pid)][key] = "__tensor__"
            else:
                meta["state"][str(pid)][key] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for pid, pstate in meta["state"].items():
        state[int(pid)] = {
            key: tensors[f"{pid}.{key}"] if value == "__tensor__" else value for key, value in pstate.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: str | Path, model, optimizer, scheduler, progress: dict, scaler=None) -> int:
    """Write model, optimizer, scheduler, the fp16 grad scaler (if any) and a JSON `progress` dict (epoch, best
    score, log rows...). The folder is replaced atomically, so a kill during the write leaves the previous
    checkpoint intact. Returns the bytes written (preemption.CheckpointClock tallies them)."""
    with atomic_dir(directory) as tmp:
        model_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(model_state, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        meta = {"optimizer": opt_meta, "scheduler": scheduler.state_dict(), "progress": progress,
                # plain floats/ints; without it a resumed fp16 run restarts at scale 65536 and skips steps
                "grad_scaler": scaler.state_dict() if scaler is not None else None}
        (tmp / "state.json").write_text(json.dumps(meta, default=float))
        written = sum(f.stat().st_size for f in tmp.iterdir())
    return written


def _checkpoint_folder(directory: str | Path) -> Path | None:
    """The folder holding the checkpoint: `directory`, or its `.old` copy when a kill hit between the two
    renames of atomic_dir; None when there is none."""
    directory = Path(directory)
    for folder in (directory, directory.with_name(f".{directory.name}.old")):
        if (folder / "state.json").exists():
            return folder
    return None


def resume_checkpoint(directory: str | Path, fingerprint: str, model, optimizer, scheduler, device: torch.device,
                      scaler=None, discard: str | Path | None = None, warn=None) -> dict | None:
    """`load_checkpoint`, but only from a checkpoint written under the same `fingerprint` (settings, data, initial
    weights). Another one is removed with `discard` (default: `directory`) and None is returned. A resumed progress
    dict counts its `attempt`: a resumed job's Snakemake benchmark times only the last attempt."""
    folder = _checkpoint_folder(directory)
    if folder is not None:
        saved = json.loads((folder / "state.json").read_text()).get("progress", {}).get("fingerprint")
        if saved != fingerprint:
            if warn is not None:
                warn(f"ignoring the checkpoint in {directory}: written under other settings, data or weights")
            for path in {Path(discard or directory), Path(directory), folder}:
                shutil.rmtree(path, ignore_errors=True)
            return None
    progress = load_checkpoint(directory, model, optimizer, scheduler, device, scaler)
    if progress is not None:
        progress["attempt"] = int(progress.get("attempt", 1)) + 1
    return progress


def load_checkpoint(directory: str | Path, model, optimizer, scheduler, device: torch.device,
                    scaler=None) -> dict | None:
    """Restore a checkpoint written by `save_checkpoint`; returns its progress dict, or None if absent."""
    directory = _checkpoint_folder(directory)
    if directory is None:
        return None
    meta = json.loads((directory / "state.json").read_text())
    model.load_state_dict(load_file(str(directory / "model.safetensors"), device=str(device)))
    opt_tensors = load_file(str(directory / "optimizer.safetensors"), device=str(device))
    optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta.get("grad_scaler"):
        scaler.load_state_dict(meta["grad_scaler"])
    return meta["progress"]
