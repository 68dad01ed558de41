"""KG-BERT-style cross-encoder baseline: sequences, negatives, training, sampled ranking, extrapolation, resume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import paper_section
import torch

from lpbert_core.model.sequences import split_context_budget
from lpbert_core.baselines.cross_encoder import (CrossEncoder, TripleSequenceBuilder, collate_triples, corrupt_triples,
                                       train_triple_set, training_examples)
from lpbert_core.baselines.cross_encoder_loop import score_triples, train_cross_encoder
from lpbert_core.baselines.cross_encoder_ranking import candidate_triples, extrapolate, rank_sampled_queries, score_run
from conftest import make_toy_kg


@pytest.fixture(scope="module")
def tok(tiny_encoder_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_encoder_dir)


def _kg(tok):
    names = ["cat", "dog", "fish", "bird", "tree", "rock", "river", "cloud"]
    entities = {f"e{i}": (n, f"a thing called {n}") for i, n in enumerate(names)}
    relations = {"likes": "likes", "near": "is near"}
    train = [("e0", "likes", "e1"), ("e1", "likes", "e2"), ("e2", "likes", "e3"), ("e3", "likes", "e0"),
             ("e4", "near", "e5"), ("e5", "near", "e6"), ("e6", "near", "e7"), ("e7", "near", "e4"),
             ("e0", "near", "e4"), ("e1", "near", "e5")]
    dev = [("e2", "near", "e6"), ("e3", "near", "e7")]
    test = [("e0", "likes", "e2"), ("e4", "near", "e6"), ("e1", "likes", "e3")]
    return make_toy_kg(tok, entities, relations, {"train": train, "dev": dev, "test": test})


def _encoder(tiny_encoder_dir):
    from transformers import AutoModel

    torch.manual_seed(0)
    return AutoModel.from_pretrained(tiny_encoder_dir)


def test_sequence_layout_decodes(tok):
    kg = _kg(tok)
    b = TripleSequenceBuilder(kg, 64)
    ids, types = b.build(0, 1, 4)
    assert tok.decode(ids) == "[CLS] cat, a thing called cat [SEP] is near [SEP] tree, a thing called tree [SEP]"
    first_sep = ids.index(kg.special.sep)
    second_sep = ids.index(kg.special.sep, first_sep + 1)
    assert types[: first_sep + 1] == [0] * (first_sep + 1)
    assert types[first_sep + 1 : second_sep + 1] == [1] * (second_sep - first_sep)
    assert set(types[second_sep + 1 :]) == {0}
    assert b.length(0, 1, 4) == len(ids)
    # RoBERTa-like encoders (one token type): all zeros
    assert set(TripleSequenceBuilder(kg, 64, two_token_types=False).build(0, 1, 4)[1]) == {0}


def test_truncation_keeps_relation_and_trims_longer_entity(tok):
    long = " ".join(["word"] * 40)
    kg = make_toy_kg(tok, {"a": ("a", long), "b": ("b", "")}, {"r": "is located in the region of"},
                     {"train": [("a", "r", "b")]})
    b = TripleSequenceBuilder(kg, 20)
    ids, types = b.build(0, 0, 1)
    assert len(ids) == 20 and len(types) == 20
    rel = kg.relation_text_ids[0]
    assert tok.decode(rel) in tok.decode(ids)  # relation kept whole
    assert ids[-2] == kg.entity_text_ids[1][-1]  # the short tail kept whole
    assert b.length(0, 0, 1) == 20
    assert split_context_budget(10, 3, 8) == (5, 3) and split_context_budget(10, 10, 8) == (4, 4) and split_context_budget(3, 10, 8) == (3, 5)


def test_negatives_never_known_train_triples(tok):
    kg = _kg(tok)
    known = train_triple_set(kg)
    train_set = {tuple(x) for x in kg.triples["train"].tolist()}
    for side in ("per_positive", "per_negative"):
        neg = corrupt_triples(kg.triples["train"], known, kg.num_entities, 6, np.random.default_rng(1), side)
        assert neg.shape == (len(kg.triples["train"]), 6, 3)
        for pos, negs in zip(kg.triples["train"], neg):
            for n in negs:
                assert tuple(n) not in train_set
                assert n[1] == pos[1]
                assert (n[0] == pos[0]) != (n[2] == pos[2])  # exactly one side replaced
            if side == "per_positive":  # all k on the same side
                assert len({int(n[0] == pos[0]) for n in negs}) == 1


def test_dense_graph_fallback_drops_impossible_negatives(tok):
    # every (e, r, x) is true for 3 entities: no valid tail corruption exists for anyone
    ents = {f"e{i}": (f"n{i}", "") for i in range(3)}
    train = [(f"e{i}", "r", f"e{j}") for i in range(3) for j in range(3)]
    kg = make_toy_kg(tok, ents, {"r": "r"}, {"train": train})
    known = train_triple_set(kg)
    triples, labels = training_examples(kg.triples["train"], known, 3, 2, np.random.default_rng(0))
    assert labels.sum() == len(train) and len(triples) == len(train)  # all negatives dropped


def test_loss_decreases_on_toy_graph(tiny_encoder_dir, tok):
    kg = _kg(tok)
    torch.manual_seed(0)
    model = CrossEncoder(_encoder(tiny_encoder_dir), "cls", dropout=0.0)
    b = TripleSequenceBuilder(kg, 32)
    triples, labels = training_examples(kg.triples["train"], train_triple_set(kg), kg.num_entities, 1,
                                        np.random.default_rng(0))
    batch = collate_triples([b.build(*map(int, t)) for t in triples], kg.special.pad)
    y = torch.as_tensor(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**batch), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_sampled_ranks_match_brute_force(tiny_encoder_dir, tok):
    kg = _kg(tok)
    model = CrossEncoder(_encoder(tiny_encoder_dir)).eval()
    b = TripleSequenceBuilder(kg, 32)
    frame, timing = rank_sampled_queries(model, kg, b, torch.device("cpu"), score_queries=2, seed=3, batch_size=3,
                                         progress=False)
    assert len(frame) == 4 and list(frame["direction"]) == ["tail", "head", "tail", "head"]
    known = {tuple(x) for s in ("train", "dev", "test") for x in kg.triples[s].tolist()}
    for rec in frame.itertuples():
        h, r, t = kg.triples["test"][rec.query]
        direction = rec.direction
        # brute force: one unbatched forward pass per candidate
        scores = []
        with torch.no_grad():
            for e in range(kg.num_entities):
                trip = (h, r, e) if direction == "tail" else (e, r, t)
                scores.append(float(model(**collate_triples([b.build(*map(int, trip))], kg.special.pad))[0]))
        gold = t if direction == "tail" else h
        others = [e for e in range(kg.num_entities) if e != gold and
                  ((h, r, e) if direction == "tail" else (e, r, t)) not in known]
        # batched (padded) and single passes differ by float noise: ranks must lie within the tolerance band
        tol = 1e-5
        surely_above = sum(scores[e] > scores[gold] + tol for e in others)
        maybe_above = sum(scores[e] >= scores[gold] - tol for e in others)
        assert 1 + surely_above <= rec.optimistic <= rec.pessimistic <= 1 + maybe_above
        assert rec.realistic == (rec.optimistic + rec.pessimistic) / 2
        assert rec.num_candidates == len(others) + 1
        assert rec.gold == kg.entity_ids[gold]
    assert timing["queries_measured"] == 4 and timing["queries_total"] == 2 * len(kg.triples["test"])


def test_batched_scores_match_unbatched(tiny_encoder_dir, tok):
    kg = _kg(tok)
    model = CrossEncoder(_encoder(tiny_encoder_dir)).eval()
    b = TripleSequenceBuilder(kg, 32)
    cand = candidate_triples(0, 1, 4, "head", kg.num_entities)
    assert (cand[:, 0] == np.arange(kg.num_entities)).all() and (cand[:, 2] == 4).all()
    batched = score_triples(model, b, cand, torch.device("cpu"), batch_size=3)
    with torch.no_grad():
        single = torch.stack([model(**collate_triples([b.build(*map(int, c))], kg.special.pad))[0] for c in cand])
    assert torch.allclose(batched, single, atol=1e-5)


def test_extrapolation_arithmetic():
    out = extrapolate(12.0, 4, 6268)
    assert out["seconds_per_query"] == 3.0
    assert out["inference_seconds_extrapolated"] == 3.0 * 6268
    assert out["extrapolated_from"].startswith("4 of 6268 queries, linear extrapolation")
    with pytest.raises(ValueError):
        extrapolate(1.0, 0, 10)


def _cfg(**kw):
    return paper_section("kgbert", **{"max_length": 32, "negatives": 2, "batch_size": 8, "epochs": 2,
                                      "lr_encoder": 1e-3, "lr_new": 1e-3, "warmup_fraction": 0.1,
                                      "eval_batch_size": 16, "score_queries": 2, "seed": 5, "dev_subsample": None,
                                      **kw})


def test_train_resume_is_deterministic_and_outputs(tiny_encoder_dir, tok, tmp_path):
    kg = _kg(tok)
    cpu = torch.device("cpu")
    full = train_cross_encoder(kg, _encoder(tiny_encoder_dir), tok, _cfg(), tmp_path / "a" / "model",
                               tmp_path / "a" / "log.csv", tmp_path / "ck_a", cpu, log=lambda s: None)
    killed = train_cross_encoder(kg, _encoder(tiny_encoder_dir), tok, _cfg(), tmp_path / "b" / "model",
                                 tmp_path / "b" / "log.csv", tmp_path / "ck_b", cpu, log=lambda s: None,
                                 stop_after_epochs=1)
    assert killed["killed"] and not (tmp_path / "b" / "model").exists()
    resumed = train_cross_encoder(kg, _encoder(tiny_encoder_dir), tok, _cfg(), tmp_path / "b" / "model",
                                  tmp_path / "b" / "log.csv", tmp_path / "ck_b", cpu, log=lambda s: None)
    assert not (tmp_path / "ck_b" / "last").exists()  # removed once the outputs are written
    sa, sb = full["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert list(log["epoch"]) == [1, 2]
    assert {"loss", "dev_accuracy", "dev_loss", "train_seconds"} <= set(log.columns)

    # scoring from the saved model folder: ranks.parquet + metrics.json layout
    out = score_run(kg, tmp_path / "a" / "model", _cfg(), tmp_path / "ranks.parquet", tmp_path / "metrics.json",
                    cpu, run_info={"run": "kgbert"}, dataset="toy", log=lambda s: None)
    frame = pd.read_parquet(tmp_path / "ranks.parquet")
    assert list(frame.columns) == ["query", "direction", "head", "relation", "tail", "gold", "optimistic",
                                   "pessimistic", "realistic", "num_candidates"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"both", "head", "tail"}
    assert metrics["metrics"]["both"]["count"] == 4 == metrics["queries_measured"]
    assert metrics["queries_total"] == 6
    assert "4 of 6 test queries" in metrics["scale"]["note"] and metrics["scale"]["full_protocol"] is False
    for key in ("inference_seconds_measured", "inference_seconds_extrapolated", "extrapolated_from"):
        assert key in metrics
    assert out["run"]["model"] == "kgbert"


def test_kgbert_settings_resolve_in_one_place():
    """config.resolve.resolve for the cross-encoder: what rules/common.smk gives the kgbert rules as params (the kgbert
    section, its per_dataset entry, a run instance's seed), typed; the config itself is left as it was."""
    from lpbert_core.config.resolve import JobSettings

    section = paper_section("kgbert", epochs=5, score_queries=5,
                            per_dataset={"WN18RR": {"train_subsample": 2000, "score_queries": 1}})
    jobs = JobSettings({"kgbert": section,
                        "runs": {"kg": {"model": "kgbert", "pretrain": "none", "seeds": [42, 9]}},
                        "sources": {"umls": {}, "WN18RR": {}}})
    s = jobs.resolve("kgbert", "WN18RR", "kg")
    assert (s.epochs, s.score_queries, s.train_subsample, s.seed) == (5, 1, 2000, 42)
    s = jobs.resolve("kgbert", "umls", "kg.s9")
    assert (s.epochs, s.score_queries, s.train_subsample, s.seed) == (5, 5, None, 9)
    assert "per_dataset" in section  # the config itself is left as it was


def test_checkpoint_with_other_settings_is_not_resumed(tiny_encoder_dir, tok, tmp_path):
    kg = _kg(tok)
    cpu = torch.device("cpu")
    train_cross_encoder(kg, _encoder(tiny_encoder_dir), tok, _cfg(epochs=2), tmp_path / "m", tmp_path / "l.csv",
                        tmp_path / "ck", cpu, log=lambda s: None, stop_after_epochs=1)
    messages = []
    out = train_cross_encoder(kg, _encoder(tiny_encoder_dir), tok, _cfg(epochs=2, negatives=1), tmp_path / "m",
                              tmp_path / "l.csv", tmp_path / "ck", cpu, log=messages.append)
    assert any("ignoring the checkpoint" in m for m in messages)
    assert [row["epoch"] for row in out["progress"]["log"]] == [1, 2]
