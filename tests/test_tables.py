"""Tables 1, 3, 4 and the reproduction table from small synthetic metrics.json / train_log.csv / benchmark files; the
metric keys shared by the scorers and the tables; the paper data file against the paper's text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lpbert_core.errors import InputError
from lpbert_core.ranking.filtered_ranks import metrics_from_ranks
from lpbert_core.report.reproduction import build_reproduction
from lpbert_core.report.table_render import CLEAN_NOTE
from lpbert_core.ranking.results import METRICS, RANK_TYPES, SIDES, flat_key, json_key, read_metrics
from lpbert_core.report.table_frames import build_table
from lpbert_core.report.table_sources import (RowSpec, aggregate, epochs_timed, epochs_trained, floor_label,
                                              inference_seconds, load_paper, read_benchmark_seconds)
from lpbert_core.report.tables import build_tables

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "resources" / "paper_results.csv"
PAPER_MD = ROOT / "resources" / "paper" / "LP-BERT.md"  # vendored: a fresh clone (CI) has it
SHARED_PAPER_MD = ROOT.parent / "shared" / "paper" / "LP-BERT.md"  # the team's copy, where it sits beside the repo


def make_run(root: Path, name: str, mrr: float, *, epochs: int = 2, finetune_s: float = 7200.0, score_s: float = 360.0,
             extra: dict | None = None, encoder: str = "minilm") -> dict:
    """A run folder as the score rule leaves it (metrics.json, train_log.csv, both benchmark TSVs)."""
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    block = {"mrr": mrr, "mr": 40.0, "hits@1": mrr / 2, "hits@3": mrr, "hits@10": min(1.0, mrr * 2), "count": 20}
    metrics = {
        "metrics": {"both": block, "head": block, "tail": block},
        "run": {"model": "lpbert"},
        "scale": {"encoder": encoder, "epochs": epochs, "train_subsample": 500, "test_subsample": 10},
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


def seeded(root: Path, run: str, mrrs: dict[int, float], **kwargs) -> dict:
    """Row spec fields of a run with one instance per seed (the first keeps the run's name)."""
    insts = []
    for i, (seed, mrr) in enumerate(mrrs.items()):
        name = run if i == 0 else f"{run}.s{seed}"
        insts.append({**make_run(root, name, mrr, **kwargs), "seed": seed})
    return {"run": run, "encoder": "minilm", "instances": insts}


def md_lines(path: Path) -> list[str]:
    return [line for line in Path(path).read_text().splitlines() if line.startswith("|")]


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


def test_paper_data_matches_every_cell_of_the_paper_text(paper):
    """Every number of Tables 1, 3, 4 in the paper's text appears in the data file, in order."""
    assert PAPER_MD.exists(), f"the paper's text is expected at {PAPER_MD} (vendored; see resources/paper/SOURCE.md)"
    if SHARED_PAPER_MD.exists():  # the vendored copy must not go stale
        assert PAPER_MD.read_bytes() == SHARED_PAPER_MD.read_bytes(), f"{PAPER_MD} differs from {SHARED_PAPER_MD}"
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
    assert len(t1) == 21
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


# ------------------------------------------------------------------------------------------------- metrics.json
def test_writer_and_reader_share_the_metric_keys(tmp_path):
    """metrics_from_ranks (both scorers) writes what read_metrics reads, for every side x rank type x metric."""
    ranks = pd.DataFrame({"direction": ["head", "head", "tail", "tail"], "optimistic": [1.0, 2.0, 3.0, 20.0],
                          "pessimistic": [1.0, 4.0, 3.0, 20.0], "realistic": [1.0, 3.0, 3.0, 20.0]})
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"metrics": metrics_from_ranks(ranks), "scale": {"encoder": "minilm"}}))
    result = read_metrics(path)
    for side in SIDES:
        part = ranks if side == "both" else ranks[ranks.direction == side]
        assert result.count(side) == len(part)
        for rank_type in RANK_TYPES:
            r = part[rank_type].to_numpy()
            expected = {"mrr": np.mean(1 / r), "mr": np.mean(r), "hits@1": np.mean(r <= 1), "hits@3": np.mean(r <= 3),
                        "hits@10": np.mean(r <= 10)}
            for metric in METRICS:
                assert result.get(metric, side, rank_type) == pytest.approx(expected[metric]), (side, rank_type)
    assert json_key("hits@10") == "hits@10" and json_key("mrr", "optimistic") == "mrr_optimistic"
    assert result.flat()[flat_key("tail", "pessimistic", "mr")] == pytest.approx(11.5)
    assert result.encoder == "minilm" and result.leaky is False


