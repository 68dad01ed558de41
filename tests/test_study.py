"""Reading study summary: two fake runs with hand-made metrics, and a second reading to rank against."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from lpbert_core.report.study import load_run, parse_run_name, runs_in_folder, summarise, write_study


def fake_run(folder, name, best_epoch, dev, test, commit="abc1234def5678", leaky=False):
    """A run folder as the pipeline writes it: metrics.json (test metrics + run info) and train_log.csv."""
    d = folder / name
    d.mkdir(parents=True)
    both = {"hits@10": test[0], "mr": test[1], "mrr": test[2], "hits@1": test[3], "count": 1322}
    (d / "metrics.json").write_text(json.dumps({
        "metrics": {"both": both}, "leaky": leaky,
        "run": {"best_epoch": best_epoch, "best_dev_hits@10": max(dev), "epochs_run": len(dev),
                "settings": {"epochs": len(dev)}}}))
    pd.DataFrame({"epoch": range(1, len(dev) + 1), "dev_hits@10": dev,
                  "dev_mrr": [0.1 * (i + 1) for i in range(len(dev))]}).to_csv(d / "train_log.csv", index=False)
    (d / "provenance.json").write_text(json.dumps({"git_commit": commit, "uncommitted_code_files": []}))
    return d


def test_run_names():
    assert parse_run_name("study-P-s42") == ("study", "P", 42)
    assert parse_run_name("study-sigmoid-mean-s43") == ("study", "sigmoid-mean", 43)
    assert parse_run_name("study30-dist-none-s42") == ("study30", "dist-none", 42)
    assert parse_run_name("lpbert") is None and parse_run_name("study-P") is None


def test_two_seeds_mean_sd_ranking_and_files(tmp_path):
    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "study-P-s42", 2, [0.80, 0.90, 0.85], [0.88, 4.0, 0.50, 0.30])
    fake_run(runs_dir, "study-P-s43", 3, [0.70, 0.80, 0.94], [0.92, 3.0, 0.60, 0.40], commit="fff0000aaa1111")
    fake_run(runs_dir, "study-raw-s42", 1, [0.95, 0.90, 0.90], [0.99, 1.5, 0.70, 0.50])
    fake_run(runs_dir, "lpbert", 1, [0.5], [0.5, 9.0, 0.2, 0.1])  # not a study run: ignored
    runs = runs_in_folder(runs_dir)
    assert [r["run"] for r in runs] == ["study-P-s42", "study-P-s43", "study-raw-s42"]

    per_run, per_reading = summarise(runs)
    p = per_reading.set_index("reading").loc["P"]
    assert p["n_seeds"] == 2 and p["seeds"] == "42 43"
    assert p["dev_hits@10_mean"] == pytest.approx(0.92)  # best epochs: 0.90 and 0.94
    assert p["dev_hits@10_sd"] == pytest.approx(math.sqrt(((0.90 - 0.92) ** 2 + (0.94 - 0.92) ** 2) / 1))
    assert p["test_hits@10_mean"] == pytest.approx(0.90) and p["test_mr_mean"] == pytest.approx(3.5)
    assert p["test_mr_sd"] == pytest.approx(math.sqrt(0.5)) and p["test_hits@1_mean"] == pytest.approx(0.35)
    assert p["best_epochs"] == "2 3" and p["git_commits"] == "abc1234def fff0000aaa"
    assert p["metrics_paths"].split() == [str(runs_dir / n / "metrics.json") for n in ("study-P-s42", "study-P-s43")]
    # ranked by dev Hits@10 (raw 0.95 > P 0.92), test never used; one seed: sd is missing, not 0
    assert per_reading["reading"].tolist() == ["raw", "P"] and per_reading["rank"].tolist() == [1, 2]
    assert math.isnan(per_reading.set_index("reading").loc["raw", "dev_hits@10_sd"])
    assert per_run.set_index("run").loc["study-P-s42", "dev_mrr"] == pytest.approx(0.2)  # at the best epoch

    out = tmp_path / "out"
    write_study(runs, out / "s.md", out / "s.csv", out / "s.json", out / "s.png", "Study")
    md = (out / "s.md").read_text()
    assert "| 1 | raw | 42 | 0.950 |" in md and "| 2 | P | 42 43 | 0.920 ± 0.028 | 0.900 ± 0.028 |" in md
    assert "study-P-s43" in md and "fff0000aaa" in md
    data = json.loads((out / "s.json").read_text())
    assert data["readings"][1]["dev_hits@10_mean"] == pytest.approx(0.92)
    assert data["readings"][0]["dev_hits@10_sd"] is None and len(data["runs"]) == 3
    assert pd.read_csv(out / "s.csv")["reading"].tolist() == ["raw", "P"]
    assert (out / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_stages_are_ranked_apart_and_bad_names_refused(tmp_path):
    fake_run(tmp_path, "study-P-s42", 1, [0.9], [0.9, 2.0, 0.5, 0.3])
    fake_run(tmp_path, "study30-P-s42", 1, [0.99], [0.99, 1.2, 0.8, 0.6])
    _, per_reading = summarise(runs_in_folder(tmp_path))
    assert per_reading[["stage", "rank"]].values.tolist() == [["study", 1], ["study30", 1]]
    with pytest.raises(ValueError, match="not a study run"):
        load_run("lpbert", tmp_path / "study-P-s42/metrics.json", tmp_path / "study-P-s42/train_log.csv")
    with pytest.raises(ValueError, match="no study runs"):
        write_study([], *(tmp_path / f"x.{e}" for e in ("md", "csv", "json", "png")), "t")


def test_attribution_against_the_baseline_reading_and_twice_the_seed_sd(tmp_path):
    """P has two seeds (test Hits@10 0.88, 0.92: sd 0.0283); raw (seed 42) is +0.11 over P at seed 42 (paired on the
    common seed; +0.09 over P's mean), beyond 2 sd; the authors' reading ac (0.95, 0.75: its family's sd 0.1414) is
    compared with P, and ac-cosine (one switch turned back, seed 42) with ac at seed 42 (-0.03, within 2 sd of its
    family; +0.07 against ac's mean)."""
    from lpbert_core.report.study import attribution, attribution_markdown

    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "study-P-s42", 2, [0.80, 0.90], [0.88, 4.0, 0.50, 0.30])
    fake_run(runs_dir, "study-P-s43", 2, [0.80, 0.94], [0.92, 3.0, 0.60, 0.40])
    fake_run(runs_dir, "study-raw-s42", 1, [0.95, 0.90], [0.99, 1.5, 0.70, 0.50])
    fake_run(runs_dir, "study-ac-s42", 1, [0.85, 0.91], [0.95, 2.0, 0.60, 0.40], leaky=True)
    fake_run(runs_dir, "study-ac-s43", 1, [0.85, 0.91], [0.75, 6.0, 0.40, 0.20], leaky=True)
    fake_run(runs_dir, "study-ac-cosine-s42", 1, [0.85, 0.90], [0.92, 2.5, 0.60, 0.40], leaky=True)
    fake_run(runs_dir, "study-ac-noleak-s42", 1, [0.85, 0.90], [0.94, 2.2, 0.60, 0.40])
    runs = runs_in_folder(runs_dir)
    _, per_reading = summarise(runs)
    frame = attribution(per_reading).set_index("reading")
    # the leak mark sits on the side that leaked: the clean ac-noleak against the leaky ac
    assert not frame.loc["ac-noleak", "leaky"] and frame.loc["ac-noleak", "baseline_leaky"]
    text = "\n".join(attribution_markdown(attribution(per_reading)))
    assert "| ac-noleak | ac ⚠ leaky |" in text and "| ac ⚠ leaky | P |" in text
    sd = math.sqrt(((0.88 - 0.90) ** 2 + (0.92 - 0.90) ** 2) / 1)
    sd_ac = math.sqrt(((0.95 - 0.85) ** 2 + (0.75 - 0.85) ** 2) / 1)
    assert frame.loc["raw", "baseline"] == "P" and frame.loc["raw", "delta_test_hits@10"] == pytest.approx(0.11)
    assert frame.loc["raw", "paired_seeds"] == "42" and frame.loc["raw", "delta_test_mr"] == pytest.approx(-2.5)
    assert frame.loc["raw", "seed_sd"] == pytest.approx(sd) and frame.loc["raw", "beyond_2sd"]
    assert frame.loc["ac", "baseline"] == "P" and frame.loc["ac", "leaky"] and not frame.loc["ac", "baseline_leaky"]
    # ac against P: paired on both seeds ((0.95 - 0.88) + (0.75 - 0.92)) / 2; the larger family sd
    assert frame.loc["ac", "delta_test_hits@10"] == pytest.approx(-0.05) and frame.loc["ac", "paired_seeds"] == "42 43"
    assert frame.loc["ac", "seed_sd"] == pytest.approx(sd_ac) and not frame.loc["ac", "beyond_2sd"]
    assert frame.loc["ac-cosine", "leaky"] and frame.loc["ac-cosine", "baseline_leaky"]
    assert frame.loc["ac-cosine", "baseline"] == "ac" and frame.loc["ac-cosine", "seed_sd"] == pytest.approx(sd_ac)
    assert frame.loc["ac-cosine", "delta_test_hits@10"] == pytest.approx(-0.03)
    assert frame.loc["ac-cosine", "beyond_2sd"] == False  # noqa: E712 (numpy bool; None would not pass)
    assert "P" not in frame.index  # the reference itself
    out = tmp_path / "out"
    write_study(runs, out / "s.md", out / "s.csv", out / "s.json", None, "Study")
    md = (out / "s.md").read_text()
    assert "## Attribution" in md and "| study | raw | P | +0.050 | +0.110 | -2.50 | 1 / 2 | 42 | 0.0283 | yes |" in md
    assert "| study | ac-cosine ⚠ leaky | ac ⚠ leaky |" in md and "ac ⚠ leaky" in md


def test_a_longer_schedule_is_compared_with_the_same_reading_in_the_screen(tmp_path):
    """study30-raw against study-raw, paired on seed 42 (the seed both ran): +0.06; its sd is the larger of the two
    stages' pooled sds (the screen's raw 0.88/0.92: 0.0283; study30's raw has one seed, so the screen's)."""
    from lpbert_core.report.study import attribution, baseline_run_of

    assert baseline_run_of("study", "raw") == ("study", "P") and baseline_run_of("study30", "raw") == ("study", "raw")
    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "study-P-s42", 1, [0.80], [0.85, 5.0, 0.50, 0.30])
    fake_run(runs_dir, "study-raw-s42", 1, [0.90], [0.88, 4.0, 0.50, 0.30])
    fake_run(runs_dir, "study-raw-s43", 1, [0.90], [0.92, 3.0, 0.60, 0.40])
    fake_run(runs_dir, "study30-raw-s42", 1, [0.97], [0.94, 1.5, 0.80, 0.70])
    fake_run(runs_dir, "study30-dist-none-s42", 1, [0.96], [0.93, 1.6, 0.80, 0.70])  # no 8-epoch run: left out
    runs = runs_in_folder(runs_dir)
    _, per_reading = summarise(runs)
    frame = attribution(per_reading).set_index(["stage", "reading"])
    row = frame.loc[("study30", "raw")]
    assert row["baseline"] == "raw" and row["baseline_stage"] == "study" and row["paired_seeds"] == "42"
    assert row["delta_test_hits@10"] == pytest.approx(0.06) and row["delta_test_mr"] == pytest.approx(-2.5)
    assert row["seed_sd"] == pytest.approx(math.sqrt(0.0008)) and row["beyond_2sd"]
    # a second 30-epoch seed with a wider spread (0.94, 0.84: sd 0.0707): the larger side's sd is taken, and the Δ is
    # paired on both seeds ((0.94 - 0.88) + (0.84 - 0.92)) / 2
    fake_run(runs_dir, "study30-raw-s43", 1, [0.97], [0.84, 1.5, 0.80, 0.70])
    row = attribution(summarise(runs_in_folder(runs_dir))[1]).set_index(["stage", "reading"]).loc[("study30", "raw")]
    assert row["paired_seeds"] == "42 43" and row["delta_test_hits@10"] == pytest.approx(-0.01)
    assert row["seed_sd"] == pytest.approx(math.sqrt(0.005)) and not row["beyond_2sd"]
    assert ("study30", "dist-none") not in frame.index
    assert frame.loc[("study", "raw"), "baseline_stage"] == "study"
    out = tmp_path / "out"
    write_study(runs, out / "s.md", out / "s.csv", out / "s.json", out / "s.png", "Study")
    assert "| study30 | raw | raw (study) | +0.070 | +0.060 | -2.50 | 1 / 2 | 42 |" in (out / "s.md").read_text()
    assert pd.read_csv(out / "s.csv").set_index(["stage", "reading"]).loc[("study30", "raw"), "baseline"] == "raw"


def test_the_figure_draws_the_papers_numbers():
    from lpbert_core.report.study import paper_reference

    repo = Path(__file__).resolve().parents[1]
    assert paper_reference("umls", repo / "resources/paper_results.csv") == {"hits@10": 1.0, "mr": 1.18}
    assert paper_reference("nokg", repo / "resources/paper_results.csv") == {}
