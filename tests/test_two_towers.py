"""Two towers (`finetune.two_towers`, issue #25 item 4; SimKGC's design): a query encoder and an entity encoder, both
initialised from the same weights. Exact logits of a training step, one step makes the towers differ, the run folder
round-trips, both towers train at the encoder LR, gradients of both are averaged over ranks, and `false` keeps the
one-encoder state dict and folder."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import plain_loss
from test_finetune_loop import CFG, _encode, _run, toy_kg

LR_ENCODER, LR_NEW = 5e-5, 1e-3


@pytest.fixture(scope="module")
def setup(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    return toy_kg(tok), tok, tiny_encoder_dir


def _model(enc_dir, two_towers=True, perturb=True):
    """A siamese model in eval mode (no dropout); `perturb`: the query tower moved off the entity tower (a fixed
    generator), so a query encoded by the wrong tower would show."""
    from transformers import AutoModel

    from lpbert_core.model.siamese import SiameseModel

    model = SiameseModel(AutoModel.from_pretrained(enc_dir)).eval()
    if two_towers:
        model.set_two_towers()
        if perturb:
            g = torch.Generator().manual_seed(5)
            with torch.no_grad():
                for p in model.query_encoder.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _by_tower(model, builder, tower, rows=None, entities=None):
    """Hand encoding with one named tower (the shared `encode` pooling on that tower's output)."""
    from lpbert_core.model.sequences import collate_pairs

    pad = builder.kg.special.pad
    if rows is not None:
        batch = collate_pairs([builder.query(int(h), int(r)) for h, r, _ in rows], pad)
    else:
        batch = collate_pairs([(s, [0] * len(s)) for s in (builder.candidate(int(e)) for e in entities)], pad)
    out = tower(**batch)
    hidden, mask = out.last_hidden_state, batch["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).float()  # mean pooling


# ------------------------------------------------------------------ (a) the training step, exact

def test_step_scores_query_tower_queries_against_entity_tower_candidates(setup):
    from lpbert_core.finetune.finetune_data import label_matrix
    from lpbert_core.finetune.finetune_step import encode_batch, training_step
    from lpbert_core.graph.known_answers import train_known_answers
    from lpbert_core.model.sequences import SequenceBuilder

    kg, _, enc_dir = setup
    model = _model(enc_dir)
    builder, known = SequenceBuilder(kg, 16, 16), train_known_answers(kg)
    rows = np.array([[0, 0, 1], [2, 1, 5], [5, 0, 6], [3, 0, 4]])
    cfg = plain_loss(loss="infonce", infonce_temperature=0.1)
    with torch.no_grad():
        qv, cv = encode_batch(model, builder, rows, rows[:, 2], torch.device("cpu"), "fp32")
        q = _by_tower(model, builder, model.query_encoder, rows=rows)
        c = _by_tower(model, builder, model.encoder, entities=rows[:, 2])
        assert torch.allclose(qv, q, atol=1e-6) and torch.allclose(cv, c, atol=1e-6)
        # the towers differ, so the wrong one would show
        assert not torch.allclose(q, _by_tower(model, builder, model.encoder, rows=rows), atol=1e-3)
        got = training_step(model, builder, rows, known, cfg, torch.device("cpu"), "fp32", True)["loss"]
        labels = label_matrix(rows, known)
        cos = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T
        logits = (cos / 0.1).masked_fill((labels > 0.5) & ~torch.eye(4, dtype=torch.bool), -math.inf)
        want = F.cross_entropy(logits, torch.arange(4))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_one_step_moves_the_towers_apart_and_one_tower_stays_one(setup):
    from lpbert_core.runtime.distributed import data_parallel
    from lpbert_core.finetune.finetune_step import FinetuneStep, training_step
    from lpbert_core.graph.known_answers import train_known_answers
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.model.siamese import ENCODER_PREFIXES
    from lpbert_core.runtime.training import build_optimizer, build_scheduler, optimizer_step

    kg, _, enc_dir = setup
    model = _model(enc_dir, perturb=False)
    entity = dict(model.encoder.named_parameters())
    assert all(torch.equal(p, entity[k]) for k, p in model.query_encoder.named_parameters())  # the same start
    assert all(p.data_ptr() != entity[k].data_ptr() for k, p in model.query_encoder.named_parameters())  # not shared
    builder, known = SequenceBuilder(kg, 16, 16), train_known_answers(kg)
    optimizer = build_optimizer(model, ENCODER_PREFIXES, LR_ENCODER, LR_NEW, 0.01)
    step = training_step(model, builder, kg.triples["train"][:8], known, plain_loss(loss="infonce"),
                         torch.device("cpu"), "fp32", True)
    optimizer_step(step["loss"], model, optimizer, build_scheduler(optimizer, 10, 0.0))
    moved = [k for k, p in model.query_encoder.named_parameters() if not torch.equal(p, entity[k])]
    assert "embeddings.word_embeddings.weight" in moved and "encoder.layer.0.attention.self.query.weight" in moved

    one = _model(enc_dir, two_towers=False)
    assert one.query_encoder is None and not one.two_towers
    assert not any(n.startswith("query_encoder") for n, _ in one.named_modules())


# ------------------------------------------------------------------ (b) the run folder

def test_two_tower_folder_round_trips_to_identical_vectors(setup, tmp_path):
    from lpbert_core.ranking.rank_split import encode_entities, encode_queries
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.model.siamese import QUERY_ENCODER_DIR, load_run_model, save_run_model

    kg, tok, enc_dir = setup
    model = _model(enc_dir)
    save_run_model(model, tok, tmp_path, {"max_length": 16})
    info = json.loads((tmp_path / "lpbert_run.json").read_text())
    assert info["two_towers"] is True and info["query_encoder"] == QUERY_ENCODER_DIR
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / QUERY_ENCODER_DIR / "model.safetensors").is_file()
    loaded, _ = load_run_model(tmp_path)
    assert loaded.two_towers
    want, got = model.state_dict(), loaded.state_dict()
    assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)
    builder, dev = SequenceBuilder(kg, 16, 16), torch.device("cpu")
    E = kg.num_entities
    ents = [encode_entities(m, builder, dev, 4) for m in (model, loaded)]
    qs = [encode_queries(m, builder, range(E), [1] * E, dev, 4) for m in (model, loaded)]
    assert torch.equal(*ents) and torch.equal(*qs)
    # evaluation's helpers use the right tower: queries the query tower, entities the entity tower
    with torch.no_grad():
        assert torch.allclose(qs[0], _by_tower(model, builder, model.query_encoder, rows=[(e, 1, 0) for e in range(E)]),
                              atol=1e-5)
        assert torch.allclose(ents[0], _by_tower(model, builder, model.encoder, entities=range(E)), atol=1e-5)