def test_read_metrics_accepts_the_pipelines_files_only(tmp_path):
    p = tmp_path / "m.json"
    # a file written before every rank type had every metric: the missing keys are None
    p.write_text(json.dumps({"metrics": {"both": {"mrr": 0.5, "hits@10": 0.9, "mrr_optimistic": 0.6}},
                             "leaky": True, "leak": "leaky: test"}))
    m = read_metrics(p)
    assert m.get("mrr") == 0.5 and m.get("mrr", rank_type="optimistic") == 0.6 and m.get("mr") is None
    assert m.leaky and m.leak == "leaky: test"
    for bad, message in ((json.dumps({"metrics": {"both": {"MRR": 0.5, "hits_at_10": 0.9}}}), "has none of"),
                         (json.dumps({"mrr": 0.25}), "must hold an object with a 'metrics'"),
                         (json.dumps({"metrics": {"realistic": {"both": {}}}}), "must hold the sides"),
                         ("{not json", "not valid JSON")):
        p.write_text(bad)
        with pytest.raises(InputError, match=message):
            read_metrics(p)
    with pytest.raises(InputError, match="not found"):
        read_metrics(tmp_path / "absent.json")


# ------------------------------------------------------------------------------------------------- other files
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


def test_inference_seconds_of_the_cross_encoders_extrapolation():
    assert inference_seconds(100.0, {}) == (100.0, None)
    raw = {"inference_seconds_measured": 100.0, "inference_seconds_extrapolated": 156700.0,
           "extrapolated_from": "4 of 6268 queries, linear extrapolation (25.000 s per query x 6268)"}
    s, label = inference_seconds(120.0, raw)
    assert s == pytest.approx(120 - 100 + 156700) and "4 of 6268 queries" in label
    assert inference_seconds(None, raw)[0] == 156700.0
    assert inference_seconds(10.0, {"extrapolated_from": "x"})[0] is None


def test_aggregate_over_seeds():
    agg = aggregate([0.40, 0.44, None, 0.48])
    assert agg.n == 3 and agg.mean == pytest.approx(0.44) and agg.sd == pytest.approx(np.std([0.4, 0.44, 0.48], ddof=1))
    one = aggregate([0.3])
    assert (one.mean, one.sd, one.n) == (0.3, None, 1)
    assert aggregate([None, float("nan")]).n == 0


# ------------------------------------------------------------------------------------------------- tables
def test_table4_paper_row_then_ours_then_delta(tmp_path, paper):
    specs = [
        {"table": "table4", "row": "MEM+MRM+MLM|Y", "dataset": "wn18rr", "encoder": "minilm",
         **make_run(tmp_path, "lpbert", 0.40)},
        {"table": "table4", "row": "N|N", "dataset": "WN18RR", "run": "t4-none-nobatch", "skipped": "budget"},
    ]
    frame, facts = build_table("table4", [RowSpec.from_mapping(s) for s in specs], paper)
    assert (frame["source"] == "paper").sum() == 6  # every paper row is listed
    last = frame[frame.row == "MEM+MRM+MLM|Y"].set_index("source")
    assert last.loc["ours", "run"] == "lpbert" and last.loc["ours", "mrr"] == 0.40 and last.loc["paper", "mrr"] == 0.482
    assert last.loc["diff", "mrr"] == pytest.approx(0.40 - 0.482) and last.loc["diff", "mr"] == pytest.approx(40 - 92)
    assert last.loc["ours", "delta"] == "shown, encoder differs" and last.loc["ours", "mrr_n"] == 1
    assert last.loc["ours", "metrics_paths"].endswith("lpbert/metrics.json")
    first = frame[(frame.row == "N|N") & (frame.source == "ours")].iloc[0]
    assert first["status"] == "skipped: budget" and pd.isna(first["mrr"])
    assert facts["scales"] == ["encoder=minilm, epochs=2, train_subsample=500, test_subsample=10"]
    out = {"md": tmp_path / "t4.md", "csv": tmp_path / "t4.csv", "tex": tmp_path / "t4.tex"}
    build_tables(specs, PAPER_CSV, {"table4": out})
    lines = md_lines(out["md"])
    assert lines[0].split("|")[1:8] == [" Pre-train ", " BatchSample ", " Hits@1 ", " Hits@3 ", " Hits@10 ", " MR ",
                                        " MRR "]
    i = next(i for i, line in enumerate(lines) if line.startswith("| MEM+MRM+MLM | Y | 0.343"))
    assert lines[i + 1].startswith("| ↳ ours (run `lpbert`) ‡ |  | 0.200 | 0.400 | 0.800 | 40 | 0.400 |")
    assert lines[i + 2].startswith("| ↳ Δ ours − paper ‡ |  | -0.143 |")
    skipped = next(line for line in lines if "t4-none-nobatch" in line)
    assert "skipped: budget" in skipped and not any("Δ" in line and "nobatch" in line for line in lines)
    text = out["md"].read_text()
    assert text.index("| N | N |") < text.index("**Notes**") < text.index("**Provenance**")  # notes under the table
    assert "Encoder" not in lines[0] and "Scale" not in lines[0]  # encoder and scale are notes, not columns
    assert "marked ‡" in text and "BatchSample = N" in text
    assert "\\begin{tabular}" in out["tex"].read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_table1_one_column_group_per_dataset(tmp_path):
    run = make_run(tmp_path, "lpbert", 0.30)
    specs = [{"table": "table1", "row": "LP-BERT", "dataset": d, "encoder": "minilm", **run}
             for d in ("WN18RR", "umls", "mykg")]
    specs.append({"table": "table1", "row": "LP-BERT", "dataset": "FB15k-237", "run": "lpbert",
                  "skipped": "too slow on CPU"})
    out = {"md": tmp_path / "t1.md", "csv": tmp_path / "t1.csv", "tex": tmp_path / "t1.tex"}
    frame = build_tables(specs, PAPER_CSV, {"table1": out})["table1"]
    header = [c.strip() for c in md_lines(out["md"])[0].strip("|").split("|")]
    assert header[:6] == ["Method", "WN18RR Hits@1", "WN18RR Hits@3", "WN18RR Hits@10", "WN18RR MR", "WN18RR MRR"]
    assert header[11:13] == ["UMLS Hits@10", "UMLS MR"]  # as the paper shows UMLS
    assert header[13:18] == [f"mykg {m}" for m in ("Hits@1", "Hits@3", "Hits@10", "MR", "MRR")]  # only ours
    assert header[-1] == "Params" and len(header) == 19
    lines = md_lines(out["md"])
    assert lines[2].startswith("| *translational distance models* |")
    lp = next(i for i, line in enumerate(lines) if line.startswith("| LP-BERT |"))
    assert lines[lp].endswith("| – | – | – | – | – | 102M |")
    ours = [c.strip() for c in lines[lp + 1].strip("|").split("|")]
    assert ours[0].startswith("↳ ours (run `lpbert`): skipped: too slow on CPU")
    assert ours[1:6] == ["0.150", "0.300", "0.600", "40", "0.300"] and ours[6:11] == ["skipped"] * 5
    assert ours[11:13] == ["0.600", "40"] and ours[13] == "0.150"
    delta = [c.strip() for c in lines[lp + 2].strip("|").split("|")]
    assert delta[1] == "-0.193" and delta[11:13] == ["-0.400", "+38.8"] and delta[13] == "–"
    umls = frame[(frame.source == "ours") & (frame.dataset == "UMLS")].iloc[0]
    assert umls["mrr"] == 0.30  # the CSV keeps every metric of ours, not only the paper's two
    csv = pd.read_csv(out["csv"])
    assert {"source", "run", "mrr", "mrr_sd", "mrr_n", "status", "metrics_paths", "scale", "encoder"} <= set(csv.columns)
    assert set(csv["source"]) == {"paper", "ours", "diff"}
    assert (csv["source"] == "paper").sum() > 40
    text = out["md"].read_text()
    assert "FB15k-237 entity text" in text and str(run["metrics"]) in text
    tex = out["tex"].read_text()
    assert "\\multicolumn{5}{c}{WN18RR}" in tex and "\\multicolumn{2}{c}{UMLS}" in tex and "\\caption{" in tex


