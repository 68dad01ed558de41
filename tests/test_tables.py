"""Tables 1, 3, 4 from small synthetic metrics.json / train_log.csv / benchmark files, and the paper data file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from lpbert_core.errors import InputError
from lpbert_core.tables import (
    RowSpec,
    build_table,
    build_tables,
    epochs_timed,
    epochs_trained,
    inference_seconds,
    load_paper,
    read_benchmark_seconds,
    read_metrics_json,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "resources" / "paper_results.csv"
PAPER_MD = Path("/work/shared/paper/LP-BERT.md")


def make_run(root: Path, name: str, mrr: float, *, epochs: int = 2, finetune_s: float = 7200.0, score_s: float = 360.0,
             extra: dict | None = None) -> dict:
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    block = {"mrr": mrr, "mr": 40.0, "hits@1": mrr / 2, "hits@3": mrr, "hits@10": min(1.0, mrr * 2), "count": 20}
    metrics = {
        "metrics": {"both": block, "head": block, "tail": block},
        "run": {"model": "lpbert"},
        "scale": {"encoder": "minilm", "epochs": epochs, "train_subsample": 500, "test_subsample": 10},
    }
    metrics.update(extra or {})
    (run / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame({"epoch": range(1, epochs + 1), "loss": [1.0 / (e + 1) for e in range(epochs)]}).to_csv(
        run / "train_log.csv", index=False)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (run / "finetune.tsv").write_text(header + f"{finetune_s}\t2:00:00\t1\t1\t1\t1\t0\t0\t0\t1\n")
    (run / "score.tsv").write_text(header + f"{score_s}\t0:06:00\t1\t1\t1\t1\t0\t0\t0\t1\n")
    return {
        "run": name,
        "metrics": str(run / "metrics.json"),
        "train_log": str(run / "train_log.csv"),
        "finetune_benchmark": str(run / "finetune.tsv"),
        "score_benchmark": str(run / "score.tsv"),
    }


@pytest.fixture(scope="module")
def paper():
    return load_paper(PAPER_CSV)


def value(paper, table, row, metric, dataset=None):
    sel = (paper.table == table) & (paper.row == row) & (paper.metric == metric)
    if dataset:
        sel &= paper.dataset == dataset
    (v,) = paper.loc[sel, "value"].tolist()
    return v


# ------------------------------------------------------------------------------------------------- paper data
def test_paper_data_spot_checks(paper):
    assert value(paper, "table1", "TransE", "mr", "WN18RR") == 2300
    assert value(paper, "table1", "LP-BERT", "hits@10", "WN18RR") == 0.752
    assert value(paper, "table1", "LP-BERT", "mr", "FB15k-237") == 154
    assert value(paper, "table1", "LP-BERT", "mr", "UMLS") == 1.18
    assert value(paper, "table1", "StAR", "params") == 335e6
    assert value(paper, "table1", "QuatDE", "mr", "FB15k-237") == 90
    assert value(paper, "table3", "KG-BERT|RoBERTa-large", "infer") == 92
    assert value(paper, "table3", "LP-BERT|RoBERTa-large", "t_per_epoch") == 2.2
    assert value(paper, "table4", "N|N", "mr") == 143
    assert value(paper, "table4", "MEM+MRM|Y", "mrr") == 0.469
    # missing cells ('-') are absent, not zero
    assert not ((paper.table == "table1") & (paper.row == "R-GCN") & (paper.dataset == "UMLS")).any()
    counts = paper.groupby("table")["row"].nunique().to_dict()
    assert counts == {"table1": 21, "table3": 7, "table4": 6}
    # Table 3's LPBERT-base row = Table 4's last row = Table 1's WN18RR LP-BERT
    for m in ("hits@1", "hits@3", "hits@10", "mr", "mrr"):
        assert value(paper, "table3", "LP-BERT|LPBERT-base", m) == value(paper, "table4", "MEM+MRM+MLM|Y", m)
        assert value(paper, "table1", "LP-BERT", m, "WN18RR") == value(paper, "table4", "MEM+MRM+MLM|Y", m)


@pytest.mark.skipif(not PAPER_MD.exists(), reason="paper text not available")
def test_paper_data_matches_every_cell_of_the_paper_text(paper):
    """Every number of Tables 1, 3, 4 in the paper's text appears in the data file, in order."""
    text = PAPER_MD.read_text().splitlines()

    def block(first):
        start = next(i for i, line in enumerate(text) if line.startswith(first))
        rows = []
        for line in text[start + 1:]:
            if not line.strip():
                break
            rows.append([re.sub(r"<[^>]+>", "", c).strip() for c in line.split("\t")])
        return rows

    def numbers(cells):
        out = []
        for cell in cells:
            for tok in cell.split():
                tok = tok.rstrip("hM")
                if re.fullmatch(r"\d*\.?\d+", tok):
                    out.append(float(tok))
        return out

    t1 = [r for r in block("Methods\tWN18RR")[1:] if not r[0].startswith(("translational", "semantic"))]
    for cells in t1:
        method = re.split(r"\s*\[", cells[0])[0].strip()
        mine = paper[(paper.table == "table1") & (paper.row == method)]
        assert mine["value"].tolist() == pytest.approx(
            [v * (1e6 if i == len(numbers(cells[1:])) - 1 and cells[-1].endswith("M") else 1)
             for i, v in enumerate(numbers(cells[1:]))]), method
    for cells in block("\tInitial weights\tHits@1"):
        mine = paper[(paper.table == "table3") & (paper.row == f"{cells[0]}|{cells[1]}")]
        assert mine["value"].tolist() == pytest.approx(numbers(cells[2:]))
    for cells in block("Pre-train\tBatchSample"):
        mine = paper[(paper.table == "table4") & (paper.row == f"{cells[0]}|{cells[1]}")]
        assert mine["value"].tolist() == pytest.approx(numbers(cells[2:]))


