"""The Snakemake workflow itself: DAG, lint, config validation, and a bring-your-own graph run end to end."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def workdir(tmp_path: Path, overlay: dict | None = None) -> Path:
    """A fresh working folder with the project's config (and the vendored archives it points to)."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "resources").symlink_to(REPO / "resources")
    if overlay is not None:
        (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    return tmp_path


def own_graph_workdir(tmp_path: Path, name: str, train: str) -> Path:
    """A triples-only graph (ConvE layout) named in an overlay, as a user brings one."""
    graph = tmp_path / name
    graph.mkdir()
    (graph / "train.txt").write_text(train)
    (graph / "valid.txt").write_text("alice\tworks_at\tacme_corp\n")
    (graph / "test.txt").write_text("bob\tknows\talice\n")
    wd = tmp_path / "wd"
    wd.mkdir()
    return workdir(wd, {"datasets": [name], "sources": {name: {"folder": str(graph)}}})


def test_dry_run_lists_the_data_stages(tmp_path):
    result = snakemake("-n", "--quiet", "rules", cwd=workdir(tmp_path))
    assert result.returncode == 0, result.stderr
    for rule in ("download", "join_text", "tokenize", "pretrain", "finetune", "score", "kgbert_train",
                 "kgbert_score", "tables"):
        assert rule in result.stdout


def test_every_table_row_is_a_job_and_gpu_jobs_ask_for_a_gpu(tmp_path):
    """`all` on the paper config: one metrics.json per runnable row; RoBERTa rows are skipped only when offline."""
    result = snakemake("all", "-n", cwd=workdir(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for run in ("lpbert", "t4-none-nobatch", "t4-none", "t4-mlm", "t4-mem", "t4-mem-mrm", "kgbert"):
        assert f"results/WN18RR/runs/{run}/metrics.json" in out
    for dataset in ("umls", "FB15k-237"):
        assert f"results/{dataset}/runs/lpbert/metrics.json" in out
    gpu_blocks = [b for b in out.split("\n\n")
                  if any(f"rule {r}:" in b for r in ("pretrain", "finetune", "score", "kgbert_train", "kgbert_score"))]
    assert len(gpu_blocks) >= 24  # 6 pretrain + 8 finetune + 8 score + 2 kgbert (+ RoBERTa rows where cached)
    assert all("gpu=1" in b for b in gpu_blocks)


def test_a_run_with_seeds_is_one_instance_per_seed(tmp_path):
    """`seeds: [42, 43]`: the first seed keeps the run's paths, the second is the instance lpbert.s43 with its own
    folder and jobs; every table that shows lpbert reads both metrics.json."""
    wd = workdir(tmp_path, {"runs": {"lpbert": {"seeds": [42, 43]}}})
    result = snakemake("all", "-n", "--configfile", "overlay.yaml", cwd=wd)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for dataset in ("umls", "WN18RR", "FB15k-237"):
        for run in ("lpbert", "lpbert.s43"):
            assert f"output: results/{dataset}/runs/{run}/ranks.parquet, results/{dataset}/runs/{run}/metrics.json" in out
            assert f"results/{dataset}/runs/{run}/model" in out
    tables = {re.search(r"results/tables/(\w+)\.md", b).group(1): b for b in out.split("\n\n") if "rule tables:" in b}
    assert set(tables) == {"table1", "table3", "table4", "reproduction"}
    for table in ("table1", "table3", "table4", "reproduction"):
        assert "results/WN18RR/runs/lpbert.s43/metrics.json" in tables[table], table
    assert "logs/WN18RR/finetune/lpbert.s43.log" in out and "benchmarks/WN18RR/score/lpbert.s43.tsv" in out


@pytest.mark.parametrize("overlays", [[], ["configs/cpu.yaml"]], ids=["paper", "cpu"])
def test_all_includes_the_zero_shot_floor_runs(tmp_path, overlays):
    """tables.floor: `all` trains (zero_shot: writes the initial encoder) and scores both floor runs on every dataset,
    and each table of the paper reads them, under the paper config and the CPU overlay alike."""
    wd = workdir(tmp_path)
    (wd / "configs").symlink_to(REPO / "configs")
    result = snakemake("all", "-n", *(["--configfile", *overlays] if overlays else []), cwd=wd)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    tables = {re.search(r"results/tables/(\w+)\.md", b).group(1): b for b in out.split("\n\n") if "rule tables:" in b}
    for dataset in ("umls", "WN18RR", "FB15k-237"):
        for run in ("zero-shot", "zero-shot-pretrained"):
            assert (f"output: results/{dataset}/runs/{run}/ranks.parquet, results/{dataset}/runs/{run}/metrics.json"
                    in out), (dataset, run)
            assert f"output: results/{dataset}/runs/{run}/model, results/{dataset}/runs/{run}/train_log.csv" in out
            for table in ("table1", "reproduction"):
                assert f"results/{dataset}/runs/{run}/metrics.json" in tables[table], (table, dataset, run)
    for table in ("table3", "table4"):
        assert "results/WN18RR/runs/zero-shot/metrics.json" in tables[table]
        assert "results/umls/runs/zero-shot/metrics.json" not in tables[table]  # the table's own dataset only
    # the pre-trained floor starts from the pre-training output, the bare one from the encoder
    assert ("manifest.json, results/WN18RR/pretrain/mem-mrm-mlm/model\n"
            "    output: results/WN18RR/runs/zero-shot-pretrained/model") in out
    assert "manifest.json\n    output: results/WN18RR/runs/zero-shot/model" in out


def overlay_commands() -> list[tuple[str, list[str]]]:
    """Every `snakemake ...` command written in a comment of a configs/ overlay (its usage lines), as argument lists:
    the words up to a trailing remark (`# ...` or `(...)`)."""
    found = []
    for path in sorted((REPO / "configs").glob("*.yaml")):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*#\s+snakemake\s+(.*)", line)
            if m:
                words = shlex.split(m.group(1))
                cut = next((i for i, w in enumerate(words) if w.startswith(("#", "("))), len(words))
                found.append((path.name, words[:cut]))
    return found


@pytest.mark.parametrize("config_file, args", overlay_commands(),
                         ids=[f"{name}:{args[0]}" for name, args in overlay_commands()])
def test_every_command_an_overlay_documents_builds_a_dag(tmp_path, config_file, args):
    """The usage lines of configs/*.yaml are what users copy: each must resolve to a DAG (dry run) as written."""
    assert "--configfile" in args and f"configs/{config_file}" in args, (config_file, args)
    wd = workdir(tmp_path)
    (wd / "configs").symlink_to(REPO / "configs")
    result = snakemake(*args, "-n", cwd=wd)
    assert result.returncode == 0, (config_file, args, result.stderr[-2000:])
    assert args[0] in result.stdout, result.stdout[-2000:]  # the target: first (--configfile would swallow a later one)


def test_lint_has_no_remarks():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "overlay, message",
    [
        ({"encoder": 3}, "3 is not of type 'string'"),
        ({"datasets": "umls"}, "'umls' is not of type 'array'"),
        ({"no_such_key": 1}, "Additional properties are not allowed"),
        ({"sources": {"umls": {"sha256": "not-a-hash"}}}, "does not match"),
        ({"pretrain": {"device": "gpu"}}, "'gpu' does not match"),  # one device setting for every stage
        ({"finetune": {"device": "tpu"}}, "'tpu' does not match"),
        ({"datasets": ["umls", "mykg"]}, "datasets: 'mykg' has no entry under sources (configured sources: "
                                         "FB15k-237, fb237_v1, fb237_v1_ind, "),
        ({"sources": {"WN18RR_v9_ind": {"archive": "x.tar.gz", "inductive_of": "WN18RR_v9"}}},
         "sources.WN18RR_v9_ind.inductive_of: no source named 'WN18RR_v9'"),
        ({"sources": {"mytext": {"folder": "y"}, "WN18RR_v9": {"archive": "x.tar.gz", "text_from": "mytext"}}},
         "sources.WN18RR_v9.text_from: 'mytext' must be a vendored archive source"),
        ({"tables": {"inductive": {"pairs": ["umls"]}}},
         "tables.inductive.pairs: 'umls' needs exactly one source with inductive_of: umls (found none)"),
        ({"finetune": {"per_dataset": {"umsl": {"epochs": 1}}}},
         "finetune.per_dataset.umsl: no source named 'umsl', so this setting would be ignored"),
        ({"kgbert": {"per_dataset": {"wn18rr": {"epochs": 1}}}}, "kgbert.per_dataset.wn18rr: no source named"),
        ({"pretrain": {"per_dataset": {"fb15k": {"epochs": 1}}}}, "pretrain.per_dataset.fb15k: no source named"),
        ({"pretrain": {"max_length": {"mykg": 64}}}, "pretrain.max_length.mykg: no source named 'mykg'"),
        ({"tables": {"table4": {"dataset": "wn18rr"}}}, "tables.table4.dataset: no source named 'wn18rr'"),
        ({"tables": {"reproduction": {"authors_code": "lpbert-authors"}}},
         "tables.reproduction.authors_code: no run named 'lpbert-authors'"),
        ({"runs": {"t4-none": {"seeds": [42, 42]}}}, "has non-unique elements"),
        ({"tables": {"floor": ["zero-shot", "t4-none"]}},
         "tables.floor: run 't4-none' must be an lpbert run with finetune: {zero_shot: true}"),
        ({"tables": {"floor": ["zero"]}}, "tables.floor: no run named 'zero' under runs:"),
        ({"runs": {"t4-none": {"seeds": [42, 7]}, "t4-none.s7": {"model": "lpbert", "pretrain": "none",
                                                                 "in_batch_negatives": True}}},
         "runs: 't4-none.s7' is both a configured run and the instance of run 't4-none' for seed 7"),
        # a config written for the old names (issue #12 renamed them) is told the new name
        ({"pretrain": {"lr_head": 1e-4}}, "pretrain.lr_head is now pretrain.lr_new"),
        ({"finetune": {"score_chunk_size": 64}}, "finetune.score_chunk_size is now finetune.chunk_size"),
    ],
)
def test_bad_config_is_refused_before_any_job(tmp_path, overlay, message):
    wd = workdir(tmp_path, overlay)
    result = snakemake("-n", "--configfile", "overlay.yaml", cwd=wd)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (wd / "results").exists()


def test_target_of_an_unconfigured_dataset_lists_the_configured_ones(tmp_path):
    wd = workdir(tmp_path)
    result = snakemake("results/umsl/tokens/minilm/manifest.json", "-n", cwd=wd)
    assert result.returncode != 0
    assert "results/umsl/tokens/minilm/manifest.json: no dataset 'umsl' in the config (configured: FB15k-237, " \
           "fb237_v1, " in result.stdout
    assert "umls, WN18RR, WN18RR_v1, " in result.stdout
    assert "); check the name, or pass the overlay that defines it with --configfile" in result.stdout
    assert "No rule to produce" not in result.stdout + result.stderr
    assert not (wd / "results").exists()


@pytest.mark.slow
def test_triples_only_graph_runs_through_data_stages_from_config(tmp_path):
    wd = own_graph_workdir(tmp_path, "mykg", "alice\tknows\tbob\nbob\tworks_at\tacme_corp\n")
    result = snakemake("results/mykg/tokens/minilm/manifest.json", "--cores", "2", "--configfile", "overlay.yaml",
                       cwd=wd)
    assert result.returncode == 0, result.stdout + result.stderr
    ent = pd.read_parquet(wd / "results/mykg/text/entities.parquet")
    assert ent["text"].tolist() == ["alice", "bob", "acme corp"]
    log = (wd / "logs/mykg/join_text.log").read_text()
    assert "no entity text file" in log
    assert "3 entities, 2 relations; triples: train 2, dev 1, test 1" in log
    assert "no dev or test triple is also a train triple" in log
    assert (wd / "results/mykg/tokens/minilm/relations.parquet").exists()
    summary = json.loads((wd / "results/mykg/text/summary.json").read_text())
    assert summary["triples"] == {"train": 2, "dev": 1, "test": 1}
    source = json.loads((wd / "results/mykg/raw/SOURCE.json").read_text())
    assert source["kind"] == "folder" and sorted(source["files"]) == ["test.txt", "train.txt", "valid.txt"]


def jobs_run(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from Snakemake's "Job stats" table ({} when nothing ran)."""
    text = result.stdout + result.stderr
    if "Job stats:" not in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


@pytest.mark.slow
def test_editing_a_file_of_a_folder_source_reruns_the_data_stages(tmp_path):
    """The folder's files, not the folder, are the download's inputs, and their content hash is a param."""
    wd = own_graph_workdir(tmp_path, "mykg", "alice\tknows\tbob\nbob\tworks_at\tacme_corp\n")
    train = tmp_path / "mykg" / "train.txt"
    args = ("results/mykg/tokens/minilm/manifest.json", "--cores", "2", "--configfile", "overlay.yaml")
    data_stages = {"download": 1, "join_text": 1, "tokenize": 1}

    def heads():
        tri = pd.read_parquet(wd / "results/mykg/text/triples.parquet")
        return set(tri[(tri["split"] == "train") & ~tri["inverse"]]["head"])

    result = snakemake(*args, cwd=wd)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(train, "a") as fh:  # in place, like `cat fixed > train.txt`: the folder's mtime does not change
        fh.write("carol\tknows\tbob\n")
    result = snakemake(*args, cwd=wd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert jobs_run(result) == data_stages and "carol" in heads()
    # same size, timestamp put back (`cp -p`, `rsync -t`): only the content hash in params can tell
    stat = train.stat()
    train.write_text(train.read_text().replace("carol", "carla"))
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = snakemake(*args, cwd=wd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert jobs_run(result) == data_stages and "carla" in heads() and "carol" not in heads()
    result = snakemake(*args, cwd=wd)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_bad_graph_fails_with_one_line_and_leaves_no_output(tmp_path):
    wd = own_graph_workdir(tmp_path, "badkg", "alice\tknows\tbob\nbob\tworks_at\n")
    result = snakemake("results/badkg/text/triples.parquet", "--cores", "1", "--configfile", "overlay.yaml", cwd=wd)
    assert result.returncode != 0
    # named at the user's own file, the raw/ copy in brackets
    graph = tmp_path / "badkg"
    assert f"ERROR: {graph}/train.txt:2: expected 3 non-empty tab-separated fields" in result.stderr
    assert "(copied to results/badkg/raw/train.txt)" in result.stderr
    assert not list((wd / "results/badkg").glob("text/*.parquet"))


@pytest.mark.slow
def test_checksum_mismatch_in_the_workflow_leaves_no_raw_folder(tmp_path):
    wd = workdir(tmp_path, {"sources": {"umls": {"sha256": "0" * 64}}})
    result = snakemake("results/umls/raw", "--cores", "1", "--configfile", "overlay.yaml", cwd=wd)
    assert result.returncode != 0
    assert "umls.tar.gz: SHA-256 mismatch" in result.stderr
    assert not (wd / "results/umls/raw").exists()


def test_every_setting_has_its_default_in_config_yaml():
    """Defaults live in one place: config.yaml holds every key a stage reads (the fields of lpbert_core.config.settings'
    dataclasses, which carry no values) and the schema requires each, so no code default can disagree with it."""
    import dataclasses

    import yaml

    from lpbert_core.finetune.finetune_loss import LossConfig
    from lpbert_core.config.settings import SECTION_KEYS, STAGES

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())["properties"]
    for section, keys in SECTION_KEYS.items():
        assert set(config[section]) - {"per_dataset"} == set(keys), section
        assert set(schema[section]["required"]) == set(keys), section
    for cls in (*STAGES.values(), LossConfig):  # no field has a value of its own
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(cls)), cls.__name__
    assert set(dataclasses.fields(LossConfig)) and {f.name for f in dataclasses.fields(LossConfig)} <= set(
        SECTION_KEYS["finetune"])