def test_table3_speed_columns_and_no_delta_across_encoders(tmp_path):
    lp = make_run(tmp_path, "lpbert", 0.45, epochs=3, finetune_s=3 * 1800.0, score_s=360.0)
    kg = make_run(tmp_path, "kgbert", 0.20, epochs=1, finetune_s=7200.0, score_s=36.0,
                  extra={"inference_seconds_measured": 30.0, "inference_seconds_extrapolated": 3594.0,
                         "extrapolated_from": "10 of 1000 queries, linear extrapolation"})
    rb = make_run(tmp_path, "lpbert-roberta-base", 0.30, encoder="roberta-base")
    specs = [
        {"table": "table3", "row": "KG-BERT|RoBERTa-base", "dataset": "WN18RR", "model": "kgbert",
         "encoder": "minilm", **kg},
        {"table": "table3", "row": "LP-BERT|LPBERT-base", "dataset": "WN18RR", "encoder": "minilm", **lp},
        {"table": "table3", "row": "LP-BERT|RoBERTa-base", "dataset": "WN18RR", "encoder": "roberta-base", **rb},
        {"table": "table3", "row": "LP-BERT|RoBERTa-large", "dataset": "WN18RR", "run": "lpbert-roberta-large",
         "skipped": "roberta-large not loadable offline"},
    ]
    out = {"md": tmp_path / "t3.md", "csv": tmp_path / "t3.csv", "tex": tmp_path / "t3.tex"}
    frame = build_tables(specs, PAPER_CSV, {"table3": out})["table3"]
    ours = frame[frame.source == "ours"].set_index("run")
    assert ours.loc["lpbert", "t_per_epoch"] == pytest.approx(0.5)  # 5400 s / 3 epochs = 0.5 h
    assert ours.loc["lpbert", "infer"] == pytest.approx(0.1)  # 360 s
    assert ours.loc["kgbert", "t_per_epoch"] == pytest.approx(2.0)
    assert ours.loc["kgbert", "infer"] == pytest.approx(1.0)  # 36 - 30 + 3594 s
    assert ours.loc["kgbert", "kind"] == "cross-encoder" and "10 of 1000" in ours.loc["kgbert", "infer_note"]
    assert ours.loc["kgbert", "infer_vs_lpbert"] == pytest.approx(10.0)
    paper_kg = frame[(frame.source == "paper") & (frame.row == "KG-BERT|RoBERTa-base")].iloc[0]
    assert paper_kg["infer_vs_lpbert"] == pytest.approx(32 / 0.8)
    diffs = frame[frame.source == "diff"].set_index("run")
    assert diffs.loc["kgbert", ["mrr", "infer"]].isna().all()  # minilm vs RoBERTa-base: no Δ
    assert diffs.loc["lpbert", "mrr"] is None or pd.isna(diffs.loc["lpbert", "mrr"])  # minilm vs LPBERT-base
    assert diffs.loc["lpbert-roberta-base", "mrr"] == pytest.approx(0.30 - 0.424)  # same weights: Δ
    lines = md_lines(out["md"])
    assert lines[0].startswith("| Method | Initial weights | Hits@1 | Hits@3 | Hits@10 | MR | MRR | T/Ep (h) | Infer (h) |")
    kg_line = next(i for i, line in enumerate(lines) if "run `kgbert`" in line)
    assert lines[kg_line - 1].startswith("| KG-BERT | RoBERTa-base |")
    assert lines[kg_line].startswith("| ↳ ours (run `kgbert`) | minilm |") and "1†" in lines[kg_line]
    assert lines[kg_line + 1].startswith("| ↳ Δ: none (encoder differs: minilm ≠ RoBERTa-base) |")
    rb_line = next(i for i, line in enumerate(lines) if "run `lpbert-roberta-base`" in line)
    assert lines[rb_line + 1].startswith("| ↳ Δ ours − paper |  | ")
    assert "skipped: roberta-large not loadable offline" in out["md"].read_text()
    text = out["md"].read_text()
    assert "extrapolated from 10 of 1000 queries" in text and "Tesla P40" in text and "prints no Δ" not in text


