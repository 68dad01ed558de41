"""One pre-training epoch's log row: the split loss L = mean EM-token CE + mean MLM-token CE, per-task losses, dev
accuracies and the learning rates of both parameter groups."""

from __future__ import annotations

TASKS = ("mem_head", "mem_tail", "mrm", "mlm")
LOG_COLUMNS = (
    ["epoch", "train_loss"] + [f"train_{t}" for t in TASKS]
    + ["dev_loss"] + [f"dev_{t}" for t in TASKS]
    + ["dev_mem_acc", "dev_mrm_acc", "lr", "lr_new", "seconds"]
)


def _split_losses(stats: dict) -> tuple[float | None, dict]:
    """Per-task mean token loss and the split loss L = mean EM-token CE + mean MLM-token CE."""
    per_task = {t: (stats[t]["loss_sum"] / stats[t]["count"] if stats.get(t, {}).get("count") else None) for t in TASKS}
    em = [stats[t] for t in ("mem_head", "mem_tail", "mrm") if t in stats]
    em_count = sum(s["count"] for s in em)
    total = None
    if em_count:
        total = sum(s["loss_sum"] for s in em) / em_count
    if per_task["mlm"] is not None:
        total = (total or 0.0) + per_task["mlm"]
    return total, per_task


def _accuracy(stats: dict, tasks: tuple[str, ...]) -> float | None:
    count = sum(stats.get(t, {}).get("count", 0) for t in tasks)
    return sum(stats.get(t, {}).get("correct", 0) for t in tasks) / count if count else None


def _log_row(epoch, train_stats, dev_stats, optimizer, seconds) -> dict:
    train_loss, train_tasks = _split_losses(train_stats)
    dev_loss, dev_tasks = _split_losses(dev_stats)
    row = {"epoch": epoch, "train_loss": train_loss}
    row.update({f"train_{t}": v for t, v in train_tasks.items()})
    row["dev_loss"] = dev_loss
    row.update({f"dev_{t}": v for t, v in dev_tasks.items()})
    row["dev_mem_acc"] = _accuracy(dev_stats, ("mem_head", "mem_tail"))
    row["dev_mrm_acc"] = _accuracy(dev_stats, ("mrm",))
    row["lr"], row["lr_new"] = _group_lrs(optimizer)
    row["seconds"] = round(seconds, 3)
    return row


def _group_lrs(optimizer) -> tuple[float, float]:
    """Current (encoder, head) learning rates: the groups were created with lr_encoder / lr_new as initial_lr."""
    groups = optimizer.param_groups
    low = min(groups, key=lambda g: g["initial_lr"])
    high = max(groups, key=lambda g: g["initial_lr"])
    return low["lr"], high["lr"]
