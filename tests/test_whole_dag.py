"""The whole DAG through Snakemake, the workflow catalog's way: `all` on `.test/config.yaml` (a generated 30-entity
graph, a tiny random BERT, no download) runs every rule, then the outputs are checked against each other.

One module-scoped run (about 2 minutes on 2 cores) feeds every test here; a broken rule script fails them all.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config.yaml"
pytestmark = pytest.mark.slow


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # the target goes first: --configfile takes several values and would swallow it
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args, "--cores", "2",
         "--configfile", ".test/config.yaml"],
        cwd=cwd, capture_output=True, text=True, timeout=1200,
    )


@pytest.fixture(scope="module")
def dag(tmp_path_factory, tiny_encoder_dir, fixture_builder):
    """A working folder laid out as the repository root, after `snakemake all` and `--report` on the test config."""
    wd = tmp_path_factory.mktemp("whole_dag")
    shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    (wd / "resources").symlink_to(REPO / "resources")
    (wd / ".test").mkdir()
    shutil.copy(TEST_CONFIG, wd / ".test" / "config.yaml")
    shutil.copy(REPO / ".test" / "attribution.csv", wd / ".test" / "attribution.csv")
    fixture_builder.write_graph(wd / ".test" / "data" / "tinykg")
    fixture_builder.write_inductive(wd / ".test" / "data")
    shutil.copytree(tiny_encoder_dir, wd / ".test" / "tiny-bert")
    first = snakemake("all", cwd=wd)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-8000:]
    study = snakemake("study", cwd=wd)  # the named target outside `all`: the reading study's summary
    assert study.returncode == 0, study.stdout[-4000:] + study.stderr[-8000:]
    return {"wd": wd, "first": first, "study": study, "config": merged_config(wd)}


def merged_config(wd: Path) -> dict:
    """config.yaml with the test overlay merged the way --configfile does (snakemake.utils.update_config)."""
    config = yaml.safe_load((wd / "config.yaml").read_text())
    update_config(config, yaml.safe_load((wd / ".test/config.yaml").read_text()))
    return config


def test_every_rule_of_the_workflow_runs(dag):
    """Every rule Snakemake knows ran at least once, so a rule added later without a place in `all` fails here."""
    listed = snakemake("--list-rules", cwd=dag["wd"])
    assert listed.returncode == 0, listed.stderr
    rules = set(listed.stdout.split())
    ran = set(re.findall(r"\(Rule: ([\w]+)\)", dag["first"].stderr + dag["study"].stderr))
    assert {"download", "join_text", "tokenize", "pretrain", "finetune", "score", "kgbert_train", "kgbert_score",
            "tables", "all"} <= rules
    # rules that exist only to stop a wrong target with a clear message never run on a good config
    error_rules = {"unknown_dataset"}
    assert rules - error_rules <= ran, f"rules never run by the whole-DAG test: {sorted(rules - error_rules - ran)}"
    summary = pd.read_csv(dag["wd"] / "results/study/tinykg/summary.csv")
    assert len(summary) == 2  # the two readings of .test/config.yaml


def test_every_pretraining_variant_and_both_negative_modes_ran(dag):
    wd, config = dag["wd"], dag["config"]
    needed = {run["pretrain"] for name, run in config["runs"].items() if run["model"] == "lpbert"} - {"none"}
    needed &= {"mlm", "mem", "mem-mrm", "mem-mrm-mlm"}
    assert needed == {"mlm", "mem", "mem-mrm", "mem-mrm-mlm"}
    for variant in needed:
        assert (wd / f"results/tinykg/pretrain/{variant}/model/config.json").is_file()
        assert len(pd.read_csv(wd / f"results/tinykg/pretrain/{variant}/log.csv")) >= 1
    modes = {}
    for run in ("t4-none-nobatch", "t4-none", "lpbert"):
        metrics = json.loads((wd / f"results/tinykg/runs/{run}/metrics.json").read_text())
        modes[run] = metrics["run"]["in_batch_negatives"]
    assert modes == {"t4-none-nobatch": False, "t4-none": True, "lpbert": True}


def our_rows(config: dict) -> list[tuple[str, str]]:
    """(table, run) for every row of ours the config's tables name."""
    rows = [("table1", config["tables"]["table1"]["run"])]
    for table in ("table3", "table4"):
        rows += [(table, run) for run in config["tables"][table]["rows"]]
    return rows


