"""The package reads like the pipeline: one sub-package per stage, none importing another; what several stages need
sits in the shared packages, grouped by concern (config, runtime, model, graph, ranking), which import no stage."""

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


SHARED = ("config", "runtime", "model", "graph", "ranking")  # what several stages need, grouped by concern
DRIVERS = {"runtime/direct_run.py", "runtime/launch.py"}  # the stages without Snakemake; one rank's stage


def test_shared_packages_import_no_stage_package():
    """Only the drivers call into the stages."""
    crossing = [f"{path.relative_to(PACKAGE)} imports {module}"
                for shared in SHARED for path in sorted((PACKAGE / shared).glob("*.py"))
                if str(path.relative_to(PACKAGE)) not in DRIVERS
                for module in _imports(path) if module.startswith("lpbert_core.") and module.split(".")[1] in STAGES]
    assert not crossing, crossing


def test_the_package_is_its_map():
    """Every module sits in a stage package or a shared one (errors.py, the one error type, is the exception)."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "errors.py"], loose
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert folders == sorted(STAGES + SHARED), folders


def test_every_module_is_on_the_file_by_file_list():
    """docs/running.md's "Modules, file by file" names every module of the package, so the map keeps up with it."""
    doc = (PACKAGE.parent / "docs" / "running.md").read_text()
    listed = doc.split("## Modules, file by file", 1)[1]
    missing = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py" and f"`{p.name}`" not in listed)
    assert not missing, f"not on docs/running.md's file-by-file list: {missing}"


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


TRAINING_ENTRIES = {"pretrain/pretrain_loop.py": "train", "finetune/finetune_loop.py": "finetune",
                    "baselines/cross_encoder_loop.py": "train_cross_encoder"}


def test_every_training_stage_runs_the_one_epoch_loop():
    """Resume, checkpoints, selection, early stop and clean-up live once (runtime/epoch_loop.py): every training
    stage imports it, none writes its own checkpoint, and each entry point is a short composition."""
    for rel, entry in TRAINING_ENTRIES.items():
        path = PACKAGE / rel
        imports = _imports(path)
        assert "lpbert_core.runtime.epoch_loop" in imports, rel
        assert "lpbert_core.runtime.checkpoints" not in imports, f"{rel} writes checkpoints itself"
        function = next(node for node in ast.walk(ast.parse(path.read_text()))
                        if isinstance(node, ast.FunctionDef) and node.name == entry)
        assert function.end_lineno - function.lineno + 1 <= 80, (rel, entry)
