"""Known answers closed under symmetric relations (`finetune.symmetric_closure`, issue #25 item 5): detection on train,
the trap it closes (a test answer drawn as a negative of its own query), default keys unchanged, `answers_of`."""
from types import SimpleNamespace

import numpy as np

from lpbert_core.finetune.extra_negatives import Neighbourhood, sample_hard_negatives
from lpbert_core.finetune.finetune_data import label_matrix
from lpbert_core.graph.known_answers import (KnownAnswers, augment_inverse, close_symmetric, known_answers,
                                       self_reverse_shares, symmetric_relations, train_known_answers)

R = 2  # relation 0 symmetric, relation 1 not
# relation 0: 5 reversed pairs + (4, 0, 5) alone = 10 / 11 self-reverse; the self-loop (14, 0, 14) is ignored
SYM = [(6, 0, 7), (7, 0, 6), (8, 0, 9), (9, 0, 8), (10, 0, 11), (11, 0, 10), (12, 0, 13), (13, 0, 12),
       (5, 0, 16), (16, 0, 5), (4, 0, 5), (14, 0, 14)]
ASYM = [(0, 1, 2), (2, 1, 3), (3, 1, 0)]
# dev: the reverses of relation 1's train triples, 5 more reversed pairs; with test's (1, 1, 3), relation 1 is 16 / 17
# self-reverse over all splits but 0 / 3 in train
DEV = [(2, 1, 0), (3, 1, 2), (0, 1, 3), (1, 1, 15), (15, 1, 1), (1, 1, 16), (16, 1, 1), (2, 1, 15), (15, 1, 2),
       (2, 1, 16), (16, 1, 2), (3, 1, 15), (15, 1, 3)]


def toy_kg():
    """The trap: test (5, 0, 4) while train holds its reverse (4, 0, 5). Relation 1 looks symmetric only with dev and
    test in: detection must not see them."""
    triples = {"train": np.array(SYM + ASYM), "dev": np.array(DEV), "test": np.array([(5, 0, 4), (1, 1, 3)])}
    return SimpleNamespace(triples=triples, num_entities=17, num_relations=R)


def test_symmetric_relations_finds_exactly_the_symmetric_one():
    kg = toy_kg()
    shares = self_reverse_shares(kg.triples["train"], R)
    assert np.isclose(shares[0], 10 / 11) and shares[1] == 0.0
    assert symmetric_relations(kg.triples["train"], R).tolist() == [0]
    assert symmetric_relations(kg.triples["train"], R, threshold=0.95).tolist() == []
    # dev and test would make relation 1 symmetric: detection reads the split it is given (train in the library)
    every = np.concatenate([kg.triples[s] for s in ("train", "dev", "test")])
    assert symmetric_relations(every, R).tolist() == [0, 1]


def test_self_loops_only_is_not_symmetric():
    t = np.array([(0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 1, 0)])
    assert np.isnan(self_reverse_shares(t, 2)[0])
    assert symmetric_relations(t, 2).tolist() == [1]


def test_trap_closed_label_matrix_and_hard_negatives():
    kg = toy_kg()
    h, r, t = kg.triples["test"][0]
    off, on = train_known_answers(kg), train_known_answers(kg, symmetric_closure=True)
    assert not off.contains(h, r, t) and on.contains(h, r, t)
    assert not off.contains(t, r + R, h) and on.contains(t, r + R, h)  # the head query (?, r, t) as (t, r + R, ?)
    # relation 1 stays open with every split's rows known: (1, 1, 3) is known, its reverse is not
    leaky = known_answers(kg, ("train", "dev", "test"), symmetric_closure=True)
    assert leaky.contains(1, 1, 3) and not leaky.contains(3, 1, 1) and leaky.contains(4, 0, 5)

    # label matrix: training row (5, 0, 16) against the inverse row (5, 0 + R, 4), whose tail 4 answers (5, 0)
    batch = np.array([(5, 0, 16), (5, R, 4)])
    assert label_matrix(batch, off)[0, 1] == 0  # a false negative
    assert label_matrix(batch, on)[0, 1] == 1

    # hard negatives: 5's train neighbours are 4 and 16 (its own tail): without closure every draw is the answer 4
    hood = Neighbourhood(kg.triples["train"], kg.num_entities)
    rows = np.array([(5, 0, 16)] * 50)
    drawn_off, _ = sample_hard_negatives(rows, off, hood, 4, np.random.default_rng(0))
    assert (drawn_off == 4).all()
    drawn_on, fallbacks = sample_hard_negatives(rows, on, hood, 4, np.random.default_rng(0))
    assert not (drawn_on == 4).any() and fallbacks == 50 * 4  # no neighbour left: uniform non-answers


