"""Fine-tuning data: inverse augmentation, label matrix (duplicates, train-only), query building, negatives."""
import numpy as np
import pytest
import torch

from lpbert_core.finetune_data import (KnownAnswers, SequenceBuilder, augment_inverse, label_matrix,
                                       sample_negative_tails, train_known_answers, training_triples)
from lpbert_core.kg import make_toy_kg


@pytest.fixture(scope="module")
def toy(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    ents = {f"e{i}": (w, "") for i, w in enumerate("apple banana cherry dog eagle fox".split())}
    rels = {"r0": "likes", "r1": "eats"}
    triples = {
        "train": [("e0", "r0", "e1"), ("e0", "r0", "e2"), ("e3", "r1", "e1"), ("e4", "r0", "e5")],
        "dev": [("e0", "r0", "e3")],
        "test": [("e0", "r0", "e4"), ("e3", "r1", "e5")],
    }
    return make_toy_kg(tok, ents, rels, triples), tok


def test_inverse_augmentation():
    t = np.array([[0, 1, 2], [3, 0, 4]])
    a = augment_inverse(t, num_relations=2)
    assert a.tolist() == [[0, 1, 2], [3, 0, 4], [2, 3, 0], [4, 2, 3]]


def test_label_matrix_duplicates_hand_computed(toy):
    kg, _ = toy
    known = train_known_answers(kg)
    # batch: (e0 r0 e1), (e0 r0 e2), (e3 r1 e1), (e4 r0 e5), (e0 r0 e1) again; candidate columns e1 e2 e1 e5 e1
    batch = np.array([[0, 0, 1], [0, 0, 2], [3, 1, 1], [4, 0, 5], [0, 0, 1]])
    y = label_matrix(batch, known)
    expected = torch.tensor([
        [1, 1, 1, 0, 1],  # (e0, r0): train answers e1, e2; every copy of e1 is a positive
        [1, 1, 1, 0, 1],
        [1, 0, 1, 0, 1],  # (e3, r1): e1 only
        [0, 0, 0, 1, 0],  # (e4, r0): e5 only
        [1, 1, 1, 0, 1],
    ], dtype=torch.float32)
    assert torch.equal(y, expected)


def test_no_dev_or_test_triple_in_training_labels(toy):
    kg, _ = toy
    known = train_known_answers(kg)
    for split in ("dev", "test"):
        for h, r, t in kg.triples[split]:
            assert not known.contains(h, r, t)
            assert not known.contains(t, r + kg.num_relations, h)
    # the dev answer e3 of (e0, r0) appears in a batch as another row's tail: still a negative for row 0
    batch = np.array([[0, 0, 1], [4, 0, 3]])
    y = label_matrix(batch, known)
    assert y[0, 1] == 0
    rows = training_triples(kg, inverse_augmentation=True)
    assert len(rows) == 2 * len(kg.triples["train"])
    all_rows = {tuple(r) for r in rows}
    for h, r, t in np.concatenate([kg.triples["dev"], kg.triples["test"]]):
        assert (h, r, t) not in all_rows and (t, r + kg.num_relations, h) not in all_rows


def test_inverse_rows_labels(toy):
    kg, _ = toy
    known = train_known_answers(kg)
    R = kg.num_relations
    # inverse queries (e1, r0_inv): heads e0; (e1, r1_inv): e3
    batch = np.array([[1, 0 + R, 0], [1, 1 + R, 3], [2, 0 + R, 0]])
    y = label_matrix(batch, known)
    assert y.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def test_query_and_candidate_tokens(toy):
    kg, _ = toy
    sp = kg.special
    b = SequenceBuilder(kg, 8, 4)
    ids, types = b.query(0, 0)
    assert ids == [sp.cls] + kg.entity_text_ids[0] + [sp.sep] + kg.relation_text_ids[0] + [sp.sep]
    assert types == [0] * (len(kg.entity_text_ids[0]) + 2) + [1] * (len(kg.relation_text_ids[0]) + 1)
    inv_ids, _ = b.query(0, kg.num_relations)  # inverse relation text
    assert inv_ids[-len(kg.relation_inverse_ids[0]) - 1:-1] == kg.relation_inverse_ids[0]
    # truncation keeps the relation and cuts the head
    long_head = list(range(2000, 2010))
    ids, types = b.query(0, 0, head_tokens=long_head)
    assert len(ids) == 8 and ids[-len(kg.relation_text_ids[0]) - 1:-1] == kg.relation_text_ids[0]
    c = b.candidate(0, tokens=long_head)
    assert c == [sp.cls, 2000, 2001, sp.sep]


def test_negative_sampling_avoids_known_answers(toy):
    kg, _ = toy
    known = train_known_answers(kg)
    batch = np.array([[0, 0, 1]] * 50)
    neg = sample_negative_tails(batch, known, kg.num_entities, np.random.default_rng(0))
    assert not set(neg.tolist()) & {1, 2}


def test_known_answers_empty():
    k = KnownAnswers(np.zeros((0, 3), dtype=np.int64), 5, 2)
    assert not k.contains(np.array([0]), np.array([0]), np.array([0])).any()
