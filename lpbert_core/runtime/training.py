"""Pieces every training stage shares: seeding, device and autocast, AdamW with two learning rates,
warmup schedule, training batch order (seeded random, or length-sorted) and length-sorted evaluation batches (the
checkpoints are in runtime/checkpoints.py).

Determinism: all randomness of an epoch derives from `epoch_seed(seed, epoch)`, so a run resumed from the
checkpoint written after epoch k replays epoch k+1 exactly as an uninterrupted run would (on CPU).
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from typing import Iterable, Sequence

import numpy as np
import torch


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def torch_rng_state() -> dict:
    """torch's RNG states (CPU, and every visible card's), as JSON-able lists: a mid-epoch checkpoint's dropout stream
    (every training loop's, fine-tuning's through lpbert_core.finetune.rng_state)."""
    state = {"cpu": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_torch_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["cpu"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: fixed per (seed, epoch), different across epochs (fresh tasks and masks)."""
    return seed * 1_000_003 + epoch


DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def pick_device(requested: str = "auto") -> torch.device:
    """`auto`: the GPU when CUDA works, the CPU on a machine without NVIDIA GPUs, and an error (DeviceError, one
    line naming the fix) on a machine that has NVIDIA GPUs but a torch that cannot use them (a CPU-only wheel, a driver
    mismatch): such a run would silently take days on the CPU. GPUs hidden on purpose (CUDA_VISIBLE_DEVICES empty or
    -1) mean the CPU. `cuda`: the GPU or a clear error (never a silent CPU run).
    `cuda:N` is accepted for a card chosen by hand; with the per-job card claim (gpu_slots) the job's card is cuda:0.
    In a multi-GPU job (lpbert_core.runtime.distributed) `auto` / `cuda` is the rank's own card, cuda:LOCAL_RANK."""
    from lpbert_core.runtime.distributed import rank_device
    from lpbert_core.errors import DeviceError

    if requested == "auto":
        if torch.cuda.is_available():
            return rank_device(torch.device("cuda"))
        _refuse_cpu_on_a_gpu_machine()
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {requested!r} was asked for but CUDA is not available here (torch {torch.__version__}, "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); install a CUDA build of "
                "torch, or set device: auto / cpu to run on the CPU on purpose"
            )
        return rank_device(torch.device(requested))
    if requested == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {requested!r}")


def _refuse_cpu_on_a_gpu_machine() -> None:
    from lpbert_core.errors import DeviceError
    from lpbert_core.runtime.gpu_slots import nvidia_gpu_count

    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    cards = 0 if hidden else nvidia_gpu_count()
    if cards:
        build = ("a CPU-only build" if torch.version.cuda is None
                 else f"built for CUDA {torch.version.cuda} but cannot reach the driver (version mismatch?)")
        raise DeviceError(
            f"device auto: this machine has {cards} NVIDIA GPU(s) but torch {torch.__version__} is {build}; install a "
            "CUDA build of torch (https://pytorch.org/get-started/locally/) or set `device: cpu` in the stage's "
            "config section to run on the CPU on purpose")


def gpu_has_native_bf16() -> bool:
    """bf16 done by the hardware (Ampere and newer), not emulated: emulated bf16 is slower than fp16."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no including_emulation; its answer was the native one
        return torch.cuda.is_bf16_supported()


def resolve_precision(device: torch.device, requested: str = "auto") -> str:
    """The precision a loop really uses: `bf16`, `fp16` or `fp32`.

    GPU: auto -> bf16 where the card has it natively, else fp16 (with a grad scaler); bf16 asked on a card without it
    -> fp16. CPU: auto -> fp32; bf16 -> bf16 autocast (how the test suite runs every loop under autocast); fp16 has
    no CPU autocast worth using and is refused.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if device.type == "cuda":
        if requested in ("auto", "bf16"):
            return "bf16" if gpu_has_native_bf16() else "fp16"
        return requested
    if requested == "fp16":
        raise ValueError("precision fp16 needs a CUDA device; on the CPU use bf16 (autocast) or fp32")
    return "bf16" if requested == "bf16" else "fp32"


def autocast_context(device: torch.device, precision: str = "auto"):
    """Autocast in the resolved precision (see resolve_precision); fp32 means no autocast."""
    used = resolve_precision(device, precision)
    if used == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if used == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, precision: str = "auto") -> bool:
    """fp16 on a GPU needs loss scaling; bf16 and fp32 do not."""
    return resolve_precision(device, precision) == "fp16"


