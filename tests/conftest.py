"""Shared fixtures: a tiny randomly initialised BERT with the real MiniLM (uncased WordPiece) tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A folder loadable by AutoModel/AutoTokenizer: 2 layers, hidden 32, MiniLM's vocabulary."""
    import torch
    from transformers import BertConfig, BertModel

    from lpbert_core.encoders import load_tokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_bert")
    tok = load_tokenizer("minilm")
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