def instances(config: dict, run: str) -> list[str]:
    """The run and its seed instances (`{run}.s{seed}` for every seed after the first)."""
    seeds = config["runs"][run].get("seeds") or [None]
    return [run] + [f"{run}.s{seed}" for seed in seeds[1:]]


def test_tables_name_every_row(dag):
    wd, config = dag["wd"], dag["config"]
    for table, run in our_rows(config):
        md = (wd / f"results/tables/{table}.md").read_text()
        csv = pd.read_csv(wd / f"results/tables/{table}.csv")
        assert f"`{run}`" in md, f"{table}.md does not name run {run}"
        assert run in set(csv["run"].astype(str)), f"{table}.csv has no row for run {run}"
        assert (wd / f"results/tables/{table}.tex").stat().st_size > 0
        if run.startswith(("kgbert-roberta", "lpbert-roberta")):
            assert re.search(rf"`{re.escape(run)}`[^\n]*skipped", md), f"{run} should be listed as skipped"
        else:
            for name in instances(config, run):
                assert f"results/tinykg/runs/{name}/metrics.json" in md, f"{table}.md gives no provenance for {name}"
    assert list((wd / "results/figures/table4").glob("*.png"))


def test_every_table_shows_the_zero_shot_floor(dag):
    """tables.floor: each table ends with the floor rows of its graphs (the CSV's source `floor`; the reproduction
    table's floor columns), read from the floor runs' own metrics.json."""
    wd, config = dag["wd"], dag["config"]
    floors = config["tables"]["floor"]
    for table in ("table1", "table3", "table4"):
        csv = pd.read_csv(wd / f"results/tables/{table}.csv")
        assert sorted(csv.loc[csv["source"] == "floor", "run"]) == sorted(floors), table
        assert "below_floor" in csv.columns and "Zero-shot floor" in (wd / f"results/tables/{table}.md").read_text()
    reproduction = pd.read_csv(wd / "results/tables/reproduction.csv")
    assert {f"floor_{run}" for run in floors} <= set(reproduction.columns)
    for table, graph in (("inductive", "tiny_v1_ind"), ("plus", "tinykg")):
        md = (wd / f"results/tables/{table}.md").read_text()
        for run in floors:
            assert f"run `{run}`" in md and f"results/{graph}/runs/{run}/metrics.json" in md, (table, run)
    test_triples = len((wd / ".test/data/tinykg/test.txt").read_text().splitlines())
    for run in floors:  # ranked like every run: all test triples, both directions
        record = json.loads((wd / f"results/tinykg/runs/{run}/metrics.json").read_text())
        assert record["metrics"]["both"]["count"] == 2 * test_triples


def test_a_run_with_two_seeds_is_two_instances_and_one_row(dag):
    """t4-none lists seeds [42, 7]: t4-none (seed 42) and t4-none.s7 (seed 7) are trained and scored apart, and
    Table 4 shows their mean ± sd in one row, with n and both metrics.json."""
    wd, config = dag["wd"], dag["config"]
    assert config["runs"]["t4-none"]["seeds"] == [42, 7]
    seeds = {name: json.loads((wd / f"results/tinykg/runs/{name}/metrics.json").read_text())["run"]["seed"]
             for name in ("t4-none", "t4-none.s7")}
    assert seeds == {"t4-none": 42, "t4-none.s7": 7}
    md = (wd / "results/tables/table4.md").read_text()
    line = next(row for row in md.splitlines() if "run `t4-none`;" in row)
    assert "seeds 42, 7" in line and "n=2" in line and "±" in line
    csv = pd.read_csv(wd / "results/tables/table4.csv")
    ours = csv[(csv["run"] == "t4-none") & (csv["source"] == "ours")].iloc[0]
    assert ours["mrr_n"] == 2 and ours["n"] == 2 and ours["seeds"] == "42 7"
    both = [json.loads((wd / f"results/tinykg/runs/{n}/metrics.json").read_text())["metrics"]["both"]["mrr"]
            for n in ("t4-none", "t4-none.s7")]
    assert ours["mrr"] == pytest.approx(np.mean(both)) and ours["mrr_sd"] == pytest.approx(np.std(both, ddof=1))


