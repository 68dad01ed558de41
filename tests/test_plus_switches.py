"""lpbert-plus switches (issue #13 item 3), each with its exact logits / labels: InfoNCE's additive margin and learnable
temperature, graph-neighbourhood hard negatives, pre-batch negatives, all-entity negatives (small graphs); and runs
with them that resume to the same result as an uninterrupted one."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import plain_loss
from lpbert_core.finetune.extra_negatives import (Neighbourhood, PreBatchBank, bank_entities, column_labels,
                                         hard_negative_columns, pre_batch_valid, sample_hard_negatives)
from lpbert_core.graph.known_answers import KnownAnswers
from lpbert_core.finetune.finetune_loss import ScoreColumns, column_loss, infonce_loss, masked_loss

from test_finetune_loop import CFG, _encode, _run, _step_setup, toy_kg


@pytest.fixture(scope="module")
def setup(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    return toy_kg(tok), tok, tiny_encoder_dir


# ------------------------------------------------------------------ InfoNCE margin and temperature

def test_infonce_margin_is_subtracted_from_the_positive_only():
    cos = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.0, 0.5, 0.7]])
    labels = torch.eye(3)
    labels[0, 2] = 1.0  # row 0: column 2 is another known answer, out of the denominator
    cfg = plain_loss(loss="infonce", infonce_temperature=0.1, infonce_margin=0.05)
    got = infonce_loss(cos, labels, cfg).item()
    want = []
    for i in range(3):
        logit = {j: (cos[i, j].item() - (0.05 if j == i else 0.0)) / 0.1 for j in range(3)
                 if j == i or labels[i, j] == 0}
        want.append(-logit[i] + math.log(sum(math.exp(x) for x in logit.values())))
    assert got == pytest.approx(np.mean(want), rel=1e-5)  # float32 logits
    # margin 0 and a fixed temperature are exactly the plain InfoNCE (scores / temperature)
    plain = infonce_loss(cos, labels, plain_loss(loss="infonce", infonce_temperature=0.1)).item()
    assert plain < got


def test_learnable_temperature_starts_at_one_over_tau_is_capped_and_trained():
    from lpbert_core.model.siamese import MAX_INVERSE_TEMPERATURE, SiameseModel
    from transformers import BertConfig, BertModel

    model = SiameseModel(BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=8)))
    assert model.inverse_temperature() is None and "infonce_temperature" not in model.new_layer_state()
    model.set_learnable_temperature(0.05)
    assert model.inverse_temperature().item() == pytest.approx(20.0, rel=1e-6)
    assert model.new_layer_state()["infonce_temperature"] == pytest.approx(0.05, rel=1e-6)
    cos = torch.tensor([[0.9, 0.2], [0.3, 0.8]])
    cfg = plain_loss(loss="infonce", infonce_temperature=0.05)
    inv_t = model.inverse_temperature()
    got = infonce_loss(cos, torch.eye(2), cfg, inv_t)
    assert got.item() == pytest.approx(F.cross_entropy(cos * 20.0, torch.arange(2)).item(), rel=1e-5)
    got.backward()
    assert model.log_inv_t.grad is not None and model.log_inv_t.grad.item() != 0.0
    with torch.no_grad():
        model.log_inv_t.fill_(math.log(1e4))
    assert model.inverse_temperature().item() == MAX_INVERSE_TEMPERATURE


# ------------------------------------------------------------------ hard negatives from the graph neighbourhood

def _graph():
    # 0 - 1, 0 - 2, 0 - 3 (relation 0), 2 - 4 (relation 1); entity 5 isolated
    train = np.array([[0, 0, 1], [0, 0, 2], [3, 0, 0], [2, 1, 4]])
    return train, Neighbourhood(train, 6)


def test_neighbourhood_is_undirected_and_unique():
    train, hood = _graph()
    assert sorted(hood.neighbours(0).tolist()) == [1, 2, 3]
    assert hood.neighbours(4).tolist() == [2] and hood.neighbours(5).tolist() == []
    assert hood.degree([0, 2, 5]).tolist() == [3, 2, 0]


def test_hard_negatives_are_neighbours_never_answers_or_the_anchor():
    train, hood = _graph()
    known = KnownAnswers(train, 6, 2)
    # row (0, r0, 1): answers of (0, r0) are 1 and 2 -> only neighbour 3 is left; row (4, r1, 2): neighbour 2 is
    # the tail -> fallback; row (5, ...): isolated -> fallback
    batch = np.array([[0, 0, 1], [4, 1, 2], [5, 0, 0]])
    drawn, fallbacks = sample_hard_negatives(batch, known, hood, 4, np.random.default_rng(0))
    assert drawn.shape == (3, 4)
    assert drawn[0].tolist() == [3, 3, 3, 3]
    for i, (h, r, t) in enumerate(batch):
        assert not known.contains(np.full(4, h), np.full(4, r), drawn[i]).any()
        assert (drawn[i] != h).all() and (drawn[i] != t).all()
    assert fallbacks == 8  # rows 1 and 2: 4 draws each from the uniform fallback
    again, _ = sample_hard_negatives(batch, known, hood, 4, np.random.default_rng(0))
    assert np.array_equal(drawn, again)  # the same generator state, the same draws


def test_hard_negative_columns_labels_and_validity():
    train, hood = _graph()
    known = KnownAnswers(train, 6, 2)
    batch = np.array([[0, 0, 1], [2, 1, 4]])
    hard = np.array([[3, 4], [0, 5]])  # row 0 drew 3 and 4, row 1 drew 0 and 5
    labels, valid = hard_negative_columns(batch, known, hard)
    # columns block-major: [row0's 1st, row1's 1st, row0's 2nd, row1's 2nd] = [3, 0, 4, 5]
    assert labels.tolist() == [[False, False, False, False], [False, False, True, False]]  # (2, r1) answers 4
    assert valid.tolist() == [[True, True, False, True]] * 2  # 4 is a tail of the batch: already a column
    assert column_labels(batch, known, [1, 2, 4]).tolist() == [[True, True, False], [False, False, True]]


def test_hard_negative_training_step_scores_the_extra_columns(setup):
    from lpbert_core.finetune.finetune_data import label_matrix
    from lpbert_core.finetune.finetune_step import prepare_batch, prepared_step

    kg, model, builder, known = _step_setup(setup)
    rows = np.array([[0, 0, 1], [2, 1, 5], [5, 0, 6]])
    hood = Neighbourhood(kg.triples["train"], kg.num_entities)
    cfg = plain_loss(loss="infonce", infonce_temperature=0.1)
    with torch.no_grad():
        prepared = prepare_batch(builder, rows, known, cfg, True, np.random.default_rng(7), hood=hood, hard=2)
        got = prepared_step(model, prepared, cfg, torch.device("cpu"), "fp32", True)["loss"]
        drawn, _ = sample_hard_negatives(rows, known, hood, 2, np.random.default_rng(7))
        q = _encode(model, builder, rows=rows)
        cols = np.concatenate([rows[:, 2], drawn.T.reshape(-1)])
        c = _encode(model, builder, entities=cols)
        h_labels, h_valid = hard_negative_columns(rows, known, drawn)
        labels = torch.cat([label_matrix(rows, known), torch.from_numpy(h_labels).float()], 1)
        valid = torch.cat([torch.ones(3, 3, dtype=torch.bool), torch.from_numpy(h_valid)], 1)
        cos = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T
        logits = (cos / 0.1).masked_fill(~valid | ((labels > 0.5) & ~torch.eye(3, 9, dtype=torch.bool)), -math.inf)
        want = F.cross_entropy(logits, torch.arange(3))
    assert prepared.inputs.blocks == 3  # tails + 2 blocks of hard negatives, aligned with the rows
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


# ------------------------------------------------------------------ pre-batch negatives

def test_pre_batch_bank_keeps_the_last_batches_and_round_trips_exactly():
    bank = PreBatchBank(2)
    vs = [torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    assert bank.vectors() is None
    for v in vs:
        bank.push(v)
    assert len(bank) == 2 and torch.equal(bank.vectors(), torch.cat(vs[1:]))
    other = PreBatchBank(2)
    other.load(json.loads(json.dumps(bank.state())), "cpu")
    assert torch.equal(other.vectors(), bank.vectors())
    rows = np.array([[0, 0, 1], [1, 0, 2], [2, 0, 3], [3, 0, 4]])
    batches = [np.array([0, 1]), np.array([2]), np.array([3])]
    assert bank_entities(rows, batches, 0, 2).tolist() == []
    assert bank_entities(rows, batches, 2, 2).tolist() == [1, 2, 3]  # the tails of batches 0 and 1
    assert bank_entities(rows, batches, 3, 2).tolist() == [3, 4]
    assert bank_entities(rows, batches, 3, 1).tolist() == [4]


def test_pre_batch_columns_mask_answers_and_weight_the_logits():
    train, _ = _graph()
    known = KnownAnswers(train, 6, 2)
    batch = np.array([[0, 0, 1], [2, 1, 4]])
    valid = pre_batch_valid(batch, known, np.array([2, 1, 3, 4]))
    # row 0: 2 is a known answer, 1 is its own tail; row 1: 4 is its tail (and answer)
    assert valid.tolist() == [[False, False, True, True], [True, True, True, False]]

    cos = torch.tensor([[0.8, 0.1], [0.2, 0.6]])
    bank = torch.tensor([[0.5, 0.3, 0.4, 0.0], [0.1, 0.2, 0.3, 0.9]])
    cfg = plain_loss(loss="infonce", infonce_temperature=0.1, pre_batch_weight=0.5)
    blocks = [ScoreColumns(cos, None, torch.eye(2), torch.ones(2, 2, dtype=torch.bool)),
              ScoreColumns(bank, None, torch.zeros(2, 4), torch.from_numpy(valid), 0.5)]
    got = column_loss(blocks, cfg)["loss"].item()
    want = []
    for i in range(2):
        logits = [cos[i, j].item() / 0.1 for j in range(2)]
        logits += [bank[i, j].item() / 0.1 * 0.5 for j in range(4) if valid[i, j]]
        want.append(-cos[i, i].item() / 0.1 + math.log(sum(math.exp(x) for x in logits)))
    assert got == pytest.approx(np.mean(want), rel=1e-5)  # float32 logits
    # the paper loss counts the valid bank pairs as more negative pairs (no weight)
    focal_cfg = plain_loss()
    dist = torch.ones(2, 2)
    fblocks = [ScoreColumns(cos, dist, torch.eye(2), torch.ones(2, 2, dtype=torch.bool)),
               ScoreColumns(bank, torch.ones(2, 4), torch.zeros(2, 4), torch.from_numpy(valid), 0.5)]
    got_f = column_loss(fblocks, focal_cfg)["loss"].item()
    all_valid = torch.cat([torch.ones(2, 2, dtype=torch.bool), torch.from_numpy(valid)], 1)
    want_f = masked_loss(torch.cat([cos, bank], 1), torch.ones(2, 6), torch.cat([torch.eye(2), torch.zeros(2, 4)], 1),
                         all_valid, torch.arange(2), focal_cfg)["loss"].item()
    assert got_f == pytest.approx(want_f, rel=1e-7)


# ------------------------------------------------------------------ all-entity negatives

@pytest.mark.parametrize("loss", ["infonce", "focal_distance"])
def test_all_entity_step_scores_every_entity_labelled_by_known_answers(setup, loss):
    from lpbert_core.finetune.finetune_step import prepare_batch, prepared_step

    from lpbert_core.graph.known_answers import augment_inverse

    kg, model, builder, _ = _step_setup(setup)
    # (e0, likes) gets a second known answer, e3; row 2 is the dev triple (e0, likes, e5), not a known answer: its
    # own tail is its target all the same, e1 and e3 leave its denominator. Row 3 is an inverse row (e3, likes^-1, e2):
    # its answers are e2 (e2 likes e3) and e0 (the added triple)
    train = np.concatenate([kg.triples["train"], [[0, 0, 3]]])
    known = KnownAnswers(augment_inverse(train, kg.num_relations), kg.num_entities, 2 * kg.num_relations)
    inv = kg.num_relations  # likes^-1
    rows = np.array([[0, 0, 1], [2, 1, 5], [0, 0, 5], [3, inv, 2]])
    cfg = plain_loss(loss=loss, infonce_temperature=0.1, infonce_margin=0.02, all_entity_negatives=True)
    with torch.no_grad():
        prepared = prepare_batch(builder, rows, known, cfg, True, np.random.default_rng(7))
        got = prepared_step(model, prepared, cfg, torch.device("cpu"), "fp32", True)["loss"].item()
        q = _encode(model, builder, rows=rows)
        c = _encode(model, builder, entities=range(kg.num_entities))
    num = kg.num_entities
    assert prepared.all_entities == num and prepared.inputs.blocks == 3  # 10 entities: 3 blocks of 4
    assert prepared.inputs.cands["input_ids"].shape[0] == num  # each entity encoded once
    answers = [{e for e in range(num) if known.contains(np.array([h]), np.array([r]), np.array([e]))[0]} | {t}
               for h, r, t in rows]
    assert answers == [{1, 3}, {5}, {1, 3, 5}, {0, 2}]  # toy_kg: e0 likes e1, e2 eats e5; the added e3
    assert prepared.labels.tolist() == [[float(t in a) for t in range(num)] for a in answers]
    cos = (F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T).double()
    want = []
    for i, (h, r, t) in enumerate(rows):
        if loss == "infonce":  # the margin on the target, other known answers out of the denominator
            logits = [(cos[i, e].item() - (0.02 if e == t else 0.0)) / 0.1 for e in range(num)
                      if e == t or e not in answers[i]]
            target = (cos[i, t].item() - 0.02) / 0.1
            want.append(-target + math.log(sum(math.exp(x) for x in logits)))
        else:  # eqs. 11-12 over all E pairs of the row (affine mapping, per-pair distance on raw vectors)
            for e in range(num):
                p = (1 + cos[i, e].item()) / 2
                d = torch.dist(q[i].double(), c[e].double()).item()
                if e in answers[i]:
                    focal = -cfg.alpha * (1 - p) ** cfg.gamma * math.log(p)
                    dist = 1 / (1 + math.exp(-d))
                else:
                    focal = -(1 - cfg.alpha) * p ** cfg.gamma * math.log(1 - p)
                    dist = 1 - 1 / (1 + math.exp(-d))
                want.append(focal + cfg.distance_weight * dist)
    assert got == pytest.approx(float(np.mean(want)), rel=1e-4)  # float32 scores


def test_all_entity_negatives_refuse_the_columns_they_replace(setup, tmp_path):
    base = {**CFG, "loss": "infonce", "all_entity_negatives": True}
    with pytest.raises(ValueError, match="in_batch_negatives: true"):
        _run(setup, tmp_path, cfg={**base, "in_batch_negatives": False})
    for extra in ({"self_negatives": True}, {"hard_negatives": 1}, {"pre_batch": 2}):
        with pytest.raises(ValueError, match="already scores every entity"):
            _run(setup, tmp_path, cfg={**base, **extra})
    with pytest.raises(ValueError, match="every dev / test answer"):  # the authors' leak, made total: refused
        _run(setup, tmp_path, cfg={**base, "label_splits": ["train", "dev", "test"]})


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 8])
def test_all_entity_columns_put_every_entity_once_on_one_rank(ranks):
    """The first E columns are the entities in order, and the ranks' slices (what each encodes, once per distinct
    entity) hold E encodings in all: the last block's padding sits on the rank that already encodes it."""
    from lpbert_core.runtime.distributed import shard_range
    from lpbert_core.finetune.finetune_step import all_entity_columns

    for num in range(1, 40):
        for n in range(1, 30):
            columns = all_entity_columns(num, n)
            assert len(columns) % n == 0 and columns[:num].tolist() == list(range(num))
            blocks = columns.reshape(-1, n)
            encoded = sum(len(np.unique(blocks[:, slice(*shard_range(n, r, ranks))])) for r in range(ranks))
            assert encoded == num or (num < n and encoded <= n), (num, n, ranks, encoded)