def test_closure_off_keys_identical_to_before():
    rng = np.random.default_rng(3)
    E, R_ = 30, 4
    train = rng.integers(0, [E, R_, E], size=(200, 3))
    train = np.concatenate([train, train[:100][:, ::-1]])  # relations partly self-reverse
    kg = SimpleNamespace(triples={"train": train, "dev": rng.integers(0, [E, R_, E], size=(20, 3)),
                                  "test": rng.integers(0, [E, R_, E], size=(20, 3))},
                         num_entities=E, num_relations=R_)
    before = KnownAnswers(augment_inverse(train, R_), E, 2 * R_).keys  # the code before closure existed
    assert np.array_equal(train_known_answers(kg).keys, before)
    assert np.array_equal(known_answers(kg).keys, before)
    assert np.array_equal(train_known_answers(kg, False).keys, KnownAnswers(train, E, 2 * R_).keys)
    rows = augment_inverse(np.concatenate([kg.triples[s] for s in ("train", "dev", "test")]), R_)
    assert np.array_equal(known_answers(kg, ("train", "dev", "test")).keys, KnownAnswers(rows, E, 2 * R_).keys)


def test_closure_is_closed_and_inverse_consistent():
    kg = toy_kg()
    on = train_known_answers(kg, symmetric_closure=True)
    E, R2 = on.E, on.R2
    h, rt = np.divmod(on.keys, E * R2)
    r, t = np.divmod(rt, E)
    sym = (r % R) == 0
    assert on.contains(t[sym], r[sym], h[sym]).all()  # reversal-closed for relation 0 and its inverse id
    rev = np.where(r < R, r + R, r - R)
    assert on.contains(t, rev, h).all()  # every row's inverse row is there
    assert np.array_equal(close_symmetric(np.empty((0, 3)), [0], R), np.empty((0, 3)))


def test_answers_of_matches_brute_force():
    rng = np.random.default_rng(7)
    E, R2 = 25, 6
    rows = rng.integers(0, [E, R2, E], size=(300, 3))
    known = KnownAnswers(rows, E, R2)
    h = np.concatenate([rng.integers(0, E, 200), [0, E - 1]])
    r = np.concatenate([rng.integers(0, R2, 200), [0, R2 - 1]])
    got_rows, got_tails = known.answers_of(h, r)
    want = [(i, e) for i in range(len(h)) for e in range(E) if known.contains(h[i], r[i], e)]
    assert list(zip(got_rows.tolist(), got_tails.tolist())) == want
    assert known.answers_of(np.array([], dtype=np.int64), np.array([], dtype=np.int64))[0].shape == (0,)
    empty = KnownAnswers(np.empty((0, 3)), E, R2).answers_of(h, r)
    assert empty[0].shape == empty[1].shape == (0,)


def test_known_matrix_equals_contains_on_the_grid():
    """KnownAnswers.matrix (the label matrix's fast path) against `contains` on every (row, column) pair, with
    repeated columns and queries without answers."""
    from lpbert_core.graph.known_answers import KnownAnswers

    rng = np.random.default_rng(3)
    triples = np.stack([rng.integers(0, 12, 200), rng.integers(0, 4, 200), rng.integers(0, 12, 200)], 1)
    known = KnownAnswers(triples, 12, 4)
    h, r = rng.integers(0, 12, 30), rng.integers(0, 4, 30)
    columns = rng.integers(0, 12, 25)
    grid = known.contains(np.repeat(h, 25), np.repeat(r, 25), np.tile(columns, 30)).reshape(30, 25)
    assert np.array_equal(known.matrix(h, r, columns), grid)
    assert known.matrix(h, r, columns[:0]).shape == (30, 0)