# ------------------------------------------------------------------------------------------------- readers
def test_read_metrics_json_variants(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"metrics": {"both": {"MRR": 0.5, "hits_at_10": 0.9, "mean_rank": 3}}}))
    m = read_metrics_json(p)
    assert m["metrics"] == {"mrr": 0.5, "hits@10": 0.9, "mr": 3.0}
    p.write_text(json.dumps({"mrr": 0.25, "hits@1": 0.1, "run": {"scale": {"encoder": "x"}}}))
    m = read_metrics_json(p)
    assert m["metrics"]["mrr"] == 0.25 and m["scale"] == {"encoder": "x"}
    p.write_text("{not json")
    with pytest.raises(InputError, match="m.json"):
        read_metrics_json(p)
    p.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(InputError, match="no metrics"):
        read_metrics_json(p)
    with pytest.raises(InputError, match="not found"):
        read_metrics_json(tmp_path / "absent.json")


def test_benchmark_and_epochs(tmp_path):
    bench = tmp_path / "b.tsv"
    bench.write_text("s\th:m:s\tmax_rss\n10.0\t0:00:10\t5\n20.0\t0:00:20\t5\n")
    assert read_benchmark_seconds(bench) == 15.0
    assert read_benchmark_seconds(None) is None
    assert read_benchmark_seconds(tmp_path / "missing.tsv") is None
    (tmp_path / "bad.tsv").write_text("x\ty\n1\t2\n")
    with pytest.raises(InputError):
        read_benchmark_seconds(tmp_path / "bad.tsv")
    log = tmp_path / "log.csv"
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [3, 2, 1]}).to_csv(log, index=False)
    assert epochs_trained(log) == 3
    pd.DataFrame({"loss": [3, 2]}).to_csv(log, index=False)
    assert epochs_trained(log) == 2
    assert epochs_timed(log) == 2  # no attempt columns: every epoch counts


def test_epochs_timed_counts_only_the_last_attempt(tmp_path):
    # epoch 1 whole in attempt 1; killed at step 30 of 40 in epoch 2; attempt 2 ran steps 31-40 of epoch 2 and
    # all of epoch 3: its benchmark covers 10/40 + 40/40 = 1.25 epochs
    log = tmp_path / "log.csv"
    pd.DataFrame({"epoch": [1, 2, 3], "steps": [40, 40, 40], "attempt": [1, 2, 2],
                  "steps_timed": [40, 10, 40]}).to_csv(log, index=False)
    assert epochs_trained(log) == 3
    assert epochs_timed(log) == pytest.approx(1.25)


def test_inference_seconds_extrapolation():
    assert inference_seconds(100.0, {}) == (100.0, None)
    s, label = inference_seconds(10.0, {"extrapolated_from": {"sampled_queries": 5, "total_queries": 50}})
    assert s == 100.0 and "5 of 50" in label
    s, label = inference_seconds(10.0, {"timing": {"extrapolated_from": {"queries": 5, "of": 50,
                                                                        "extrapolated_seconds": 77.0}}})
    assert s == 77.0 and "extrapolated" in label
    s, label = inference_seconds(10.0, {"extrapolated_from": 5})
    assert s is None and "5 test queries" in label


