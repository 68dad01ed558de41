"""The pre-training model: a BERT-family encoder plus the paper's EM-head (MEM and MRM) and an MLM head.

EM-head (paper section 3.2): p = BN(GeLU(MLP(x))) + bias, i.e. Linear(h, h) -> GELU -> BatchNorm1d(h) -> Linear(h, vocab)
with a separate vocabulary bias. `norm="layernorm"` gives the authors' head instead (LayerNorm, eps 1e-12).
The MLM head has the same design with LayerNorm (BERT's standard transform).

Both heads run only on the labelled positions, gathered first: BatchNorm statistics over padding and unlabelled
context would be meaningless, and projecting every position to a 30k vocabulary wastes most of the compute.
Both heads are new, untied and randomly initialised (N(0, initializer_range), zero biases), as in the authors' code
(no head is loaded from a pre-trained MLM checkpoint).

Loss (eq. 8): L = L_MLM + L_MIM; each term is the mean cross-entropy over its labelled tokens in the batch (tasks mix
within a batch; L_MIM is whichever of MEM-h / MEM-t / MRM each sample drew, eq. 9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lpbert_core.pretrain.pretrain_samples import IGNORE, TASK_NAMES

ENCODER_PREFIX = "encoder."  # parameter names of the pre-trained encoder (lr_encoder); everything else is new (lr_new)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose batch is the GLOBAL batch of a multi-GPU job: in training, with K > 1 ranks, the mean and
    variance are taken over every rank's rows (two differentiable all-reduces, distributed.sum_with_grad), so the
    output, its gradient and the running statistics are those of one device with the whole batch, identical on every
    rank. With fewer than 2 rows in the whole batch it normalises with the running statistics (as TokenHead does in
    one process). In one process, and in eval mode, it is nn.BatchNorm1d exactly (same state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lpbert_core.runtime import distributed

        if not self.training or distributed.world().size == 1:
            return super().forward(x)
        xf = x.float()
        sums = distributed.sum_with_grad(torch.cat([xf.sum(0), xf.new_full((1,), float(x.shape[0]))]))
        count = sums[-1].detach()
        mean = sums[:-1] / count.clamp_min(1.0)
        squares = distributed.sum_with_grad(((xf - mean) ** 2).sum(0))
        var = squares / count.clamp_min(1.0)
        enough = count >= 2  # a tensor, not a branch: no host synchronisation
        batch = (xf - mean) * torch.rsqrt(var + self.eps)
        running = (xf - self.running_mean) * torch.rsqrt(self.running_var + self.eps)
        out = torch.where(enough, batch, running) * self.weight + self.bias
        with torch.no_grad():  # nn.BatchNorm1d's update: momentum average, the unbiased variance
            m = self.momentum
            unbiased = var.detach() * count / (count - 1).clamp_min(1.0)
            self.running_mean.copy_(torch.where(enough, (1 - m) * self.running_mean + m * mean.detach(),
                                                self.running_mean))
            self.running_var.copy_(torch.where(enough, (1 - m) * self.running_var + m * unbiased, self.running_var))
            self.num_batches_tracked.add_(enough.long())
        return out.to(x.dtype)


class TokenHead(nn.Module):
    """dense -> GELU -> norm -> vocabulary decoder + bias, applied to a (tokens, hidden) matrix."""

    def __init__(self, hidden: int, vocab_size: int, norm: str = "batchnorm", init_std: float = 0.02):
        super().__init__()
        if norm not in ("batchnorm", "layernorm"):
            raise ValueError(f"em_head_norm must be 'batchnorm' or 'layernorm', not {norm!r}")
        self.dense = nn.Linear(hidden, hidden)
        self.norm = GlobalBatchNorm1d(hidden) if norm == "batchnorm" else nn.LayerNorm(hidden, eps=1e-12)
        self.decoder = nn.Linear(hidden, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        for layer in (self.dense, self.decoder):
            nn.init.normal_(layer.weight, std=init_std)
        nn.init.zeros_(self.dense.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.dense(x))
        x = self._normalise(x)
        return self.decoder(x) + self.bias

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm cannot estimate batch statistics from one token; fall back to its running statistics then (with
        # several ranks GlobalBatchNorm1d decides on the global batch's count).
        from lpbert_core.runtime import distributed

        if isinstance(self.norm, nn.BatchNorm1d) and self.training and x.shape[0] < 2 and distributed.world().size == 1:
            return F.batch_norm(
                x, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias, False, 0.0,
                self.norm.eps,
            )
        return self.norm(x)


class PretrainModel(nn.Module):
    def __init__(self, encoder: nn.Module, vocab_size: int, em_head_norm: str = "batchnorm",
                 use_em: bool = True, use_mlm: bool = True):
        super().__init__()
        from lpbert_core.model.encoders import uses_token_types

        self.encoder = encoder
        self.token_types = uses_token_types(encoder)
        hidden = encoder.config.hidden_size
        std = getattr(encoder.config, "initializer_range", 0.02)
        # Only the heads a variant trains exist, so no parameter sits in the optimizer without a gradient.
        self.em_head = TokenHead(hidden, vocab_size, em_head_norm, std) if use_em else None
        self.mlm_head = TokenHead(hidden, vocab_size, "layernorm", std) if use_mlm else None

    def forward(self, input_ids, attention_mask, token_type_ids, em_labels, mlm_labels, task,
                global_heads: dict | None = None, **positions) -> dict:
        """`global_heads` (multi-GPU steps): which heads have labelled tokens anywhere in the GLOBAL batch
        ({"em": bool, "mlm": bool}); those run on every rank, even on none of its rows, so their BatchNorm collectives
        and gradients line up across ranks, and the others on none (no gradient, as in one process).
        `positions`: the labelled positions found on the host (pretrain_samples.with_label_positions: em_index,
        em_bucket_<task>, mlm_index); without them the labels are read on the device (a host sync per step)."""
        types = {"token_type_ids": token_type_ids} if self.token_types else {}  # MPNet takes none
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **types).last_hidden_state
        out: dict = {"stats": {}, "head_losses": {}}  # head_losses: each term of eq. 8 (multi-GPU weighting)
        loss = hidden.new_zeros((), dtype=torch.float32)
        if self.em_head is not None:
            em_loss = self._head_loss(self.em_head, hidden, em_labels, task, out["stats"], with_accuracy=True,
                                      run=None if global_heads is None else global_heads["em"],
                                      positions=_head_positions(positions, "em"))
            if em_loss is not None:
                loss = loss + em_loss
                out["head_losses"]["em"] = em_loss
        if self.mlm_head is not None:
            mlm_loss = self._head_loss(self.mlm_head, hidden, mlm_labels, None, out["stats"], with_accuracy=False,
                                       run=None if global_heads is None else global_heads["mlm"],
                                       positions=_head_positions(positions, "mlm"))
            if mlm_loss is not None:
                loss = loss + mlm_loss
                out["head_losses"]["mlm"] = mlm_loss
        out["loss"] = loss
        return out

    @staticmethod
    def _head_loss(head, hidden, labels, task, stats: dict, with_accuracy: bool, run: bool | None = None,
                   positions: tuple | None = None):
        """Mean CE over the labelled tokens; per-task token sums/counts (and correct counts) go into `stats`
        as detached tensors, so the loop can aggregate them without a host sync per batch. `run` (multi-GPU): the
        global batch's decision whether the head runs (None: this batch's own labels decide). `positions` (index,
        {task: positions among the labelled tokens}): found on the host, so nothing here waits for the device."""
        if positions is None:  # found here: boolean masks, whose sizes the host must read from the device
            where = labels != IGNORE
            if not (bool(where.any()) if run is None else run):
                return None
            index = torch.nonzero(where.reshape(-1)).reshape(-1)
            if task is None:
                buckets = None
            else:
                token_task = task[:, None].expand_as(labels).reshape(-1)[index]
                buckets = {name: torch.nonzero(token_task == code).reshape(-1)
                           for code, name in TASK_NAMES.items() if name != "mlm"}
        else:
            index, buckets = positions
            if not (index.numel() > 0 if run is None else run):  # a shape: known on the host
                return None
        # gathers by index: the same values in the same order as boolean-mask indexing, with sizes known in advance
        logits = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)).float()
        targets = labels.reshape(-1).index_select(0, index)
        token_loss = F.cross_entropy(logits, targets, reduction="none")
        if token_loss.numel() == 0:  # a rank without labelled tokens of a head the global batch trains
            return token_loss.sum()  # 0, with a graph to every head parameter (the mean of nothing is NaN)
        correct = logits.argmax(-1) == targets if with_accuracy else None
        detached = token_loss.detach()
        for name, sel in (buckets or {"mlm": None}).items():  # the MLM head: one bucket, every labelled token
            entry = stats.setdefault(name, {})
            entry["loss_sum"] = (detached if sel is None else detached.index_select(0, sel)).sum()
            # filled on the device (new_tensor would copy a host scalar: a blocking copy on CUDA)
            entry["count"] = torch.full((), detached.numel() if sel is None else sel.numel(), dtype=torch.long,
                                        device=detached.device)
            if correct is not None:
                entry["correct"] = (correct if sel is None else correct.index_select(0, sel)).sum()
        return token_loss.mean()


def _head_positions(positions: dict, head: str) -> tuple | None:
    """(index, {task: positions}) of one head from the batch's host-made positions; None when the batch has none."""
    index = positions.get(f"{head}_index")
    if index is None:
        return None
    buckets = {key.removeprefix("em_bucket_"): value for key, value in positions.items()
               if key.startswith("em_bucket_")} if head == "em" else None
    return index, buckets
