"""tools/bench_gpu_step.py (issue #26 item 2, the device half) rehearsed on the CPU with a tiny encoder: it trains
through the loop's own pieces, and its records carry what the GPU call reports (step time; the epoch's steps and
scaled time). The kernel share needs CUDA events and is only written on a GPU."""

from __future__ import annotations

import torch
from conftest import load_script, make_toy_kg, paper_section


def test_profile_and_epoch_records_on_the_cpu(tiny_encoder_dir):
    from transformers import AutoModel, AutoTokenizer

    from lpbert_core.config.settings import FinetuneSettings

    bench = load_script("tools/bench_gpu_step.py", "bench_gpu_step")
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    words = "apple banana cherry dog eagle fox grape horse".split()
    entities = {f"e{i}": (w, "") for i, w in enumerate(words)}
    train = [(f"e{i}", "r0", f"e{(i + 1) % 8}") for i in range(8)] + [(f"e{i}", "r1", f"e{(i + 3) % 8}") for i in range(8)]
    kg = make_toy_kg(tok, entities, {"r0": "likes", "r1": "eats"}, {"train": train, "dev": train[:2], "test": train[:2]})
    cfg = FinetuneSettings.from_mapping(paper_section("finetune", batch_size=4, max_length=16))
    trainer = bench.Trainer(kg, cfg, torch.device("cpu"), AutoModel.from_pretrained(tiny_encoder_dir))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    profile = bench.profile_case(trainer, warmup=1, steps=2)
    assert profile["steps"] == 2 and profile["step_ms"] > 0 and "kernel_share" not in profile
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the steps trained the model
    epoch = bench.epoch_case(trainer, steps=3)
    trainer.close()
    assert epoch["steps_per_epoch"] == 8 == len(trainer.batches)  # 32 rows with inverses, batch 4
    assert epoch["steps_timed"] == 3 and not epoch["epoch_measured_whole"]
    assert abs(epoch["epoch_s"] - epoch["step_ms"] * 8 / 1e3) < 0.2
