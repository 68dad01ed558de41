"""Filtered ranks, the filter index and metrics, on hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lpbert_core.ranking.filtered_ranks import build_filter_index, filtered_ranks, metrics_from_ranks


def test_ranks_with_ties_unfiltered():
    # gold = entity 1 (score 0.5); one candidate above (0.9), two tied with it (0.5, 0.5 at 3 and 4), one below.
    scores = torch.tensor([[0.9, 0.5, 0.1, 0.5, 0.5]])
    out = filtered_ranks(scores, torch.tensor([1]), torch.zeros(1, 5, dtype=torch.bool))
    assert out["optimistic"].tolist() == [2.0]  # 1 + one strictly better
    assert out["pessimistic"].tolist() == [4.0]  # 0.9, gold, and the two ties
    assert out["realistic"].tolist() == [3.0]
    assert out["num_candidates"].tolist() == [5.0]


def test_ranks_no_ties_best_and_worst():
    scores = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    out = filtered_ranks(scores, torch.tensor([0, 2]), None)
    assert out["optimistic"].tolist() == [1.0, 3.0]
    assert out["pessimistic"].tolist() == [1.0, 3.0]
    assert out["realistic"].tolist() == [1.0, 3.0]


def test_filtering_removes_other_true_answers():
    # gold 3 (0.4); entities 0 and 1 score higher but 1 is another true answer -> filtered; 2 ties and is filtered too.
    scores = torch.tensor([[0.8, 0.9, 0.4, 0.4, 0.1]])
    known = torch.tensor([[False, True, True, False, False]])
    out = filtered_ranks(scores, torch.tensor([3]), known)
    assert out["optimistic"].tolist() == [2.0]  # only entity 0 above
    assert out["pessimistic"].tolist() == [2.0]  # the tie at 2 is filtered
    assert out["realistic"].tolist() == [2.0]
    assert out["num_candidates"].tolist() == [3.0]
    raw = filtered_ranks(scores, torch.tensor([3]), None)
    assert raw["optimistic"].tolist() == [3.0] and raw["pessimistic"].tolist() == [4.0]


def test_gold_never_filtered():
    scores = torch.tensor([[0.2, 0.7, 0.5]])
    known = torch.tensor([[False, True, True]])  # the gold (2) is itself marked known
    out = filtered_ranks(scores, torch.tensor([2]), known)
    assert out["optimistic"].tolist() == [1.0]
    assert out["pessimistic"].tolist() == [1.0]
    assert out["num_candidates"].tolist() == [2.0]
    assert known[0, 2]  # the caller's mask is not modified


def test_ranks_stay_on_device_and_batch_independent():
    torch.manual_seed(0)
    scores = torch.randn(4, 50)
    gold = torch.tensor([0, 10, 20, 49])
    known = torch.rand(4, 50) < 0.3
    batch = filtered_ranks(scores, gold, known)
    for i in range(4):
        single = filtered_ranks(scores[i : i + 1], gold[i : i + 1], known[i : i + 1])
        for key in ("optimistic", "pessimistic", "realistic", "num_candidates"):
            assert batch[key][i].item() == single[key][0].item()
    assert batch["realistic"].device == scores.device


def test_nan_scores_raise():
    scores = torch.tensor([[0.1, float("nan"), 0.3]])
    with pytest.raises(ValueError, match="NaN"):
        filtered_ranks(scores, torch.tensor([0]), None)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        filtered_ranks(torch.zeros(2, 3), torch.tensor([0]), None)
    with pytest.raises(ValueError):
        filtered_ranks(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 4, dtype=torch.bool))


# Toy graph: entities 0..4, relations 0..1.
TOY = np.array(
    [
        [0, 0, 1],
        [0, 0, 2],
        [3, 0, 2],
        [0, 1, 4],
        [2, 1, 0],
        [0, 0, 1],  # duplicate (e.g. in two splits)
    ]
)


def test_filter_index_tail_and_head_directions():
    index = build_filter_index(TOY, num_entities=5)
    # tails of (head=0, rel=0): {1, 2}
    assert index.answers(0, 0, "tail") == [1, 2]
    # heads of (tail=2, rel=0): {0, 3}
    assert index.answers(2, 0, "head") == [0, 3]
    # tails of (head=0, rel=1): {4}; heads of (tail=0, rel=1): {2}
    assert index.answers(0, 1, "tail") == [4]
    assert index.answers(0, 1, "head") == [2]
    # unknown key, unknown relation
    assert index.answers(4, 0, "tail") == []
    assert index.answers(0, 7, "tail") == []


def test_filter_index_batch_mask():
    index = build_filter_index(TOY, num_entities=5)
    mask = index.mask(torch.tensor([0, 4, 2, 0]), torch.tensor([0, 0, 0, 1]), "tail", "cpu")
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0, [1, 2]] = True
    expected[3, 4] = True
    assert mask.dtype == torch.bool and mask.shape == (4, 5)
    assert torch.equal(mask, expected)
    heads = index.mask(torch.tensor([2, 1, 0]), torch.tensor([0, 0, 1]), "head", torch.device("cpu"))
    expected = torch.zeros(3, 5, dtype=torch.bool)
    expected[0, [0, 3]] = True
    expected[1, 0] = True
    expected[2, 2] = True
    assert torch.equal(heads, expected)


def test_filter_index_with_ranks_end_to_end():
    index = build_filter_index(TOY, num_entities=5)
    # query (0, 0, ?) with gold tail 2; entity 1 (another known tail) scores highest and is filtered.
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.3, 0.8]])
    mask = index.mask(torch.tensor([0]), torch.tensor([0]), "tail", "cpu")
    out = filtered_ranks(scores, torch.tensor([2]), mask)
    assert out["optimistic"].item() == 1.0
    assert out["pessimistic"].item() == 2.0  # the tie with entity 4
    assert out["realistic"].item() == 1.5


def test_filter_index_rejects_bad_input():
    with pytest.raises(ValueError):
        build_filter_index(np.array([[0, 0, 9]]), num_entities=5)
    with pytest.raises(ValueError):
        build_filter_index(np.zeros((3, 2), dtype=int), num_entities=5)
    index = build_filter_index(TOY, num_entities=5)
    with pytest.raises(ValueError):
        index.mask(torch.tensor([0]), torch.tensor([0]), "sideways", "cpu")


def test_filter_index_empty_graph():
    index = build_filter_index(np.zeros((0, 3), dtype=np.int64), num_entities=3)
    assert not index.mask(torch.tensor([0, 1]), torch.tensor([0, 0]), "tail", "cpu").any()


def test_metrics_from_ranks_hand_made():
    frame = pd.DataFrame(
        {
            "direction": ["head", "head", "tail", "tail"],
            "optimistic": [1.0, 2.0, 3.0, 20.0],
            "pessimistic": [1.0, 4.0, 3.0, 20.0],
            "realistic": [1.0, 3.0, 3.0, 20.0],
        }
    )
    metrics = metrics_from_ranks(frame)
    assert set(metrics) == {"both", "head", "tail"}
    both = metrics["both"]
    assert both["count"] == 4
    assert both["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3 + 1 / 20) / 4)
    assert both["mr"] == pytest.approx(27 / 4)
    assert both["hits@1"] == pytest.approx(0.25)
    assert both["hits@3"] == pytest.approx(0.75)
    assert both["hits@10"] == pytest.approx(0.75)
    assert both["mrr_optimistic"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 20) / 4)
    assert both["mrr_pessimistic"] == pytest.approx((1 + 1 / 4 + 1 / 3 + 1 / 20) / 4)
    assert metrics["head"]["count"] == 2 and metrics["head"]["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert metrics["tail"]["hits@1"] == 0.0 and metrics["tail"]["mr"] == pytest.approx(11.5)
    json.dumps(metrics, allow_nan=False)  # JSON-safe
    assert all(type(v) in (float, int) for v in both.values())


def test_metrics_fractional_realistic_rank_is_not_a_hit_at_1():
    metrics = metrics_from_ranks(pd.DataFrame({"direction": ["tail"], "realistic": [1.5]}))
    assert metrics["tail"]["hits@1"] == 0.0 and metrics["tail"]["hits@3"] == 1.0
    assert metrics["head"]["count"] == 0 and metrics["head"]["mrr"] is None
    json.dumps(metrics, allow_nan=False)


def test_metrics_bad_frames():
    with pytest.raises(ValueError):
        metrics_from_ranks(pd.DataFrame({"direction": ["tail"]}))
    with pytest.raises(ValueError):
        metrics_from_ranks(pd.DataFrame({"direction": ["up"], "realistic": [1.0]}))
    with pytest.raises(ValueError):
        metrics_from_ranks(pd.DataFrame({"direction": ["tail"], "realistic": [float("nan")]}))