# ------------------------------------------------------------------ (c) the optimizer

def test_both_towers_get_the_encoder_learning_rate_and_its_decay_rules(setup):
    from lpbert_core.model.siamese import ENCODER_PREFIXES
    from lpbert_core.runtime.training import build_optimizer

    model = _model(setup[2])
    optimizer = build_optimizer(model, ENCODER_PREFIXES, LR_ENCODER, LR_NEW, 0.01)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for prefix, module in (("query_encoder.", model.query_encoder), ("encoder.", model.encoder)):
        for name, p in module.named_parameters():
            g = group_of[id(p)]
            assert g["lr"] == LR_ENCODER, prefix + name
            assert g["weight_decay"] == (0.0 if p.ndim < 2 else 0.01), prefix + name
    assert group_of[id(model.prob_scale)]["lr"] == LR_NEW
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


# ------------------------------------------------------------------ (d) false: the model and folder of before

def test_one_tower_keeps_the_state_dict_and_folder(setup, tmp_path):
    from transformers import AutoModel

    from lpbert_core.model.siamese import save_run_model

    kg, tok, enc_dir = setup
    model = _model(enc_dir, two_towers=False)
    encoder_keys = AutoModel.from_pretrained(enc_dir).state_dict().keys()
    assert list(model.state_dict()) == ["prob_scale", "prob_bias", *(f"encoder.{k}" for k in encoder_keys)]
    save_run_model(model, tok, tmp_path, {"max_length": 16})
    assert not any(p.is_dir() for p in tmp_path.iterdir())
    info = json.loads((tmp_path / "lpbert_run.json").read_text())
    assert "two_towers" not in info and "query_encoder" not in info


