"""EM-head design, loss (eq. 8) and parameter groups of the pre-training model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel

from lpbert_core.model.encoders import load_tokenizer
from conftest import make_toy_kg
from lpbert_core.pretrain.pretrain_model import ENCODER_PREFIX, PretrainModel, TokenHead
from lpbert_core.pretrain.pretrain_samples import IGNORE, build_samples, collate
from lpbert_core.runtime.training import build_optimizer

PAPER_PROBS = {"mem_head": 0.4, "mem_tail": 0.4, "mrm": 0.2}


@pytest.fixture(scope="module")
def kg():
    tok = load_tokenizer("minilm")
    entities = {f"e{i}": (f"{w}", f"a {w} of kind {i % 3}") for i, w in
                enumerate(["river", "mountain", "city", "forest", "desert", "island"])}
    relations = {"near": "located near", "part": "is part of"}
    train = [(f"e{i}", "near" if i % 2 else "part", f"e{(i + 1) % 6}") for i in range(6)]
    return make_toy_kg(tok, entities, relations, {"train": train, "dev": train[:2]})


def _model(tiny_encoder_dir, kg, norm="batchnorm", use_mlm=True):
    torch.manual_seed(0)
    return PretrainModel(AutoModel.from_pretrained(tiny_encoder_dir), kg.special.vocab_size, norm, True, use_mlm)


def _batch(kg, variant="mem-mrm-mlm", seed=0):
    samples = build_samples(kg, kg.triples["train"], variant, 32, np.random.default_rng(seed), PAPER_PROBS, 0.5)
    return collate(samples, kg.special.pad)


def test_em_head_is_dense_gelu_batchnorm_decoder_bias():
    head = TokenHead(16, 50, "batchnorm")
    assert isinstance(head.dense, nn.Linear) and head.dense.weight.shape == (16, 16)
    assert isinstance(head.norm, nn.BatchNorm1d)
    assert head.decoder.weight.shape == (50, 16) and head.decoder.bias is None
    assert head.bias.shape == (50,) and (head.bias == 0).all()
    head.eval()
    x = torch.randn(5, 16)
    manual = head.decoder(head.norm(F.gelu(head.dense(x)))) + head.bias
    assert torch.allclose(head(x), manual)
    assert isinstance(TokenHead(16, 50, "layernorm").norm, nn.LayerNorm)
    with pytest.raises(ValueError):
        TokenHead(16, 50, "groupnorm")


def test_batchnorm_sees_only_labelled_positions(tiny_encoder_dir, kg):
    model = _model(tiny_encoder_dir, kg, use_mlm=False)
    model.train()
    batch = _batch(kg, "mem-mrm")
    torch.manual_seed(1)
    model(**batch)
    # recompute the statistics BN should have seen: dense+GELU of the encoder output at EM-labelled tokens only
    torch.manual_seed(1)
    hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"]).last_hidden_state
    x = F.gelu(model.em_head.dense(hidden[batch["em_labels"] != IGNORE]))
    momentum = model.em_head.norm.momentum
    expected = momentum * x.mean(0).detach()  # running_mean starts at 0
    assert torch.allclose(model.em_head.norm.running_mean, expected, atol=1e-5)


def test_loss_is_mlm_plus_mim(tiny_encoder_dir, kg):
    model = _model(tiny_encoder_dir, kg).eval()
    batch = _batch(kg)
    assert (batch["mlm_labels"] != IGNORE).any() and (batch["em_labels"] != IGNORE).any()
    out = model(**batch)
    hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"]).last_hidden_state
    em_where, mlm_where = batch["em_labels"] != IGNORE, batch["mlm_labels"] != IGNORE
    em = F.cross_entropy(model.em_head(hidden[em_where]), batch["em_labels"][em_where])
    mlm = F.cross_entropy(model.mlm_head(hidden[mlm_where]), batch["mlm_labels"][mlm_where])
    assert torch.allclose(out["loss"], em + mlm, atol=1e-5)
    stats = out["stats"]
    em_tokens = sum(int(stats[t]["count"]) for t in ("mem_head", "mem_tail", "mrm"))
    assert em_tokens == int(em_where.sum()) and int(stats["mlm"]["count"]) == int(mlm_where.sum())
    total = sum(float(stats[t]["loss_sum"]) for t in ("mem_head", "mem_tail", "mrm"))
    assert total / em_tokens == pytest.approx(float(em.detach()), rel=1e-5)


def test_single_labelled_token_in_training_mode(tiny_encoder_dir, kg):
    model = _model(tiny_encoder_dir, kg, use_mlm=False).train()
    batch = _batch(kg, "mem-mrm")
    keep = (batch["em_labels"] != IGNORE).nonzero()[0]
    labels = torch.full_like(batch["em_labels"], IGNORE)
    labels[keep[0], keep[1]] = batch["em_labels"][keep[0], keep[1]]
    out = model(**{**batch, "em_labels": labels})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_layernorm_switch_and_two_learning_rates(tiny_encoder_dir, kg):
    model = _model(tiny_encoder_dir, kg, norm="layernorm")
    assert isinstance(model.em_head.norm, nn.LayerNorm)
    opt = build_optimizer(model, ENCODER_PREFIX, 5e-5, 1e-4)
    by_lr = {}
    for group in opt.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    head_ids = {id(p) for n, p in model.named_parameters() if not n.startswith(ENCODER_PREFIX)}
    assert by_lr[5e-5] == encoder_ids and by_lr[1e-4] == head_ids


def test_variant_without_mlm_has_no_mlm_head(tiny_encoder_dir, kg):
    model = _model(tiny_encoder_dir, kg, use_mlm=False)
    assert model.mlm_head is None
    out = model.eval()(**_batch(kg, "mem"))
    assert "mlm" not in out["stats"] and torch.isfinite(out["loss"])


def test_host_label_positions_give_the_boolean_mask_results_bit_for_bit(tiny_encoder_dir, kg):
    """The labelled positions found on the host (no device->host sync per step, issue #26 item 1) gather the same
    tokens in the same order as boolean masks: the loss, its gradient and every per-task sum are bit-identical to the
    boolean-mask computation written out here."""
    from lpbert_core.pretrain.pretrain_samples import TASK_NAMES

    batch = _batch(kg, "mem-mrm-mlm", seed=3)
    assert {"em_index", "mlm_index", "em_bucket_mem_head", "em_bucket_mrm"} <= set(batch)
    model = _model(tiny_encoder_dir, kg)
    model.train()
    torch.manual_seed(5)
    out = model(**batch)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    torch.manual_seed(5)  # the same dropout masks
    plain = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    hidden = model.encoder(**plain).last_hidden_state
    loss, stats = hidden.new_zeros(()), {}
    for head, labels, task in ((model.em_head, batch["em_labels"], batch["task"]),
                               (model.mlm_head, batch["mlm_labels"], None)):
        where = labels != IGNORE
        logits = head(hidden[where]).float()
        token_loss = F.cross_entropy(logits, labels[where], reduction="none")
        loss = loss + token_loss.mean()
        buckets = ({"mlm": torch.ones_like(labels[where], dtype=torch.bool)} if task is None else
                   {name: task[:, None].expand_as(labels)[where] == code
                    for code, name in TASK_NAMES.items() if name != "mlm"})
        for name, sel in buckets.items():
            stats[name] = {"loss_sum": token_loss.detach()[sel].sum(), "count": sel.sum()}
    loss.backward()
    assert torch.equal(out["loss"], loss)
    assert all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters() if n in grads)
    for name, entry in stats.items():
        assert torch.equal(out["stats"][name]["loss_sum"], entry["loss_sum"]), name
        assert torch.equal(out["stats"][name]["count"], entry["count"]), name
