"""Figures from synthetic inputs, and the `tables` rule adapter run with a stand-in `snakemake` object."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from lpbert_core.report.figures import figures_for_tables, paper_vs_ours, rank_distribution, safe_name, training_curves
from lpbert_core.report.table_frames import paired, table_metrics
from lpbert_core.report.tables import build_tables
from test_tables import PAPER_CSV, make_run

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def ranks_file(path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    r = rng.integers(1, 300, n).astype(float)
    pd.DataFrame({"direction": ["head", "tail"] * (n // 2), "optimistic": r, "pessimistic": r + 1,
                  "realistic": r + 0.5}).to_parquet(path, index=False)
    return path


def test_rank_distribution_and_curves(tmp_path):
    out = rank_distribution(ranks_file(tmp_path / "ranks.parquet"), tmp_path / "r.png", "ranks")
    assert is_png(out)
    log = tmp_path / "log.csv"
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [3.0, 2.0, 1.5], "dev_hits@10": [0.1, 0.2, 0.25],
                  "note": ["a", "b", "c"]}).to_csv(log, index=False)
    assert is_png(training_curves(log, tmp_path / "c.png", "curves"))
    (tmp_path / "empty.csv").write_text("")
    assert is_png(training_curves(tmp_path / "empty.csv", tmp_path / "e.png", "empty"))
    pd.DataFrame({"direction": [], "realistic": []}).to_parquet(tmp_path / "none.parquet")
    assert is_png(rank_distribution(tmp_path / "none.parquet", tmp_path / "n.png", "none"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_paper_vs_ours_and_all_figures(tmp_path):
    run = make_run(tmp_path, "lpbert", 0.3)
    run["ranks"] = str(ranks_file(tmp_path / "lpbert" / "ranks.parquet"))
    pre = tmp_path / "pretrain" / "mem-mrm-mlm"
    pre.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2], "dev_loss": [2.0, 1.0]}).to_csv(pre / "log.csv", index=False)
    run["pretrain_log"] = str(pre / "log.csv")
    second = {**make_run(tmp_path, "lpbert.s43", 0.35), "seed": 43}  # a second seed: its own rank/train figures
    second["ranks"] = str(ranks_file(tmp_path / "lpbert.s43" / "ranks.parquet"))
    seeds = {"run": "lpbert", "instances": [{**run, "seed": 42}, second]}
    specs = [{"table": "table4", "row": "MEM+MRM+MLM|Y", "dataset": "WN18RR", **seeds},
             {"table": "table1", "row": "LP-BERT", "dataset": "WN18RR", **run},
             {"table": "reproduction", "row": "LP-BERT", "dataset": "WN18RR", "role": "paper_text", **seeds}]
    frames = build_tables(specs, PAPER_CSV, {t: {"md": tmp_path / f"{t}.md"} for t in ("table1", "table4",
                                                                                       "reproduction")})
    written = figures_for_tables(frames, specs, tmp_path / "figs")
    names = sorted(p.name for p in written)
    assert names == sorted(["table1_paper_vs_ours.png", "table4_paper_vs_ours.png", "reproduction_paper_vs_ours.png",
                            "ranks_WN18RR_lpbert.png", "train_WN18RR_lpbert.png", "pretrain_WN18RR_mem-mrm-mlm.png",
                            "ranks_WN18RR_lpbert.s43.png", "train_WN18RR_lpbert.s43.png"])
    assert all(is_png(p) for p in written)
    # a table without any row of ours still gets a (placeholder) figure
    empty = build_tables([], PAPER_CSV, {"table3": {"md": tmp_path / "t3.md"}})["table3"]
    assert is_png(paper_vs_ours(paired(empty, table_metrics("table3")), tmp_path / "e.png", "empty"))
    assert safe_name("a b/c") == "a_b_c"


class _Named(list):
    """Minimal stand-in for snakemake's Namedlist: a list with named items."""

    def __init__(self, **items):
        super().__init__(items.values())
        self._items = items

    def items(self):
        return self._items.items()

    def __getattr__(self, name):
        try:
            return self._items[name]
        except KeyError:
            raise AttributeError(name) from None


def test_workflow_script_contract(tmp_path):
    run = make_run(tmp_path, "lpbert", 0.3)
    rows = [{"table": t, "row": r, "dataset": "WN18RR", **run}
            for t, r in (("table1", "LP-BERT"), ("table3", "LP-BERT|LPBERT-base"), ("table4", "MEM+MRM+MLM|Y"),
                         ("reproduction", "LP-BERT"))]
    outputs = {f"{t}_{k}": str(tmp_path / "tables" / f"{t}.{k}") for t in ("table1", "table3", "table4", "reproduction")
               for k in ("md", "csv", "tex")}
    outputs["figures"] = str(tmp_path / "figures")
    fake = SimpleNamespace(
        input=_Named(paper=str(PAPER_CSV), m=run["metrics"]),
        params=_Named(rows=rows, notes={"table4": ["an extra note"]}, scale_note="test scale", attribution=None),
        output=_Named(**outputs),
        log=[str(tmp_path / "tables.log")],
        wildcards=_Named(),
    )
    runpy.run_path(str(ROOT / "workflow_scripts" / "tables.py"), init_globals={"snakemake": fake})
    for path in outputs.values():
        assert Path(path).exists(), path
    assert "an extra note" in (tmp_path / "tables" / "table4.md").read_text()
    assert "**Scale:** test scale" in (tmp_path / "tables" / "table1.md").read_text()
    assert is_png(tmp_path / "figures" / "table4_paper_vs_ours.png")
    assert "not run (configs/authors-code.yaml)" in (tmp_path / "tables" / "reproduction.md").read_text()

    # one-table form: outputs md/csv/tex, table from wildcards
    single = SimpleNamespace(
        input=_Named(paper=str(PAPER_CSV)), params=_Named(rows=rows),
        output=_Named(md=str(tmp_path / "one.md"), csv=str(tmp_path / "one.csv"), tex=str(tmp_path / "one.tex")),
        log=[str(tmp_path / "one.log")], wildcards=_Named(table="table4"),
    )
    runpy.run_path(str(ROOT / "workflow_scripts" / "tables.py"), init_globals={"snakemake": single})
    assert "Table 4" in (tmp_path / "one.md").read_text()