def test_two_tower_run_records_the_switch_and_resumes_exactly(setup, tmp_path):
    cfg = {**CFG, "loss": "infonce", "two_towers": True}
    _run(setup, tmp_path / "a", cfg=cfg)
    assert _run(setup, tmp_path / "c", cfg=cfg, stop_after=4)["killed"]
    _run(setup, tmp_path / "c", cfg=cfg)
    from lpbert_core.model.siamese import load_run_model

    a, info = load_run_model(tmp_path / "a/model")
    c, _ = load_run_model(tmp_path / "c/model")
    assert info["two_towers"] is True and a.two_towers
    sa, sc = a.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    # trained apart from one start
    entity = dict(a.encoder.named_parameters())
    assert any(not torch.equal(p, entity[k]) for k, p in a.query_encoder.named_parameters())
    _run(setup, tmp_path / "b", cfg={**CFG, "loss": "infonce"})
    one = json.loads((tmp_path / "b/model/lpbert_run.json").read_text())
    assert one["two_towers"] is False and not (tmp_path / "b/model/query_encoder").exists()


# ------------------------------------------------------------------ multi-GPU: both towers' gradients are averaged

def _rank_step(enc_dir: str, out: str, rank: int) -> None:
    from transformers import AutoTokenizer

    from lpbert_core.runtime.distributed import data_parallel
    from lpbert_core.finetune.finetune_step import FinetuneStep, training_step
    from lpbert_core.graph.known_answers import train_known_answers
    from lpbert_core.model.sequences import SequenceBuilder
    from lpbert_core.model.siamese import ENCODER_PREFIXES
    from lpbert_core.runtime.training import build_optimizer, build_scheduler, optimizer_step
    from safetensors.torch import save_file

    kg = toy_kg(AutoTokenizer.from_pretrained(enc_dir))
    model = _model(enc_dir)
    optimizer = build_optimizer(model, ENCODER_PREFIXES, LR_ENCODER, LR_NEW, 0.01)
    step_module = data_parallel(FinetuneStep(model))  # DDP on 2 ranks, as the loop runs it
    step = training_step(step_module, SequenceBuilder(kg, 16, 16), kg.triples["train"][:8], train_known_answers(kg),
                         plain_loss(loss="infonce"), torch.device("cpu"), "fp32", True)
    optimizer_step(step["loss"], step_module, optimizer, build_scheduler(optimizer, 10, 0.0))
    save_file({k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None},
              str(Path(out) / f"grads-rank{rank}.safetensors"))


def _worker(rank: int, size: int, port: int, enc_dir: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        _rank_step(enc_dir, out, rank)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_average_both_towers_gradients(setup, tmp_path):
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    from test_distributed import free_port

    enc_dir = setup[2]
    mp.spawn(_worker, args=(2, free_port(), enc_dir, str(tmp_path)), nprocs=2, join=True)
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    _rank_step(enc_dir, str(single_dir), 0)
    single = load_file(str(single_dir / "grads-rank0.safetensors"))
    ranks = [load_file(str(tmp_path / f"grads-rank{r}.safetensors")) for r in range(2)]
    assert any(k.startswith("query_encoder.") for k in single)
    assert set(ranks[0]) == set(single)
    for k, want in single.items():
        assert torch.equal(ranks[0][k], ranks[1][k]), k  # every rank holds the same (averaged) gradient
        tol = 1e-7 + 1e-4 * want.abs() + 1e-6 * float(want.abs().max())
        assert bool(((ranks[0][k] - want).abs() <= tol).all()), k
