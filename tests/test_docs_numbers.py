"""Every number quoted in README.md and docs/ that docs/numbers.yaml lists equals the committed result file it cites.

Each entry of docs/numbers.yaml names a page, a passage quoted from it, the number as printed in that passage, and a
committed result file with the place of the value:
- a JSON file: `at`, a list of keys (a list index as an int; `key=value` picks the element of a list of dicts whose
  `key` equals `value`);
- a CSV file: `row` (column -> value, must match exactly one row) and `column`; or `rows` (matching one or more rows)
  with `op: sum`.
`scale` multiplies the value (100 for a percentage, 1/60 for minutes, -1 for a gap read the other way round);
`minus` subtracts a second value given the same way (`minus: {at: ...}` or `minus: {row: ..., column: ...}`).
The test checks that the passage is in the page (whitespace runs compared as one space), that the page cites the file (or `cites`, a folder or other name of
it), and that the file's value, rounded to the decimals printed, is the printed number.
Whole tables are checked cell by cell too: the study's results table (against the study summary), the inductive and
plus tables (against the committed tables) and the H100 table (against gpu_check.json).
Also: the README stays a guide (under 300 lines, the code map in its first 100 lines, every package it names exists).
"""

from __future__ import annotations

import csv
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = ROOT / "docs" / "numbers.yaml"


def _entries() -> list[dict]:
    return yaml.safe_load(NUMBERS.read_text(encoding="utf-8"))["entries"]


@lru_cache(maxsize=None)
def _text(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def _flat(text: str) -> str:
    """Whitespace runs as one space, so a quoted passage survives re-wrapping of its page."""
    return " ".join(text.split())


@lru_cache(maxsize=None)
def _json(path: str):
    return json.loads(_text(path))


@lru_cache(maxsize=None)
def _csv(path: str) -> tuple[dict, ...]:
    return tuple(csv.DictReader(_text(path).splitlines()))


def _walk(data, keys: list, where: str):
    for key in keys:
        if isinstance(key, str) and "=" in key and isinstance(data, list):
            name, value = key.split("=", 1)
            found = [item for item in data if str(item.get(name)) == value]
            assert len(found) == 1, f"{where}: {key!r} matches {len(found)} elements"
            data = found[0]
        else:
            assert isinstance(data, (dict, list)), f"{where}: cannot index {type(data).__name__} with {key!r}"
            data = data[key]
    return data


def _matching(rows, spec: dict) -> list[dict]:
    return [r for r in rows if all(r.get(k) == str(v) for k, v in spec.items())]


def _value(file: str, spec: dict) -> float:
    where = f"{file} {spec}"
    if file.endswith(".json"):
        value = float(_walk(_json(file), spec["at"], where))
    elif file.endswith(".csv"):
        rows = _csv(file)
        if "rows" in spec:
            found = _matching(rows, spec["rows"])
            assert found, f"{where}: no row matches"
            assert spec.get("op") == "sum", f"{where}: several rows need op: sum"
            value = sum(float(r[spec["column"]]) for r in found)
        else:
            found = _matching(rows, spec["row"])
            assert len(found) == 1, f"{where}: {len(found)} rows match"
            value = float(found[0][spec["column"]])
    else:
        raise AssertionError(f"{where}: a result file is .json or .csv")
    if "minus" in spec:
        value -= _value(file, spec["minus"])
    return value * float(spec.get("scale", 1))


def _printed(number: str) -> tuple[float, int]:
    """'+0.295' -> (0.295, 3); '1,384' -> (1384.0, 0); '99.2' -> (99.2, 1)."""
    plain = number.replace(",", "").replace("−", "-")
    assert re.fullmatch(r"[-+]?\d+(\.\d+)?", plain), f"not a printed number: {number!r}"
    decimals = len(plain.split(".")[1]) if "." in plain else 0
    return float(plain), decimals


ENTRIES = _entries()


def test_numbers_file_covers_every_page():
    pages = {e["doc"] for e in ENTRIES}
    for page in ["README.md", "docs/reproduction-study.md", "docs/gpu-checks.md", "docs/cpu-scale.md",
                 "docs/beyond-the-paper.md"]:
        assert sum(e["doc"] == page for e in ENTRIES) >= 4, f"{page}: fewer than 4 checked numbers"
    assert len(ENTRIES) >= 20 and pages


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e['doc']}:{e['printed']}:{i}" for i, e in enumerate(ENTRIES)])
def test_number_matches_its_result_file(entry):
    doc = _flat(_text(entry["doc"]))
    quote, printed, file = _flat(entry["quote"]), entry["printed"], entry["file"]
    assert quote in doc, f"{entry['doc']}: passage not found: {quote!r}"
    assert printed in quote, f"{printed!r} is not in the passage {quote!r}"
    cites = entry.get("cites", file)
    assert cites in doc, f"{entry['doc']} does not cite {cites!r}"
    assert (ROOT / file).is_file(), f"{file}: no such committed file"
    value = _value(file, entry)
    number, decimals = _printed(printed)
    assert abs(value - number) <= 0.5 * 10 ** -decimals + 1e-9, (
        f"{entry['doc']}: prints {printed} but {file} gives {value!r}")


