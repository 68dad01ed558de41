"""Mined negatives (`finetune.mined_negatives`, issue #25; lpbert_core/finetune/mined_negatives.py): the bank only
chooses each row's hardest non-answers, which are encoded fresh. Mining leaves out known answers and batch tails but
not the anchor; the step's loss equals InfoNCE over [in-batch | mined] by hand, with the bank's stale vectors nowhere
in it; a run resumes exactly; settings refuse it without a bank and on several GPUs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_finetune_loop import CFG, _encode, _run, _weights, toy_kg
from test_proxy_training import bank_step_setup


@pytest.fixture(scope="module")
def setup(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    return toy_kg(tok), tok, tiny_encoder_dir


def test_mining_takes_the_top_valid_entities_and_may_take_the_anchor():
    from lpbert_core.finetune.mined_negatives import NegativeMiner

    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0], [0.7, 0.7]]), dim=-1)
    qv = torch.tensor([[1.0, 0.05], [0.0, 1.0]])
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[0, 1] = False  # entity 1 answers row 0
    valid[:, 3] = False  # entity 3 is one of the batch's tails
    mined = NegativeMiner(table=None, k=2).mine(qv, bank, valid)
    assert mined[0].tolist() == [0, 2]  # entity 0 (say row 0's anchor) is mined: it outranks every valid entity
    assert mined[1].tolist() == [4, 2]  # row 1's nearest valid ones (3 is a tail, left out)


def test_mined_columns_exact_logits(setup):
    """One step with k = 1: the loss is InfoNCE over the in-batch tails and the mined entities, their vectors encoded
    fresh (the bank is perturbed: a stale vector in the loss would show), each mined entity labelled for every row."""
    from lpbert_core.finetune.finetune_step import FinetuneStep, token_table
    from lpbert_core.finetune.mined_negatives import NegativeMiner

    kg, model, builder, known, cfg, rows, bank, prepared = bank_step_setup(setup)
    bank.vectors = bank.vectors + 0.3 * torch.randn(bank.vectors.shape, generator=torch.Generator().manual_seed(1))
    step = FinetuneStep(model, NegativeMiner(token_table(builder), 1))
    got = step(prepared, cfg, torch.device("cpu"), "fp32", True, None, bank.vectors)["loss"]

    q = F.normalize(_encode(model, builder, rows=rows), dim=-1)
    t = F.normalize(_encode(model, builder, entities=rows[:, 2]), dim=-1)
    stale = F.normalize(bank.vectors, dim=-1)
    mined = []
    for i, (h, r, tail) in enumerate(rows):  # the miner's choice, by hand: the top stale cosine among valid entities
        ok = [x for x in range(kg.num_entities) if x not in rows[:, 2] and not known.contains(h, r, x)]
        mined.append(max(ok, key=lambda x: float(q[i] @ stale[x])))
    m = F.normalize(_encode(model, builder, entities=mined), dim=-1)  # fresh vectors
    losses = []
    for i, (h, r, tail) in enumerate(rows):
        logits = [float(q[i] @ t[i]) / 0.1]
        logits += [float(q[i] @ t[j]) / 0.1 for j in range(len(rows))
                   if j != i and not known.contains(h, r, rows[j, 2])]
        logits += [float(q[i] @ m[j]) / 0.1 for j in range(len(rows)) if not known.contains(h, r, mined[j])]
        losses.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))
    assert got.item() == pytest.approx(np.mean(losses), rel=1e-4)


def test_mined_run_resumes_to_the_same_result(setup, tmp_path):
    cfg = {**CFG, "loss": "infonce", "entity_bank": 2, "mined_negatives": 1, "checkpoint_every_steps": 1,
           "self_negatives": True}
    assert _run(setup, tmp_path / "a", cfg=cfg)["info"]["mined_negatives"] == 1
    assert _run(setup, tmp_path / "c", cfg=cfg, stop_after=3)["killed"]
    _run(setup, tmp_path / "c", cfg=cfg)
    wa, wc = _weights(tmp_path / "a/model"), _weights(tmp_path / "c/model")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_settings_refuse_mining_without_a_bank_and_on_several_gpus():
    from lpbert_core.config.load import load_config, merge
    from lpbert_core.config.resolve import JobSettings
    from lpbert_core.config.settings import FinetuneSettings
    from lpbert_core.errors import ConfigError
    from conftest import REPO, paper_section

    with pytest.raises(ConfigError, match="mined_negatives mines from the entity bank"):
        FinetuneSettings.from_mapping(paper_section("finetune", mined_negatives=1))
    config = merge(load_config([REPO / "config.yaml"]), {
        "gpus_per_job": 2, "runs": {"mined": {"model": "lpbert", "pretrain": "none", "in_batch_negatives": True,
                                              "finetune": {"loss": "infonce", "entity_bank": 10,
                                                           "mined_negatives": 1}}}})
    with pytest.raises(ConfigError, match="mined_negatives runs in one process"):
        JobSettings(config).finetune_params("umls", "mined")