def test_a_row_with_several_seeds_shows_mean_sd_and_n(tmp_path):
    row = seeded(tmp_path, "t4-none", {42: 0.40, 43: 0.44, 44: 0.48})
    specs = [{"table": "table4", "row": "N|Y", "dataset": "WN18RR", **row}]
    out = {"md": tmp_path / "t4.md", "csv": tmp_path / "t4.csv"}
    build_tables(specs, PAPER_CSV, {"table4": out})
    csv = pd.read_csv(out["csv"])
    ours = csv[csv.source == "ours"].iloc[0]
    assert ours["mrr"] == pytest.approx(0.44) and ours["mrr_sd"] == pytest.approx(0.04) and ours["mrr_n"] == 3
    assert ours["seeds"] == "42 43 44" and ours["n"] == 3
    assert csv[csv.source == "diff"].iloc[0]["mrr"] == pytest.approx(0.44 - 0.424)  # Δ of the mean
    line = next(line for line in md_lines(out["md"]) if "run `t4-none`" in line)
    assert "seeds 42, 43, 44: mean ± sd, n=3" in line and "| 0.440 ± 0.040 |" in line
    text = out["md"].read_text()
    for name, seed in (("t4-none", 42), ("t4-none.s43", 43), ("t4-none.s44", 44)):
        assert f"run `{name}` (seed {seed}): `{tmp_path / name / 'metrics.json'}`" in text
    assert "Pre-training is shared by all seeds, not re-seeded" in text


def test_leaky_runs_are_marked(tmp_path):
    run = make_run(tmp_path, "lpbert", 0.9, extra={"leaky": True, "leak": "leaky: test triples as labels"})
    specs = [{"table": "table4", "row": "MEM+MRM+MLM|Y", "dataset": "WN18RR", **run}]
    frames = build_tables(specs, PAPER_CSV, {"table4": {"md": tmp_path / "t4.md"}})
    ours = frames["table4"][frames["table4"].source == "ours"].iloc[0]
    assert ours["leaky"] and ours["status"].startswith("ours") and "LEAKY" in ours["status"]
    text = (tmp_path / "t4.md").read_text()
    assert "↳ ours (run `lpbert`) ⚠ leaky" in text and "leaky: test triples as labels" in text


def test_unknown_paper_row_is_kept(tmp_path, paper):
    run = make_run(tmp_path, "extra", 0.1)
    frame, _ = build_table("table4", [RowSpec.from_mapping({"table": "table4", "row": None, "dataset": "WN18RR", **run})],
                           paper)
    extra = frame[frame.run == "extra"].set_index("source")
    assert extra.loc["ours", "mrr"] == 0.1 and pd.isna(extra.loc["diff", "mrr"])


def test_bad_spec_rejected():
    with pytest.raises(ValueError):
        RowSpec.from_mapping({"table": "table9", "dataset": "WN18RR"})
    with pytest.raises(ValueError):
        RowSpec.from_mapping({"table": "table1"})


