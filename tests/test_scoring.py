"""Batched candidate scoring: hand-computed filtered ranks with ties through the chunked scorer, query layout,
and agreement of the batched encoder with one-at-a-time encoding."""
import numpy as np
import pytest
import torch

from lpbert_core.model.sequences import SequenceBuilder
from conftest import make_toy_kg
from lpbert_core.graph.kg import seeded_subset
from lpbert_core.ranking.filtered_ranks import build_filter_index, metrics_from_ranks
from lpbert_core.ranking.rank_split import build_queries, encode_entities, encode_sequences, evaluate_split, rank_queries


def test_build_queries_both_directions():
    q = build_queries(np.array([[0, 1, 2], [3, 0, 4]]), num_relations=2)
    assert q.direction.tolist() == ["tail", "tail", "head", "head"]
    assert q.anchor.tolist() == [0, 3, 2, 4]
    assert q.query_relation.tolist() == [1, 0, 3, 2]  # head queries use the inverse relation r + R
    assert q.gold.tolist() == [2, 4, 0, 3]
    assert q.relation.tolist() == [1, 0, 1, 0]


def test_rank_queries_ties_and_filter_hand_computed():
    # 5 entities on the unit circle-ish; query vector q = e0 direction
    ent = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]])
    triples = np.array([[4, 0, 1], [4, 0, 3]])  # test triple (4, r0, 1); (4, r0, 3) is another known answer
    q = build_queries(triples[:1], num_relations=1, directions=("tail",))
    qv = torch.tensor([[1.0, 0.0]])
    index = build_filter_index(triples, 5)
    r = rank_queries(qv, ent, q, index, chunk_size=1)
    # scores: e0 = 1, e1 (gold) = 1 (tie), e2 = 0, e3 = 0.995 (filtered), e4 = -1
    assert r["optimistic"].tolist() == [1.0]
    assert r["pessimistic"].tolist() == [2.0]
    assert r["realistic"].tolist() == [1.5]
    assert r["num_candidates"].tolist() == [4.0]


def test_chunking_does_not_change_ranks():
    torch.manual_seed(0)
    ent = torch.randn(30, 8)
    trip = np.stack([np.random.default_rng(0).integers(0, 30, 40), np.zeros(40, dtype=int),
                     np.random.default_rng(1).integers(0, 30, 40)], 1)
    q = build_queries(trip, num_relations=1)
    qv = torch.randn(len(q), 8)
    index = build_filter_index(trip, 30)
    a = rank_queries(qv, ent, q, index, chunk_size=7)
    b = rank_queries(qv, ent, q, index, chunk_size=1000)
    for k in a:
        assert np.array_equal(a[k], b[k])


@pytest.fixture(scope="module")
def toy(tiny_encoder_dir):
    from transformers import AutoModel, AutoTokenizer

    from lpbert_core.model.siamese import SiameseModel

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    ents = {f"e{i}": (w, "a thing" if i % 2 else "") for i, w in enumerate(
        "apple banana cherry dog eagle fox grape horse".split())}
    rels = {"r0": "likes", "r1": "eats"}
    E = list(ents)
    train = [(E[i], "r0", E[(i + 1) % 8]) for i in range(8)]
    kg = make_toy_kg(tok, ents, rels, {"train": train, "dev": [(E[0], "r1", E[5])],
                                        "test": [(E[1], "r1", E[6]), (E[2], "r1", E[6])]})
    torch.manual_seed(0)
    model = SiameseModel(AutoModel.from_pretrained(tiny_encoder_dir), "mean").eval()
    return kg, model


def test_batched_encoding_matches_single(toy):
    kg, model = toy
    b = SequenceBuilder(kg, 16, 16)
    batched = encode_entities(model, b, torch.device("cpu"), batch_size=3)
    for e in range(kg.num_entities):
        s = b.candidate(e)
        single = encode_sequences(model, [(s, [0] * len(s))], kg.special.pad, torch.device("cpu"), 1)
        assert torch.allclose(batched[e], single[0], atol=1e-5)


def test_evaluate_split_frame_and_metrics(toy):
    kg, model = toy
    b = SequenceBuilder(kg, 16, 16)
    frame, metrics, timings = evaluate_split(model, kg, b, "test", torch.device("cpu"), batch_size=4, chunk_size=3,
                                             precision="fp32", head_ranking="inverse_query")
    assert list(frame.columns) == ["query", "direction", "head", "relation", "tail", "gold", "optimistic",
                                   "pessimistic", "realistic", "num_candidates"]
    assert len(frame) == 4 and set(frame["direction"]) == {"head", "tail"}
    assert (frame["realistic"] == (frame["optimistic"] + frame["pessimistic"]) / 2).all()
    assert (frame["num_candidates"] <= kg.num_entities).all()
    # head query of (e1, r1, e6): the other known head e2 of (?, r1, e6) is filtered
    row = frame[(frame["direction"] == "head") & (frame["head"] == "e1")].iloc[0]
    assert row["num_candidates"] == kg.num_entities - 1
    assert metrics == metrics_from_ranks(frame)
    assert set(timings) == {"encode_entities_s", "encode_queries_s", "score_and_rank_s"}


def test_subsample_rows_is_fixed():
    t = np.arange(30).reshape(10, 3)
    a, b = seeded_subset(t, 4, seed=1), seeded_subset(t, 4, seed=1)
    assert np.array_equal(a, b) and len(a) == 4
    assert seeded_subset(t, None, 0) is t
