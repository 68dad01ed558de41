"""tools/check_metrics_from_ranks.py: the independent recomputation agrees with the project's metric code and
names a metrics.json that does not match its ranks."""
import json
from pathlib import Path

import pandas as pd

from conftest import load_script
from lpbert_core.ranking.filtered_ranks import metrics_from_ranks


def _checker():
    return load_script("tools/check_metrics_from_ranks.py", "check_metrics")


def _run(folder: Path, metrics=None) -> Path:
    folder.mkdir(parents=True)
    opt = [1, 2, 1, 7, 3, 1]
    pes = [1, 4, 1, 9, 3, 2]
    ranks = pd.DataFrame({"query": [0, 1, 2, 0, 1, 2], "direction": ["tail"] * 3 + ["head"] * 3,
                          "optimistic": opt, "pessimistic": pes, "realistic": [(a + b) / 2 for a, b in zip(opt, pes)],
                          "num_candidates": [10] * 6})
    ranks.to_parquet(folder / "ranks.parquet")
    (folder / "metrics.json").write_text(json.dumps({"metrics": metrics or metrics_from_ranks(ranks)}))
    return folder


def test_recomputed_metrics_agree_and_a_wrong_file_is_named(tmp_path):
    check = _checker()
    good = _run(tmp_path / "good")
    result = check.check_run(good)
    assert result["agree"] and result["metrics_compared"] >= 3 * 15 and all(result["checks"].values())
    wrong = json.loads((good / "metrics.json").read_text())["metrics"]
    wrong["both"]["hits@10"] = 0.5
    bad = _run(tmp_path / "bad", wrong)
    result = check.check_run(bad)
    assert not result["agree"] and result["differences"] == [
        {"side": "both", "metric": "hits@10", "metrics_json": 0.5, "recomputed": 1.0}]
    assert check.main([str(good), str(bad), "--out", str(tmp_path / "out.json")]) == 1
    assert json.loads((tmp_path / "out.json").read_text())["all_agree"] is False
