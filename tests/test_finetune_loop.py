"""Training loop: a killed run resumes to the same result; the same seed gives the same metrics twice (CPU);
the sampled-negative mode ("BatchSample = N") trains; the batch order (random / length) and the batches a resumed run
continues with; self-negatives wired into the training step."""
import json

import numpy as np

import pandas as pd
import pytest
from conftest import paper_section, plain_loss
import torch

from lpbert_core.report.tables import epochs_timed
from lpbert_core.finetune.finetune_loop import finetune
from conftest import make_toy_kg

CFG = paper_section("finetune", batch_size=8, epochs=2, max_length=16, early_stop_patience=5, seed=3,
                    checkpoint_every_steps=0, eval_batch_size=8)


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


def _run(setup, tmp, cfg=CFG, stop_after=None, ckpt=None, prefetch=1):
    from transformers import AutoModel

    kg, tok, enc_dir = setup
    torch.manual_seed(123)  # encoder loading is deterministic anyway
    return finetune(kg, AutoModel.from_pretrained(enc_dir), tok, cfg, tmp / "model", tmp / "log.csv",
                    ckpt or (tmp / "ckpt"), torch.device("cpu"), {"dataset": "toy"}, log=lambda m: None,
                    stop_after_steps=stop_after, prefetch=prefetch, head_ranking="inverse_query")


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


def test_sampled_negative_mode_scores_one_unknown_negative_per_positive(setup, tmp_path):
    """"BatchSample = N": every row scores its positive tail and exactly one sampled entity, never a known train
    answer of the row (nor its own tail); the loss is the paper loss on those 2n pairs, and a run in this mode trains
    (the loss of its first epoch is below the loss of the untrained model on the same pairs)."""
    from lpbert_core.finetune.finetune_data import training_triples
    from lpbert_core.finetune.finetune_step import prepare_batch, prepared_step

    kg, model, builder, known = _step_setup(setup)
    rows = training_triples(kg, True, None, 0)
    cfg = plain_loss()
    rng = np.random.default_rng(5)
    for start in range(0, len(rows), 8):
        batch = rows[start:start + 8]
        prepared = prepare_batch(builder, batch, known, cfg, False, rng)
        n = len(batch)
        assert prepared.inputs.blocks == 2  # tails, then one negative per row
        assert prepared.labels.tolist() == [1.0] * n + [0.0] * n  # no draw was a known answer
        negatives = prepared.inputs.cands["input_ids"].shape[0]  # distinct candidate entities encoded
        assert negatives <= 2 * n
    with torch.no_grad():
        prepared = prepare_batch(builder, rows[:8], known, cfg, False, np.random.default_rng(5))
        start_loss = prepared_step(model, prepared, cfg, torch.device("cpu"), "fp32", False)["loss"].item()
    # the mapping of plain_loss() above, so that the run's loss and the untrained loss are the same function
    res = _run(setup, tmp_path, cfg={**CFG, "epochs": 2, "in_batch_negatives": False, "probability": "affine",
                                     "temperature": 0.05, "shift": 0.0})
    info = json.loads((tmp_path / "model/lpbert_run.json").read_text())
    assert not res["killed"] and info["in_batch_negatives"] is False
    assert res["progress"]["log"][-1]["loss"] < start_loss