def test_all_entity_shift_is_measured_over_every_entity(setup):
    from lpbert_core.finetune.step_measures import measure_initial_shift

    kg, model, builder, _ = _step_setup(setup)
    rows = np.array([[0, 0, 1], [2, 1, 5], [3, 0, 4]])
    got = measure_initial_shift(model, builder, rows, [np.array([0, 1]), np.array([2])], torch.device("cpu"),
                                "fp32", all_entities=True)
    c = F.normalize(_encode(model, builder, entities=range(kg.num_entities)), dim=-1)
    cos = F.normalize(_encode(model, builder, rows=rows), dim=-1) @ c.T  # each batch's rows x every entity
    assert got["pairs"] == 3 * kg.num_entities
    assert got["shift"] == pytest.approx(cos.mean().item(), abs=1e-6)
    assert got["diagonal_mean"] == pytest.approx(cos[[0, 1, 2], [1, 5, 4]].mean().item(), abs=1e-6)


def test_all_entity_run_records_the_switch_and_resumes_exactly(setup, tmp_path):
    cfg = {**CFG, "loss": "infonce", "infonce_learnable_temperature": True, "all_entity_negatives": True}
    _run(setup, tmp_path / "a", cfg=cfg)
    assert _run(setup, tmp_path / "c", cfg=cfg, stop_after=4)["killed"]
    _run(setup, tmp_path / "c", cfg=cfg)
    timing = ["train_seconds", "dev_seconds", "attempt", "steps_timed"]
    la, lc = pd.read_csv(tmp_path / "a/log.csv"), pd.read_csv(tmp_path / "c/log.csv")
    pd.testing.assert_frame_equal(la.drop(columns=timing), lc.drop(columns=timing))
    info = json.loads((tmp_path / "a/model/lpbert_run.json").read_text())
    assert info["all_entity_negatives"] is True and info["loss"]["all_entity_negatives"] is True