# ------------------------------------------------------------------------------------------------- reproduction
def test_reproduction_without_authors_code_or_attribution(tmp_path, paper):
    row = seeded(tmp_path, "lpbert", {42: 0.40, 43: 0.50})
    specs = [RowSpec.from_mapping({"table": "reproduction", "row": "LP-BERT", "dataset": d, "role": "paper_text",
                                   **row}) for d in ("umls", "WN18RR", "mykg")]
    frame, facts = build_reproduction(specs, paper)
    assert list(frame[frame.dataset == "UMLS"]["metric"]) == ["hits@10", "mr"]  # the paper's Table 1 metrics
    assert list(frame[frame.dataset == "WN18RR"]["metric"]) == ["hits@1", "hits@3", "hits@10", "mr", "mrr"]
    wn = frame.set_index(["dataset", "metric"])
    assert wn.loc[("WN18RR", "mrr"), "paper"] == 0.482 and wn.loc[("WN18RR", "mrr"), "paper_text"] == pytest.approx(0.45)
    assert wn.loc[("WN18RR", "mrr"), "paper_text_delta"] == pytest.approx(0.45 - 0.482)
    assert wn.loc[("WN18RR", "mrr"), "paper_text_n"] == 2
    assert pd.isna(wn.loc[("mykg", "mrr"), "paper"]) and pd.isna(wn.loc[("mykg", "mrr"), "paper_text_delta"])
    assert (frame["authors_code_status"] == "not run (configs/authors-code.yaml)").all()
    assert (frame["attribution"] == "–").all()
    out = {"md": tmp_path / "r.md", "csv": tmp_path / "r.csv", "tex": tmp_path / "r.tex"}
    build_tables(specs, PAPER_CSV, {"reproduction": out})
    lines = md_lines(out["md"])
    assert lines[0] == ("| Dataset | Metric | Paper | Ours: paper text (`lpbert`) | Δ | Ours: authors' code | Δ | Scale "
                        "| Attribution |")
    mrr = next(line for line in lines if "| MRR | 0.482 |" in line)
    assert "0.450 ± 0.071 (n=2)" in mrr and "-0.032 ‡" in mrr and "not run (configs/authors-code.yaml) | – |" in mrr
    assert mrr.endswith("| – |")
    assert "results" not in lines[0] and (tmp_path / "r.tex").read_text().count("\\\\") > 10
    assert CLEAN_NOTE in (tmp_path / "r.md").read_text()  # no row is leaky


def test_reproduction_with_authors_code_leaky_and_attribution(tmp_path, paper):
    paper_text = seeded(tmp_path, "lpbert", {42: 0.40})
    authors = make_run(tmp_path, "lpbert-authors", 0.48, extra={"leaky": True, "leak": "leaky: test labels"})
    attribution = tmp_path / "attribution.csv"
    pd.DataFrame({"dataset": ["umls", "umls"], "metric": ["", "mr"],
                  "attribution": ["probability mapping", "distance term"]}).to_csv(attribution, index=False)
    specs = [{"table": "reproduction", "row": "LP-BERT", "dataset": "umls", "role": "paper_text", **paper_text},
             {"table": "reproduction", "row": "LP-BERT", "dataset": "umls", "role": "authors_code",
              "encoder": "bert-base", **authors}]
    out = {"md": tmp_path / "r.md", "csv": tmp_path / "r.csv"}
    frame = build_tables(specs, PAPER_CSV, {"reproduction": out}, attribution=attribution)["reproduction"]
    by = frame.set_index("metric")
    assert by.loc["hits@10", "authors_code"] == pytest.approx(0.96) and by.loc["hits@10", "authors_code_leaky"]
    assert by.loc["hits@10", "authors_code_delta_rule"] == "shown"  # BERT-base: the paper's encoder size
    assert by.loc["hits@10", "paper_text_delta_rule"] == "shown, encoder differs"
    assert by.loc["hits@10", "attribution"] == "probability mapping" and by.loc["mr", "attribution"] == "distance term"
    line = next(line for line in md_lines(out["md"]) if "| Hits@10 |" in line)
    assert "0.960 ⚠ leaky | -0.040 |" in line and "-0.200 ‡" in line
    assert "(`lpbert-authors`)" in md_lines(out["md"])[0]