def compute_record(device: torch.device, precision: str = "auto", world_size: int | None = None) -> dict:
    """What a job ran on, for its log and its outputs (metrics.json, the run folder): device, GPU name, the
    precision actually used, world size (processes in the job; default: the process group's, 1 without one)."""
    if world_size is None:
        from lpbert_core.runtime.distributed import world

        world_size = world().size
    return {
        "device": str(device),
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": resolve_precision(device, precision),
        "world_size": int(world_size),
        "torch": torch.__version__,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def build_optimizer(
    model: torch.nn.Module,
    encoder_prefix: str | tuple[str, ...],
    lr_encoder: float,
    lr_new: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    kind: str = "adamw",
) -> torch.optim.Optimizer:
    """AdamW with the paper's two learning rates: parameters whose name starts with `encoder_prefix` (the
    pre-trained encoder; a tuple: any of them, e.g. a two-tower model's two encoders) get `lr_encoder`, all others
    (new layers) get `lr_new`. Bias and LayerNorm / BatchNorm weights get no weight decay, as is standard for BERT.
    `betas` / `eps`: torch's defaults unless given (the authors' fine-tuning: (0.9, 0.98), 1e-6). `kind="adam"`: torch
    Adam over the same groups (the authors' pre-training: Adam, one LR 1e-4 for all, no weight decay; a non-zero
    weight_decay would be Adam's coupled L2)."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_encoder = name.startswith(encoder_prefix)
        no_decay = param.ndim < 2  # biases and norm weights
        groups.setdefault((is_encoder, no_decay), []).append(param)
    param_groups = [
        {
            "params": params,
            "lr": lr_encoder if is_encoder else lr_new,
            "weight_decay": 0.0 if no_decay else weight_decay,
        }
        for (is_encoder, no_decay), params in sorted(groups.items())
    ]
    # The fused kernel (same update rule, one kernel over all tensors): on CPU the per-tensor loop is memory-bound
    # and dominated a MiniLM step (~1 s vs ~0.1 s measured in pre-training).
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in param_groups for p in g["params"])
    optimizer_class = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return optimizer_class(param_groups, betas=(float(betas[0]), float(betas[1])), eps=float(eps),
                           fused=fused or None)


OPTIMIZERS = ("adamw", "adam")


def optimizer_step(loss, model, optimizer, scheduler, scaler=None, max_grad_norm: float | None = None) -> None:
    """One update: backward (through the fp16 grad scaler when there is one), optional clipping, step, schedule.
    In a multi-GPU job `model` is the step's DistributedDataParallel wrapper (distributed.data_parallel), whose
    backward averages the gradients over the ranks, so clipping, the scaler's overflow check and the step see the same
    gradient on every rank; a bare module there would train each rank on its own slice, so it is refused."""
    from lpbert_core.runtime import distributed

    if distributed.world().size > 1 and not distributed.is_data_parallel(model):
        raise RuntimeError("optimizer_step in a multi-rank job needs the step's distributed.data_parallel wrapper: "
                           "a bare module's gradients would not be averaged over the ranks")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    else:
        loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(max_grad_norm))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()


def build_scheduler(optimizer, total_steps: int, warmup_fraction: float):
    """Linear warmup over `warmup_fraction` of all steps, then linear decay (transformers' scheduler).
    The fraction is turned into a step count here (the authors passed 0.05 as a step count: no warmup)."""
    from transformers import get_linear_schedule_with_warmup

    warmup_steps = int(round(warmup_fraction * total_steps))
    return get_linear_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, 1))


LR_SCHEDULES = ("linear", "plateau")


class PlateauSchedule:
    """The authors' pre-training schedule: ReduceLROnPlateau on the dev loss (mode min, factor 0.5, patience 0, torch's
    default threshold 1e-4 relative): the LR of every group halves after each epoch whose dev loss does not improve;
    no warmup. `step()` (called by optimizer_step after every update) does nothing; `epoch_end(dev_loss)` steps the
    plateau scheduler. Its state_dict is plain JSON (best, bad-epoch count, current LRs), saved in checkpoints."""

    def __init__(self, optimizer, factor: float = 0.5, patience: int = 0):
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # as LambdaLR sets it (the pre-training log reads it)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor,
                                                                  patience=patience)

    def step(self) -> None:
        pass

    def epoch_end(self, dev_loss: float | None) -> None:
        if dev_loss is not None:
            self.plateau.step(float(dev_loss))

    def state_dict(self) -> dict:
        return self.plateau.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.plateau.load_state_dict(state)


def build_epoch_scheduler(kind: str, optimizer, total_steps: int, warmup_fraction: float):
    """`linear`: build_scheduler (per-step warmup + linear decay; `epoch_end` is a no-op); `plateau`: PlateauSchedule
    (warmup must be 0: the authors had none)."""
    if kind == "linear":
        return build_scheduler(optimizer, total_steps, warmup_fraction)
    if kind == "plateau":
        if warmup_fraction:
            raise ValueError("lr_schedule plateau has no warmup: set warmup_fraction: 0")
        return PlateauSchedule(optimizer)
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")


def scheduler_epoch_end(scheduler, dev_loss: float | None) -> None:
    """Tell an epoch-level scheduler the epoch's dev loss (per-step schedulers ignore it)."""
    if isinstance(scheduler, PlateauSchedule):
        scheduler.epoch_end(dev_loss)


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False
) -> list[np.ndarray]:
    """Batches of indices with similar lengths, so dynamic padding pads little.

    Training (`shuffle=True`): shuffle, cut into chunks of 50 batches, sort each chunk by length, batch,
    then shuffle the batch order; randomness stays, padding mostly goes. Evaluation: one global sort."""
    lengths = np.asarray(lengths)
    n = len(lengths)
    if n == 0:
        return []
    if not shuffle:
        order = np.argsort(-lengths, kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        chunk = batch_size * 50
        batches = []
        for start in range(0, n, chunk):
            part = perm[start : start + chunk]
            part = part[np.argsort(-lengths[part], kind="stable")]
            batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        if drop_last and len(batches) > 1:
            batches = [b for b in batches if len(b) == batch_size] or batches
        order = rng.permutation(len(batches))
        batches = [batches[i] for i in order]
    return batches


BATCH_ORDERS = ("random", "length")
# Second SeedSequence word of the `random` batch order: its stream is independent of the other draws seeded with the
# same epoch seed (pre-training tasks and masks, fine-tuning negatives), which use np.random.default_rng(seed).
_RANDOM_ORDER_STREAM = 0xBA7C4


def random_batches(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """A seeded permutation of 0..n-1 cut into consecutive batches (the last one may be short): every example
    exactly once per epoch, batch composition independent of example length (standard BERT fine-tuning)."""
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), _RANDOM_ORDER_STREAM])).permutation(int(n))
    return [perm[i : i + batch_size] for i in range(0, int(n), batch_size)]


