"""A frozen entity tower (`finetune.frozen_entity_tower`, lpbert-plus, issue #25): two towers where only the query
tower learns. The all-entity step scores a fixed table of every entity's vector (encoded once) with the exact logits
of the encoded all-entity step; the entity tower neither learns nor drops out; a run keeps it bit for bit, ranks its
dev points against the table with the metrics a fresh encoding gives, and resumes to the uninterrupted result."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import plain_loss
from test_finetune_loop import CFG, _run, toy_kg
from test_two_towers import _by_tower, _model

FROZEN = {**CFG, "loss": "infonce", "infonce_margin": 0.02, "infonce_learnable_temperature": True,
          "all_entity_negatives": True, "two_towers": True, "frozen_entity_tower": True}


@pytest.fixture(scope="module")
def setup(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    return toy_kg(tok), tok, tiny_encoder_dir


def _only_the_query_tower_moved(model, enc_dir):
    """The entity tower is the initial encoder bit for bit; the query tower has trained."""
    from transformers import AutoModel

    initial = AutoModel.from_pretrained(enc_dir).state_dict()
    assert all(torch.equal(v, initial[k]) for k, v in model.encoder.state_dict().items())
    assert any(not torch.equal(v, initial[k]) for k, v in model.query_encoder.state_dict().items())


def _frozen(enc_dir):
    model = _model(enc_dir)  # eval mode, the query tower moved off the entity tower
    model.freeze_entity_tower()
    return model


@pytest.mark.parametrize("loss", ["infonce", "focal_distance"])
def test_table_step_has_the_exact_logits_of_the_encoded_all_entity_step(setup, loss):
    from lpbert_core.finetune.finetune_step import prepare_batch, prepared_step
    from lpbert_core.graph.known_answers import train_known_answers
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.ranking.rank_split import encode_entities

    kg, _, enc_dir = setup
    model = _frozen(enc_dir)
    builder, known, cpu = SequenceBuilder(kg, 16, 16), train_known_answers(kg), torch.device("cpu")
    rows = np.array([[0, 0, 1], [2, 1, 5], [0, 0, 5], [3, 0, 4]])
    cfg = plain_loss(loss=loss, infonce_temperature=0.1, infonce_margin=0.02, all_entity_negatives=True)
    with torch.no_grad():
        table = encode_entities(model, builder, cpu, 4)
        fixed = prepare_batch(builder, rows, known, cfg, True, np.random.default_rng(7), entity_table=True)
        encoded = prepare_batch(builder, rows, known, cfg, True, np.random.default_rng(7))
        got = prepared_step(model, fixed, cfg, cpu, "fp32", True, entity_bank=table)["loss"].item()
        want_encoded = prepared_step(model, encoded, cfg, cpu, "fp32", True)["loss"].item()
        q = _by_tower(model, builder, model.query_encoder, rows=rows)
        c = _by_tower(model, builder, model.encoder, entities=range(kg.num_entities))
    assert fixed.inputs.blocks == 0 and fixed.inputs.cands == {}  # nothing but the queries is encoded
    assert torch.allclose(table, c, atol=1e-5)  # the table is the entity tower's vectors
    assert got == pytest.approx(want_encoded, rel=1e-5)
    if loss == "infonce":  # by hand: margin on the target, the row's other known answers out of the denominator
        cos = (F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T).double()
        want = []
        for i, (h, r, t) in enumerate(rows):
            others = {e for e in range(kg.num_entities) if e != t and known.contains(
                np.array([h]), np.array([r]), np.array([e]))[0]}
            logits = [(cos[i, e].item() - (0.02 if e == t else 0.0)) / 0.1 for e in range(kg.num_entities)
                      if e not in others]
            want.append(-(cos[i, t].item() - 0.02) / 0.1 + math.log(sum(math.exp(x) for x in logits)))
        assert got == pytest.approx(float(np.mean(want)), rel=1e-4)
    with pytest.raises(ValueError, match="fixed entity table"):
        prepared_step(model, fixed, cfg, cpu, "fp32", True)


def test_frozen_tower_neither_learns_nor_drops_out(setup):
    from lpbert_core.finetune.finetune_step import training_step
    from lpbert_core.graph.known_answers import train_known_answers
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.model.siamese import ENCODER_PREFIXES
    from lpbert_core.ranking.rank_split import encode_entities
    from lpbert_core.runtime.training import build_optimizer, build_scheduler, optimizer_step

    kg, _, enc_dir = setup
    model = _frozen(enc_dir).train()
    assert model.query_encoder.training and not model.encoder.training  # train() leaves the entity tower in eval
    before = {k: p.clone() for k, p in model.encoder.named_parameters()}
    query_before = {k: p.clone() for k, p in model.query_encoder.named_parameters()}
    optimizer = build_optimizer(model, ENCODER_PREFIXES, 5e-5, 1e-3, 0.01)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in model.encoder.parameters())
    builder, known, cpu = SequenceBuilder(kg, 16, 16), train_known_answers(kg), torch.device("cpu")
    cfg = plain_loss(loss="infonce", all_entity_negatives=True)
    table = encode_entities(model, builder, cpu, 4)
    scheduler = build_scheduler(optimizer, 10, 0.0)
    for start in (0, 8):
        out = training_step(model, builder, kg.triples["train"][start:start + 8], known, cfg, cpu, "fp32", True,
                            table=table)
        optimizer_step(out["loss"], model, optimizer, scheduler)
    assert all(torch.equal(p, before[k]) for k, p in model.encoder.named_parameters())
    assert any(not torch.equal(p, query_before[k]) for k, p in model.query_encoder.named_parameters())
    assert torch.equal(encode_entities(model, builder, cpu, 4), table)  # the table stays exact


def test_settings_refuse_a_frozen_tower_without_two_towers_or_with_the_bank():
    from lpbert_core.config.load import load_config, merge
    from lpbert_core.config.resolve import JobSettings
    from lpbert_core.config.settings import FinetuneSettings
    from lpbert_core.errors import ConfigError
    from conftest import REPO, paper_section

    with pytest.raises(ConfigError, match="set two_towers: true"):
        FinetuneSettings.from_mapping(paper_section("finetune", frozen_entity_tower=True))
    with pytest.raises(ConfigError, match="instead of entity_bank"):
        FinetuneSettings.from_mapping(paper_section("finetune", loss="infonce", two_towers=True,
                                                    frozen_entity_tower=True, entity_bank=10))
    config = merge(load_config([REPO / "config.yaml"]), {
        "gpus_per_job": 2, "runs": {"frozen": {"model": "lpbert", "pretrain": "none", "in_batch_negatives": True,
                                               "finetune": {"loss": "infonce", "two_towers": True,
                                                            "frozen_entity_tower": True}}}})
    # several ranks are fine (tests/test_distributed.py::test_frozen_entity_tower_over_two_ranks)
    assert JobSettings(config).finetune_params("umls", "frozen")["finetune"]["frozen_entity_tower"] is True


def test_frozen_run_keeps_the_entity_tower_ranks_dev_like_a_fresh_encoding_and_resumes(setup, tmp_path,
                                                                                       monkeypatch):
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.model.siamese import load_run_model
    from lpbert_core.ranking import rank_split
    from lpbert_core.ranking.rank_split import evaluate_split

    kg, _, enc_dir = setup
    encodings = []  # every encoding of all entities: the table once a run, never at a dev point or on resume
    real = rank_split.encode_entities
    monkeypatch.setattr(rank_split, "encode_entities", lambda *a, **k: encodings.append(1) or real(*a, **k))
    _run(setup, tmp_path / "a", cfg=FROZEN)
    assert len(encodings) == 1
    assert _run(setup, tmp_path / "c", cfg=FROZEN, stop_after=4)["killed"]
    assert len(encodings) == 2
    _run(setup, tmp_path / "c", cfg=FROZEN)
    assert len(encodings) == 2  # the resumed attempt loads the checkpoint's table
    monkeypatch.undo()
    timing = ["train_seconds", "dev_seconds", "attempt", "steps_timed"]
    la, lc = pd.read_csv(tmp_path / "a/log.csv"), pd.read_csv(tmp_path / "c/log.csv")
    pd.testing.assert_frame_equal(la.drop(columns=timing), lc.drop(columns=timing))

    model, info = load_run_model(tmp_path / "a/model")
    assert info["frozen_entity_tower"] is True and info["two_towers"] is True
    assert model.entity_tower_frozen and not any(p.requires_grad for p in model.encoder.parameters())
    _only_the_query_tower_moved(model, enc_dir)
    # the dev point ranked against the table; a fresh encoding of the saved model gives the same metrics
    best = json.loads((tmp_path / "a/model/lpbert_run.json").read_text())["best_epoch"]
    row = la.iloc[best - 1]
    _, metrics, _ = evaluate_split(model, kg, SequenceBuilder(kg, 16, 16), "dev", torch.device("cpu"),
                                   filter_splits=("train", "dev"), subsample=FROZEN["dev_subsample"],
                                   seed=FROZEN["seed"], batch_size=8, chunk_size=FROZEN["chunk_size"],
                                   precision="fp32", head_ranking="inverse_query")
    assert metrics["both"]["mrr"] == pytest.approx(row["dev_mrr"], abs=1e-9)
    assert metrics["both"]["hits@10"] == pytest.approx(row["dev_hits@10"], abs=1e-9)


def test_checkpoints_of_before_the_switch_keep_their_fingerprint():
    """A setting added after checkpoints existed enters the fingerprint only when it is on, so a run interrupted
    before it was added still resumes; on, it separates the runs."""
    from lpbert_core.config.settings import FinetuneSettings
    from conftest import paper_section

    off = FinetuneSettings.from_mapping(paper_section("finetune")).fingerprint_settings()
    assert "frozen_entity_tower" not in off and "checkpoint_every_minutes" not in off and "two_towers" in off
    on = FinetuneSettings.from_mapping(paper_section("finetune", loss="infonce", two_towers=True,
                                                     frozen_entity_tower=True)).fingerprint_settings()
    assert on["frozen_entity_tower"] is True


def test_a_fixed_table_is_written_once_and_named_by_every_later_checkpoint(tmp_path):
    from lpbert_core.finetune.entity_bank import EntityBank

    bank = EntityBank(0, fixed=True)
    bank.set(torch.arange(6.0).reshape(3, 2), 0)
    first = bank.save(tmp_path, 25)
    written = (tmp_path / first).stat().st_mtime_ns
    assert bank.save(tmp_path, 50) == first and (tmp_path / first).stat().st_mtime_ns == written
    resumed = EntityBank(0, fixed=True)
    resumed.load(tmp_path, first, 0, "cpu")
    assert resumed.save(tmp_path, 75) == first and torch.equal(resumed.table, bank.vectors)
    refreshing = EntityBank(10)
    refreshing.set(bank.vectors, 0)
    assert refreshing.table is None and refreshing.save(tmp_path, 25) != refreshing.save(tmp_path, 50)


def test_in_batch_columns_with_a_self_negative_come_from_the_frozen_tower(setup, tmp_path):
    """The paper's loss over in-batch columns (proxy-paper-bal-self-frozen): with the model in training mode the
    columns (the batch's tails and each row's own anchor, the self-negative) are the frozen tower's table rows, so
    pushing a query off its anchor moves the query alone; a run of it keeps the entity tower bit for bit."""
    from lpbert_core.finetune.finetune_step import encode_inputs, prepare_batch
    from lpbert_core.graph.known_answers import train_known_answers
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.model.siamese import load_run_model
    from lpbert_core.ranking.rank_split import encode_entities

    kg, _, enc_dir = setup
    model = _frozen(enc_dir)
    builder, known, cpu = SequenceBuilder(kg, 16, 16), train_known_answers(kg), torch.device("cpu")
    rows = np.array([[0, 0, 1], [2, 1, 5], [3, 0, 4]])
    with torch.no_grad():
        table = encode_entities(model, builder, cpu, 4)
        model.train()
        prepared = prepare_batch(builder, rows, known, plain_loss(self_negatives=True), True,
                                 np.random.default_rng(7))
        _, cv = encode_inputs(model, prepared.inputs, cpu, "fp32")
    assert torch.allclose(cv, table[np.concatenate([rows[:, 2], rows[:, 0]])], atol=1e-5)  # tails | own anchors

    cfg = {**CFG, "shift": "balanced", "self_negatives": True, "two_towers": True, "frozen_entity_tower": True}
    _run(setup, tmp_path / "a", cfg=cfg)
    trained, _ = load_run_model(tmp_path / "a/model")
    _only_the_query_tower_moved(trained, enc_dir)