def test_reproduction_attribution_from_a_study_summary(tmp_path, paper):
    study = tmp_path / "results" / "study" / "umls" / "summary.csv"
    study.parent.mkdir(parents=True)
    pd.DataFrame({"stage": ["study", "study", "study", "study30", "study30"],
                  "reading": ["P", "raw", "ac", "raw", "selfneg"], "epochs": [8, 8, 8, 30, 30],
                  "n_seeds": [2, 2, 1, 2, 1], "leaky": [False, False, True, False, False],
                  "dev_hits@10_mean": [0.8, 0.7, 0.5, 0.97, 0.96], "test_hits@10_mean": [0.85, 0.80, 0.95, 0.99, 0.98],
                  "test_mr_mean": [5.0, 6.0, 2.0, 1.4, 1.6]}).to_csv(study, index=False)
    with_switches = tmp_path / "study_umls" / "summary.csv"  # ac-<switch> readings are compared with ac, not P
    with_switches.parent.mkdir()
    # ... and a chain of steps (sigmoid-mean -> nopre -> nopre-mpnet) is read step by step
    pd.DataFrame({"stage": ["study"] * 7,
                  "reading": ["P", "sigmoid-mean", "nopre", "nopre-mpnet", "ac", "ac-cosine", "ac-optim"],
                  "epochs": [8] * 7, "leaky": [False, False, False, False, True, True, True],
                  "test_hits@10_mean": [0.85, 0.95, 0.96, 0.99, 0.60, 0.93, 0.45]}).to_csv(with_switches, index=False)
    row = make_run(tmp_path, "lpbert", 0.4)
    specs = [RowSpec.from_mapping({"table": "reproduction", "row": "LP-BERT", "dataset": "umls", "role": "paper_text",
                                   **row})]
    by = build_reproduction(specs, paper, study)[0].set_index("metric")
    assert by.loc["hits@10", "attribution"] == ("study (8 epochs, up to 2 seeds) vs P (0.850): ac (leaky) +0.100, "
                                                "raw -0.050; study30 (30 epochs): raw 0.990")
    assert by.loc["mr", "attribution"].startswith("study (8 epochs, up to 2 seeds) vs P (5): ac (leaky) -3.0, raw +1.0; "
                                                  "study30 (30 epochs): raw 1.4")
    by = build_reproduction(specs, paper, with_switches)[0].set_index("metric")
    assert by.loc["hits@10", "attribution"] == ("study (8 epochs) vs P (0.850): sigmoid-mean +0.100; from sigmoid-mean "
                                                "(0.950): nopre +0.010; from nopre (0.960): nopre-mpnet +0.030; ac "
                                                "(leaky) -0.250 vs P, its switches one at a time vs ac (0.600; they interact "
                                                "and do not add up): ac-cosine (leaky) "
                                                "+0.330, ac-optim (leaky) -0.150")
    # where the study summary carries Δ paired on common seeds (study.summarise), that Δ is quoted, not the means'
    frame = pd.read_csv(with_switches)
    frame["delta_test_hits@10"] = [float("nan"), 0.10, 0.01, 0.03, -0.25, 0.36, -0.15]
    frame.to_csv(with_switches, index=False)
    text = build_reproduction(specs, paper, with_switches)[0].set_index("metric").loc["hits@10", "attribution"]
    assert "ac-cosine (leaky) +0.360" in text and "ac (leaky) -0.250 vs P" in text and "Δ paired by seed" in text
    # a longer stage's best reading with its Δ against the same reading's 8 epochs (study.baseline_run_of)
    frame = pd.read_csv(study)
    frame["baseline"] = ["", "P", "P", "raw", "selfneg"]
    frame["baseline_stage"] = ["", "study", "study", "study", "study"]
    frame["delta_test_hits@10"] = [float("nan"), -0.05, 0.1, 0.19, float("nan")]
    frame.to_csv(study, index=False)
    text = build_reproduction(specs, paper, study)[0].set_index("metric").loc["hits@10", "attribution"]
    assert text.endswith("; study30 (30 epochs): raw 0.990 (+0.190 over its 8-epoch run)")
    frame.loc[3, "delta_test_hits@10"] = float("nan")  # no Δ in the summary: no gain quoted
    frame.to_csv(study, index=False)
    text = build_reproduction(specs, paper, study)[0].set_index("metric").loc["hits@10", "attribution"]
    assert text.endswith("; study30 (30 epochs): raw 0.990")
    frame.loc[3, ["delta_test_hits@10", "baseline"]] = [0.19, "P"]  # a Δ against another reading: not a schedule gain
    frame.to_csv(study, index=False)
    text = build_reproduction(specs, paper, study)[0].set_index("metric").loc["hits@10", "attribution"]
    assert text.endswith("; study30 (30 epochs): raw 0.990")
    # a longer stage with P of its own is the one read; its summary Δ (against the 8 epochs) is not quoted as a Δ
    # against P: the means' difference is
    longer = pd.DataFrame({"stage": ["study", "study", "study30", "study30"], "reading": ["P", "raw", "P", "raw"],
                           "epochs": [8, 8, 30, 30], "test_hits@10_mean": [0.85, 0.90, 0.95, 0.99],
                           "baseline": ["", "P", "P", "raw"], "baseline_stage": ["", "study", "study", "study"],
                           "delta_test_hits@10": [float("nan"), 0.05, 0.10, 0.09]})
    longer.to_csv(study, index=False)
    text = build_reproduction(specs, paper, study)[0].set_index("metric").loc["hits@10", "attribution"]
    assert text == "study30 (30 epochs) vs P (0.950): raw +0.040"
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match="attribution CSV needs"):
        build_reproduction(specs, paper, bad)