def test_prefetch_changes_nothing_sampled_negatives_and_resume(setup, tmp_path):
    """Batches prepared ahead by the prefetch thread (the negatives drawn there, ahead of the step) give the same
    weights and logs as inline preparation, also when killed mid-epoch (the checkpoint stores the RNG state of the
    last finished step, not the prefetch thread's) and resumed."""
    cfg = {**CFG, "in_batch_negatives": False, "dev_eval": False}
    _run(setup, tmp_path / "inline", cfg=cfg, prefetch=0)
    _run(setup, tmp_path / "ahead", cfg=cfg, prefetch=2)
    assert _run(setup, tmp_path / "killed", cfg=cfg, stop_after=1, prefetch=2)["killed"]
    assert _run(setup, tmp_path / "killed", cfg=cfg, stop_after=3, prefetch=1)["killed"]
    _run(setup, tmp_path / "killed", cfg=cfg, prefetch=1)
    timing = ["train_seconds", "dev_seconds", "attempt", "steps_timed"]
    ref_log = pd.read_csv(tmp_path / "inline/log.csv").drop(columns=timing)
    ref = _weights(tmp_path / "inline/model")
    for run in ("ahead", "killed"):
        pd.testing.assert_frame_equal(ref_log, pd.read_csv(tmp_path / run / "log.csv").drop(columns=timing))
        got = _weights(tmp_path / run / "model")
        assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_settings_merge():
    """resolve: the section, then per_dataset, then the run's in_batch_negatives and finetune overrides, then the run
    instance's seed; unknown keys are refused."""
    from lpbert_core.errors import ConfigError
    from lpbert_core.config.resolve import resolve

    config = {"finetune": {**CFG, "alpha": 0.5, "batch_size": 10,
                           "per_dataset": {"umls": {"batch_size": 128, "alpha": 0.8}}},
              "runs": {"a": {"model": "lpbert", "pretrain": "none", "in_batch_negatives": False},
                       "b": {"model": "lpbert", "pretrain": "none", "in_batch_negatives": True,
                             "finetune": {"loss": "infonce", "batch_size": 64}, "seeds": [42, 7]},
                       "c": {"model": "lpbert", "pretrain": "none", "finetune": {"lr_head": 1e-3}}},
              "sources": {"umls": {}, "WN18RR": {}}}
    s = resolve(config, "finetune", "umls", "a")
    assert s.batch_size == 128 and s.alpha == 0.8 and s.in_batch_negatives is False
    assert resolve(config, "finetune", "WN18RR", "a").batch_size == 10
    # a run's own overrides come last (named alternatives such as the InfoNCE run)
    s = resolve(config, "finetune", "umls", "b")
    assert s.loss == "infonce" and s.batch_size == 64 and s.alpha == 0.8 and s.seed == 42
    assert resolve(config, "finetune", "umls", "b.s7").seed == 7
    with pytest.raises(ConfigError, match="unknown setting.*lr_head"):
        resolve(config, "finetune", "umls", "c")
    with pytest.raises(ConfigError, match="no source of that name"):
        resolve(config, "finetune", "umsl", "a")


def test_checkpoint_of_other_settings_is_not_resumed(setup, tmp_path):
    messages = []
    killed = _run(setup, tmp_path / "a", cfg={**CFG, "epochs": 1}, stop_after=1)
    assert killed["killed"]
    from transformers import AutoModel

    kg, tok, enc_dir = setup
    res = finetune(kg, AutoModel.from_pretrained(enc_dir), tok, {**CFG, "epochs": 1, "lr_encoder": 1e-4},
                   tmp_path / "a/model", tmp_path / "a/log.csv", tmp_path / "a/ckpt", torch.device("cpu"),
                   {"dataset": "toy"}, log=messages.append, head_ranking="inverse_query")
    assert any("ignoring the checkpoint" in m for m in messages)
    assert res["progress"]["global_step"] == res["progress"]["log"][0]["steps"] == 5  # the whole epoch ran again


# ------------------------------------------------------------------ batch order through the loop

def _record_batches(monkeypatch):
    import lpbert_core.finetune.finetune_step as loop  # the loop's FinetuneStep calls prepared_step from there

    seen = []
    real = loop.prepared_step

    def recording(model, prepared, *args, **kwargs):  # the batches steps ran (the prefetch may have made more)
        seen.append(np.array(prepared.rows))
        return real(model, prepared, *args, **kwargs)

    monkeypatch.setattr(loop, "prepared_step", recording)
    return seen


def test_batch_order_random_by_default_and_resume_continues_it(setup, tmp_path, monkeypatch):
    from lpbert_core.finetune.finetune_data import training_triples
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.runtime.training import epoch_seed, training_batches

    kg = setup[0]
    cfg = {**CFG, "dev_eval": False}
    seen = _record_batches(monkeypatch)
    _run(setup, tmp_path / "a", cfg=cfg)
    uninterrupted = list(seen)
    rows = training_triples(kg, True)
    builder = SequenceBuilder(kg, 16, 16)
    lengths = [builder.query_length(int(h), int(r)) for h, r, _ in rows]
    for order in ("random", "length"):
        expected = [rows[b] for e in range(2) for b in training_batches(lengths, 8, order, epoch_seed(3, e))]
        same = len(expected) == len(uninterrupted) and all(
            np.array_equal(x, y) for x, y in zip(expected, uninterrupted))
        assert same == (order == "random")  # default: random batches, not the length buckets
    # every training row exactly once per epoch, a fresh order in epoch 2
    per_epoch = len(uninterrupted) // 2
    epochs = [np.concatenate(uninterrupted[i * per_epoch:(i + 1) * per_epoch]) for i in range(2)]
    for ep in epochs:
        assert sorted(map(tuple, ep.tolist())) == sorted(map(tuple, rows.tolist()))
    assert not np.array_equal(epochs[0], epochs[1])

    # killed after 2 steps of epoch 1, then after 4 more (in epoch 2), then finished: the same batches in order
    seen.clear()
    assert _run(setup, tmp_path / "b", cfg=cfg, stop_after=2)["killed"]
    assert _run(setup, tmp_path / "b", cfg=cfg, stop_after=4)["killed"]
    _run(setup, tmp_path / "b", cfg=cfg)
    assert len(seen) == len(uninterrupted) and all(np.array_equal(x, y) for x, y in zip(seen, uninterrupted))