def training_batches(lengths: Sequence[int], batch_size: int, order: str, seed: int) -> list[np.ndarray]:
    """The batches of one training epoch. `random`: a seeded shuffle (the paper's reading); `length`:
    `length_sorted_batches(..., shuffle=True)` (less padding, but similar lengths share a batch, which changes which
    in-batch negatives meet and which pre-training tasks share a BatchNorm batch). Both give ceil(n / batch_size)
    batches and depend only on (lengths, batch_size, seed), so a run resumed mid-epoch rebuilds the same list."""
    if order == "random":
        return random_batches(len(lengths), batch_size, seed)
    if order == "length":
        return length_sorted_batches(lengths, batch_size, shuffle=True, seed=seed)
    raise ValueError(f"batch_order must be one of {BATCH_ORDERS}, got {order!r}")


def pad_batch(sequences: Iterable[Sequence[int]], pad_id: int, labels: bool = False) -> torch.Tensor:
    """Right-pad a list of id lists to the longest one in the batch (dynamic padding)."""
    sequences = list(sequences)
    width = max((len(s) for s in sequences), default=0)
    fill = -100 if labels else pad_id
    out = torch.full((len(sequences), width), fill, dtype=torch.long)
    for i, seq in enumerate(sequences):
        if len(seq):
            out[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


# ---------------------------------------------------------------- checkpoints (safetensors + JSON, no pickle)


def torch_threads(threads: int | None) -> None:
    """Use exactly the threads Snakemake granted the job (no oversubscription on small machines)."""
    if threads:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sync_device(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): timings around device work need it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
