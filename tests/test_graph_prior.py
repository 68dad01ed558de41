"""n-hop re-ranking (lpbert_core.ranking.graph_prior; rule score_reranked): the neighbourhoods on a small graph by
hand, the bonus in rank_queries, the settings, and a re-ranked score rule recomputed by hand on a tiny trained run."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import paper_section

from lpbert_core.config.settings import RerankSettings
from lpbert_core.errors import ConfigError
from lpbert_core.ranking.graph_prior import NeighbourPrior
from lpbert_core.ranking.filtered_ranks import build_filter_index
from lpbert_core.ranking.rank_split import build_queries, rank_queries

from test_job_settings import cpu_jobs  # noqa: F401 (config.yaml + configs/cpu.yaml)
from test_predict import run_dir  # noqa: F401 (the tiny trained run of the predictor tests)

# 0 - 1 - 2 - 3 - 4 (relations 0 and 1, both directions), a self-loop on 0, a parallel edge 1 - 2, 5 isolated
CHAIN = np.array([[0, 0, 1], [2, 1, 1], [1, 0, 2], [2, 0, 3], [3, 1, 4], [0, 1, 0]])


def _sets(prior, anchors):
    rows, cols = prior.reach(np.array(anchors))
    return [sorted(int(c) for c in cols[rows == i]) for i in range(len(anchors))]


def test_neighbourhoods_by_hand():
    one = NeighbourPrior(CHAIN, 6, hops=1, weight=0.05)
    assert _sets(one, [0, 2, 5]) == [[1], [1, 3], []]  # the self-loop is no edge; direction and type ignored
    two = NeighbourPrior(CHAIN, 6, hops=2, weight=0.05)
    assert _sets(two, [0, 2]) == [[1, 2], [0, 1, 3, 4]]  # 0 - 1 - 0 does not make 0 its own neighbour
    three = NeighbourPrior(CHAIN, 6, hops=3, weight=0.05)
    assert _sets(three, [0, 4]) == [[1, 2, 3], [1, 2, 3]]
    bonus = two.bonus(torch.tensor([0, 2]))
    assert bonus.shape == (2, 6) and bonus.dtype == torch.float32
    assert bonus[0].tolist() == pytest.approx([0, 0.05, 0.05, 0, 0, 0])
    with pytest.raises(ValueError, match="hops"):
        NeighbourPrior(CHAIN, 6, hops=0, weight=0.05)


def test_rank_queries_with_the_prior():
    """Query (0, r0, ?) with gold 3 and unit vectors: cosines 0.50 / 0.55 / 0.60 with entities 2 / 3 / 4 (entity 5
    takes the rest of the norm); within 3 hops of 0 are 1, 2, 3. A bonus of 0.04 leaves 4 first (0.59 < 0.60), 0.06
    lifts 3 over it; a prior that reaches only 2 pushes the gold down instead."""
    E = 6
    ent = torch.eye(E)
    query = torch.tensor([[0.0, 0.0, 0.5, 0.55, 0.6, (1 - 0.5**2 - 0.55**2 - 0.6**2) ** 0.5]])
    queries = build_queries(np.array([[0, 0, 3]]), num_relations=2, directions=("tail",))
    index = build_filter_index(np.array([[0, 0, 3]]), E)

    def rank(prior):
        return rank_queries(query, ent, queries, index, prior=prior)["realistic"].tolist()

    assert rank(None) == [2.0]
    assert rank(NeighbourPrior(CHAIN, E, hops=3, weight=0.04)) == [2.0]
    assert rank(NeighbourPrior(CHAIN, E, hops=3, weight=0.06)) == [1.0]
    assert rank(NeighbourPrior(np.array([[0, 1, 2]]), E, hops=1, weight=0.06)) == [3.0]


def test_settings_resolve_per_dataset(cpu_jobs):
    assert cpu_jobs.resolve("rerank", "WN18RR") == RerankSettings(hops=1, weight=0.5)
    assert cpu_jobs.resolve("rerank", "umls") == RerankSettings(hops=2, weight=0.05)
    params = cpu_jobs.rerank_params("WN18RR", "lpbert")
    assert params["rerank"] == {"hops": 1, "weight": 0.5}
    assert params["settings"] == cpu_jobs.score_params("WN18RR", "lpbert")["settings"]
    with pytest.raises(ConfigError, match="rerank.hops"):
        RerankSettings.from_mapping({"hops": "five", "weight": 0.05})


def _bfs(edges, anchor, hops):
    adj = {}
    for h, _, t in edges:
        if h != t:
            adj.setdefault(h, set()).add(t)
            adj.setdefault(t, set()).add(h)
    seen, frontier = set(), {anchor}
    for _ in range(hops):
        frontier = {n for f in frontier for n in adj.get(f, ())}
        seen |= frontier
    return seen - {anchor}


@pytest.mark.parametrize("weight", [0.0, 10.0])
def test_reranked_score_rule_recomputed_by_hand(run_dir, weight, tmp_path):
    """The rule's re-ranked ranks (1 hop) equal a recompute from the run's pair scores (the predictor's), a BFS and a
    rank count by hand; weight 0 gives the plain score rule's ranks, weight 10 pushes both golds (two hops out) down."""
    from lpbert_core.evaluate.predict import LinkPredictor
    from lpbert_core.evaluate.scoring import run_score

    root = run_dir.parents[1]
    graph = {"triples": root / "text" / "triples.parquet", "manifest": root / "tokens" / "minilm" / "manifest.json"}
    out = run_score(settings=paper_section("score", batch_size=4, chunk_size=3),
                    inputs={**graph, "model": run_dir / "model"},
                    outputs={"ranks": tmp_path / "r.parquet", "metrics": tmp_path / "m.json"}, log=lambda m: None,
                    rerank={"hops": 1, "weight": weight})
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["rerank"]["hops"] == 1 and "RE-RANKED" in saved["protocol"]
    assert out["metrics"] == saved["metrics"]
    frame = pd.read_parquet(tmp_path / "r.parquet")
    assert len(frame) == 2  # the toy graph's one test triple, both directions
    lp = LinkPredictor.from_run(run_dir)
    kg = lp.kg
    E = kg.num_entities
    ent = {e: i for i, e in enumerate(kg.entity_ids)}
    rel = {r: i for i, r in enumerate(kg.relation_ids)}
    train = [tuple(map(int, t)) for t in kg.triples["train"]]
    known = {tuple(map(int, t)) for s in ("train", "dev", "test") for t in kg.triples[s]}
    for _, row in frame.iterrows():
        h, r, t = ent[row["head"]], rel[row["relation"]], ent[row["tail"]]
        if row["direction"] == "tail":
            anchor, gold = h, t
            listed = lp.top_k(head=row["head"], relation=row["relation"], k=E)
            others = {e for e in range(E) if (h, r, e) in known and e != t}
        else:
            anchor, gold = t, h
            listed = lp.top_k(relation=row["relation"], tail=row["tail"], k=E)
            others = {e for e in range(E) if (e, r, t) in known and e != h}
        scores = np.zeros(E)
        for item in listed:
            scores[ent[item["entity"]]] = item["score"]
        assert gold not in _bfs(train, anchor, 1)  # both golds lie two hops out: a large weight pushes them down
        for e in _bfs(train, anchor, 1):
            scores[e] += weight
        rest = [e for e in range(E) if e not in others and e != gold]
        above = sum(scores[e] > scores[gold] + 1e-5 for e in rest)
        tied = sum(abs(scores[e] - scores[gold]) <= 1e-5 for e in rest)
        assert row["realistic"] == pytest.approx(1 + above + tied / 2)
    plain = pd.read_parquet(run_dir / "ranks.parquet")
    if weight == 0.0:
        pd.testing.assert_frame_equal(frame, plain)
    else:
        assert (frame["realistic"] >= plain["realistic"]).all() and (frame["realistic"] > plain["realistic"]).any()


def test_dev_sweep_plain_row_and_grid(run_dir):
    """The sweep's plain row is the dev ranking; a weight of 0 at any hops ranks like it; every grid point has a
    row."""
    from lpbert_core.evaluate.predict import LinkPredictor
    from lpbert_core.ranking.rank_split import evaluate_split
    from lpbert_core.ranking.rerank_sweep import sweep_dev

    lp = LinkPredictor.from_run(run_dir)
    rows = sweep_dev(lp.model, lp.kg, lp.builder, lp.device, [1, 2], [0.0, 0.5], batch_size=4, chunk_size=3,
                     log=lambda m: None)
    assert [(r["hops"], r["weight"]) for r in rows] == [(0, 0.0), (1, 0.0), (1, 0.5), (2, 0.0), (2, 0.5)]
    _, plain, _ = evaluate_split(lp.model, lp.kg, lp.builder, "dev", lp.device, batch_size=4, chunk_size=3,
                                 precision="auto", head_ranking="inverse_query")
    assert rows[0]["mrr"] == plain["both"]["mrr"] and rows[0]["mr"] == plain["both"]["mr"]
    assert rows[1]["mrr"] == rows[0]["mrr"] and rows[3]["mrr"] == rows[0]["mrr"]


def test_candidate_lists_with_the_prior_by_hand(run_dir):
    """A list block (e1, r1, ?) with lines e7 (true), e2, e5: the re-ranked list rank equals a count by hand from the
    run's pair scores plus the bonus on e1's 1-hop neighbours (e2 is one, e7 and e5 are not)."""
    from lpbert_core.evaluate.candidate_lists import rank_candidate_lists
    from lpbert_core.evaluate.predict import LinkPredictor
    from lpbert_core.ranking.candidate_blocks import CandidateBlocks

    lp = LinkPredictor.from_run(run_dir)
    ent = {e: i for i, e in enumerate(lp.kg.entity_ids)}
    rel = {r: i for i, r in enumerate(lp.kg.relation_ids)}
    lines = [ent["e7"], ent["e2"], ent["e5"]]
    blocks = CandidateBlocks(head=np.array([ent["e1"]]), relation=np.array([rel["r1"]]), tail=np.array([ent["e7"]]),
                             direction=np.array(["tail"]), candidates=np.array([lines]), source=["hand:1"])
    listed = {item["entity"]: item["score"] for item in lp.top_k(head="e1", relation="r1", k=lp.kg.num_entities)}
    assert ent["e2"] in _bfs([tuple(map(int, t)) for t in lp.kg.triples["train"]], ent["e1"], 1)
    for weight in (0.0, 0.01, 10.0):
        prior = NeighbourPrior(lp.kg.triples["train"], lp.kg.num_entities, hops=1, weight=weight)
        frame = rank_candidate_lists(lp.model, lp.kg, lp.builder, blocks, lp.device, 4, prior=prior)
        scores = [listed["e7"], listed["e2"] + weight, listed["e5"]]
        above = sum(s > scores[0] + 1e-5 for s in scores[1:])
        tied = sum(abs(s - scores[0]) <= 1e-5 for s in scores[1:])
        assert frame["realistic"].iloc[0] == pytest.approx(1 + above + tied / 2), weight
        if weight == 10.0:
            assert frame["realistic"].iloc[0] >= 2


def test_a_pair_linear_run_is_refused():
    from lpbert_core.ranking.graph_prior import prior_from

    with pytest.raises(ConfigError, match="cosine"):
        prior_from({"hops": 1, "weight": 0.5}, None, "pair_linear")