def test_reproduction_of_a_config_whose_runs_are_the_authors_reading(tmp_path, paper):
    """tables.reproduction: {paper_text: null, authors_code: lpbert} (an overlay that changes every run's reading)."""
    run = make_run(tmp_path, "lpbert", 0.4, extra={"leaky": True})
    spec = {"table": "reproduction", "row": "LP-BERT", "dataset": "umls", "role": "authors_code", **run}
    specs = [RowSpec.from_mapping(spec)]
    frame, facts = build_reproduction(specs, paper)
    assert (frame["paper_text_status"] == "not run (tables.reproduction.paper_text)").all()
    assert frame["authors_code"].tolist() == [0.8, 40.0] and frame["authors_code_leaky"].all()
    assert facts["runs"] == {"paper_text": None, "authors_code": "lpbert"}
    out = {"md": tmp_path / "r.md", "csv": tmp_path / "r.csv"}
    build_tables([spec], PAPER_CSV, {"reproduction": out})
    text = out["md"].read_text()
    assert "Ours: paper text | Δ | Ours: authors' code (`lpbert`)" in md_lines(out["md"])[0]
    assert "**Paper text:** not run here (tables.reproduction.paper_text is null" in text
    # a leaky row: the leak note, never the claim that no dev or test triple was a label
    assert "⚠ leaky:** the run's metrics.json says `leaky: true`" in text and CLEAN_NOTE not in text


# ------------------------------------------------------------------------------------------------- zero-shot floor
def floor_spec(root: Path, table: str, dataset: str, run: str, pretrain: str, mrr: float, **kwargs) -> dict:
    """A zero-shot floor row (tables.floor) as rules/common.smk passes it."""
    return {"table": table, "dataset": dataset, "encoder": "minilm", "row": None, "floor": True,
            "label": floor_label(pretrain), **make_run(root / dataset, run, mrr, epochs=0, **kwargs)}


def block(mrr: float, hits10: float) -> dict:
    """metrics.json `metrics` whose MRR and Hits@10 move apart (make_run ties Hits@10 to the MRR)."""
    side = {"mrr": mrr, "mr": 5.0, "hits@1": mrr / 2, "hits@3": mrr, "hits@10": hits10, "count": 20}
    return {"metrics": {"both": side, "head": side, "tail": side}}


def test_table4_floor_rows_and_a_row_below_its_floor(tmp_path, paper):
    specs = [
        {"table": "table4", "row": "MEM+MRM+MLM|Y", "dataset": "WN18RR", "encoder": "minilm",
         "floor_run": "zero-shot-pretrained", **make_run(tmp_path, "lpbert", 0.40)},
        {"table": "table4", "row": "N|N", "dataset": "WN18RR", "encoder": "minilm", "floor_run": "zero-shot",
         **make_run(tmp_path, "t4-none-nobatch", 0.05)},
        floor_spec(tmp_path, "table4", "WN18RR", "zero-shot", "none", 0.08),
        floor_spec(tmp_path, "table4", "WN18RR", "zero-shot-pretrained", "mem-mrm-mlm", 0.12),
    ]
    out = {"md": tmp_path / "t4.md", "csv": tmp_path / "t4.csv", "tex": tmp_path / "t4.tex"}
    frame = build_tables(specs, PAPER_CSV, {"table4": out})["table4"]
    floors = frame[frame.source == "floor"].set_index("run")
    assert list(floors.index) == ["zero-shot", "zero-shot-pretrained"] and floors.loc["zero-shot", "mrr"] == 0.08
    assert (frame.source == "floor").sum() == 2 and not (frame[frame.source == "diff"].run.str.startswith("zero")).any()
    ours = frame[frame.source == "ours"].set_index("run")
    assert ours.loc["t4-none-nobatch", "below_floor"] and ours.loc["t4-none-nobatch", "floor_value"] == 0.08
    assert ours.loc["t4-none-nobatch", "floor_metric"] == "mrr" and ours.loc["lpbert", "below_floor"] is False
    assert ours.loc["lpbert", "floor_run"] == "zero-shot-pretrained"
    lines = md_lines(out["md"])
    section = next(i for i, line in enumerate(lines) if "*Zero-shot floor (ours; the paper has no such row)*" in line)
    assert lines[section + 1].startswith("| zero-shot (no fine-tuning): bare encoder (run `zero-shot`) |  | 0.040 | "
                                         "0.080 | 0.160 | 40 | 0.080 |")
    assert lines[section + 2].startswith("| zero-shot (no fine-tuning): encoder after pre-training mem-mrm-mlm (run "
                                         "`zero-shot-pretrained`) |")
    assert section == len(lines) - 3  # the floor rows close the table, without Δ lines
    low = next(line for line in lines if "run `t4-none-nobatch`" in line)
    assert "▽ below the zero-shot floor |" in low and low.endswith("| 0.050 ▽ |")
    assert not any("▽" in line for line in lines if "run `lpbert`" in line)
    text = out["md"].read_text()
    assert ("**▽ below the zero-shot floor:** `t4-none-nobatch` on WN18RR (MRR 0.050 ≤ 0.080 of `zero-shot`)"
            in text)
    assert ("**Zero-shot floor** (ours; the paper has no such row): `zero-shot` (bare encoder), `zero-shot-pretrained` "
            "(encoder after pre-training mem-mrm-mlm): the initial encoder scored exactly like every run") in text
    assert f"run `zero-shot`: `{tmp_path / 'WN18RR' / 'zero-shot' / 'metrics.json'}`" in text  # provenance
    assert "encoder=minilm, epochs=2" in text and "$\\triangledown$" in out["tex"].read_text()
    csv = pd.read_csv(out["csv"])
    assert {"floor_run", "floor_metric", "floor_value", "below_floor"} <= set(csv.columns)
    assert set(csv["source"]) == {"paper", "ours", "diff", "floor"}