# ------------------------------------------------------------------------------------------------- tables
def test_table4_paper_ours_diff_and_skipped(tmp_path, paper):
    full = make_run(tmp_path, "lpbert", 0.40)
    specs = [
        {"table": "table4", "row": "MEM+MRM+MLM|Y", "dataset": "wn18rr", **full},
        {"table": "table4", "row": "N|N", "dataset": "WN18RR", "run": "t4-none-nobatch", "skipped": "budget"},
    ]
    frame, facts = build_table("table4", [RowSpec.from_mapping(s) for s in specs], paper)
    assert len(frame) == 6  # every paper row is listed
    last = frame[frame.row == "MEM+MRM+MLM|Y"].iloc[0]
    assert last["status"] == "ours" and last["run"] == "lpbert"
    assert last["mrr_paper"] == 0.482 and last["mrr_ours"] == 0.40
    assert last["mrr_diff"] == pytest.approx(0.40 - 0.482)
    assert last["mr_diff"] == pytest.approx(40 - 92)
    assert last["metrics_path"].endswith("lpbert/metrics.json")
    first = frame[frame.row == "N|N"].iloc[0]
    assert first["status"] == "skipped: budget" and pd.isna(first["mrr_ours"])
    assert frame[frame.row == "MLM|Y"].iloc[0]["status"].startswith("not run")
    assert facts["scales"] == ["encoder=minilm, epochs=2, train_subsample=500, test_subsample=10"]


def test_table1_reported_baselines_and_datasets(tmp_path):
    run = make_run(tmp_path, "lpbert", 0.30)
    specs = [
        {"table": "table1", "row": "LP-BERT", "dataset": d, **run} for d in ("WN18RR", "umls")
    ] + [{"table": "table1", "row": "LP-BERT", "dataset": "FB15k-237", "run": "lpbert", "skipped": "too slow on CPU"}]
    out = {"md": tmp_path / "t1.md", "csv": tmp_path / "t1.csv", "tex": tmp_path / "t1.tex"}
    frames = build_tables(specs, PAPER_CSV, {"table1": out})
    frame = frames["table1"]
    reported = frame[frame.status == "reported"]
    assert len(reported) > 40 and reported["mrr_ours"].isna().all()
    assert set(reported["label"].str.split(" ").str[0]) >= {"TransE", "ConvE", "KG-BERT", "StAR"}
    umls = frame[(frame.row == "LP-BERT") & (frame.dataset == "UMLS")].iloc[0]
    assert umls["hits@10_paper"] == 1.0 and pd.isna(umls["mrr_paper"]) and umls["mrr_ours"] == 0.30
    assert pd.isna(umls["mrr_diff"])
    md = out["md"].read_text()
    assert "Scale of our rows:** encoder=minilm" in md
    assert "FB15k-237 entity text" in md and "reported" in md
    assert "skipped: too slow on CPU" in md
    assert str(run["metrics"]) in md  # provenance per row
    csv = pd.read_csv(out["csv"])
    assert {"mrr_paper", "mrr_ours", "mrr_diff", "status", "metrics_path", "scale"} <= set(csv.columns)
    tex = out["tex"].read_text()
    assert "\\begin{tabular}" in tex and "\\caption{" in tex
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_table3_speed_columns(tmp_path):
    lp = make_run(tmp_path, "lpbert", 0.45, epochs=3, finetune_s=3 * 1800.0, score_s=360.0)
    kg = make_run(tmp_path, "kgbert", 0.20, epochs=1, finetune_s=7200.0, score_s=36.0,
                  extra={"extrapolated_from": {"sampled_queries": 10, "total_queries": 1000}})
    specs = [
        {"table": "table3", "row": "KG-BERT|RoBERTa-base", "dataset": "WN18RR", "label": "KG-BERT-style (minilm)",
         "model": "kgbert", **kg},
        {"table": "table3", "row": "LP-BERT|LPBERT-base", "dataset": "WN18RR", **lp},
        {"table": "table3", "row": "LP-BERT|RoBERTa-base", "dataset": "WN18RR", "run": "lpbert-roberta-base",
         "skipped": "roberta-base not loadable offline"},
    ]
    out = {"md": tmp_path / "t3.md", "csv": tmp_path / "t3.csv", "tex": tmp_path / "t3.tex"}
    frame = build_tables(specs, PAPER_CSV, {"table3": out})["table3"]
    lp_row = frame[frame.run == "lpbert"].iloc[0]
    kg_row = frame[frame.run == "kgbert"].iloc[0]
    assert lp_row["t_per_epoch_ours"] == pytest.approx(0.5)  # 5400 s / 3 epochs = 0.5 h
    assert lp_row["infer_ours"] == pytest.approx(0.1)  # 360 s
    assert kg_row["t_per_epoch_ours"] == pytest.approx(2.0)
    assert kg_row["infer_ours"] == pytest.approx(1.0)  # 36 s x 1000/10 = 3600 s
    assert "10 of 1000" in kg_row["infer_note"]
    assert kg_row["kind"] == "cross-encoder"
    assert kg_row["infer_vs_lpbert_ours"] == pytest.approx(10.0)
    assert kg_row["infer_vs_lpbert_paper"] == pytest.approx(32 / 0.8)
    assert kg_row["t_per_epoch_paper"] == 4.0 and kg_row["infer_paper"] == 32.0
    skipped = frame[frame.run == "lpbert-roberta-base"].iloc[0]
    assert skipped["status"].startswith("skipped:") and pd.isna(skipped["infer_ours"])
    assert len(frame[frame.status.str.startswith("not run")]) == 4  # StAR x2, KG-BERT/LP-BERT large
    md = out["md"].read_text()
    assert "†" in md and "extrapolated from 10 of 1000 test queries" in md
    assert "Tesla P40" in md


