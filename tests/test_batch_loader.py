"""lpbert_core.runtime.batch_loader: DataLoader workers and the epoch-ahead sample builder change no number.

On a CPU device the loops use no workers (loader_workers); these tests force the GPU path's workers and epoch-ahead
thread on the CPU and compare with the inline path: the same batches in the same order, and a whole pre-training run
and a cross-encoder run bit-identical (log and weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpbert_core.runtime import batch_loader
from lpbert_core.runtime.batch_loader import EpochAhead


def _make(idx):
    rows = np.asarray(idx)
    return {"ids": torch.as_tensor(rows * 3), "n": int(len(rows))}


def test_worker_batches_equal_inline_batches_in_order():
    items = [np.arange(i, i + 1 + i % 3) for i in range(9)]
    inline = list(batch_loader.batch_loader(_make, items, torch.device("cpu")))
    workers = list(batch_loader.batch_loader(_make, items, torch.device("cpu"), workers=2))
    assert len(inline) == len(workers) == 9
    for a, b in zip(inline, workers):
        assert a["n"] == b["n"] and torch.equal(a["ids"], b["ids"])


def test_a_worker_error_reaches_the_training_process():
    def broken(idx):
        raise ValueError(f"bad batch {idx}")

    with pytest.raises(ValueError, match="bad batch"):
        list(batch_loader.batch_loader(broken, [1, 2], torch.device("cpu"), workers=1))


def test_loader_workers_only_on_a_gpu():
    assert batch_loader.loader_workers(torch.device("cpu")) == 0
    assert batch_loader.loader_workers(torch.device("cuda")) == batch_loader.GPU_WORKERS


def test_epoch_ahead_builds_the_next_epoch_in_the_background():
    built = []

    def build(epoch):
        built.append(epoch)
        return np.random.default_rng(epoch).random(3)

    ahead = EpochAhead(build, last_epoch=3, ahead=True)
    try:
        first = ahead.get(1)
        second = ahead.get(2)  # built by the thread while epoch 1 "trained"
        third = ahead.get(3)
    finally:
        ahead.close()
    assert sorted(built) == [1, 2, 3]  # epoch 4 is past the last: never built
    for epoch, got in ((1, first), (2, second), (3, third)):
        assert np.array_equal(got, np.random.default_rng(epoch).random(3))
    inline = EpochAhead(build, last_epoch=3, ahead=False)
    assert np.array_equal(inline.get(2), second)


@pytest.fixture
def gpu_style_loading(monkeypatch):
    """The loops' GPU path on the CPU: 2 loader workers and the epoch-ahead thread."""
    import lpbert_core.pretrain.pretrain_loop as pretrain_loop

    monkeypatch.setattr(batch_loader, "loader_workers", lambda device: 2)
    monkeypatch.setattr(pretrain_loop, "loader_workers", lambda device: 2)


def _pretrain(encoder, kg, folder):
    from test_pretrain_loop import settings, weights

    from lpbert_core.pretrain.pretrain_loop import train

    rows = train(kg, settings(encoder), folder / "model", folder / "ckpt", folder / "log.csv")
    return rows, weights(folder / "model")


def _without_timing(rows):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


def test_pretraining_with_workers_and_epoch_ahead_is_bit_identical(tiny_encoder_dir, tmp_path, request):
    kg = _pretrain_kg()
    inline_rows, inline_weights = _pretrain(tiny_encoder_dir, kg, tmp_path / "inline")
    request.getfixturevalue("gpu_style_loading")
    rows, weights = _pretrain(tiny_encoder_dir, kg, tmp_path / "workers")
    assert len(rows) == 2 and _without_timing(rows) == _without_timing(inline_rows)
    assert inline_weights.keys() == weights.keys()
    assert all(torch.equal(inline_weights[k], weights[k]) for k in weights)


def _pretrain_kg():
    from test_pretrain_loop import toy_pretrain_kg

    return toy_pretrain_kg()


def test_cross_encoder_with_workers_is_bit_identical(tiny_encoder_dir, tmp_path, request):
    import pandas as pd
    from test_cross_encoder import _cfg, _encoder, _kg
    from transformers import AutoTokenizer

    from lpbert_core.baselines.cross_encoder_loop import train_cross_encoder

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    kg, cpu = _kg(tok), torch.device("cpu")

    def run(name):
        out = train_cross_encoder(kg, _encoder(tiny_encoder_dir), tok, _cfg(), tmp_path / name / "model",
                                  tmp_path / name / "log.csv", tmp_path / name / "ckpt", cpu, log=lambda s: None)
        return out["model"].state_dict(), pd.read_csv(tmp_path / name / "log.csv")

    inline_state, inline_log = run("inline")
    request.getfixturevalue("gpu_style_loading")
    state, log = run("workers")
    timing = [c for c in log.columns if c.endswith("seconds")]
    pd.testing.assert_frame_equal(log.drop(columns=timing), inline_log.drop(columns=timing))
    assert all(torch.equal(state[k], inline_state[k]) for k in state)