def test_table1_floor_line_spans_the_datasets_and_umls_is_compared_on_hits10(tmp_path):
    lp = {"wn": make_run(tmp_path / "WN18RR", "lpbert", 0.12), "fb": make_run(tmp_path / "FB15k-237", "lpbert", 0.2),
          "umls": make_run(tmp_path / "umls", "lpbert", 0.4, extra=block(0.4, 0.8))}
    specs = [{"table": "table1", "row": "LP-BERT", "dataset": d, "encoder": "minilm",
              "floor_run": "zero-shot-pretrained", **lp[k]}
             for k, d in (("wn", "WN18RR"), ("fb", "FB15k-237"), ("umls", "umls"))]
    specs += [floor_spec(tmp_path, "table1", "WN18RR", "zero-shot-pretrained", "mem-mrm-mlm", 0.12),  # at: marked
              floor_spec(tmp_path, "table1", "FB15k-237", "zero-shot-pretrained", "mem-mrm-mlm", 0.1),
              # UMLS: the floor's MRR is higher, its Hits@10 (the paper's UMLS metric) lower: not marked
              floor_spec(tmp_path, "table1", "umls", "zero-shot-pretrained", "mem-mrm-mlm", 0.5,
                         extra=block(0.5, 0.7))]
    out = {"md": tmp_path / "t1.md"}
    frame = build_tables(specs, PAPER_CSV, {"table1": out})["table1"]
    ours = frame[frame.source == "ours"].set_index("dataset")
    assert ours.loc["WN18RR", "below_floor"] and not ours.loc["FB15k-237", "below_floor"]
    assert ours.loc["UMLS", "floor_metric"] == "hits@10" and not ours.loc["UMLS", "below_floor"]
    lines = md_lines(out["md"])
    row = next(line for line in lines if "run `lpbert`" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0].endswith("▽ below the zero-shot floor on WN18RR") and cells[5] == "0.120 ▽"
    assert "▽" not in "".join(cells[6:])
    floor = next(line for line in lines if "run `zero-shot-pretrained`" in line)
    floor = [c.strip() for c in floor.strip("|").split("|")]
    assert floor[5] == "0.120" and floor[10] == "0.100" and floor[11:13] == ["0.700", "5"]  # one line, three datasets


def test_reproduction_floor_columns_and_marker(tmp_path, paper):
    row = make_run(tmp_path / "WN18RR", "lpbert", 0.10)
    specs = [RowSpec.from_mapping(s) for s in (
        {"table": "reproduction", "row": "LP-BERT", "dataset": "WN18RR", "role": "paper_text",
         "floor_run": "zero-shot-pretrained", **row},
        floor_spec(tmp_path, "reproduction", "WN18RR", "zero-shot", "none", 0.08),
        floor_spec(tmp_path, "reproduction", "WN18RR", "zero-shot-pretrained", "mem-mrm-mlm", 0.11))]
    frame, facts = build_reproduction(specs, paper)
    by = frame.set_index("metric")
    assert by.loc["mrr", "floor_zero-shot"] == 0.08 and by.loc["mrr", "floor_zero-shot-pretrained"] == 0.11
    assert by.loc["mrr", "paper_text_below_floor"] and not by.loc["hits@10", "paper_text_below_floor"]
    assert facts["floor_runs"] == ["zero-shot", "zero-shot-pretrained"]
    out = {"md": tmp_path / "r.md", "tex": tmp_path / "r.tex"}
    build_tables([s for s in specs], PAPER_CSV, {"reproduction": out})
    lines = md_lines(out["md"])
    assert ("| Zero-shot, no fine-tuning (`zero-shot`) | Zero-shot, no fine-tuning (`zero-shot-pretrained`) | Scale "
            in lines[0])
    mrr = next(line for line in lines if "| MRR | 0.482 |" in line)
    assert "| 0.100 ▽ | -0.382 ‡ |" in mrr and "| 0.080 | 0.110 |" in mrr
    text = out["md"].read_text()
    assert "`lpbert` on WN18RR (MRR 0.100 ≤ 0.110 of `zero-shot-pretrained`)" in text
    assert "zero-shot (no fine-tuning): bare encoder · WN18RR · run `zero-shot`" in text  # provenance
