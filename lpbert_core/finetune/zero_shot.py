"""The zero-shot floor (`finetune.zero_shot: true`; issue #25): the initial encoder (a pre-training variant's output,
or the bare encoder for `pretrain: none`) written as the run's model without a training step, so the score rule ranks
it exactly as every fine-tuned run. A fine-tuned row at or below its floor has damaged the encoder more than it
taught it. With `dev_eval` one dev point at step 0 is logged (and its diagnostics with `dev_diagnostics`): the start
of every proxy trajectory. The floor scores by the cosine whatever `scorer` says (a `pair_linear` layer would be
untrained), and is never leaky (no label ever trained it).
"""

from __future__ import annotations

from pathlib import Path

from lpbert_core.runtime import distributed
from lpbert_core.runtime.atomic import atomic_dir, write_log_csv
from lpbert_core.finetune.dev_point import evaluate_dev
from lpbert_core.model.siamese import save_run_model


def write_zero_shot(model, tokenizer, kg, builder, cfg, loss_cfg, dev_rows, dev_known, device, head_ranking: str,
                    model_dir, log_csv, run_info: dict | None, log) -> dict:
    if model.scorer != "cosine":  # an untrained pair layer would score at random: the floor is the encoder's cosine
        log(f"zero-shot: scorer {model.scorer} replaced by the cosine (its layer would be untrained)")
        model.set_scorer("cosine")
    row = {"epoch": 0, "steps": 0, "global_step": 0}
    if cfg.dev_eval:
        dev = evaluate_dev(model, kg, builder, cfg, dev_rows, dev_known, loss_cfg, device, cfg.precision,
                           cfg.in_batch_negatives, cfg.seed, head_ranking, cfg.dev_diagnostics)
        m = dev["metrics"]
        row.update({"dev_mrr": m.get("mrr"), "dev_mr": m.get("mr"), "dev_hits@1": m.get("hits@1"),
                    "dev_hits@3": m.get("hits@3"), "dev_hits@10": m.get("hits@10"),
                    **{f"dev_{k}": v for k, v in dev["diagnostics"].items()}})
    log("zero-shot: no fine-tuning; " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in row.items()))
    if not distributed.is_main():
        return {"killed": False, "progress": None}
    info = dict(run_info or {})
    info.update({"max_length": cfg.max_length, "scorer": model.scorer, "zero_shot": True, "leaky": False,
                 "best_epoch": 0, "epochs_run": 0, "train_rows": 0, "seed": cfg.seed,
                 "eval_batch_size": cfg.eval_batch_size, "dev_head_ranking": head_ranking})
    with atomic_dir(Path(model_dir)) as tmp:
        save_run_model(model, tokenizer, tmp, info)
    write_log_csv(log_csv, [row])
    return {"killed": False, "progress": None, "info": info}
