"""Per-relation and per-direction breakdown of a run's ranks (lpbert_core.evaluate.breakdown), values checked by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from lpbert_core.evaluate.breakdown import breakdown, run_breakdown


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
