"""The siamese (shared-encoder) model of LP-BERT fine-tuning: one encoder embeds queries and candidates,
pooling is a config choice, and the pair scores are the cosine (eq. 13, d1) and the L2 distance (d2).

Pair scorer (`finetune.scorer`):
- `cosine` (default; the paper, and the authors' code on WN18RR): s(u, v) = cos(u, v);
- `pair_linear` (the authors' code on UMLS and FB15k-237): s(u, v) = w . Dropout(0.1)([u; v; u - v; u * v]) + b, one
  new Linear(4d -> 1) layer, its raw output the score (no sigmoid). u = query vector, v = candidate vector. Without
  dropout (eval) an n x m score matrix is exact from w . [u; v; u-v; u*v] = (w1 + w3) . u + (w2 - w3) . v +
  (w4 * u) . v: a per-query bias, a per-candidate bias and one matrix product (`PairLinear.matrix`).

Pooling (`finetune.pooling`):
- `mean`: mean of the last hidden states over real tokens (default: MiniLM was trained with mean pooling);
- `cls`:  the last hidden state of [CLS];
- `pooler`: BERT's pooler, tanh(W h_[CLS] + b) (the authors' choice; random in MiniLM's checkpoint use).
New (non-encoder) parameters: the learnable probability scale/bias of the `learnable` mapping (finetune_loss.py),
the `pair_linear` layer and InfoNCE's learnable inverse temperature (`finetune.infonce_learnable_temperature`, made
only when switched on: `log_inv_t`, 1/tau = exp(log_inv_t) capped at MAX_INVERSE_TEMPERATURE). Their names do not start with `encoder.`, so `build_optimizer(model, "encoder.", ...)` gives
them the new-layer LR. The pair layer is created only for `pair_linear` (a cosine model draws no extra random
numbers and has the same state dict as before) and saved next to the encoder as `pair_scorer.safetensors`.

Two towers (`finetune.two_towers`, lpbert-plus; SimKGC's design): `set_two_towers()` deep-copies the encoder into
`query_encoder` (no random numbers drawn), queries then go through it and entities through `encoder`, both trained at
the encoder LR (`build_optimizer(model, ENCODER_PREFIXES, ...)`). Saved as the HF folder `query_encoder/` inside the
run folder (lpbert_run.json `two_towers: true`). Off: one shared encoder, the state dict and folder as before.
A frozen entity tower (`finetune.frozen_entity_tower`, with two towers): `freeze_entity_tower()` takes the entity
encoder's parameters out of training (no gradient; the optimiser never sees them) and keeps it in eval mode whatever
`train()` is told, so its vectors are the same in every step and at every dev point (an exact, fixed table).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lpbert_core.model.run_folder import read_encoder, read_layer, read_run_info, write_run_folder

POOLINGS = ("mean", "cls", "pooler")
SCORERS = ("cosine", "pair_linear")
PAIR_SCORER_FILE = "pair_scorer.safetensors"
PAIR_DROPOUT = 0.1  # authors' code: Dropout(0.1) on the concatenated pair features
MAX_INVERSE_TEMPERATURE = 100.0  # SimKGC: 1/tau clamped at 100 (tau >= 0.01)
QUERY_ENCODER_DIR = "query_encoder"  # the query tower's HF folder inside a two-tower run folder
ENCODER_PREFIXES = ("encoder.", "query_encoder.")  # parameter names of the pre-trained towers (encoder LR)


class PairLinear(nn.Module):
    """s(u, v) = Linear(4d -> 1)(Dropout([u; v; u - v; u * v])), the raw output (authors' code, UMLS / FB15k-237)."""

    def __init__(self, dim: int, dropout: float = PAIR_DROPOUT):
        super().__init__()
        self.dim = int(dim)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(4 * self.dim, 1)

    def _blocks(self):
        return self.linear.weight[0].float().split(self.dim), self.linear.bias[0].float()

    def pairs(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scores of aligned pairs (u_i, v_i): [n]. Dropout per pair feature in training mode."""
        u, v = u.float(), v.float()
        x = torch.cat([u, v, u - v, u * v], dim=-1)
        return self.dropout(x) @ self.linear.weight[0].float() + self.linear.bias[0].float()

    def matrix(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scores of every pair (u_i, v_j): [n, m]. Training mode with dropout: every pair gets its own dropout
        mask (the features are built per pair, block by block). Otherwise exact via the bias + matmul identity."""
        u, v = u.float(), v.float()
        (w1, w2, w3, w4), b = self._blocks()
        if self.training and self.dropout.p > 0:
            n, m = u.shape[0], v.shape[0]
            ue, ve = u.unsqueeze(1).expand(n, m, -1), v.unsqueeze(0).expand(n, m, -1)
            out = b
            for block, w in ((ue, w1), (ve, w2), (ue - ve, w3), (ue * ve, w4)):
                out = out + self.dropout(block) @ w
            return out
        return (u @ (w1 + w3)).unsqueeze(1) + (v @ (w2 - w3)).unsqueeze(0) + (u * w4) @ v.T + b


class SiameseModel(nn.Module):
    def __init__(self, encoder: nn.Module, pooling: str = "mean", init_scale: float = 20.0,
                 init_bias: float = 0.0, scorer: str = "cosine"):
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
        self.log_inv_t = None
        self.query_encoder = None  # two towers: the query tower (set_two_towers); None: one shared encoder
        self.entity_tower_frozen = False  # freeze_entity_tower(): the entity encoder neither learns nor drops out
        self.set_scorer(scorer)

    @property
    def two_towers(self) -> bool:
        return self.query_encoder is not None

    def set_two_towers(self, query_encoder: nn.Module | None = None) -> None:
        """Separate query tower: `query_encoder` (loading a run) or a deep copy of the encoder (same weights, same
        device; no random numbers drawn)."""
        if self.query_encoder is not None:
            raise RuntimeError("the model has two towers already")
        self.query_encoder = copy.deepcopy(self.encoder) if query_encoder is None else query_encoder

    def freeze_entity_tower(self) -> None:
        """The entity tower keeps its weights and never drops out; only the query tower (and new layers) learn."""
        if self.query_encoder is None:
            raise RuntimeError("freezing the entity tower needs two towers (set_two_towers first)")
        self.entity_tower_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> "SiameseModel":
        super().train(mode)
        if self.entity_tower_frozen:
            self.encoder.eval()
        return self

    def set_learnable_temperature(self, temperature: float) -> None:
        """InfoNCE's 1/tau as a new-layer parameter, initialised at 1/temperature (lpbert-plus)."""
        device = self.prob_scale.device
        self.log_inv_t = nn.Parameter(torch.tensor(math.log(1.0 / float(temperature)), device=device))

    def inverse_temperature(self) -> torch.Tensor | None:
        """The learnable 1/tau (None when the temperature is the fixed `infonce_temperature`)."""
        if self.log_inv_t is None:
            return None
        return self.log_inv_t.exp().clamp(max=MAX_INVERSE_TEMPERATURE)

    def set_scorer(self, scorer: str) -> None:
        """The pair scorer: `cosine` (no parameters, no random numbers drawn) or `pair_linear` (a new PairLinear
        layer, PyTorch's default init, on the encoder's device)."""
        if scorer not in SCORERS:
            raise ValueError(f"finetune.scorer must be one of {SCORERS}, got {scorer!r}")
        self.scorer = scorer
        self.pair_head = None
        if scorer == "pair_linear":
            device = next(self.encoder.parameters()).device
            self.pair_head = PairLinear(self.encoder.config.hidden_size).to(device)

    @property
    def _token_types(self) -> bool:
        from lpbert_core.model.encoders import uses_token_types

        return uses_token_types(self.encoder)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        return self.encode(input_ids, attention_mask, token_type_ids)

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The (entity) encoder's pooled vectors: with one tower, queries and entities alike."""
        return self._pooled(self.encoder, input_ids, attention_mask, token_type_ids)

    def encode_entity(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        return self._pooled(self.encoder, input_ids, attention_mask, token_type_ids)

    def encode_query(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        tower = self.encoder if self.query_encoder is None else self.query_encoder
        return self._pooled(tower, input_ids, attention_mask, token_type_ids)

    def _pooled(self, tower: nn.Module, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        if not self._token_types:
            token_type_ids = None  # RoBERTa-style encoders have a single token type; MPNet has none
        out = tower(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def new_layer_state(self) -> dict:
        state = {"prob_scale": float(self.prob_scale.detach()), "prob_bias": float(self.prob_bias.detach())}
        if self.log_inv_t is not None:
            state["infonce_temperature"] = float(1.0 / self.inverse_temperature().detach())
        return state

    def score_matrix(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """s(u_i, v_j) for every query i and candidate j: [n, m] (cosine, or the pair layer's raw output)."""
        if self.pair_head is None:
            return cosine_matrix(queries, candidates)
        return self.pair_head.matrix(queries, candidates)

    def score_pairs(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """s(u_i, v_i) of aligned pairs: [n]."""
        if self.pair_head is None:
            return pair_cosine(queries, candidates)
        return self.pair_head.pairs(queries, candidates)


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
    info = dict(run_info)
    info["pooling"] = model.pooling
    info["scorer"] = model.scorer
    info["new_layers"] = model.new_layer_state()
    layers = {}
    if model.pair_head is not None:
        layers[PAIR_SCORER_FILE] = model.pair_head.state_dict()
        info["new_layers"]["pair_scorer"] = PAIR_SCORER_FILE
    towers = {}
    if model.query_encoder is not None:
        info["two_towers"] = True
        info["query_encoder"] = QUERY_ENCODER_DIR
        towers[QUERY_ENCODER_DIR] = model.query_encoder
    write_run_folder(directory, model.encoder, tokenizer, info, layers, towers)


def load_run_model(directory: str | Path, device: torch.device | str = "cpu") -> tuple[SiameseModel, dict]:
    info = read_run_info(directory)
    nl = info.get("new_layers", {})
    scorer = info.get("scorer", "cosine")
    model = SiameseModel(read_encoder(directory), info["pooling"], nl.get("prob_scale", 20.0),
                         nl.get("prob_bias", 0.0), scorer)
    if model.pair_head is not None:
        model.pair_head.load_state_dict(read_layer(directory, nl.get("pair_scorer", PAIR_SCORER_FILE)))
    if info.get("two_towers"):
        model.set_two_towers(read_encoder(Path(directory) / info.get("query_encoder", QUERY_ENCODER_DIR)))
        if info.get("frozen_entity_tower"):  # training on from a saved run keeps the entity tower frozen
            model.freeze_entity_tower()
    if "infonce_temperature" in nl:  # the trained temperature (training-only: ranks are by the score itself)
        model.set_learnable_temperature(nl["infonce_temperature"])
    model.to(device).eval()
    return model, info
