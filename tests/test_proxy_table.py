"""The CPU proxy's table (lpbert_core.report.proxy_table): floor first, mean +- sd over seeds, Delta MRR against the
floor, a reading at or below the floor marked, dev trajectories in the figure."""
import json

import pandas as pd
import pytest
from conftest import load_script

from lpbert_core.report.proxy_table import build_proxy


def _instance(tmp, dataset, name, seed, mrr, dev_mrr, anchor_first, steps=(0,)):
    folder = tmp / dataset / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"metrics": {"both": {
        "mrr": mrr, "hits@1": mrr / 2, "hits@3": mrr, "hits@10": 2 * mrr, "mr": 100.0}}}))
    pd.DataFrame({"epoch": range(len(steps)), "steps": [s and 10 for s in steps], "global_step": list(steps),
                  "dev_mrr": dev_mrr, "dev_anchor_first": anchor_first, "train_seconds": [5.0 * bool(s) for s in steps]}
                 ).to_csv(folder / "train_log.csv", index=False)
    (folder / "finetune.tsv").write_text("s\th:m:s\n12.5\t0:00:12\n")
    return {"run": name, "seed": seed, "metrics": folder / "metrics.json", "train_log": folder / "train_log.csv",
            "finetune_benchmark": folder / "finetune.tsv", "score_benchmark": folder / "missing.tsv"}


def test_proxy_table_floor_seeds_and_marks(tmp_path):
    rows = [
        {"dataset": "WN18RR", "run": "floor", "label": "zero-shot", "floor": True,
         "instances": [_instance(tmp_path, "WN18RR", "floor", 42, 0.10, [0.11], [1.0])]},
        {"dataset": "WN18RR", "run": "good", "label": "good reading", "floor": False,
         "instances": [_instance(tmp_path, "WN18RR", "good", 42, 0.30, [0.2, 0.3], [0.5, 0.1], (10, 20)),
                       _instance(tmp_path, "WN18RR", "good.s43", 43, 0.34, [0.2, 0.32], [0.5, 0.2], (10, 20))]},
        {"dataset": "WN18RR", "run": "bad", "label": "bad reading", "floor": False,
         "instances": [_instance(tmp_path, "WN18RR", "bad", 42, 0.08, [0.09, 0.08], [1.0, 1.0], (10, 20))]},
    ]
    paths = {"md": tmp_path / "proxy.md", "csv": tmp_path / "proxy.csv", "figure": tmp_path / "fig/traj.png"}
    table = build_proxy(rows, paths, "test scale")
    good = table.set_index("run").loc["good"]
    assert good["mrr"] == pytest.approx(0.32) and good["mrr_sd"] == pytest.approx(0.028284, abs=1e-5)
    assert good["n"] == 2 and good["seeds"] == "42,43" and good["delta_mrr_vs_floor"] == pytest.approx(0.22)
    assert good["dev_anchor_first"] == pytest.approx(0.15) and good["step_seconds"] == pytest.approx(0.5)
    md = paths["md"].read_text()
    assert "zero-shot (floor)" in md and "bad reading ▽" in md and "good reading ▽" not in md
    assert "0.200 → 0.310" in md  # the dev trajectory, mean over seeds per point
    assert "Scale: test scale" in md and paths["figure"].stat().st_size > 0
    assert pd.read_csv(paths["csv"])["run"].tolist() == ["floor", "good", "bad"]


def test_proxy_table_without_diagnostics_columns(tmp_path):
    """Runs trained without dev_diagnostics (no anchor columns in their train log) still make a table and figure."""
    inst = _instance(tmp_path, "g", "plain", 42, 0.2, [0.2], [None])
    log = pd.read_csv(inst["train_log"]).drop(columns=["dev_anchor_first"])
    log.to_csv(inst["train_log"], index=False)
    rows = [{"dataset": "g", "run": "plain", "label": "plain", "floor": False, "instances": [inst]}]
    paths = {"md": tmp_path / "p.md", "csv": tmp_path / "p.csv", "figure": tmp_path / "p.png"}
    build_proxy(rows, paths)
    assert paths["figure"].exists() and "plain" in paths["md"].read_text()


def test_collect_proxy_names_unrun_readings_once_and_missing_seeds_apart():
    """tools/collect_proxy.py's note under the partial table: a reading with one seed in and one missing is a seed
    still to run; a reading with none in is named once per dataset, not once per seed instance."""
    tool = load_script("tools/collect_proxy.py", "collect_proxy")
    pending = {("WN18RR", "a"): [43], ("WN18RR", "b"): [42, 43], ("FB15k-237", "b"): [42, 43],
               ("FB15k-237", "c"): [None]}
    note = tool.pending_note(pending, {"a": 2, "b": 2, "c": 1})
    assert note == (" Seeds still to run: WN18RR a (seed 43)."
                    " Configured, not run to the end: WN18RR: b; FB15k-237: b, c.")
    assert tool.pending_note({}, {}) == ""
