"""tools/anchor_rank.py: the anchor counts of a hand-made score block (the filtered protocol's masking, the
anchor left out or kept)."""
import torch

from conftest import load_script


def _anchor_module():
    return load_script("tools/anchor_rank.py", "anchor_rank")


def test_anchor_counts_hand_computed():
    counts = _anchor_module().anchor_counts
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3],     # anchor 0 first; gold 2 second, first once the anchor is out
                           [0.95, 0.2, 0.1, 0.6],    # entity 0 is a known answer (filtered): gold 3 first
                           [0.3, 0.4, 0.99, 0.1]])   # anchor 2 is itself a known answer: filtered, entity 1 first
    anchors, gold = torch.tensor([0, 1, 2]), torch.tensor([2, 3, 0])
    known = torch.zeros(3, 4, dtype=torch.bool)
    known[0, 2] = known[1, 3] = known[1, 0] = known[2, 0] = known[2, 2] = True
    assert counts(scores, anchors, gold, known) == {
        "anchor_is_top_candidate": 1, "anchor_scores_above_gold": 1, "anchor_filtered_as_known_answer": 1,
        "hits@1_unbroken_ties": 1, "hits@1_anchor_removed": 2}


def test_anchor_that_is_the_gold_stays_in():
    counts = _anchor_module().anchor_counts
    scores = torch.tensor([[0.2, 0.8, 0.1]])  # a self-loop (h, r, h): the anchor is the answer and ranks first
    known = torch.tensor([[False, True, False]])
    out = counts(scores, torch.tensor([1]), torch.tensor([1]), known)
    assert out["hits@1_unbroken_ties"] == 1 and out["hits@1_anchor_removed"] == 1
    assert out["anchor_is_top_candidate"] == 1 and out["anchor_filtered_as_known_answer"] == 0


def test_collect_metrics_records_each_matching_run(tmp_path):
    """tools/collect_metrics.py: every metrics.json the globs match, its both-direction metrics and re-ranking, and an
    error (not an empty record) when nothing matches."""
    import json

    import pytest

    tool = load_script("tools/collect_metrics.py", "collect_metrics")
    both = {"mrr": 0.5, "hits@1": 0.25, "hits@3": 0.5, "hits@10": 1.0, "mr": 2.5, "count": 4}
    for rel, rerank in [("results/g_ind/runs/a/metrics.json", None),
                        ("results/g_ind/runs/a/rerank/metrics.json", {"hops": 1, "weight": 0.2})]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"metrics": {"both": both}, "protocol": "p", "rerank": rerank, "leaky": False}))
    cells = tool.collect(tmp_path, ["results/*_ind/runs/*/metrics.json", "results/*_ind/runs/*/*/metrics.json"])
    assert list(cells) == ["results/g_ind/runs/a/metrics.json", "results/g_ind/runs/a/rerank/metrics.json"]
    assert cells["results/g_ind/runs/a/rerank/metrics.json"]["rerank"] == {"hops": 1, "weight": 0.2}
    assert cells["results/g_ind/runs/a/metrics.json"]["hits@10"] == 1.0
    with pytest.raises(SystemExit):
        tool.main(["--root", str(tmp_path), "--out", str(tmp_path / "o.json"), "results/none/*.json"])
    assert not (tmp_path / "o.json").exists()
