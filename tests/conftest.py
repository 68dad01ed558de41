"""Shared fixtures: a tiny randomly initialised BERT with the real MiniLM (uncased WordPiece) tokenizer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str):
    """A script of the repository that is not a package module (`.test/`, `tools/`), imported by its path."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fixture_builder():
    """`.test/make_fixtures.py`, the one place the tiny encoder and graph are made (also used by the whole-DAG test)."""
    return load_script(".test/make_fixtures.py", "make_fixtures")


def paper_section(name: str, **overrides) -> dict:
    """config.yaml's `name:` section (the one place defaults live) as a stage receives it for a graph without a
    per_dataset entry (pretrain: max_length's `default`), with `overrides` on top."""
    import yaml

    section = dict(yaml.safe_load((REPO / "config.yaml").read_text())[name])
    section.pop("per_dataset", None)
    if isinstance(section.get("max_length"), dict):
        section["max_length"] = section["max_length"]["default"]
    return {**section, **overrides}


def text_settings(**overrides):
    """join_text's settings for a source that names no text files of its own (config.yaml `text:`), then
    `overrides`."""
    from lpbert_core.config.settings import TextSettings

    return TextSettings.from_mapping({**paper_section("text"), "entity_text_required": False,
                                      "relation_text_required": False, **overrides})


def make_toy_kg(tokenizer, entities, relations, triples):
    """lpbert_core.graph.kg.make_toy_kg with config.yaml's inverse prefix."""
    from lpbert_core.graph import kg

    return kg.make_toy_kg(tokenizer, entities, relations, triples,
                          inverse_prefix=paper_section("text")["inverse_prefix"])


def plain_loss(**overrides):
    """The loss settings of config.yaml's finetune section with the affine mapping (temperature 0.05, shift 0: a
    mapping that needs no measured shift, for tests of the loss function alone), then `overrides`."""
    from lpbert_core.finetune.finetune_loss import LossConfig

    return LossConfig.from_settings(paper_section(
        "finetune", **{"probability": "affine", "temperature": 0.05, "shift": 0.0, **overrides}))


@pytest.fixture(scope="session")
def fixture_builder():
    return _fixture_builder()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, fixture_builder):
    """A folder loadable by AutoModel/AutoTokenizer: 2 layers, hidden 32, MiniLM's vocabulary."""
    out = tmp_path_factory.mktemp("tiny_bert")
    fixture_builder.write_tiny_encoder(out)
    return str(out)


def write_kg_layout(kg, tok, root):
    """A TokenizedKG written in the pipeline layout (text/ and tokens/minilm/ under `root`), as the data stages would."""
    from lpbert_core.runtime.atomic import write_parquet

    text, tokens = root / "text", root / "tokens" / "minilm"
    write_parquet(text / "entities.parquet", pd.DataFrame({
        "id": kg.entity_ids, "name": [tok.decode(t) for t in kg.entity_name_ids], "description": "",
        "text": [tok.decode(t) for t in kg.entity_text_ids]}))
    write_parquet(text / "relations.parquet", pd.DataFrame({
        "id": kg.relation_ids, "text": [tok.decode(t) for t in kg.relation_text_ids],
        "inverse_text": [tok.decode(t) for t in kg.relation_inverse_ids]}))
    rows = [{"split": split, "head": kg.entity_ids[h], "relation": kg.relation_ids[r], "tail": kg.entity_ids[t],
             "inverse": False} for split, arr in kg.triples.items() for h, r, t in arr]
    write_parquet(text / "triples.parquet", pd.DataFrame(rows))
    write_parquet(tokens / "entities.parquet", pd.DataFrame({
        "id": kg.entity_ids, "name_ids": kg.entity_name_ids, "description_ids": kg.entity_desc_ids,
        "text_ids": kg.entity_text_ids}))
    write_parquet(tokens / "relations.parquet", pd.DataFrame({
        "id": kg.relation_ids, "text_ids": kg.relation_text_ids, "inverse_ids": kg.relation_inverse_ids}))
    sp = kg.special
    (tokens / "manifest.json").write_text(json.dumps({"special_ids": {
        "cls": sp.cls, "sep": sp.sep, "mask": sp.mask, "pad": sp.pad, "vocab_size": sp.vocab_size}}))
    return text, tokens


@pytest.fixture(scope="session")
def kg_layout_writer():
    return write_kg_layout