def test_reproduction_table(dag):
    wd = dag["wd"]
    md = (wd / "results/tables/reproduction.md").read_text()
    csv = pd.read_csv(wd / "results/tables/reproduction.csv")
    assert list(csv["dataset"].unique()) == ["tinykg"]
    assert sorted(csv["metric"]) == sorted(["hits@1", "hits@3", "hits@10", "mr", "mrr"])  # no paper numbers: all five
    assert (csv["paper_text_run"] == "lpbert").all() and (csv["authors_code_run"] == "t4-none").all()
    assert (csv["authors_code_n"] == 2).all()
    assert csv.set_index("metric").loc["mrr", "attribution"] == "whole-DAG test: a made-up attribution for MRR"
    assert "`lpbert`" in md and "`t4-none`" in md and "±" in md
    assert "results/tinykg/runs/t4-none.s7/metrics.json" in md
    assert (wd / "results/tables/reproduction.tex").stat().st_size > 0


def recompute(frame: pd.DataFrame) -> dict:
    """MRR, MR and Hits@k straight from the realistic ranks, without the project's own metric code."""
    out = {}
    for side, part in (("both", frame), ("head", frame[frame.direction == "head"]),
                       ("tail", frame[frame.direction == "tail"])):
        ranks = part["realistic"].to_numpy(dtype=float)
        out[side] = {"count": len(ranks), "mrr": np.mean(1 / ranks), "mr": np.mean(ranks),
                     **{f"hits@{k}": np.mean(ranks <= k) for k in (1, 3, 10)}}
    return out


def test_metrics_agree_with_ranks_for_every_run(dag):
    wd, config = dag["wd"], dag["config"]
    test_triples = len((wd / ".test/data/tinykg/test.txt").read_text().splitlines())
    runs = sorted({name for _, run in our_rows(config) if "roberta" not in run for name in instances(config, run)})
    assert len(runs) == 8  # 7 runs, one of them with a second seed
    for run in runs:
        folder = wd / f"results/tinykg/runs/{run}"
        frame = pd.read_parquet(folder / "ranks.parquet")
        metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
        assert (frame["optimistic"] <= frame["realistic"]).all() and (frame["realistic"] <= frame["pessimistic"]).all()
        assert np.allclose(frame["realistic"], (frame["optimistic"] + frame["pessimistic"]) / 2)
        assert (frame["optimistic"] >= 1).all() and (frame["pessimistic"] <= frame["num_candidates"]).all()
        assert (frame["num_candidates"] <= 30).all()
        if run != "kgbert":  # the cross-encoder ranks a timed sample (score_queries), LP-BERT all test triples
            assert len(frame) == 2 * test_triples
        assert set(frame["direction"]) == {"head", "tail"}
        # .test/config.yaml asks for bf16 everywhere: training and scoring really ran under CPU autocast
        record = json.loads((folder / "metrics.json").read_text())
        assert record["compute"]["precision"] == "bf16" and record["run"]["compute"]["precision"] == "bf16", run
        for side, expected in recompute(frame).items():
            for key, value in expected.items():
                assert metrics[side][key] == pytest.approx(value, rel=1e-12), (run, side, key)


def _ids(path: Path) -> set[str]:
    return set(pd.read_parquet(path)["id"])


