"""Pre-training loop: output folder, log, early stop, and exact resume after a kill (CPU, tiny encoder)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import paper_section
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from lpbert_core.model.encoders import load_tokenizer
from conftest import make_toy_kg
from lpbert_core.pretrain.pretrain_loop import LOG_COLUMNS, PICKLE_SUFFIXES, train

WORDS = ["river", "mountain", "city", "forest", "desert", "island", "valley", "lake", "ocean", "plain"]


@pytest.fixture(scope="module")
def kg():
    return toy_pretrain_kg()


def toy_pretrain_kg():
    """Ten places, three relations (also built by tests/test_batch_loader.py)."""
    tok = load_tokenizer("minilm")
    entities = {f"e{i}": (w, f"a {w} in region {i % 3}") for i, w in enumerate(WORDS)}
    relations = {"near": "located near", "part": "is part of", "above": "lies above"}
    rels = list(relations)
    train = [(f"e{i}", rels[i % 3], f"e{(i * 3 + 1) % 10}") for i in range(10)]
    train += [(f"e{i}", rels[(i + 1) % 3], f"e{(i + 4) % 10}") for i in range(10)]
    return make_toy_kg(tok, entities, relations, {"train": train, "dev": train[:6]})


def settings(encoder, **extra):
    return paper_section("pretrain", **{"variant": "mem-mrm-mlm", "encoder_key": "tiny", "encoder_source": encoder, "max_length": 24, "batch_size": 4,
                                        "epochs": 2, "early_stop_patience": 3, "seed": 7, "threads": 1,
                                        "progress_bar": False, "lr_encoder": 1e-3, "lr_new": 3e-3, **extra})


def read_log(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def test_none_saves_initial_weights(tiny_encoder_dir, kg, tmp_path):
    rows = train(kg, settings(tiny_encoder_dir, variant="none"), tmp_path / "model", tmp_path / "ckpt", tmp_path / "log.csv")
    assert rows == []
    with open(tmp_path / "log.csv") as handle:
        assert handle.read().strip() == ",".join(LOG_COLUMNS)
    saved, initial = weights(tmp_path / "model"), weights(tiny_encoder_dir)
    assert saved.keys() == initial.keys() and all(torch.equal(saved[k], initial[k]) for k in saved)


class Killed(RuntimeError):
    pass


def test_resume_after_kill_matches_uninterrupted(tiny_encoder_dir, kg, tmp_path):
    full = train(kg, settings(tiny_encoder_dir), tmp_path / "a" / "model", tmp_path / "a" / "ckpt",
                 tmp_path / "a" / "log.csv")
    assert [r["epoch"] for r in full] == [1, 2]
    assert not (tmp_path / "a" / "ckpt").exists()  # removed after success (keep_checkpoint false)

    def kill_in_epoch_2(epoch, step):
        if epoch == 2 and step == 3:
            raise Killed

    out, ckpt, log_csv = tmp_path / "b" / "model", tmp_path / "b" / "ckpt", tmp_path / "b" / "log.csv"
    with pytest.raises(Killed):
        train(kg, settings(tiny_encoder_dir), out, ckpt, log_csv, step_hook=kill_in_epoch_2)
    assert (ckpt / "last" / "state.json").exists() and not out.exists() and not log_csv.exists()
    resumed = train(kg, settings(tiny_encoder_dir), out, ckpt, log_csv)
    assert resumed[-1]["dev_loss"] == full[-1]["dev_loss"]  # exact on CPU
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full]
    a, b = weights(tmp_path / "a" / "model"), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_output_folder_log_and_learning(tiny_encoder_dir, kg, tmp_path):
    cfg = settings(tiny_encoder_dir, epochs=6, keep_checkpoint=True, lr_new=1e-2)
    rows = train(kg, cfg, tmp_path / "model", tmp_path / "ckpt", tmp_path / "log.csv")
    files = [p.name for p in (tmp_path / "model").iterdir()]
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    AutoModel.from_pretrained(tmp_path / "model")
    logged = read_log(tmp_path / "log.csv")
    assert list(logged[0]) == LOG_COLUMNS and len(logged) == len(rows)
    # the toy dev set is part of train: the model must learn it (a tiny random encoder learns relations first)
    assert rows[-1]["dev_loss"] < 0.8 * rows[0]["dev_loss"]
    assert rows[-1]["dev_mrm_acc"] > rows[0]["dev_mrm_acc"]
    # the output is the best-dev-loss encoder, kept in the checkpoint folder
    best = min(rows, key=lambda r: r["dev_loss"])["epoch"]
    kept = load_file(str(tmp_path / "ckpt" / f"best-{best:03d}" / "model.safetensors"))
    out = weights(tmp_path / "model")
    assert all(torch.equal(out[k], kept["encoder." + k]) for k in out)


def test_early_stop(tiny_encoder_dir, kg, tmp_path):
    # zero learning rates and the LayerNorm head (BatchNorm's running statistics would still move): dev loss never
    # improves after epoch 1, so patience 1 stops after epoch 2
    cfg = settings(tiny_encoder_dir, variant="mem", epochs=5, early_stop_patience=1, lr_encoder=0.0, lr_new=0.0,
                   em_head_norm="layernorm")
    rows = train(kg, cfg, tmp_path / "model", tmp_path / "ckpt", tmp_path / "log.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["dev_mrm"] is None and rows[0]["dev_mlm"] is None  # tasks the variant does not train


@pytest.mark.parametrize("order", ["random", "length"])
def test_batch_order(tiny_encoder_dir, kg, tmp_path, monkeypatch, order):
    """Train batches follow `batch_order` (default random: a seeded shuffle, not length buckets); dev batches stay
    length-sorted."""
    import numpy as np

    import lpbert_core.pretrain.pretrain_loop as loop
    from lpbert_core.runtime.training import epoch_seed, length_sorted_batches, random_batches

    seen = []
    real = loop.training_batches

    def recording(lengths, *args, **kwargs):  # the train passes' batches (dev batches come from elsewhere)
        batches = real(lengths, *args, **kwargs)
        seen.append((list(lengths), [b.tolist() for b in batches]))
        return batches

    monkeypatch.setattr(loop, "training_batches", recording)
    extra = {} if order == "random" else {"batch_order": "length"}
    cfg = settings(tiny_encoder_dir, epochs=1, **extra)
    train(kg, cfg, tmp_path / "model", tmp_path / "ckpt", tmp_path / "log.csv")
    (lengths, batches), = seen
    seed = epoch_seed(7, 1)
    rand = [b.tolist() for b in random_batches(len(lengths), 4, seed)]
    length = [b.tolist() for b in length_sorted_batches(lengths, 4, True, seed)]
    assert batches == (rand if order == "random" else length) and rand != length
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))


def test_bad_batch_order_is_rejected(tiny_encoder_dir, kg, tmp_path):
    with pytest.raises(ValueError, match="batch_order"):
        train(kg, settings(tiny_encoder_dir, batch_order="sorted"), tmp_path / "m", tmp_path / "c", tmp_path / "l.csv")


# ------------------------------------------------------------------ authors'-code switches

def test_optimizer_switch_builds_adam_groups():
    from lpbert_core.runtime.training import build_optimizer

    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 2)})
    adamw = build_optimizer(model, "encoder.", 5e-5, 1e-4, 0.01)
    adam = build_optimizer(model, "encoder.", 1e-4, 1e-4, 0.0, kind="adam")
    assert type(adamw) is torch.optim.AdamW and type(adam) is torch.optim.Adam
    assert {g["lr"] for g in adam.param_groups} == {1e-4} and {g["weight_decay"] for g in adam.param_groups} == {0.0}
    assert sorted(g["lr"] for g in adamw.param_groups) == [5e-5, 5e-5, 1e-4, 1e-4]
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(model, "encoder.", 1e-4, 1e-4, kind="sgd")


def test_plateau_schedule_halves_and_round_trips():
    import json

    from lpbert_core.runtime.training import PlateauSchedule, build_epoch_scheduler, build_optimizer, scheduler_epoch_end

    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(3, 3)})
    opt = build_optimizer(model, "encoder.", 1e-4, 1e-4, 0.0, kind="adam")
    sched = build_epoch_scheduler("plateau", opt, 100, 0.0)
    for _ in range(5):
        sched.step()  # per optimizer step: nothing
    assert {g["lr"] for g in opt.param_groups} == {1e-4}
    for loss in (1.0, 0.9, 0.95):  # improve, improve, worse -> halve once (patience 0)
        scheduler_epoch_end(sched, loss)
    assert {g["lr"] for g in opt.param_groups} == {5e-5}
    state = json.loads(json.dumps(sched.state_dict(), default=float))  # as save_checkpoint writes it
    opt2 = build_optimizer(model, "encoder.", 1e-4, 1e-4, 0.0, kind="adam")
    sched2 = PlateauSchedule(opt2)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    scheduler_epoch_end(sched, 0.96)
    scheduler_epoch_end(sched2, 0.96)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups] == [2.5e-5] * 2
    with pytest.raises(ValueError, match="warmup"):
        build_epoch_scheduler("plateau", opt, 100, 0.05)


AUTHORS = {"optimizer": "adam", "lr_schedule": "plateau", "warmup_fraction": 0, "weight_decay": 0, "mlm_mask_token": "pad",
           "segment_separators": False, "em_head_norm": "layernorm"}


def test_authors_switches_resume_after_kill(tiny_encoder_dir, kg, tmp_path):
    """All pre-training switches at the code's values: trains, and a kill mid-epoch-3 resumes exactly (the plateau
    scheduler's state is in the checkpoint)."""
    cfg = settings(tiny_encoder_dir, epochs=3, lr_encoder=0.5, lr_new=0.5, **AUTHORS)  # big LR: dev loss worsens
    full = train(kg, cfg, tmp_path / "a" / "model", tmp_path / "a" / "ckpt", tmp_path / "a" / "log.csv")
    assert [r["epoch"] for r in full] == [1, 2, 3]

    def kill(epoch, step):
        if epoch == 3 and step == 2:
            raise Killed

    out, ckpt, log_csv = tmp_path / "b" / "model", tmp_path / "b" / "ckpt", tmp_path / "b" / "log.csv"
    with pytest.raises(Killed):
        train(kg, cfg, out, ckpt, log_csv, step_hook=kill)
    resumed = train(kg, cfg, out, ckpt, log_csv)
    assert [(r["train_loss"], r["dev_loss"], r["lr"]) for r in resumed] == [
        (r["train_loss"], r["dev_loss"], r["lr"]) for r in full]
    # the LR of each epoch: halved after every epoch whose dev loss did not improve on the best so far
    best, lr = float("inf"), 0.5
    for row in full:
        assert row["lr"] == row["lr_new"] == pytest.approx(lr)
        if row["dev_loss"] < best * (1 - 1e-4):
            best = row["dev_loss"]
        else:
            lr /= 2


def test_fingerprint_follows_the_settings():
    from lpbert_core.pretrain.pretrain_loop import _fingerprint

    from lpbert_core.config.settings import PretrainSettings

    base = PretrainSettings.from_mapping(paper_section("pretrain", variant="mem", encoder_key="minilm",
                                                       encoder_source="minilm"))
    assert _fingerprint(base.replace(threads=7, progress_bar=False)) == _fingerprint(base)  # result-neutral
    assert _fingerprint(base.replace(optimizer="adam")) != _fingerprint(base)