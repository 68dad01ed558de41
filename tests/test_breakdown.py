"""Breakdowns of a run's ranks: per relation and direction (lpbert_core.evaluate.breakdown), by the answer's hop distance
(lpbert_core.evaluate.hop_breakdown); values checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lpbert_core.evaluate.breakdown import breakdown, run_breakdown

REPO = Path(__file__).resolve().parents[1]


def ranks() -> pd.DataFrame:
    rows = [("likes", "tail", 1.0), ("likes", "head", 4.0), ("likes", "tail", 2.0), ("eats", "head", 10.0),
            ("eats", "tail", 20.0), ("likes", "head", 1.0)]
    return pd.DataFrame(rows, columns=["relation", "direction", "realistic"])


def test_values_per_relation_direction_and_overall():
    frame = breakdown(ranks()).set_index(["relation", "direction"])
    assert list(dict.fromkeys(frame.index.get_level_values(0))) == ["likes", "eats", "ALL"]  # most queries first
    assert frame.loc[("likes", "tail"), "mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert frame.loc[("likes", "head"), "mr"] == pytest.approx(2.5)
    assert frame.loc[("likes", "both"), "queries"] == 4
    assert frame.loc[("eats", "both"), "hits@10"] == pytest.approx(0.5)
    assert frame.loc[("ALL", "both"), "hits@1"] == pytest.approx(2 / 6)
    assert frame.loc[("ALL", "head"), "queries"] == 3


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="realistic"):
        breakdown(ranks().drop(columns="realistic"))


def test_rule_entry_writes_csv_and_png(tmp_path):
    ranks().to_parquet(tmp_path / "ranks.parquet")
    run_breakdown(settings={"title": "toy"}, inputs={"ranks": tmp_path / "ranks.parquet"},
                  outputs={"csv": tmp_path / "b.csv", "png": tmp_path / "b.png"})
    assert pd.read_csv(tmp_path / "b.csv").shape[0] == 9
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_hop_distance_of_the_answer_from_the_query_entity():
    from lpbert_core.evaluate.hop_breakdown import anchor_gold_distances, by_hop_distance, reverse_in_graph

    # observed graph: a - b - c - d - e (relation types ignored, direction ignored), f alone with g
    edges = [("a", "r", "b"), ("c", "s", "b"), ("c", "r", "d"), ("d", "r", "e"), ("f", "r", "g")]
    ranks = pd.DataFrame([
        ("tail", "a", "x", "b", 1.0),   # anchor a, answer b: 1 hop
        ("head", "a", "x", "b", 4.0),   # head query: anchor b, answer a: 1 hop (undirected: the same either way)
        ("tail", "a", "x", "c", 2.0),   # 2 hops
        ("head", "a", "x", "e", 10.0),  # anchor e, answer a: 4 hops (> 3)
        ("tail", "a", "x", "f", 50.0),  # another component: unreachable
        ("tail", "a", "x", "zz", 20.0),  # an entity with no observed triple: unreachable
        ("tail", "zz", "x", "zz", 2.0),  # a self-loop: the answer is the query's own entity, 0 hops, observed or not
    ], columns=["direction", "head", "relation", "tail", "realistic"])
    distances = anchor_gold_distances(ranks, edges)
    assert distances.tolist()[:4] == [1, 1, 2, 4] and np.isinf(distances[4:6]).all() and distances[6] == 0
    np.testing.assert_array_equal(anchor_gold_distances(ranks, edges, chunk=1), distances)  # source by source
    frame = by_hop_distance(ranks, distances).set_index("distance")
    assert list(frame.index) == ["0", "1", "2", ">3", "unreachable", "ALL"]  # the empty bucket (3) is left out
    assert frame.loc["1", "queries"] == 2 and frame.loc["1", "mrr"] == pytest.approx((1 + 1 / 4) / 2)
    assert frame.loc["unreachable", "share"] == pytest.approx(2 / 7)
    assert frame.loc["ALL", "hits@10"] == pytest.approx(5 / 7)
    with pytest.raises(ValueError, match="5 distances for 7"):
        by_hop_distance(ranks, distances[:5])
    # (b, r, a) is the reverse of the observed (a, r, b); (b, s, c) is the reverse of (c, s, b); (e, s, d) is not
    assert reverse_in_graph([("b", "r", "a"), ("b", "s", "c"), ("e", "s", "d"), ("a", "r", "b")], edges) == 0.5


def test_the_inductive_hops_rule_reads_every_full_ranking_row_of_the_table():
    from lpbert_core.config.load import load_config
    from lpbert_core.config.resolve import JobSettings
    from lpbert_core.errors import ConfigError
    from lpbert_core.report.table_rows import inductive_hops_rows, inductive_hops_targets

    jobs = JobSettings(load_config([REPO / "config.yaml", REPO / "configs/cpu.yaml"]))
    rows = inductive_hops_rows(jobs, "WN18RR_v1_ind")
    assert list(rows)[0] == "PPR" and rows["PPR"] == "results/WN18RR_v1_ind/baselines/ppr/full/ranks.parquet"
    assert rows["lpbert-plus-frozen re-ranked"] == "results/WN18RR_v1_ind/runs/lpbert-plus-frozen/rerank/ranks.parquet"
    assert {"lpbert", "t4-none", "lpbert-plus-frozen", "zero-shot"} <= set(rows)
    assert "kgbert" not in rows  # its full ranking is a sample of the test split
    assert "results/fb237_v2_ind/hops.png" in inductive_hops_targets(jobs)
    with pytest.raises(ConfigError, match="'umls' is not a test graph"):  # `snakemake results/umls/hops.csv`
        inductive_hops_rows(jobs, "umls")


def test_hop_breakdown_rule_writes_one_row_per_method_and_distance(tmp_path):
    from lpbert_core.errors import InputError
    from lpbert_core.evaluate.hop_breakdown import run_hop_breakdown, split_triples

    triples = pd.DataFrame([("train", "a", "r", "b", False), ("train", "b", "r", "a", True),
                            ("train", "b", "r", "c", False), ("test", "a", "r", "c", False),
                            ("test", "c", "r", "a", True)], columns=["split", "head", "relation", "tail", "inverse"])
    triples.to_parquet(tmp_path / "triples.parquet")
    ranks = pd.DataFrame([("tail", "a", "r", "c", "c", 1.0), ("head", "a", "r", "c", "a", 3.0)],
                         columns=["direction", "head", "relation", "tail", "gold", "realistic"])
    ranks.to_parquet(tmp_path / "ranks.parquet")
    outputs = {"csv": tmp_path / "hops.csv", "png": tmp_path / "hops.png"}
    run_hop_breakdown(settings={"rows": {"PPR": tmp_path / "ranks.parquet", "text": tmp_path / "ranks.parquet"},
                                "graph_splits": ["train"], "title": "tiny"},
                      inputs={"triples": tmp_path / "triples.parquet"}, outputs=outputs, log=lambda _: None)
    table = pd.read_csv(outputs["csv"], dtype={"distance": str})
    assert list(table["row"]) == ["PPR", "PPR", "text", "text"] and list(table["distance"][:2]) == ["2", "ALL"]
    assert table["mrr"].iloc[-1] == pytest.approx((1 + 1 / 3) / 2)
    assert outputs["png"].stat().st_size > 0
    # the inverse rows (added for training) are not observed triples: counted, every test triple's reverse would be
    assert split_triples(triples, ["train"]) == [("a", "r", "b"), ("b", "r", "c")]
    with pytest.raises(InputError, match="no full-ranking row"):
        run_hop_breakdown(settings={"rows": {}, "graph_splits": ["train"], "title": "tiny"},
                          inputs={"triples": tmp_path / "triples.parquet"}, outputs=outputs, log=lambda _: None)
