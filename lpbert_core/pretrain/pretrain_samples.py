"""Pre-training samples of LP-BERT (paper section 3.2, eqs. 1-9): MEM-tail, MEM-head, MRM, local MLM.

Every sample follows the paper's eq. 1 layout, with a [SEP] after each element:

    [CLS] head [SEP] relation [SEP] tail [SEP]

(The authors' code drops the two inner [SEP]s and the attention mask; we follow the paper. token_type_ids are all 0.)
Switch `segment_separators=False` (pretrain.segment_separators: false) gives the code's layout instead,
`[CLS] head relation tail [SEP]`, and `collate(..., attention_mask=False, pad_to=max_length)` its missing attention
mask: every sample padded to max_length and every position, padding included, attended.

* MEM-tail (eqs. 2-3): the tail's NAME becomes as many [MASK]s as it has wordpieces; its description is dropped (as the
  authors did: eq. 2 shows only the masked name). The head keeps its full text (name + description). EM labels sit on the
  [MASK]s only; local MLM may touch only the head's tokens.
* MEM-head (eqs. 4-5): the mirror image; local MLM may touch only the tail's tokens.
* MRM (eqs. 6-7): the relation text becomes [MASK]s; both entities keep their full text; local MLM may touch both entities'
  tokens, never the relation.
* Plain MLM (ablation `mlm`): full text of all three elements, BERT MLM over every non-special token, no EM labels.

Truncation to `max_length` never cuts the masked element while anything else can give way: MEM cuts the context entity;
MRM splits the context budget between head and tail as the authors did (a short side is kept whole, otherwise half each).
As a last resort (masked element + relation + 4 specials (2 without inner [SEP]s) > max_length) the masked element is cut at its end; a relation
longer than the whole budget is cut too, keeping room for at least one [MASK].

Task draw (eq. 9): u ~ U[0, 1) per sample, freshly every epoch: MEM-head if u < p_head, MEM-tail if u < p_head + p_tail,
otherwise MRM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lpbert_core.model.sequences import split_context_budget
from lpbert_core.config.settings import PRETRAIN_VARIANTS
from lpbert_core.graph.kg import SpecialIds, TokenizedKG
from lpbert_core.runtime.training import pad_batch

IGNORE = -100  # label value cross-entropy ignores

# Task codes stored with each sample (also the columns of the per-task losses in log.csv).
MEM_HEAD, MEM_TAIL, MRM, MLM_ONLY = 0, 1, 2, 3
TASK_NAMES = {MEM_HEAD: "mem_head", MEM_TAIL: "mem_tail", MRM: "mrm", MLM_ONLY: "mlm"}

# Ablation variants (the {variant} wildcard): which MIM tasks are drawn and whether MLM is added.
VARIANTS = PRETRAIN_VARIANTS
# What local MLM writes over 80% of its picked tokens: the real [MASK] (paper, BERT) or [PAD] (the authors' code).
MLM_MASK_TOKENS = ("mask", "pad")


@dataclass
class Layout:
    """A sample before local MLM: token ids, EM labels and which positions local MLM may touch."""

    input_ids: np.ndarray  # int64 (length,)
    em_labels: np.ndarray  # int64, IGNORE except on the masked element
    mlm_allowed: np.ndarray  # bool, True on the spans the paper lets MLM mask
    task: int


@dataclass
class Sample:
    input_ids: np.ndarray
    em_labels: np.ndarray
    mlm_labels: np.ndarray
    task: int


# ---------------------------------------------------------------- truncation budgets

def _masked_and_relation_budget(masked_len: int, rel_len: int, available: int) -> tuple[int, int]:
    """Lengths kept for (masked element, relation) in a MEM sample when even they do not fit: the relation is kept
    whole if a single [MASK] still fits, and the masked element is cut at its end (last resort)."""
    rel_keep = min(rel_len, max(available - 1, 0))
    masked_keep = min(masked_len, available - rel_keep)
    return masked_keep, rel_keep


def _specials(separators: bool) -> int:
    """Special tokens of one sample: [CLS] + a [SEP] after each of the 3 elements, or [CLS] + one final [SEP]."""
    return 4 if separators else 2


def _assemble(special: SpecialIds, pieces: Sequence[tuple[Sequence[int], str]], task: int,
              separators: bool = True) -> Layout:
    """Join [CLS] p1 [SEP] p2 [SEP] p3 [SEP] (separators=False: [CLS] p1 p2 p3 [SEP], the authors' code); each piece is
    (ids, role) with role 'context' (MLM may touch it), 'masked' (ids are the EM targets, input becomes [MASK]s) or
    'fixed' (left alone)."""
    ids, labels, allowed = [special.cls], [IGNORE], [False]
    for k, (piece, role) in enumerate(pieces):
        n = len(piece)
        if role == "masked":
            ids.extend([special.mask] * n)
            labels.extend(piece)
        else:
            ids.extend(piece)
            labels.extend([IGNORE] * n)
        allowed.extend([role == "context"] * n)
        if not separators and k < len(pieces) - 1:
            continue
        ids.append(special.sep)
        labels.append(IGNORE)
        allowed.append(False)
    return Layout(
        np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64), np.asarray(allowed, dtype=bool), task
    )


# ---------------------------------------------------------------- one function per task

def mem_tail_layout(kg: TokenizedKG, head: int, relation: int, tail: int, max_length: int,
                    separators: bool = True) -> Layout:
    """Eqs. 2-3: [CLS] head text [SEP] relation [SEP] [MASK] x |tail name| [SEP]; labels = tail name."""
    n_special = _specials(separators)
    rel = kg.relation_text_ids[relation]
    target = kg.entity_name_ids[tail]
    context = kg.entity_text_ids[head]
    masked_keep, rel_keep = _masked_and_relation_budget(len(target), len(rel), max_length - n_special)
    context_keep = max(min(len(context), max_length - n_special - rel_keep - masked_keep), 0)
    return _assemble(
        kg.special,
        [(context[:context_keep], "context"), (rel[:rel_keep], "fixed"), (target[:masked_keep], "masked")],
        MEM_TAIL, separators,
    )


def mem_head_layout(kg: TokenizedKG, head: int, relation: int, tail: int, max_length: int,
                    separators: bool = True) -> Layout:
    """Eqs. 4-5: [CLS] [MASK] x |head name| [SEP] relation [SEP] tail text [SEP]; labels = head name."""
    n_special = _specials(separators)
    rel = kg.relation_text_ids[relation]
    target = kg.entity_name_ids[head]
    context = kg.entity_text_ids[tail]
    masked_keep, rel_keep = _masked_and_relation_budget(len(target), len(rel), max_length - n_special)
    context_keep = max(min(len(context), max_length - n_special - rel_keep - masked_keep), 0)
    return _assemble(
        kg.special,
        [(target[:masked_keep], "masked"), (rel[:rel_keep], "fixed"), (context[:context_keep], "context")],
        MEM_HEAD, separators,
    )


def mrm_layout(kg: TokenizedKG, head: int, relation: int, tail: int, max_length: int,
               separators: bool = True) -> Layout:
    """Eqs. 6-7: [CLS] head text [SEP] [MASK] x |relation| [SEP] tail text [SEP]; labels = relation text."""
    n_special = _specials(separators)
    target = kg.relation_text_ids[relation]
    head_text, tail_text = kg.entity_text_ids[head], kg.entity_text_ids[tail]
    masked_keep = min(len(target), max_length - n_special)
    head_keep, tail_keep = split_context_budget(len(head_text), len(tail_text), max_length - n_special - masked_keep)
    return _assemble(
        kg.special,
        [(head_text[:head_keep], "context"), (target[:masked_keep], "masked"), (tail_text[:tail_keep], "context")],
        MRM, separators,
    )


def plain_mlm_layout(kg: TokenizedKG, head: int, relation: int, tail: int, max_length: int,
                     separators: bool = True) -> Layout:
    """Ablation `mlm`: the whole triple text, every non-special token open to BERT MLM, no EM labels.
    Truncation as in MRM (the relation is kept, head and tail share the rest)."""
    n_special = _specials(separators)
    rel = kg.relation_text_ids[relation]
    head_text, tail_text = kg.entity_text_ids[head], kg.entity_text_ids[tail]
    rel_keep = min(len(rel), max_length - n_special)
    head_keep, tail_keep = split_context_budget(len(head_text), len(tail_text), max_length - n_special - rel_keep)
    return _assemble(
        kg.special,
        [(head_text[:head_keep], "context"), (rel[:rel_keep], "context"), (tail_text[:tail_keep], "context")],
        MLM_ONLY, separators,
    )


LAYOUTS = {MEM_HEAD: mem_head_layout, MEM_TAIL: mem_tail_layout, MRM: mrm_layout, MLM_ONLY: plain_mlm_layout}


# ---------------------------------------------------------------- local MLM and the task draw

def apply_local_mlm(
    layout: Layout,
    rng: np.random.Generator,
    special: SpecialIds,
    probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    mask_token: str = "mask",
) -> Sample:
    """BERT's corruption restricted to `layout.mlm_allowed`: each allowed token is picked with `probability`; a picked
    token becomes [MASK] (80%), a random token (10%) or stays (10%); its label is the original id.

    The replacement is the real [MASK] id; `mask_token="pad"` (pretrain.mlm_mask_token: pad) gives the authors' code,
    which wrote id 0 = [PAD] instead (a bug; the MEM/MRM [MASK]s stay real either way). Random replacements are drawn
    uniformly from the vocabulary minus the special tokens and minus the original token."""
    if mask_token not in MLM_MASK_TOKENS:
        raise ValueError(f"mlm_mask_token must be one of {MLM_MASK_TOKENS}, got {mask_token!r}")
    replacement = special.mask if mask_token == "mask" else special.pad
    ids = layout.input_ids.copy()
    labels = np.full_like(ids, IGNORE)
    if probability > 0:
        u = rng.random(len(ids))
        picked = layout.mlm_allowed & (u < probability)
        idx = np.flatnonzero(picked)
        labels[idx] = ids[idx]
        action = rng.random(len(idx))
        to_mask = idx[action < mask_fraction]
        to_random = idx[(action >= mask_fraction) & (action < mask_fraction + random_fraction)]
        ids[to_mask] = replacement
        for i in to_random:
            ids[i] = _random_token(rng, special, int(ids[i]))
    return Sample(ids, layout.em_labels, labels, layout.task)


def _random_token(rng: np.random.Generator, special: SpecialIds, original: int) -> int:
    excluded = {special.cls, special.sep, special.mask, special.pad, original}
    while True:
        token = int(rng.integers(0, special.vocab_size))
        if token not in excluded:
            return token


def draw_tasks(n: int, probabilities: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Eq. 9: u ~ U[0,1) per sample; MEM-head if u < p0, MEM-tail if u < p0 + p1, else MRM."""
    p_head, p_tail, _ = probabilities
    u = rng.random(n)
    return np.where(u < p_head, MEM_HEAD, np.where(u < p_head + p_tail, MEM_TAIL, MRM)).astype(np.int64)


def variant_plan(variant: str, task_probabilities: dict) -> tuple[tuple[float, float, float] | None, bool]:
    """(MIM task probabilities or None, whether local/plain MLM is used) for an ablation variant.

    `mem` keeps MEM-head and MEM-tail at the configured ratio without MRM (0.5/0.5 with the paper's 0.4/0.4)."""
    ph, pt, pr = (float(task_probabilities[k]) for k in ("mem_head", "mem_tail", "mrm"))
    if variant == "mlm":
        return None, True
    if variant == "mem":
        return (ph / (ph + pt), pt / (ph + pt), 0.0), False
    if variant == "mem-mrm":
        return (ph, pt, pr), False
    if variant == "mem-mrm-mlm":
        return (ph, pt, pr), True
    raise ValueError(f"pre-training variant {variant!r} has no samples (expected one of {VARIANTS[1:]})")


def build_samples(
    kg: TokenizedKG,
    triples: np.ndarray,
    variant: str,
    max_length: int,
    rng: np.random.Generator,
    task_probabilities: dict,
    mlm_probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    mlm_mask_token: str = "mask",
    segment_separators: bool = True,
) -> list[Sample]:
    """All samples of one pass over `triples`: draw a task per triple (eq. 9), lay it out, apply local MLM.
    `mlm_mask_token` / `segment_separators`: the authors'-code switches (apply_local_mlm, _assemble)."""
    probs, use_mlm = variant_plan(variant, task_probabilities)
    tasks = draw_tasks(len(triples), probs, rng) if probs else np.full(len(triples), MLM_ONLY, dtype=np.int64)
    mlm_p = mlm_probability if use_mlm else 0.0
    samples = []
    for (h, r, t), task in zip(triples.tolist(), tasks.tolist()):
        layout = LAYOUTS[task](kg, h, r, t, max_length, segment_separators)
        samples.append(apply_local_mlm(layout, rng, kg.special, mlm_p, mask_fraction, random_fraction, mlm_mask_token))
    return samples


def collate(samples: Sequence[Sample], pad_id: int, attention_mask: bool = True,
            pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest sample of the batch; attention mask 1 on real tokens, token types all 0.

    `attention_mask=False` (the authors' code, which passed none): every sample padded to `pad_to` (their fixed L) and
    the mask all ones, so padding is attended exactly as there (dynamic padding would make it batch-dependent)."""
    input_ids = pad_batch([s.input_ids for s in samples], pad_id)
    if not attention_mask:
        width = max(int(pad_to or 0), input_ids.shape[1])
        if width > input_ids.shape[1]:
            extra = torch.full((input_ids.shape[0], width - input_ids.shape[1]), pad_id, dtype=input_ids.dtype)
            input_ids = torch.cat([input_ids, extra], dim=1)
        return _batch(samples, input_ids, torch.ones_like(input_ids), pad_id)
    lengths = torch.tensor([len(s.input_ids) for s in samples])
    mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    return _batch(samples, input_ids, mask, pad_id)


def _batch(samples, input_ids, attention_mask, pad_id) -> dict[str, torch.Tensor]:
    width = input_ids.shape[1]

    def labels(rows):
        out = pad_batch(rows, pad_id, labels=True)
        return torch.nn.functional.pad(out, (0, width - out.shape[1]), value=IGNORE)

    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "em_labels": labels([s.em_labels for s in samples]),
        "mlm_labels": labels([s.mlm_labels for s in samples]),
        "task": torch.tensor([s.task for s in samples], dtype=torch.long),
    }
    return with_label_positions(batch)


def with_label_positions(batch: dict) -> dict:
    """The labelled positions of each head, found on the host (in the batch loader) so the device step never waits
    for them: `em_index` / `mlm_index` (flat positions into the (batch x length) tokens, row-major: the order of
    boolean-mask indexing) and, for the EM head, each task's positions among its labelled tokens
    (`em_bucket_<task>`). The model gathers with them instead of boolean masks, whose output size needs a host
    synchronisation per step on a GPU; the values and their order are the same (bit-identical losses and sums).
    Call again after changing a batch's labels."""
    em = (batch["em_labels"] != IGNORE).reshape(-1)
    em_index = torch.nonzero(em).reshape(-1)
    token_task = batch["task"][:, None].expand_as(batch["em_labels"]).reshape(-1)[em_index]
    batch["em_index"] = em_index
    for code, name in TASK_NAMES.items():
        if name != "mlm":
            batch[f"em_bucket_{name}"] = torch.nonzero(token_task == code).reshape(-1)
    batch["mlm_index"] = torch.nonzero((batch["mlm_labels"] != IGNORE).reshape(-1)).reshape(-1)
    return batch
