"""Training loop: a killed run resumes to the same result; the same seed gives the same metrics twice (CPU);
the sampled-negative mode ("BatchSample = N") trains."""
import json

import pandas as pd
import pytest
import torch

from lpbert_core.tables import epochs_timed
from lpbert_core.finetune_loop import finetune, finetune_settings
from lpbert_core.kg import make_toy_kg

CFG = {"batch_size": 8, "epochs": 2, "max_length": 16, "early_stop_patience": 5, "seed": 3,
       "checkpoint_every_steps": 0, "eval_batch_size": 8}


def toy_kg(tok):
    words = "apple banana cherry dog eagle fox grape horse iris jaguar".split()
    ents = {f"e{i}": (w, "") for i, w in enumerate(words)}
    rels = {"r0": "likes", "r1": "eats"}
    E = list(ents)
    train = [(E[i], "r0", E[(i + 1) % 10]) for i in range(10)] + [(E[i], "r1", E[(i + 3) % 10]) for i in range(10)]
    return make_toy_kg(tok, ents, rels, {"train": train, "dev": [(E[0], "r0", E[5])], "test": [(E[1], "r1", E[7])]})


@pytest.fixture(scope="module")
def setup(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    return toy_kg(tok), tok, tiny_encoder_dir


def _run(setup, tmp, cfg=CFG, stop_after=None, ckpt=None):
    from transformers import AutoModel

    kg, tok, enc_dir = setup
    torch.manual_seed(123)  # encoder loading is deterministic anyway
    return finetune(kg, AutoModel.from_pretrained(enc_dir), tok, cfg, tmp / "model", tmp / "log.csv",
                    ckpt or (tmp / "ckpt"), torch.device("cpu"), {"dataset": "toy"}, log=lambda m: None,
                    stop_after_steps=stop_after)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_same_seed_same_result_and_resume(setup, tmp_path):
    """Run a uninterrupted; run c killed twice and restarted: identical logs and weights (so the same seed gives the
    same metrics twice, and a resumed run equals an uninterrupted one)."""
    _run(setup, tmp_path / "a")
    wa = _weights(tmp_path / "a/model")

    # killed mid-epoch 1 (after 2 of 3 steps), then restarted: same log and weights as uninterrupted
    killed = _run(setup, tmp_path / "c", stop_after=2)
    assert killed["killed"] and not (tmp_path / "c/model").exists()
    killed = _run(setup, tmp_path / "c", stop_after=2)  # killed again, in epoch 2
    assert killed["killed"]
    _run(setup, tmp_path / "c")
    timing = ["train_seconds", "dev_seconds", "attempt", "steps_timed"]
    la = pd.read_csv(tmp_path / "a/log.csv")
    lc = pd.read_csv(tmp_path / "c/log.csv")
    pd.testing.assert_frame_equal(la.drop(columns=timing), lc.drop(columns=timing))
    # which attempt finished each epoch and how many of its steps that attempt ran (for T/Ep of resumed jobs)
    assert la["attempt"].tolist() == [1, 1] and la["steps_timed"].tolist() == la["steps"].tolist()
    # c ran 2 + 2 steps in its first two attempts: the third (the one its benchmark would time) ran the rest
    steps = int(lc["steps"].sum())
    assert lc["attempt"].max() == 3
    assert epochs_timed(tmp_path / "c/log.csv") == pytest.approx((steps - 4) / lc["steps"][0])
    wc = _weights(tmp_path / "c/model")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    info = json.loads((tmp_path / "a/model/lpbert_run.json").read_text())
    assert info["pooling"] == "mean" and info["max_length"] == 16 and info["scorer"] == "cosine"


def test_sampled_negative_mode_trains(setup, tmp_path):
    res = _run(setup, tmp_path, cfg={**CFG, "epochs": 1, "in_batch_negatives": False})
    assert not res["killed"] and res["progress"]["log"][0]["loss"] > 0


def test_settings_merge():
    cfg = {"alpha": 0.5, "batch_size": 10, "per_dataset": {"umls": {"batch_size": 128, "alpha": 0.8}}}
    s = finetune_settings(cfg, "umls", {"in_batch_negatives": False})
    assert s["batch_size"] == 128 and s["alpha"] == 0.8 and s["in_batch_negatives"] is False
    assert finetune_settings(cfg, "WN18RR", {})["batch_size"] == 10
    # a run's own overrides come last (named alternatives such as the InfoNCE run)
    s = finetune_settings(cfg, "umls", {"in_batch_negatives": True, "finetune": {"loss": "infonce", "batch_size": 64}})
    assert s["loss"] == "infonce" and s["batch_size"] == 64 and s["alpha"] == 0.8


def test_checkpoint_of_other_settings_is_not_resumed(setup, tmp_path):
    messages = []
    killed = _run(setup, tmp_path / "a", cfg={**CFG, "epochs": 1}, stop_after=1)
    assert killed["killed"]
    from transformers import AutoModel

    kg, tok, enc_dir = setup
    res = finetune(kg, AutoModel.from_pretrained(enc_dir), tok, {**CFG, "epochs": 1, "lr_encoder": 1e-4},
                   tmp_path / "a/model", tmp_path / "a/log.csv", tmp_path / "a/ckpt", torch.device("cpu"),
                   {"dataset": "toy"}, log=messages.append)
    assert any("ignoring the checkpoint" in m for m in messages)
    assert res["progress"]["global_step"] == res["progress"]["log"][0]["steps"] == 5  # the whole epoch ran again
