"""Inductive benchmarks (issue #13 items 1-2): a graph cut out of an archive folder with text from another archive,
BERTRL's presampled candidate lists read and ranked exactly as listed, and the inductive / plus tables."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import text_settings
from lpbert_core.evaluate.candidate_lists import list_ranks, read_candidate_lists
from lpbert_core.data.data_stages import run_download, run_join_text
from lpbert_core.graph.kg_files import CANDIDATES_FOLDER
from lpbert_core.errors import InputError


@pytest.fixture(scope="module")
def archives(tmp_path_factory, fixture_builder):
    folder = tmp_path_factory.mktemp("inductive")
    fixture_builder.write_inductive(folder)
    return folder


def _source(archives, graph, **extra):
    return {"archive": str(archives / "tinyind.tar.gz"), "member": f"ind/{graph}",
            "text_from": {"name": "tinytext", "archive": str(archives / "tinytext.tar.gz"), "sha256": None,
                          "entity_text": "entity2text.txt", "relation_text": "relation2text.txt"}, **extra}


def _graph_ids(raw):
    ids = set()
    for name in ("train.txt", "valid.txt", "test.txt"):
        for line in (raw / name).read_text().splitlines():
            h, _, t = line.split("\t")
            ids |= {h, t}
    return ids


def test_download_cuts_the_member_folder_and_the_shared_text_to_the_graph(archives, tmp_path):
    raw_train = tmp_path / "train/raw"
    raw_test = tmp_path / "test/raw"
    record = run_download(settings=_source(archives, "tiny_v1"), outputs={"raw": raw_train})
    run_download(settings=_source(archives, "tiny_v1_ind", candidates="ind/cands"), outputs={"raw": raw_test})
    assert sorted(p.name for p in raw_train.iterdir()) == ["SOURCE.json", "entity2text.txt", "relation2text.txt",
                                                           "test.txt", "train.txt", "valid.txt"]
    train_ids, test_ids = _graph_ids(raw_train), _graph_ids(raw_test)
    assert not train_ids & test_ids
    text_ids = {line.split("\t")[0] for line in (raw_train / "entity2text.txt").read_text().splitlines()}
    assert text_ids == train_ids  # the text archive holds all 30 entities; the graph keeps its own
    assert record["archive_folder"] == "ind/tiny_v1" and record["text_source"]["name"] == "tinytext"
    assert json.loads((raw_train / "SOURCE.json").read_text())["text_source"]["files"]["entity2text.txt"][
        "lines"] == len(train_ids)
    assert sorted(p.name for p in (raw_test / CANDIDATES_FOLDER).iterdir()) == ["ranking_head.txt",
                                                                               "ranking_tail.txt"]
    tables = tmp_path / "text"
    run_join_text(settings=text_settings(text_format="comma"),
                  inputs={"raw": raw_test}, outputs={n: str(tables / f"{n}.parquet") for n in ("entities", "relations", "triples")})
    entities = pd.read_parquet(tables / "entities.parquet")
    assert set(entities["id"]) == test_ids and (entities["name"] != "").all()


def test_a_missing_member_folder_names_the_archive(archives, tmp_path):
    with pytest.raises(InputError, match="no folder 'ind/tiny_v9'") as err:
        run_download(settings=_source(archives, "tiny_v9"), outputs={"raw": tmp_path / "raw"})
    assert "tinyind.tar.gz" in str(err.value)
    assert not (tmp_path / "raw").exists()  # nothing half-written


def _tiny_kg(tokenizer_dir, raw):
    from transformers import AutoTokenizer

    from conftest import make_toy_kg
    from lpbert_core.graph.kg_files import read_triples

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    splits = {split: [(h, r, t) for h, r, t, _ in read_triples(raw / name)]
              for split, name in (("train", "train.txt"), ("dev", "valid.txt"), ("test", "test.txt"))}
    ids = sorted({e for rows in splits.values() for h, _, t in rows for e in (h, t)})
    rels = sorted({r for rows in splits.values() for _, r, _ in rows})
    return make_toy_kg(tok, {e: (e.split("/")[-1], "") for e in ids}, {r: r.replace("_", " ") for r in rels},
                       splits)


def test_candidate_lists_are_read_as_listed(archives, tmp_path, tiny_encoder_dir):
    raw = tmp_path / "raw"
    run_download(settings=_source(archives, "tiny_v1_ind", candidates="ind/cands"), outputs={"raw": raw})
    kg = _tiny_kg(tiny_encoder_dir, raw)
    blocks = read_candidate_lists(raw / CANDIDATES_FOLDER, kg)
    n_test = len(kg.triples["test"])
    assert len(blocks.head) == 2 * n_test and blocks.candidates.shape == (2 * n_test, 50)
    # ranking_head.txt varies the tails (tail queries), ranking_tail.txt the heads, true triple first
    assert blocks.direction.tolist() == ["tail"] * n_test + ["head"] * n_test
    assert (blocks.candidates[:n_test, 0] == blocks.tail[:n_test]).all()
    assert (blocks.candidates[n_test:, 0] == blocks.head[n_test:]).all()
    assert blocks.duplicate_lines > 0  # 15 entities, 49 draws: duplicates stay, as in BERTRL's files
    assert blocks.source[0].endswith("ranking_head.txt:1") and blocks.source[1].endswith("ranking_head.txt:51")

    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (raw / CANDIDATES_FOLDER / "ranking_head.txt").read_text().splitlines()
    h, r, _ = lines[3].split("\t")
    lines[3] = f"{h}\t{r}\t/e/nobody"
    (bad / "ranking_head.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"ranking_head.txt:4: unknown entity id '/e/nobody'"):
        read_candidate_lists(bad, kg)
    (bad / "ranking_head.txt").write_text("\n".join(lines[:49]) + "\n")
    with pytest.raises(InputError, match="not blocks of 50"):
        read_candidate_lists(bad, kg)


def test_list_ranks_count_ties_and_duplicates_as_listed():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.9], [0.8, 0.1, 0.2, 0.3, 0.4]])
    ranks = list_ranks(scores)
    assert ranks["optimistic"].tolist() == [3.0, 1.0]  # two listed lines above the true one (a duplicate: twice)
    assert ranks["pessimistic"].tolist() == [4.0, 1.0]  # and one tie
    assert ranks["realistic"].tolist() == [3.5, 1.0]


def test_candidate_ranks_equal_scores_of_the_listed_entities(archives, tmp_path, tiny_encoder_dir):
    """rank_candidate_lists against an independent computation: encode the query text and each listed entity
    one by one, cosine, rank the first line."""
    from transformers import AutoModel

    from lpbert_core.evaluate.candidate_lists import rank_candidate_lists
    from lpbert_core.model.sequences import collate_pairs, SequenceBuilder
    from lpbert_core.model.siamese import SiameseModel

    raw = tmp_path / "raw"
    run_download(settings=_source(archives, "tiny_v1_ind", candidates="ind/cands"), outputs={"raw": raw})
    kg = _tiny_kg(tiny_encoder_dir, raw)
    model = SiameseModel(AutoModel.from_pretrained(tiny_encoder_dir)).eval()
    builder = SequenceBuilder(kg, 32, 32)
    blocks = read_candidate_lists(raw / CANDIDATES_FOLDER, kg)
    frame = rank_candidate_lists(model, kg, builder, blocks, torch.device("cpu"), batch_size=7, precision="fp32")
    pad = kg.special.pad
    with torch.no_grad():
        for i in (0, len(blocks.head) - 1):
            tail = blocks.direction[i] == "tail"
            anchor = blocks.head[i] if tail else blocks.tail[i]
            rel = blocks.relation[i] if tail else blocks.relation[i] + kg.num_relations
            q = model.encode(**collate_pairs([builder.query(int(anchor), int(rel))], pad))
            c = model.encode(**collate_pairs([(s, [0] * len(s)) for s in
                                              (builder.candidate(int(e)) for e in blocks.candidates[i])], pad))
            scores = torch.nn.functional.cosine_similarity(q, c)
            better = (scores[1:] > scores[0] + 1e-6).sum().item()
            worse_or_tie = (scores[1:] >= scores[0] - 1e-6).sum().item()
            assert 1 + better <= frame["realistic"].iloc[i] <= 1 + worse_or_tie
    assert (frame["num_candidates"] == 50).all()


def _metrics(path, mrr, h1, h10, leaky=False, **scale):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"both": {"mrr": mrr, "hits@1": h1, "hits@10": h10, "hits@3": h1,
                                                      "mr": 1 / mrr, "count": 10}},
                                "scale": scale, "leaky": leaky}))
    return str(path)


def test_inductive_and_plus_tables(tmp_path):
    from lpbert_core.report.beyond_tables import OurRun, build_inductive, build_plus

    published = tmp_path / "pub.csv"
    published.write_text("method,dataset,version,protocol,hits@1,hits@10,mrr,source,quote\n"
                         "BERTRL,WN18RR,v1,50 candidates,0.5,,0.6,somewhere,row\n")
    pairs = [{"train": "WN18RR_v1", "test": "WN18RR_v1_ind", "family": "WN18RR", "version": "v1"}]
    rows = [OurRun("WN18RR_v1_ind", "lpbert-plus", "lpbert-plus",
                   _metrics(tmp_path / "a/metrics.json", 0.7, 0.6, 0.9, encoder="minilm"),
                   _metrics(tmp_path / "a/candidates/metrics.json", 0.8, 0.7, 0.95)),
            OurRun("WN18RR_v1_ind", "t4-none", "no pre-training", str(tmp_path / "missing.json"))]
    paths = {"md": tmp_path / "inductive.md", "csv": tmp_path / "inductive.csv"}
    frame = build_inductive(pairs, rows, published, paths)
    md = paths["md"].read_text()
    assert "| WN18RR_v1_ind | BERTRL (published) | – | – | – | 0.500 | – | 0.600 | – | – | – | somewhere |" in md
    assert "| WN18RR_v1_ind | ours: lpbert-plus | 0.600 | 0.900 | 0.700 | 0.700 | 0.950 | 0.800 |" in md
    assert "| WN18RR_v1_ind | ours: no pre-training | – | – | – | – | – | – |" in md
    assert str(tmp_path / "a/candidates/metrics.json") in md
    assert "- Scale of ours (WN18RR_v1_ind `lpbert-plus`): encoder=minilm" in md  # each scale line names its rows
    assert sorted(frame[frame["kind"] == "ours"]["protocol"]) == ["50 candidates (BERTRL lists)", "full ranking"]

    paper = tmp_path / "paper.csv"
    paper.write_text("table,row,label,dataset,method,metric,value\n"
                     "table1,LP-BERT,LP-BERT,UMLS,LP-BERT,hits@10,1.0\ntable1,LP-BERT,LP-BERT,UMLS,LP-BERT,mr,1.18\n")
    simkgc = tmp_path / "simkgc.csv"
    simkgc.write_text("method,dataset,mrr,hits@1,hits@3,hits@10,source,quote\n")
    plus_rows = [OurRun("umls", "lpbert-plus", "lpbert-plus", _metrics(tmp_path / "p/metrics.json", 0.9, 0.8, 1.0),
                        None)]
    ppaths = {"md": tmp_path / "plus.md", "csv": tmp_path / "plus.csv"}
    plus = build_plus(["umls"], plus_rows, paper, simkgc, ppaths)
    text = ppaths["md"].read_text()
    assert "| umls | LP-BERT (paper, Table 1) | – | – | – | 1.000 | 1.18 |" in text
    assert "| umls | ours: lpbert-plus | 0.900 | 0.800 | 0.800 | 1.000 | 1.11 |" in text
    assert set(plus["kind"]) == {"published", "ours"} and np.isclose(plus.loc[plus["kind"] == "ours", "mrr"], 0.9)


def test_beyond_tables_show_the_zero_shot_floor_and_mark_rows_below_it(tmp_path):
    """Each section ends with its floor rows; a row at or below its floor (MRR; UMLS: Hits@10) gets ▽ per protocol."""
    from lpbert_core.report.beyond_tables import OurRun, build_inductive, build_plus
    from lpbert_core.report.table_sources import floor_label

    published = tmp_path / "pub.csv"
    published.write_text("method,dataset,version,protocol,hits@1,hits@10,mrr,source,quote\n")
    pairs = [{"train": "WN18RR_v1", "test": "WN18RR_v1_ind", "family": "WN18RR", "version": "v1"}]
    rows = [OurRun("WN18RR_v1_ind", "lpbert", "pre-trained on vN", _metrics(tmp_path / "a/metrics.json", 0.3, 0.2, 0.5),
                   _metrics(tmp_path / "a/candidates/metrics.json", 0.8, 0.7, 0.9), floor_run="zero-shot-pretrained"),
            OurRun("WN18RR_v1_ind", "zero-shot-pretrained", floor_label("mem-mrm-mlm"),
                   _metrics(tmp_path / "z/metrics.json", 0.4, 0.3, 0.6),
                   _metrics(tmp_path / "z/candidates/metrics.json", 0.5, 0.4, 0.7), floor=True)]
    paths = {"md": tmp_path / "inductive.md", "csv": tmp_path / "inductive.csv"}
    frame = build_inductive(pairs, rows, published, paths)
    md = paths["md"].read_text()
    # full ranking: 0.3 <= 0.4 (marked); 50 candidates: 0.8 > 0.5 (not)
    assert "| WN18RR_v1_ind | ours: pre-trained on vN | 0.200 | 0.500 | 0.300 ▽ | 0.700 | 0.900 | 0.800 |" in md
    assert ("| WN18RR_v1_ind | ours: zero-shot (no fine-tuning): encoder after pre-training mem-mrm-mlm (run "
            "`zero-shot-pretrained`) | 0.300 | 0.600 | 0.400 |") in md
    assert md.index("ours: pre-trained on vN") < md.index("run `zero-shot-pretrained`")
    assert "`lpbert` on WN18RR_v1_ind (MRR 0.300 ≤ 0.400 of `zero-shot-pretrained`)" in md
    ours = frame[frame["kind"] == "ours"].set_index("protocol")
    assert ours.loc["full ranking", "below_floor"] and not ours.loc["50 candidates (BERTRL lists)", "below_floor"]
    assert set(frame["kind"]) == {"ours", "floor"}

    paper = tmp_path / "paper.csv"
    paper.write_text("table,row,label,dataset,method,metric,value\n"
                     "table1,LP-BERT,LP-BERT,UMLS,LP-BERT,hits@10,1.0\ntable1,LP-BERT,LP-BERT,UMLS,LP-BERT,mr,1.18\n")
    simkgc = tmp_path / "simkgc.csv"
    simkgc.write_text("method,dataset,mrr,hits@1,hits@3,hits@10,source,quote\n")
    # UMLS compares Hits@10: lpbert-plus has the lower MRR but the higher Hits@10 (not marked); lpbert ties (marked)
    plus_rows = [OurRun("umls", "lpbert-plus", "lpbert-plus", _metrics(tmp_path / "p/metrics.json", 0.5, 0.4, 0.95),
                        floor_run="zero-shot"),
                 OurRun("umls", "lpbert", "LP-BERT (paper reading)",
                        _metrics(tmp_path / "l/metrics.json", 0.7, 0.6, 0.9), floor_run="zero-shot"),
                 OurRun("umls", "zero-shot", floor_label("none"), _metrics(tmp_path / "zs/metrics.json", 0.6, 0.5, 0.9),
                        floor=True)]
    ppaths = {"md": tmp_path / "plus.md", "csv": tmp_path / "plus.csv"}
    plus = build_plus(["umls"], plus_rows, paper, simkgc, ppaths)
    text = ppaths["md"].read_text()
    assert "| umls | ours: lpbert-plus | 0.500 | 0.400 | 0.400 | 0.950 | 2 |" in text
    assert "| umls | ours: LP-BERT (paper reading) | 0.700 | 0.600 | 0.600 | 0.900 ▽ | 1.43 |" in text
    assert "| umls | ours: zero-shot (no fine-tuning): bare encoder (run `zero-shot`) | 0.600 |" in text
    assert "`lpbert` on umls (Hits@10 0.900 ≤ 0.900 of `zero-shot`)" in text
    assert plus.set_index("run").loc["lpbert", "below_floor"] and not plus.set_index("run").loc["lpbert-plus",
                                                                                                  "below_floor"]


def test_a_scale_line_names_each_run_once():
    """A run's re-ranked row shares its run and scale with the plain row: the line names the run once."""
    from lpbert_core.report.beyond_tables import _Scales

    scales = _Scales()
    for scale, run in (("x", "a"), ("x", "a"), ("x", "b"), ("y", "c")):
        scales.add(scale, "G", run)
    assert scales.notes() == ["Scale of ours (G `a`, G `b`): x", "Scale of ours (G `c`): y"]
