"""Fine-tuning under a stop signal and timed checkpoints (issue #26 items 5-6): a SIGTERM-style request mid-epoch writes the checkpoint and stops; the rerun equals an uninterrupted run."""
import json

import pandas as pd
import pytest
import torch

from lpbert_core.runtime import preemption
from lpbert_core.finetune import finetune_loop as loop
from test_finetune_loop import CFG, _run, _weights, setup  # noqa: F401


def test_finetune_stops_on_a_signal_mid_epoch_and_resumes_exactly(setup, tmp_path, monkeypatch):
    _run(setup, tmp_path / "a")
    real, steps = loop.optimizer_step, [0]

    def step_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        steps[0] += 1
        if steps[0] == 7:  # epoch 2, step 2 (5 steps an epoch: 40 rows with inverses, batch 8)
            preemption.request()

    monkeypatch.setattr(loop, "optimizer_step", step_then_signal)
    try:
        with pytest.raises(preemption.Preempted):
            _run(setup, tmp_path / "b")
    finally:
        preemption.clear()
    monkeypatch.setattr(loop, "optimizer_step", real)
    progress = json.loads((tmp_path / "b/ckpt/last/state.json").read_text())["progress"]
    assert progress["epoch"] == 1 and progress["step_in_epoch"] == 2
    _run(setup, tmp_path / "b")
    timing = ["train_seconds", "dev_seconds", "attempt", "steps_timed"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a/log.csv").drop(columns=timing),
                                  pd.read_csv(tmp_path / "b/log.csv").drop(columns=timing))
    wa, wb = _weights(tmp_path / "a/model"), _weights(tmp_path / "b/model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_finetune_timed_checkpoints_change_nothing(setup, tmp_path):
    _run(setup, tmp_path / "a")
    messages = []
    from transformers import AutoModel
    kg, tok, enc_dir = setup
    loop.finetune(kg, AutoModel.from_pretrained(enc_dir), tok, {**CFG, "checkpoint_every_minutes": 1e-9},
                  tmp_path / "t/model", tmp_path / "t/log.csv", tmp_path / "t/ckpt", torch.device("cpu"),
                  {"dataset": "toy"}, log=messages.append, head_ranking="inverse_query")
    wa, wt = _weights(tmp_path / "a/model"), _weights(tmp_path / "t/model")
    assert all(torch.equal(wa[k], wt[k]) for k in wa)
    summary = next(m for m in messages if "checkpoint_writes=" in m)
    # 5 + 5 mid-epoch, 2 epoch ends, and the one best-epoch copy (the shared epoch loop counts every weights write)
    assert "checkpoint_writes=13 " in summary


def test_a_checkpoint_of_another_loop_layout_is_not_resumed(setup, tmp_path, monkeypatch):
    """The epoch loop's checkpoint layout is part of the fingerprint: a checkpoint written under another layout (the
    former per-stage loops) is discarded with a warning, never resumed into the wrong keys."""
    from transformers import AutoModel

    assert _run(setup, tmp_path / "a", stop_after=1)["killed"]
    monkeypatch.setattr(loop, "LAYOUT", "an-older-layout")
    kg, tok, enc_dir = setup
    messages = []
    res = loop.finetune(kg, AutoModel.from_pretrained(enc_dir), tok, CFG, tmp_path / "a/model",
                        tmp_path / "a/log.csv", tmp_path / "a/ckpt", torch.device("cpu"), {"dataset": "toy"},
                        log=messages.append, head_ranking="inverse_query", stop_after_steps=1)
    assert any("ignoring the checkpoint" in m for m in messages)
    assert res["killed"] and res["progress"]["attempt"] == 1 and res["progress"]["global_step"] == 1  # a fresh start