def test_batch_order_length_uses_the_length_buckets(setup, tmp_path, monkeypatch):
    from lpbert_core.finetune.finetune_data import training_triples
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.runtime.training import epoch_seed, length_sorted_batches

    kg = setup[0]
    seen = _record_batches(monkeypatch)
    res = _run(setup, tmp_path, cfg={**CFG, "epochs": 1, "dev_eval": False, "batch_order": "length"})
    rows = training_triples(kg, True)
    builder = SequenceBuilder(kg, 16, 16)
    lengths = [builder.query_length(int(h), int(r)) for h, r, _ in rows]
    old = [rows[b] for b in length_sorted_batches(lengths, 8, shuffle=True, seed=epoch_seed(3, 0))]
    assert len(seen) == len(old) and all(np.array_equal(x, y) for x, y in zip(seen, old))
    info = json.loads((tmp_path / "model/lpbert_run.json").read_text())
    assert info["batch_order"] == "length" and info["self_negatives"] is False and not res["killed"]


def test_bad_batch_order_is_rejected(setup, tmp_path):
    with pytest.raises(ValueError, match="batch_order"):
        _run(setup, tmp_path, cfg={**CFG, "batch_order": "sorted"})


# ------------------------------------------------------------------ self-negatives in the training step

def _step_setup(setup):
    from transformers import AutoModel

    from lpbert_core.graph.known_answers import train_known_answers
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.model.siamese import SiameseModel

    kg, _, enc_dir = setup
    model = SiameseModel(AutoModel.from_pretrained(enc_dir)).eval()  # no dropout: encodings are repeatable
    return kg, model, SequenceBuilder(kg, 16, 16), train_known_answers(kg)


def _encode(model, builder, rows=None, entities=None):
    from lpbert_core.model.sequences import collate_pairs

    pad = builder.kg.special.pad
    if rows is not None:
        batch = collate_pairs([builder.query(int(h), int(r)) for h, r, _ in rows], pad)
    else:
        batch = collate_pairs([(s, [0] * len(s)) for s in (builder.candidate(int(e)) for e in entities)], pad)
    with torch.no_grad():
        return model.encode(**batch).float()


@pytest.mark.parametrize("loss", ["focal_distance", "infonce"])
def test_self_negatives_in_batch_step(setup, loss):
    from lpbert_core.finetune.finetune_data import label_matrix
    from lpbert_core.finetune.finetune_step import training_step
    from lpbert_core.finetune.finetune_loss import batch_loss
    from lpbert_core.model.siamese import cosine_matrix

    kg, model, builder, known = _step_setup(setup)
    # tails e1 e5 e6: anchors e0 and e2 get an extra column; row 2's anchor e5 is already a column (row 1's tail)
    rows = np.array([[0, 0, 1], [2, 1, 5], [5, 0, 6]])
    cfg = plain_loss(loss=loss, self_negatives=True)
    with torch.no_grad():
        got = training_step(model, builder, rows, known, cfg, torch.device("cpu"), "fp32", True)["loss"]
        q, c = _encode(model, builder, rows=rows), _encode(model, builder, entities=rows[:, 2])
        a = _encode(model, builder, entities=rows[:, 0])
        y = label_matrix(rows, known)
        want = batch_loss(q, c, y, cfg, anchors=a, self_mask=[True, True, False])["loss"]
        plain = batch_loss(q, c, y, cfg)["loss"]
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert got.item() != pytest.approx(plain.item(), rel=1e-4)  # the two extra columns count
    # row 2's anchor e5 is column 1 already, scored once: the same value as the extra column would have
    assert cosine_matrix(q[2:], a[2:]).item() == pytest.approx(cosine_matrix(q[2:], c[1:2]).item(), abs=1e-5)