# ------------------------------------------------------------------ the switches in a run

PLUS = {"loss": "infonce", "infonce_margin": 0.02, "infonce_learnable_temperature": True, "self_negatives": True,
        "hard_negatives": 1, "pre_batch": 2, "pre_batch_weight": 0.5}


def test_plus_run_records_its_switches_and_resumes_exactly(setup, tmp_path):
    cfg = {**CFG, **PLUS}
    _run(setup, tmp_path / "a", cfg=cfg)
    killed = _run(setup, tmp_path / "c", cfg=cfg, stop_after=4)  # mid-epoch 2: the bank holds epoch 2's batches
    assert killed["killed"]
    _run(setup, tmp_path / "c", cfg=cfg)
    timing = ["train_seconds", "dev_seconds", "attempt", "steps_timed"]
    la, lc = pd.read_csv(tmp_path / "a/log.csv"), pd.read_csv(tmp_path / "c/log.csv")
    pd.testing.assert_frame_equal(la.drop(columns=timing), lc.drop(columns=timing))
    assert la["infonce_temperature"].iloc[-1] != pytest.approx(0.05)  # the temperature learned
    info = json.loads((tmp_path / "a/model/lpbert_run.json").read_text())
    assert info["hard_negatives"] == 1 and info["pre_batch"] == 2 and info["loss"]["infonce_margin"] == 0.02
    # the selected epoch's model holds the temperature that epoch ended with
    assert info["new_layers"]["infonce_temperature"] == pytest.approx(
        la["infonce_temperature"].iloc[info["best_epoch"] - 1], rel=1e-6)
    from lpbert_core.model.siamese import load_run_model

    model, _ = load_run_model(tmp_path / "a/model")
    assert model.log_inv_t is not None


def test_plus_switches_without_in_batch_negatives_are_refused(setup, tmp_path):
    with pytest.raises(ValueError, match="in_batch_negatives"):
        _run(setup, tmp_path, cfg={**CFG, "in_batch_negatives": False, "pre_batch": 2})
    with pytest.raises(ValueError, match="needs loss: infonce"):
        _run(setup, tmp_path, cfg={**CFG, "infonce_learnable_temperature": True})
