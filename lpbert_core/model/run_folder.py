"""The folder of a trained run (`results/{dataset}/runs/{run}/model/`), one format for the siamese LP-BERT and the
KG-BERT-style cross-encoder: the encoder as a Hugging Face folder (safetensors) with its tokenizer, each new layer as
its own `<name>.safetensors`, a second encoder (a two-tower run's query tower) as an HF subfolder, and
`lpbert_run.json` holding everything else needed to rebuild the scorer (pooling, max lengths, scorer kind, settings,
new-layer values)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RUN_FILE = "lpbert_run.json"


def write_run_folder(directory: str | Path, encoder, tokenizer, info: dict,
                     layers: dict[str, dict[str, torch.Tensor]] | None = None, towers: dict | None = None) -> None:
    """Write into `directory` (the caller makes it atomic): encoder + tokenizer, `layers` {file: state dict},
    `towers` {subfolder: another encoder (HF folder, e.g. a two-tower model's query tower)}, info."""
    directory = Path(directory)
    encoder.save_pretrained(directory, safe_serialization=True)
    for subfolder, tower in (towers or {}).items():
        tower.save_pretrained(directory / subfolder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    for filename, state in (layers or {}).items():
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(directory / filename))
    (directory / RUN_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")


def read_run_info(directory: str | Path) -> dict:
    return json.loads((Path(directory) / RUN_FILE).read_text())


def read_encoder(directory: str | Path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(directory))


def read_layer(directory: str | Path, filename: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(directory) / filename))