def test_inductive_pair_keeps_the_test_graph_out_of_training_and_ranks_both_protocols(dag):
    """tiny_v1 -> tiny_v1_ind: no test-graph entity reaches the training graph's files (raw text, text tables, tokens:
    everything pre-training and fine-tuning read); the test graph's runs are scored with the models trained on
    tiny_v1, against the test graph's entities only; the 50-candidate ranks use exactly the lists."""
    wd = dag["wd"]
    train_ids = _ids(wd / "results/tiny_v1/text/entities.parquet")
    test_ids = _ids(wd / "results/tiny_v1_ind/text/entities.parquet")
    assert train_ids and test_ids and not train_ids & test_ids
    assert _ids(wd / "results/tiny_v1/tokens/tiny/entities.parquet") == train_ids
    raw_text = {line.split("\t")[0] for line in (wd / "results/tiny_v1/raw/entity2text.txt").read_text().splitlines()}
    assert raw_text == train_ids  # the shared text archive was cut to the training graph's own ids
    triples = pd.read_parquet(wd / "results/tiny_v1/text/triples.parquet")
    assert set(triples["head"]) | set(triples["tail"]) <= train_ids
    for run in ("t4-none", "lpbert-plus"):
        record = json.loads((wd / f"results/tiny_v1_ind/runs/{run}/metrics.json").read_text())
        assert record["run"]["dataset"] == "tiny_v1" and record["scale"]["num_entities"] == len(test_ids)
        frame = pd.read_parquet(wd / f"results/tiny_v1_ind/runs/{run}/ranks.parquet")
        assert set(frame["gold"]) <= test_ids and (frame["num_candidates"] <= len(test_ids)).all()
        lists = pd.read_parquet(wd / f"results/tiny_v1_ind/runs/{run}/candidates/ranks.parquet")
        cand = json.loads((wd / f"results/tiny_v1_ind/runs/{run}/candidates/metrics.json").read_text())
        test_lines = (wd / "results/tiny_v1_ind/raw/test.txt").read_text().splitlines()
        assert len(lists) == 2 * len(test_lines) and (lists["num_candidates"] == 50).all()
        assert set(lists["direction"]) == {"head", "tail"}
        for side, expected in recompute(lists).items():
            for key, value in expected.items():
                assert cand["metrics"][side][key] == pytest.approx(value, rel=1e-12), (run, side, key)
        assert cand["lists"]["true_triples_not_in_test"] == 0
        assert (wd / f"results/tiny_v1_ind/runs/{run}/breakdown.png").stat().st_size > 0
    md = (wd / "results/tables/inductive.md").read_text()
    assert "ours: no pre-training" in md and "ours: lpbert-plus" in md
    assert "results/tiny_v1_ind/runs/lpbert-plus/candidates/metrics.json" in md
    # issue #27: GraIL's protocol (our sampled lists) for every model, and the baselines in all three protocols
    grail = json.loads((wd / "results/tiny_v1_ind/lists/grail50/lists.json").read_text())
    for folder in ("runs/lpbert-plus/grail50", "runs/kgbert/grail50", "runs/kgbert/candidates", "baselines/ppr/full",
                   "baselines/ppr/candidates", "baselines/ppr/grail50"):
        record = json.loads((wd / f"results/tiny_v1_ind/{folder}/metrics.json").read_text())
        assert record["metrics"]["both"]["count"] == 2 * len(test_lines), folder
        if folder.endswith("grail50"):
            assert record["lists"]["per_query"] == grail["per_query"], folder
            assert record["lists"]["known_triples_among_corruptions"] == 0, folder
    assert "ours, baseline: Personalized PageRank" in md and "ours, baseline: KG-BERT-style cross-encoder" in md
    assert "results/tiny_v1_ind/baselines/ppr/grail50/metrics.json" in md
    # the re-ranked row (tables.inductive.reranked, config rerank): its own folder, all three protocols
    for folder in ("rerank", "rerank/candidates", "rerank/grail50"):
        record = json.loads((wd / f"results/tiny_v1_ind/runs/lpbert-plus/{folder}/metrics.json").read_text())
        assert record["rerank"]["hops"] >= 1 and "RE-RANKED" in record["protocol"], folder
        assert record["metrics"]["both"]["count"] == 2 * len(test_lines), folder
    assert "ours, re-ranked: " in md and "results/tiny_v1_ind/runs/lpbert-plus/rerank/grail50/metrics.json" in md
    # built with the table: every full-ranking row by the answer's hop distance, its "ALL" line the row's own metrics
    hops = pd.read_csv(wd / "results/tiny_v1_ind/hops.csv", dtype={"distance": str})
    assert {"PPR", "t4-none", "lpbert-plus", "lpbert-plus re-ranked"} <= set(hops["row"])
    assert "kgbert" not in set(hops["row"])
    overall = hops[hops["distance"] == "ALL"].set_index("row")
    for row, folder in (("PPR", "baselines/ppr/full"), ("lpbert-plus re-ranked", "runs/lpbert-plus/rerank")):
        record = json.loads((wd / f"results/tiny_v1_ind/{folder}/metrics.json").read_text())
        assert overall.loc[row, "queries"] == 2 * len(test_lines)
        assert overall.loc[row, "mrr"] == pytest.approx(record["metrics"]["both"]["mrr"], rel=1e-5), row
    assert (wd / "results/tiny_v1_ind/hops.png").stat().st_size > 0
    plus = pd.read_csv(wd / "results/tables/plus.csv")
    assert {"lpbert", "lpbert-plus"} <= set(plus["run"].dropna())
    info = json.loads((wd / "results/tinykg/runs/lpbert-plus/model/lpbert_run.json").read_text())
    assert info["hard_negatives"] == 1 and info["pre_batch"] == 2 and info["loss"]["loss"] == "infonce"


