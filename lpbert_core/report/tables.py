"""Tables 1, 3, 4 and the reproduction table: the entry point of rule `tables` (workflow_scripts/tables.py).

One concern per module:
- `lpbert_core.ranking.results`: the metric keys of metrics.json, shared with the scorers that write it;
- `lpbert_core.report.table_sources`: the paper's numbers, row specs, reading each run instance's files, seed aggregation;
- `lpbert_core.report.table_frames`: Tables 1, 3, 4 as long frames (paper row, ours under it, Δ under ours);
- `lpbert_core.report.reproduction`: the reproduction table (paper vs paper-text vs authors'-code readings);
- `lpbert_core.report.table_render`: Markdown / CSV / LaTeX and the notes under each table.

Every row of ours says where its numbers come from: the metrics.json of each seed (provenance list), or
`skipped: <reason>` (a run that cannot be made here, e.g. weights not loadable offline).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from lpbert_core.report.reproduction import build_reproduction, write_reproduction
from lpbert_core.report.table_frames import build_table
from lpbert_core.report.table_render import TITLES, write_table
from lpbert_core.report.table_sources import (TABLES, RowSpec, canonical_dataset, epochs_timed, epochs_trained, inference_seconds,
                            load_paper, read_benchmark_seconds, scale_text)

log = logging.getLogger("lpbert.tables")


def build_tables(
    specs: Iterable[Mapping | RowSpec],
    paper_csv: str | Path,
    outputs: Mapping[str, Mapping[str, str | None]],
    notes: Mapping[str, list[str]] | None = None,
    scale_note: str | None = None,
    attribution: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Build and write every table named in `outputs` ({table: {"md": path, "csv": path, "tex": path}}); returns
    the frames (the CSVs' content). `attribution`: the reproduction table's study summary CSV, if any."""
    specs = [s if isinstance(s, RowSpec) else RowSpec.from_mapping(s) for s in specs]
    paper = load_paper(paper_csv)
    frames = {}
    for table, paths in outputs.items():
        extra = list((notes or {}).get(table, []))
        if table == "reproduction":
            frame, facts = build_reproduction(specs, paper, attribution)
            write_reproduction(frame, facts, paths, scale_note=scale_note, notes=extra)
        else:
            frame, facts = build_table(table, specs, paper)
            write_table(table, frame, facts, paths, notes=extra, scale_note=scale_note)
        frames[table] = frame
        log.info("%s: %d rows of ours -> %s", table, len(facts["ours"]), ", ".join(str(p) for p in paths.values() if p))
    return frames


# the readers of a run's files, re-exported for callers of the former single module (e.g. tests/test_finetune_loop.py)
__all__ = ["TABLES", "TITLES", "RowSpec", "build_table", "build_tables", "canonical_dataset", "epochs_timed",
           "epochs_trained", "inference_seconds", "load_paper", "read_benchmark_seconds", "scale_text"]