def test_unknown_paper_row_is_kept(tmp_path, paper):
    run = make_run(tmp_path, "extra", 0.1)
    frame, _ = build_table("table4", [RowSpec.from_mapping({"table": "table4", "row": None, "dataset": "WN18RR",
                                                             "label": "our extra row", **run})], paper)
    extra = frame[frame.label == "our extra row"].iloc[0]
    assert extra["mrr_ours"] == 0.1 and pd.isna(extra["mrr_paper"])


def test_bad_spec_rejected():
    with pytest.raises(ValueError):
        RowSpec.from_mapping({"table": "table9", "dataset": "WN18RR"})
    with pytest.raises(ValueError):
        RowSpec.from_mapping({"table": "table1"})


@pytest.mark.parametrize("scale_as_dict", [True, False])
def test_real_writer_formats(tmp_path, scale_as_dict):
    """metrics.json as lpbert_core.scoring.run_score and cross_encoder_loop.score_run write them."""
    lp = make_run(tmp_path, "lpbert", 0.45, epochs=2, finetune_s=1000.0, score_s=100.0)
    block = {"mrr": 0.45, "mr": 12.0, "hits@1": 0.3, "hits@3": 0.5, "hits@10": 0.7, "count": 40,
             "mrr_optimistic": 0.46, "mrr_pessimistic": 0.44}
    Path(lp["metrics"]).write_text(json.dumps({
        "metrics": {"both": block, "head": block, "tail": block},
        "scale": {"test_triples_used": 20, "test_triples_total": 3134, "test_subsample": 20, "num_entities": 40943,
                  "train_rows_used": 500, "train_subsample": 500, "epochs_run": 2, "encoder": "minilm",
                  "pretrain": "mem-mrm-mlm", "full_protocol": False},
        "run": {"encoder": "minilm"}, "timings_s": {"total_s": 50.0}}))
    kg = make_run(tmp_path, "kgbert", 0.1, epochs=1, finetune_s=500.0, score_s=120.0)
    note = ("sampled: metrics on 4 of 6268 test queries (2 seeded test triples x head and tail), filtered, "
            "realistic ranks; inference time extrapolated linearly from those 4 queries; trained on 500 train "
            "triples for 1 epoch(s), encoder minilm")
    Path(kg["metrics"]).write_text(json.dumps({
        "metrics": {"both": block, "head": block, "tail": block},
        "run": {"dataset": "WN18RR", "model": "kgbert"},
        "scale": ({"note": note, "sampled_queries": True, "queries_measured": 4, "test_triples_used": 2,
                   "test_triples_total": 3134, "encoder": "minilm", "full_protocol": False}
                  if scale_as_dict else note),
        "inference_seconds_measured": 100.0, "queries_measured": 4, "queries_total": 6268,
        "seconds_per_query": 25.0, "inference_seconds_extrapolated": 156700.0,
        "extrapolated_from": "4 of 6268 queries, linear extrapolation (25.000 s per query x 6268)"}))
    specs = [{"table": "table3", "row": "KG-BERT|RoBERTa-base", "dataset": "WN18RR", **kg},
             {"table": "table3", "row": "LP-BERT|LPBERT-base", "dataset": "WN18RR", **lp}]
    out = {"md": tmp_path / "t3.md"}
    frame = build_tables(specs, PAPER_CSV, {"table3": out})["table3"]
    kg_row = frame[frame.run == "kgbert"].iloc[0]
    # benchmark 120 s - measured 100 s + extrapolated 156700 s
    assert kg_row["infer_ours"] == pytest.approx((120 - 100 + 156700) / 3600)
    assert kg_row["infer_vs_lpbert_ours"] == pytest.approx((120 - 100 + 156700) / 100)
    assert "4 of 6268 queries" in kg_row["infer_note"]
    md = out["md"].read_text()
    assert "encoder=minilm, train_subsample=500, test_subsample=20, test_triples_used=20, test_triples_total=3134" in md
    assert "1,567×" in md  # Infer ÷ LP-BERT, ours
    assert "pretrain=mem-mrm-mlm" in md  # per-row scale in the provenance
    assert "sampled: metrics on 4 of 6268 test queries" in md
