"""Issue #27: GraIL's sampled-negative protocol (lists every model ranks), the baselines we run ourselves (PPR, the
cross-encoder on the lists), the published rows in the column of their own protocol, and vN_ind kept out of
training, dev selection and pre-training for the new baselines."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import text_settings
from lpbert_core.baselines.ppr import PprScorer, personalized_pagerank, rank_full, rank_lists, undirected_adjacency
from lpbert_core.data.data_stages import run_download, run_join_text
from lpbert_core.evaluate.candidate_lists import list_ranks, read_candidate_lists
from lpbert_core.evaluate.sampled_negatives import (GraphIndex, graph_index_from_raw, list_record, load_graph_index,
                                                    run_grail_lists, sample_negative_blocks)

REPO = Path(__file__).resolve().parents[1]
PPR = {"restart": 0.15, "iterations": 200, "graph_splits": ["train"], "weighting": "binary", "exclude_anchor": True}


@pytest.fixture(scope="module")
def raw_ind(tmp_path_factory, fixture_builder):
    """tiny_v1_ind's raw folder (GraIL's archive layout, BERTRL-style lists) and its text tables."""
    folder = tmp_path_factory.mktemp("ind27")
    fixture_builder.write_inductive(folder)
    text_from = {"name": "tinytext", "archive": str(folder / "tinytext.tar.gz"), "sha256": None,
                 "entity_text": "entity2text.txt", "relation_text": "relation2text.txt"}
    raw = folder / "raw"
    run_download(settings={"archive": str(folder / "tinyind.tar.gz"), "member": "ind/tiny_v1_ind",
                           "text_from": text_from, "candidates": "ind/cands"}, outputs={"raw": raw})
    run_join_text(settings=text_settings(text_format="comma"), inputs={"raw": raw},
                  outputs={n: str(folder / "text" / f"{n}.parquet") for n in ("entities", "relations", "triples")})
    return {"raw": raw, "text": folder / "text"}


def _known(graph):
    return {tuple(t) for t in graph.known().tolist()}


# ------------------------------------------------------------------------------------------ GraIL-protocol lists
def test_sampled_lists_hold_the_true_answer_then_distinct_unknown_negatives(raw_ind):
    graph = load_graph_index(raw_ind["text"])
    assert graph.entity_ids == graph_index_from_raw(raw_ind["raw"]).entity_ids  # join_text's numbering
    blocks = sample_negative_blocks(graph, 4, seed=3, exclude_anchor=True)
    n_test = len(graph.triples["test"])
    assert blocks.candidates.shape == (2 * n_test, 5)
    assert blocks.direction.tolist() == ["tail"] * n_test + ["head"] * n_test
    known = _known(graph)
    for i in range(len(blocks.head)):
        h, r, t = int(blocks.head[i]), int(blocks.relation[i]), int(blocks.tail[i])
        tail = blocks.direction[i] == "tail"
        cands = blocks.candidates[i].tolist()
        assert cands[0] == (t if tail else h)
        assert len(set(cands)) == len(cands)  # distinct draws
        anchor = h if tail else t
        for e in cands[1:]:
            assert e != anchor and ((h, r, e) if tail else (e, r, t)) not in known  # never a true answer
    again = sample_negative_blocks(graph, 4, seed=3, exclude_anchor=True)
    assert (again.candidates == blocks.candidates).all()  # fixed seed
    assert (sample_negative_blocks(graph, 4, seed=4, exclude_anchor=True).candidates != blocks.candidates).any()
    with pytest.raises(ValueError, match="fewer than num_negatives=40"):
        sample_negative_blocks(graph, 40, seed=3, exclude_anchor=True)


def test_sampled_lists_depend_on_ids_not_on_table_order(raw_ind):
    """Draws are over the entities in sorted-id order, so reordering the text table changes no line."""
    graph = load_graph_index(raw_ind["text"])
    order = np.random.default_rng(0).permutation(graph.num_entities)
    new_index = np.empty_like(order)
    new_index[order] = np.arange(len(order))
    shuffled = GraphIndex([graph.entity_ids[i] for i in order], graph.relation_ids,
                          {s: np.stack([new_index[t[:, 0]], t[:, 1], new_index[t[:, 2]]], axis=1)
                           for s, t in graph.triples.items()})

    def lines(g):
        b = sample_negative_blocks(g, 4, seed=9, exclude_anchor=True)
        return [[g.entity_ids[e] for e in row] for row in b.candidates.tolist()]

    assert lines(shuffled) == lines(graph)


def test_rule_lists_are_read_back_by_the_list_scorers(raw_ind, tmp_path):
    """run_grail_lists writes BERTRL's layout + lists.json; read_candidate_lists reads the same blocks with
    per_query from lists.json: no known triple among the corruptions, no duplicate line."""
    record = run_grail_lists(settings={"num_negatives": 4, "seed": 5, "exclude_anchor": True},
                             inputs={"triples": str(raw_ind["text"] / "triples.parquet")},
                             outputs={"record": str(tmp_path / "grail50" / "lists.json")})
    assert sorted(p.name for p in (tmp_path / "grail50").iterdir()) == ["lists.json", "ranking_head.txt",
                                                                        "ranking_tail.txt"]
    spec = list_record(tmp_path / "grail50")
    assert spec["per_query"] == 5 == record["per_query"] and spec["filtered"] and "our sample" in spec["protocol"]
    graph = load_graph_index(raw_ind["text"])
    blocks = read_candidate_lists(tmp_path / "grail50", graph, spec["per_query"])
    direct = sample_negative_blocks(graph, 4, seed=5, exclude_anchor=True)
    assert (blocks.candidates == direct.candidates).all() and (blocks.direction == direct.direction).all()
    assert blocks.known_corruptions == 0 and blocks.duplicate_lines == 0
    # BERTRL's lists carry no lists.json: their protocol, 50 lines per block
    assert list_record(raw_ind["raw"] / "candidates")["per_query"] == 50


# ------------------------------------------------------------------------------------------ Personalized PageRank
def _toy_graph():
    ids = [f"e{i}" for i in range(8)]
    train = np.array([[0, 0, 1], [1, 0, 2], [2, 1, 3], [3, 0, 0], [4, 1, 5], [5, 0, 6], [0, 1, 1], [2, 0, 2]])
    return GraphIndex(ids, ["r0", "r1"], {"train": train, "dev": np.array([[6, 0, 4]]),
                                          "test": np.array([[0, 0, 2], [4, 0, 6], [1, 1, 3], [7, 0, 0]])})


def test_ppr_equals_networkx_pagerank_with_the_anchor_as_personalization():
    nx = pytest.importorskip("networkx")
    graph = _toy_graph()
    adj = undirected_adjacency(graph.triples["train"], graph.num_entities, "binary")
    assert adj[2, 2] == 0 and adj[0, 1] == 1  # self-loop dropped, parallel edges (0-1 twice) merged
    ours = personalized_pagerank(adj, np.array([0, 4]), restart=0.15, iterations=300)
    assert np.allclose(ours.sum(axis=1), 1.0)
    g = nx.Graph()
    g.add_nodes_from(range(graph.num_entities))
    g.add_edges_from(zip(*adj.nonzero()))
    for row, source in zip(ours, (0, 4)):
        ref = nx.pagerank(g, alpha=0.85, personalization={source: 1.0}, tol=1e-13, max_iter=2000)
        assert np.allclose(row, [ref[i] for i in range(graph.num_entities)], atol=1e-8)
    isolated = personalized_pagerank(adj, np.array([7]), restart=0.15, iterations=50)
    assert isolated[0, 7] == pytest.approx(1.0)  # a walk at an isolated anchor stays there


def test_ppr_full_ranking_is_filtered_realistic_and_both_directions():
    graph = _toy_graph()
    scorer = PprScorer(graph, **{k: PPR[k] for k in ("restart", "iterations", "graph_splits", "weighting",
                                                      "exclude_anchor")})
    frame = rank_full(scorer)
    assert len(frame) == 2 * len(graph.triples["test"]) and set(frame["direction"]) == {"head", "tail"}
    known = _known(graph)
    for rec in frame.itertuples():
        i = int(rec.query)
        h, r, t = graph.triples["test"][i].tolist()
        anchor, gold = (h, t) if rec.direction == "tail" else (t, h)
        scores = personalized_pagerank(scorer.adj, np.array([anchor]), 0.15, 200)[0]
        scores[anchor] = -np.inf
        others = [e for e in range(graph.num_entities) if e != gold
                  and ((h, r, e) if rec.direction == "tail" else (e, r, t)) not in known]
        better = sum(scores[e] > scores[gold] for e in others)
        ties = sum(scores[e] == scores[gold] for e in others)
        assert rec.realistic == pytest.approx(1 + better + ties / 2)
        assert rec.num_candidates == len(others) + 1
    # the dev triple (6, r0, 4) is no edge: PPR sees the observed (train) triples only
    assert scorer.adj[6, 4] == 0 and scorer.adj[4, 5] == 1


def test_ppr_ranks_lists_with_the_shared_list_ranks(raw_ind):
    graph = load_graph_index(raw_ind["text"])
    scorer = PprScorer(graph, **PPR)
    for blocks in (read_candidate_lists(raw_ind["raw"] / "candidates", graph),
                   sample_negative_blocks(graph, 4, seed=1, exclude_anchor=True)):
        frame = rank_lists(scorer, blocks)
        anchors = np.where(blocks.direction == "tail", blocks.head, blocks.tail)
        scores = np.stack([scorer.scores(np.array([a]))[0][c] for a, c in zip(anchors, blocks.candidates)])
        assert np.allclose(frame["realistic"], list_ranks(torch.as_tensor(scores))["realistic"])
        assert (frame["num_candidates"] == blocks.candidates.shape[1]).all()


# ------------------------------------------------------------------------------------------ the cross-encoder
def test_cross_encoder_ranks_every_listed_line(raw_ind, tiny_encoder_dir):
    from transformers import AutoModel, AutoTokenizer

    from conftest import make_toy_kg
    from lpbert_core.baselines.cross_encoder import CrossEncoder, TripleSequenceBuilder
    from lpbert_core.baselines.cross_encoder_lists import block_triples, rank_lists_cross
    from lpbert_core.baselines.cross_encoder_loop import score_triples
    from lpbert_core.graph.kg_files import read_triples

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    raw = raw_ind["raw"]
    splits = {s: [(h, r, t) for h, r, t, _ in read_triples(raw / n)]
              for s, n in (("train", "train.txt"), ("dev", "valid.txt"), ("test", "test.txt"))}
    ids = sorted({e for rows in splits.values() for h, _, t in rows for e in (h, t)})
    rels = sorted({r for rows in splits.values() for _, r, _ in rows})
    kg = make_toy_kg(tok, {e: (e.split("/")[-1], "") for e in ids}, {r: r for r in rels}, splits)
    torch.manual_seed(0)
    model = CrossEncoder(AutoModel.from_pretrained(tiny_encoder_dir)).eval()
    builder = TripleSequenceBuilder(kg, 32, model.two_token_types)
    blocks = sample_negative_blocks(kg, 3, seed=2, exclude_anchor=True)
    triples = block_triples(blocks).reshape(len(blocks.head), 4, 3)
    assert (triples[blocks.direction == "tail", :, 0] == blocks.head[blocks.direction == "tail", None]).all()
    assert (triples[blocks.direction == "head", :, 0] == blocks.candidates[blocks.direction == "head"]).all()
    frame = rank_lists_cross(model, kg, builder, blocks, torch.device("cpu"), batch_size=5, precision="fp32")
    for i in (0, len(blocks.head) - 1):  # one block scored on its own, in another batch layout
        scores = score_triples(model, builder, triples[i], torch.device("cpu"), 2, "fp32")
        assert frame["realistic"].iloc[i] == list_ranks(scores[None])["realistic"][0]


# ------------------------------------------------------------------------------------------ the table
def _metrics(path, mrr, h1, h10, **scale):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"both": {"mrr": mrr, "hits@1": h1, "hits@10": h10, "hits@3": h1,
                                                      "mr": 1 / mrr, "count": 10}}, "scale": scale}))
    return str(path)


def test_published_rows_sit_in_the_column_of_their_own_protocol(tmp_path):
    from lpbert_core.errors import InputError
    from lpbert_core.report.beyond_tables import GRAIL, OurRun, build_inductive

    pairs = [{"train": "fb237_v1", "test": "fb237_v1_ind", "family": "fb237", "version": "v1"}]
    rows = [OurRun("fb237_v1_ind", "lpbert-plus", "lpbert-plus", _metrics(tmp_path / "a/m.json", 0.2, 0.1, 0.4),
                   None, grail=_metrics(tmp_path / "a/g.json", 0.6, 0.5, 0.9)),
            OurRun("fb237_v1_ind", "ppr", "Personalized PageRank", _metrics(tmp_path / "p/m.json", 0.24, 0.13, 0.43),
                   _metrics(tmp_path / "p/c.json", 0.54, 0.4, 0.76), grail=_metrics(tmp_path / "p/g.json", 0.55,
                                                                                      0.41, 0.76), baseline=True),
            OurRun("fb237_v1_ind", "kgbert", "cross-encoder",
                   _metrics(tmp_path / "k/m.json", 0.1, 0.0, 0.3, sampled_queries=True, test_triples_used=20,
                            test_triples_total=205), None, grail=str(tmp_path / "k/missing.json"), baseline=True)]
    paths = {"md": tmp_path / "ind.md", "csv": tmp_path / "ind.csv"}
    frame = build_inductive(pairs, rows, REPO / "resources/inductive_published.csv", paths)
    md = paths["md"].read_text()
    assert ("| 50 sampled neg. (GraIL) hits@1 | 50 sampled neg. (GraIL) hits@10 | 50 sampled neg. (GraIL) mrr | "
            "source |") in md
    # FB15k-237 rows match fb237 pairs; GraIL / NodePiece in the GraIL column, PPR in the full-ranking column
    empty = "| – | – | – | – | – | – |"  # two protocols' columns
    assert f"| fb237_v1_ind | GraIL (published) {empty} – | 0.641 | – | GraIL (ICML 2020) as quoted" in md
    assert f"| fb237_v1_ind | NodePiece (published) {empty} – | 0.873 | – |" in md
    assert f"| fb237_v1_ind | Personalized PageRank (published) | – | 0.412 | – {empty}" in md
    assert "| fb237_v1_ind | ours: lpbert-plus | 0.100 | 0.400 | 0.200 | – | – | – | 0.500 | 0.900 | 0.600 |" in md
    assert ("| fb237_v1_ind | ours, baseline: Personalized PageRank | 0.130 | 0.430 | 0.240 | 0.400 | 0.760 | 0.540 | "
            "0.410 | 0.760 | 0.550 |") in md
    assert "ours, baseline: cross-encoder [full ranking: 20 of 205 test triples] | 0.000 | 0.300 |" in md
    assert "Our sample is not GraIL's or NodePiece's" in md
    assert not any("v2" in line for line in md.splitlines() if "(published)" in line)  # only the pair's version
    published = frame[frame["kind"] == "published"]
    assert set(published["protocol"]) == {GRAIL, "full ranking"} and len(published) == 3
    assert set(frame.loc[frame["kind"] == "baseline", "run"]) == {"ppr", "kgbert"}
    bad = tmp_path / "bad.csv"
    bad.write_text("method,dataset,version,protocol,hits@1,hits@10,mrr,source,quote\n"
                   "X,fb237,v1,AUC-PR,,0.9,,somewhere,\n")
    with pytest.raises(InputError, match="protocol 'AUC-PR' is none of"):
        build_inductive(pairs, rows, bad, paths)


def test_vendored_published_rows_name_source_and_protocol_and_quote_no_one():
    frame = pd.read_csv(REPO / "resources/inductive_published.csv", keep_default_na=False)
    shared = REPO.parent / "shared/datasets/inductive_published.csv"
    if shared.is_file():  # vendored as they are
        assert frame.equals(pd.read_csv(shared, keep_default_na=False))
    assert list(frame.columns) == ["method", "dataset", "version", "protocol", "hits@1", "hits@10", "mrr", "source",
                                   "quote"]
    assert (frame["source"] != "").all() and (frame["protocol"] != "").all() and (frame["quote"] == "").all()
    assert set(frame["dataset"]) == {"WN18RR", "FB15k-237"} and set(frame["version"]) == {"v1", "v2", "v3", "v4"}


# ------------------------------------------------------------------------------------------ vN_ind stays out
def _dry_run_jobs(wd: Path, target: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), target, "-n",
                             "--forceall", "--cores", "1", "--configfile", ".test/config.yaml"],
                            cwd=wd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = []
    for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n?)+)", result.stdout, flags=re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, flags=re.M))
        jobs.append({"rule": rule, "input": fields.get("input", ""), "output": fields.get("output", ""),
                     "wildcards": dict(w.split("=", 1) for w in fields.get("wildcards", "").split(", ") if "=" in w)})
    return jobs


def test_the_test_graph_stays_out_of_training_dev_selection_and_pretraining_for_the_baselines(
        tmp_path, fixture_builder, tiny_encoder_dir):
    """The inductive table's DAG on .test/config.yaml (tiny_v1 -> tiny_v1_ind): every training job (pretrain,
    finetune, kgbert_train: their dev selection reads the same inputs) is on tiny_v1 and reads nothing of
    tiny_v1_ind; the cross-encoder is scored on tiny_v1_ind with the model trained on tiny_v1; PPR and the sampled
    lists read tiny_v1_ind's own tables and no model."""
    wd = tmp_path
    shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    (wd / "resources").symlink_to(REPO / "resources")
    (wd / ".test").mkdir()
    shutil.copy(REPO / ".test/config.yaml", wd / ".test/config.yaml")
    shutil.copy(REPO / ".test/attribution.csv", wd / ".test/attribution.csv")
    fixture_builder.write_graph(wd / ".test/data/tinykg")
    fixture_builder.write_inductive(wd / ".test/data")
    shutil.copytree(tiny_encoder_dir, wd / ".test/tiny-bert")
    jobs = _dry_run_jobs(wd, "results/tables/inductive.md")
    rules = {j["rule"] for j in jobs}
    assert {"kgbert_train", "kgbert_score", "kgbert_lists", "ppr_score", "grail_lists", "score_grail50",
            "pretrain", "finetune"} <= rules
    trained = [j for j in jobs if j["rule"] in ("pretrain", "finetune", "kgbert_train")]
    assert {j["wildcards"]["dataset"] for j in trained} == {"tiny_v1"}
    assert "kgbert" in {j["wildcards"].get("run") for j in trained}
    for job in trained:
        assert "tiny_v1_ind" not in job["input"] + job["output"], job
    cross = [j for j in jobs if j["rule"] in ("kgbert_score", "kgbert_lists")]
    assert {j["wildcards"]["protocol"] for j in cross if j["rule"] == "kgbert_lists"} == {"candidates", "grail50"}
    for job in cross:
        assert job["wildcards"]["dataset"] == "tiny_v1_ind" and "results/tiny_v1/runs/kgbert/model" in job["input"]
    for job in (j for j in jobs if j["rule"] in ("ppr_score", "grail_lists")):
        assert job["wildcards"]["dataset"] == "tiny_v1_ind"
        paths = [p for p in job["input"].split(", ") if p]
        assert paths and all(p.startswith("results/tiny_v1_ind/") for p in paths), job
        assert not any("/runs/" in p or "/pretrain/" in p or "/tokens/" in p for p in paths), job
    assert {j["wildcards"]["protocol"] for j in jobs if j["rule"] == "ppr_score"} == {"full", "candidates", "grail50"}
    reranked = [j for j in jobs if j["rule"] in ("score_reranked", "score_reranked_lists")]
    assert {j["rule"] for j in reranked} == {"score_reranked", "score_reranked_lists"}
    for job in reranked:  # re-ranked on the test graph with the model trained on the training graph
        run = job["wildcards"]["run"]
        assert job["wildcards"]["dataset"] == "tiny_v1_ind" and f"results/tiny_v1/runs/{run}/model" in job["input"]
    assert "lpbert-plus" in {j["wildcards"]["run"] for j in reranked}