def test_second_run_has_nothing_to_do_and_the_report_builds(dag):
    wd = dag["wd"]
    again = snakemake("all", cwd=wd)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Nothing to be done" in again.stdout + again.stderr
    report = snakemake("all", "--report", "report.html", cwd=wd)
    assert report.returncode == 0, report.stderr[-4000:]
    html = (wd / "report.html").read_text(errors="replace")
    for table in ("table1.md", "table3.md", "table4.md", "reproduction.md", "inductive.md", "plus.md"):
        assert table in html
    assert not re.search(r"<script[^>]+src=[\"']https?://", html), "the report must work offline"


def test_stages_driven_without_snakemake_give_the_same_run(dag, tmp_path, monkeypatch):
    """lpbert_core.runtime.direct_run (what tools/gpu_check.py drives where Snakemake is absent) on the same config:
    lpbert_core.config.load merges it as --configfile does, lpbert_core.config.resolve gives every stage the rules'
    arguments, so pre-training, fine-tuning and scoring of run `lpbert` repeat Snakemake's numbers to the last digit."""
    from lpbert_core.config.load import load_config
    from lpbert_core.runtime.direct_run import DirectRun
    from lpbert_core.config.resolve import JobSettings

    wd = dag["wd"]
    config = load_config([wd / "config.yaml", wd / ".test/config.yaml"])
    assert config == dag["config"]
    for name in ("config.yaml", "resources", ".test"):
        (tmp_path / name).symlink_to(wd / name)
    monkeypatch.chdir(tmp_path)  # relative paths of the config (sources, encoders) resolve as under Snakemake
    runner = DirectRun(JobSettings(config), tmp_path, threads=1)  # the test config's jobs: 1 thread
    records = runner.run("tinykg", "lpbert")
    assert [r["stage"] for r in records] == ["download", "join_text", "tokenize", "pretrain", "finetune", "score"]
    assert not any(r["skipped"] for r in records)
    for path in ("results/tinykg/pretrain/mem-mrm-mlm/log.csv", "results/tinykg/runs/lpbert/train_log.csv"):
        timing = [c for c in pd.read_csv(wd / path).columns if c.endswith("seconds") or c in ("attempt", "steps_timed")]
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / path).drop(columns=timing),
                                      pd.read_csv(wd / path).drop(columns=timing))
    ours = json.loads((tmp_path / "results/tinykg/runs/lpbert/metrics.json").read_text())
    theirs = json.loads((wd / "results/tinykg/runs/lpbert/metrics.json").read_text())
    assert ours["metrics"] == theirs["metrics"] and ours["settings"] == theirs["settings"]
    assert runner.run("tinykg", "lpbert") and all(r["skipped"] for r in runner.records[6:])  # outputs exist: skipped
