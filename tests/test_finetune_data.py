"""Fine-tuning data: inverse augmentation, label matrix (duplicates, train-only), query building, negatives,
training batch order (random / length), self-negative mask."""
import numpy as np
import pytest
import torch

from lpbert_core.finetune.finetune_data import label_matrix, sample_negative_tails, self_negative_mask, training_triples
from lpbert_core.graph.known_answers import augment_inverse, KnownAnswers, train_known_answers
from lpbert_core.model.sequences import SequenceBuilder
from conftest import make_toy_kg
from lpbert_core.runtime.training import epoch_seed, length_sorted_batches, training_batches


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


# ------------------------------------------------------------------ training batch order

LENGTHS = np.random.default_rng(1).integers(5, 40, size=1000)  # 1,000 examples, batch 16: 63 batches (last short)


def _flat(batches):
    return np.concatenate(batches)


def test_random_batches_cover_every_example_once_and_repeat_with_the_seed():
    for epoch in (0, 1):
        batches = training_batches(LENGTHS, 16, "random", epoch_seed(42, epoch))
        assert len(batches) == 63 and [len(b) for b in batches[:-1]] == [16] * 62 and len(batches[-1]) == 1000 - 992
        assert sorted(_flat(batches).tolist()) == list(range(1000))
        again = training_batches(LENGTHS, 16, "random", epoch_seed(42, epoch))
        assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    e0 = training_batches(LENGTHS, 16, "random", epoch_seed(42, 0))
    e1 = training_batches(LENGTHS, 16, "random", epoch_seed(42, 1))
    assert not np.array_equal(_flat(e0), _flat(e1))  # a fresh order every epoch


def test_random_batches_are_not_length_buckets():
    seed = epoch_seed(42, 0)
    rand = training_batches(LENGTHS, 16, "random", seed)
    length = training_batches(LENGTHS, 16, "length", seed)
    assert len(rand) == len(length)  # same steps per epoch (the LR schedule does not depend on the order)
    assert {tuple(sorted(b.tolist())) for b in rand} != {tuple(sorted(b.tolist())) for b in length}
    # length buckets: a narrow length range per batch; random: about the whole range
    spread = lambda bs: np.mean([np.ptp(LENGTHS[b]) for b in bs])  # noqa: E731
    assert spread(length) < 3 < 25 < spread(rand)


def test_length_order_is_the_old_length_sorted_batching():
    for seed in (0, epoch_seed(42, 3)):
        old = length_sorted_batches(LENGTHS, 16, shuffle=True, seed=seed)
        new = training_batches(LENGTHS, 16, "length", seed)
        assert len(old) == len(new) and all(np.array_equal(a, b) for a, b in zip(old, new))
    with pytest.raises(ValueError, match="batch_order"):
        training_batches(LENGTHS, 16, "sorted", 0)


# ------------------------------------------------------------------ self-negatives

def test_self_negative_mask(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    ents = {f"e{i}": (w, "") for i, w in enumerate("apple banana cherry dog".split())}
    # (e2, r1, e2): e2 is a known answer of its own query (e2, r1)
    train = [("e0", "r0", "e1"), ("e2", "r1", "e2"), ("e2", "r0", "e3"), ("e3", "r0", "e0")]
    kg = make_toy_kg(tok, ents, {"r0": "likes", "r1": "is"}, {"train": train})
    known = train_known_answers(kg)
    batch = np.array([[0, 0, 1], [2, 1, 2], [2, 0, 3], [3, 0, 0]])
    # no candidate scored yet: only the (e2, r1) row is left out (its anchor is a known answer)
    assert self_negative_mask(batch, known).tolist() == [True, False, True, True]
    # in-batch: every row scores the batch's tails e1 e2 e3 e0, which hold every anchor: the pair (query i, h_i)
    # is already a column of row i, so no extra column (no double count); row 1 is a known answer anyway
    tails = np.broadcast_to(batch[:, 2], (4, 4))
    assert self_negative_mask(batch, known, tails).tolist() == [False, False, False, False]
    # tails e1 e0 e3: anchors e0 (row 0) and e3 (row 1) are columns already, e2 (row 2) is not
    batch2 = np.array([[0, 0, 1], [3, 0, 0], [2, 0, 3]])
    assert self_negative_mask(batch2, known, np.broadcast_to(batch2[:, 2], (3, 3))).tolist() == [False, False, True]
    # the label matrix scores those existing columns as negatives: (e0, r0) vs e0, (e3, r0) vs e3
    y = label_matrix(batch2, known)
    assert y[0, 1] == 0 and y[1, 2] == 0
    # sampled mode: row i scores [its tail, its sampled negative]; a negative equal to the anchor is that pair
    scored = np.stack([batch[:, 2], np.array([0, 3, 1, 1])], 1)
    assert self_negative_mask(batch, known, scored).tolist() == [False, False, True, True]