# ------------------------------------------------------------------------------------------------ whole tables
def _table(doc: str, header: str, which: int = 0) -> list[list[str]]:
    """The body rows of the `which`-th Markdown table in `doc` whose header line starts with `header`."""
    lines = _text(doc).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    assert len(starts) > which, f"{doc}: no table {which} with header {header!r}"
    rows = []
    for line in lines[starts[which] + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _same(printed: str, value: float, where: str) -> None:
    number, decimals = _printed(printed.replace("*", "").strip())
    assert abs(value - number) <= 0.5 * 10 ** -decimals + 1e-9, f"{where}: prints {printed} but the file gives {value!r}"


def _mean_sd(cell: str, mean: float, sd: str, where: str) -> None:
    parts = cell.replace("*", "").split("±")
    _same(parts[0], mean, where)
    if len(parts) > 1:
        _same(parts[1], float(sd), where + " (sd)")


def test_study_results_table_is_the_summary():
    """Every cell of docs/reproduction-study.md's results table against measurements/study_umls/summary.csv."""
    rows = _table("docs/reproduction-study.md", "| reading | dev Hits@10 | test Hits@10 | test MR |")
    summary = _csv("measurements/study_umls/summary.csv")
    assert len(rows) == len(summary), "one table row per summary row"
    for label, dev, test, mr in rows:
        reading = re.search(r"`([^`]+)`", label).group(1)
        stage = "study30" if "30 epochs" in label else "study"
        (rec,) = _matching(summary, {"stage": stage, "reading": reading})
        where = f"docs/reproduction-study.md {stage} {reading}"
        _mean_sd(dev, float(rec["dev_hits@10_mean"]), rec["dev_hits@10_sd"], where + " dev Hits@10")
        _mean_sd(test, float(rec["test_hits@10_mean"]), rec["test_hits@10_sd"], where + " test Hits@10")
        _mean_sd(mr, float(rec["test_mr_mean"]), rec["test_mr_sd"], where + " test MR")


def test_inductive_tables_are_the_committed_table():
    csv_rows = _csv("measurements/beyond_cpu/inductive/inductive.csv")
    for which, graph in enumerate(["WN18RR_v1_ind", "fb237_v1_ind"]):
        rows = _table("docs/beyond-the-paper.md", "| run | full Hits@1 |", which)
        assert len(rows) == 3
        for label, *cells in rows:
            run = "lpbert-plus" if label.startswith("lpbert-plus") else re.search(r"`([^`]+)`", label).group(1)
            for protocol, values in (("full ranking", cells[:3]), ("50 candidates (BERTRL lists)", cells[3:])):
                (rec,) = _matching(csv_rows, {"test_graph": graph, "run": run, "protocol": protocol})
                for metric, printed in zip(("hits@1", "hits@10", "mrr"), values):
                    _same(printed, float(rec[metric]), f"{graph} {run} {protocol} {metric}")


def test_hop_distance_tables_are_the_record():
    """Every cell and bucket share of docs/inductive.md's hop-distance tables against measurements/inductive_hops.json."""
    record = json.loads((ROOT / "measurements/inductive_hops.json").read_text())
    lines = [line for line in _text("docs/inductive.md").splitlines() if re.match(r"\| \S+: full-ranking MRR \| ", line)]
    graphs = [line.split(":")[0].strip("| ") for line in lines]
    assert graphs and set(graphs) == set(record), "one table per test graph of the record"
    for which, graph in enumerate(graphs):
        header = [cell.strip() for cell in lines[which].strip().strip("|").split("|")][1:]
        rows = _table("docs/inductive.md", f"| {graph}: full-ranking MRR |")
        assert {row[0] for row in rows} == set(record[graph]["rows"]), graph
        for name, *cells in rows:
            buckets = {b["distance"]: b for b in record[graph]["rows"][name]["by_distance"]}
            for head, printed in zip(header, cells):
                distance = "ALL" if head == "all queries" else head.split(" ")[0]
                if printed == "–":
                    assert distance not in buckets, (graph, name, head)
                    continue
                _same(printed, buckets[distance]["mrr"], f"{graph} {name} {head}")
                if distance != "ALL":
                    share = re.search(r"\((\d+) %\)", head).group(1)
                    _same(share, 100 * buckets[distance]["share"], f"{graph} {head} share")


def test_plus_table_is_the_committed_table():
    csv_rows = _csv("measurements/beyond_cpu/plus/plus.csv")
    rows = _table("docs/beyond-the-paper.md", "| dataset | run | MRR | Hits@1 | Hits@10 | MR |")
    assert len(rows) == 6
    for dataset, run, *cells in rows:
        method = "ours: lpbert-plus" if run.startswith("lpbert-plus") else "ours: LP-BERT (paper reading)"
        (rec,) = _matching(csv_rows, {"dataset": "umls" if dataset == "UMLS" else dataset, "method": method})
        for metric, printed in zip(("mrr", "hits@1", "hits@10", "mr"), cells):
            _same(printed, float(rec[metric]), f"plus {dataset} {run} {metric}")


def test_h100_table_is_the_gpu_check():
    parts = {"`lpbert`": ("call1", "umls_paper_settings"), "patience 3": ("call2", "umls_gpu-patience3"),
             "probability `raw`": ("call2", "umls_gpu-raw"), "`lpbert-plus`": ("call1", "umls_lpbert-plus")}
    rows = _table("docs/gpu-checks.md", "| run | fine-tuning | epochs (best) | Hits@10 | MR | MRR |")
    checked = 0
    for label, seconds, _epochs, hits10, mr, mrr in rows:
        key = next((k for k in parts if label.startswith(k)), None)
        if key is None:
            continue  # the paper's row
        call, part = parts[key]
        data = _json(f"measurements/gpu_h100/{call}/gpu_check.json")["parts"][part]
        both = data["metrics"]["metrics"]["both"]
        for printed, value in ((hits10, both["hits@10"]), (mr, both["mr"]), (mrr, both["mrr"]),
                               (seconds.removesuffix(" s"), _walk(data, ["records", "stage=finetune", "seconds"], part))):
            _same(printed, float(value), f"gpu-checks H100 {label}")
        checked += 1
    assert checked == 4


# ------------------------------------------------------------------------------------------------ the README's shape
def test_readme_is_a_guide():
    lines = _text("README.md").splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines"
    heading = next(i for i, line in enumerate(lines, 1) if line.startswith("## Map of the code"))
    assert heading <= 100, f"the code map starts at line {heading}"
    # .ci/run installs and tests with the README's lines
    assert any(line.startswith('pip install -e ".[test]"') for line in lines)
    assert any(line.startswith("python -m pytest -q ") or line == "python -m pytest -q" for line in lines)
    assert "python -m pytest -q" in _text(".ci/run")


def test_code_map_names_what_exists():
    text = _text("README.md")
    section = text[text.index("## Map of the code"):text.index("## What runs")]
    named = set(re.findall(r"`([a-z_]+)/`", section)) - {"results", "logs", "checkpoints", "benchmarks"}  # made by the jobs
    assert {"data", "pretrain", "finetune", "evaluate", "report"} <= named
    for name in named:
        assert (ROOT / name).is_dir() or (ROOT / "lpbert_core" / name).is_dir(), f"code map names missing {name}/"
    for line in section.splitlines():  # a package's row names modules of that package
        row = re.match(r"\| `([a-z_]+)/` \|", line)
        for module in re.findall(r"`([a-z_]+\.py)`", line):
            where = ROOT / "lpbert_core" / row.group(1) if row else ROOT / "lpbert_core"
            assert (where / module).is_file(), f"code map names missing {where.relative_to(ROOT)}/{module}"
