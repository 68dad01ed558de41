"""Shared fixtures: a tiny randomly initialised BERT with the real MiniLM (uncased WordPiece) tokenizer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fixture_builder():
    """`.test/make_fixtures.py`, the one place the tiny encoder and graph are made (also used by the whole-DAG test)."""
    spec = importlib.util.spec_from_file_location("make_fixtures", REPO / ".test" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fixture_builder():
    return _fixture_builder()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, fixture_builder):
    """A folder loadable by AutoModel/AutoTokenizer: 2 layers, hidden 32, MiniLM's vocabulary."""
    out = tmp_path_factory.mktemp("tiny_bert")
    fixture_builder.write_tiny_encoder(out)
    return str(out)
