"""The package reads like the pipeline: one sub-package per stage, none importing another (what several stages need
sits in the neutral modules at the top of lpbert_core)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lpbert_core"
STAGES = ("data", "pretrain", "finetune", "evaluate", "baselines", "report")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_stage_package_imports_another():
    crossing = []
    for stage in STAGES:
        for path in sorted((PACKAGE / stage).glob("*.py")):
            for module in _imports(path):
                parts = module.split(".")
                if parts[0] == "lpbert_core" and len(parts) > 1 and parts[1] in STAGES and parts[1] != stage:
                    crossing.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not crossing, crossing


def test_neutral_modules_import_no_stage_package():
    """Only the drivers (direct_run: the stages without Snakemake; launch: one rank's stage) call into the stages."""
    drivers = {"direct_run.py", "launch.py", "__init__.py"}
    crossing = [f"{path.name} imports {module}" for path in sorted(PACKAGE.glob("*.py")) if path.name not in drivers
                for module in _imports(path) if module.split(".")[:2][-1] in STAGES and module.startswith("lpbert_core.")]
    assert not crossing, crossing
