"""The siamese (shared-encoder) model of LP-BERT fine-tuning: one encoder embeds queries and candidates,
pooling is a config choice, and the pair scores are the cosine (eq. 13, d1) and the L2 distance (d2).

Pooling (`finetune.pooling`):
- `mean`: mean of the last hidden states over real tokens (default: MiniLM was trained with mean pooling);
- `cls`:  the last hidden state of [CLS];
- `pooler`: BERT's pooler, tanh(W h_[CLS] + b) (the authors' choice; random in MiniLM's checkpoint use).
New (non-encoder) parameters: the learnable probability scale/bias of the `learnable` mapping (finetune_loss.py).
Their names do not start with `encoder.`, so `build_optimizer(model, "encoder.", ...)` gives them the new-layer LR.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("mean", "cls", "pooler")
RUN_FILE = "lpbert_run.json"


class SiameseModel(nn.Module):
    def __init__(self, encoder: nn.Module, pooling: str = "mean", init_scale: float = 20.0,
                 init_bias: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"finetune.pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ValueError("pooling 'pooler' needs an encoder with a pooler layer")
        self.encoder = encoder
        self.pooling = pooling
        # learnable mapping cosine -> logit for the focal loss (used only by probability='learnable')
        self.prob_scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.prob_bias = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        return self.encode(input_ids, attention_mask, token_type_ids)

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        if getattr(self.encoder.config, "type_vocab_size", 2) < 2:
            token_type_ids = None  # RoBERTa-style encoders have a single token type
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def new_layer_state(self) -> dict:
        return {"prob_scale": float(self.prob_scale.detach()), "prob_bias": float(self.prob_bias.detach())}


def cosine_matrix(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """d1 of eq. 13 for every (query, candidate) pair: [n, m]."""
    q = F.normalize(queries.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    return q @ c.T


def distance_matrix(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """d2 of eq. 13, ||u - v||_2 for every pair: [n, m] (eps inside the sqrt keeps the gradient finite at 0)."""
    q, c = queries.float(), candidates.float()
    sq = (q * q).sum(-1, keepdim=True) + (c * c).sum(-1).unsqueeze(0) - 2.0 * (q @ c.T)
    return torch.sqrt(sq.clamp_min(0.0) + 1e-8)


def pair_cosine(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of aligned pairs: [n]."""
    return F.cosine_similarity(queries.float(), candidates.float(), dim=-1)


def pair_distance(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    d = queries.float() - candidates.float()
    return torch.sqrt((d * d).sum(-1) + 1e-8)


# ------------------------------------------------------------------ saving / loading a fine-tuned run

def save_run_model(model: SiameseModel, tokenizer, directory: Path, run_info: dict) -> None:
    """HF folder (encoder + tokenizer, safetensors) + lpbert_run.json with everything needed to rebuild
    queries and scores (pooling, max lengths, scorer, loss settings, new-layer values)."""
    directory = Path(directory)
    model.encoder.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    info = dict(run_info)
    info["pooling"] = model.pooling
    info["new_layers"] = model.new_layer_state()
    (directory / RUN_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")


def load_run_model(directory: str | Path, device: torch.device | str = "cpu") -> tuple[SiameseModel, dict]:
    from transformers import AutoModel

    directory = Path(directory)
    info = json.loads((directory / RUN_FILE).read_text())
    encoder = AutoModel.from_pretrained(str(directory))
    nl = info.get("new_layers", {})
    model = SiameseModel(encoder, info["pooling"], nl.get("prob_scale", 20.0), nl.get("prob_bias", 0.0))
    model.to(device).eval()
    return model, info