def test_self_negatives_sampled_mode_step_and_run(setup, tmp_path):
    from lpbert_core.finetune.finetune_data import sample_negative_tails
    from lpbert_core.finetune.finetune_step import training_step
    from lpbert_core.finetune.finetune_loss import pair_loss
    from lpbert_core.model.siamese import pair_cosine, pair_distance

    kg, model, builder, known = _step_setup(setup)
    rows = np.array([[0, 0, 1], [2, 1, 5], [5, 0, 6]])
    cfg = plain_loss(self_negatives=True)
    with torch.no_grad():
        got = training_step(model, builder, rows, known, cfg, torch.device("cpu"), "fp32", False,
                            np.random.default_rng(0))["loss"]
        negs = sample_negative_tails(rows, known, kg.num_entities, np.random.default_rng(0))
        q = _encode(model, builder, rows=rows)
        pos, neg = _encode(model, builder, entities=rows[:, 2]), _encode(model, builder, entities=negs)
        a = _encode(model, builder, entities=rows[:, 0])
        keep = (negs != rows[:, 0])  # no anchor is a known answer here; a sampled negative equal to it is scored once
        qs = [q, q, q[keep]]
        cs = [pos, neg, a[keep]]
        labels = torch.cat([torch.ones(3), torch.zeros(3), torch.zeros(int(keep.sum()))])
        want = pair_loss(torch.cat([pair_cosine(x, y) for x, y in zip(qs, cs)]),
                         torch.cat([pair_distance(x, y) for x, y in zip(qs, cs)]), labels, cfg)["loss"]
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    # and a whole run in that mode trains
    res = _run(setup, tmp_path, cfg={**CFG, "epochs": 1, "in_batch_negatives": False, "self_negatives": True})
    assert not res["killed"] and res["progress"]["log"][0]["loss"] > 0


# ------------------------------------------------------------------ shift: initial_mean

def test_shift_initial_mean_is_measured_recorded_and_resumed(setup, tmp_path):
    """The shift is the mean in-batch cosine of the first training batches (eval mode, before any step); it is in
    lpbert_run.json and every train_log row, the learnable bias starts from it, and a resumed run keeps it."""
    from transformers import AutoModel

    from lpbert_core.finetune.step_measures import measure_initial_shift
    from lpbert_core.finetune.finetune_data import training_triples
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.model.siamese import SiameseModel
    from lpbert_core.runtime.training import epoch_seed, training_batches

    kg, tok, enc_dir = setup
    cfg = {**CFG, "probability": "sigmoid", "shift": "initial_mean", "temperature": 0.1}
    _run(setup, tmp_path / "a", cfg=cfg)
    info = json.loads((tmp_path / "a/model/lpbert_run.json").read_text())
    measured = info["initial_shift"]
    assert info["loss"]["shift"] == measured["shift"] and -1 <= measured["shift"] <= 1
    assert measured["batches"] == 5 and measured["pairs"] == 5 * 8 * 8  # 20 train rows + inverses, batch 8
    log = pd.read_csv(tmp_path / "a/log.csv")
    assert log["shift"].tolist() == pytest.approx([measured["shift"]] * 2)

    # by hand: the same batches through the initial encoder
    builder = SequenceBuilder(kg, 16, 16)
    rows = training_triples(kg, True, None, 3)
    lengths = [builder.query_length(int(h), int(r)) for h, r, _ in rows]
    model = SiameseModel(AutoModel.from_pretrained(enc_dir), "mean")
    by_hand = measure_initial_shift(model, builder, rows, training_batches(lengths, 8, "random", epoch_seed(3, 0)),
                                    torch.device("cpu"), "fp32")
    assert by_hand["shift"] == pytest.approx(measured["shift"], abs=1e-6)
    assert model.training  # the mode it had is restored

    # killed and resumed: same shift, same log and weights
    assert _run(setup, tmp_path / "c", cfg=cfg, stop_after=4)["killed"]
    _run(setup, tmp_path / "c", cfg=cfg)
    lc = pd.read_csv(tmp_path / "c/log.csv")
    timing = ["train_seconds", "dev_seconds", "attempt", "steps_timed"]
    pd.testing.assert_frame_equal(log.drop(columns=timing), lc.drop(columns=timing))

    # learnable: the bias starts at -shift / temperature
    res = _run(setup, tmp_path / "l", cfg={**cfg, "probability": "learnable", "epochs": 1, "lr_new": 0.0})
    shift = res["info"]["initial_shift"]["shift"]
    info_l = json.loads((tmp_path / "l/model/lpbert_run.json").read_text())
    assert info_l["new_layers"]["prob_bias"] == pytest.approx(-shift / 0.1, rel=1e-4)


def test_numeric_shift_still_works(setup, tmp_path):
    res = _run(setup, tmp_path, cfg={**CFG, "epochs": 1, "probability": "learnable", "shift": 0.2,
                                     "temperature": 0.1, "lr_new": 0.0})
    info = json.loads((tmp_path / "model/lpbert_run.json").read_text())
    assert "initial_shift" not in info and info["loss"]["shift"] == 0.2
    assert info["new_layers"]["prob_bias"] == pytest.approx(-2.0, rel=1e-5)
    assert "shift" not in pd.read_csv(tmp_path / "log.csv").columns and not res["killed"]
