"""The authors'-code reading as switches (configs/authors-code.yaml): the pair_linear scorer (matmul identity, a
training step, save / reload / score), the raw-score focal loss of their code, in-batch labels from held-out splits
(leak flags), model selection on the dev loss, StAR-style head ranking."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import paper_section, plain_loss
from lpbert_core.finetune.finetune_data import split_rows
from lpbert_core.graph.known_answers import known_answers, label_leak, train_known_answers
from lpbert_core.model.sequences import SequenceBuilder
from lpbert_core.finetune.finetune_loss import batch_loss, focal_terms
from lpbert_core.ranking.filtered_ranks import build_filter_index, filtered_ranks
from lpbert_core.ranking.rank_split import build_queries, encode_entities, encode_queries, evaluate_split
from lpbert_core.model.siamese import PAIR_SCORER_FILE, PairLinear, SiameseModel, load_run_model, save_run_model

from test_finetune_loop import CFG, toy_kg

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ pair_linear scorer

def test_pair_linear_matrix_equals_the_direct_per_pair_computation():
    torch.manual_seed(0)
    head = PairLinear(6).eval()
    u, v = torch.randn(5, 6), torch.randn(7, 6)
    got = head.matrix(u, v)
    w, b = head.linear.weight[0], head.linear.bias[0]
    want = torch.stack([torch.stack([torch.cat([u[i], v[j], u[i] - v[j], u[i] * v[j]]) @ w + b for j in range(7)])
                        for i in range(5)])
    assert got.shape == (5, 7)
    assert torch.allclose(got, want, atol=1e-5)
    # the aligned-pair form and the training-mode (per-pair features) form agree with it when dropout is off
    assert torch.allclose(head.pairs(u[:5], v[:5]), want.diagonal(), atol=1e-5)
    head.train()
    head.dropout.p = 0.0
    assert torch.allclose(head.matrix(u, v), want, atol=1e-5)
    # with dropout in training mode each pair gets its own mask: scores differ from the eval ones
    head.dropout.p = 0.5
    assert not torch.allclose(head.matrix(u, v), want, atol=1e-3)


def test_raw_focal_is_the_authors_formula_for_any_score():
    """p = s (y = 1) / 1 - s (y = 0), a = alpha / 1 - alpha, -a (1 - p)^2 log(clip(p, 1e-4, 1 - 1e-4)), the clip
    inside the log only; pair_linear scores leave [-1, 1] (s = 1.5 for a positive: (1 - p)^2 = 0.25, not 0)."""
    cfg = plain_loss(probability="raw", alpha=0.8, gamma=2.0)
    s = torch.tensor([-0.5, 0.3, 1.5, -0.7, 0.4, 1.2])
    y = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    got = focal_terms(s, y, cfg)

    def authors(score, label):
        p = score if label else 1.0 - score
        a = 0.8 if label else 0.2
        return -a * (1.0 - p) ** 2 * math.log(min(max(p, 1e-4), 1 - 1e-4))

    assert got.tolist() == pytest.approx([authors(a, b) for a, b in zip(s.tolist(), y.tolist())], rel=2e-4)
    # the same float32 operations as their code (p_t, then the clip inside the log)
    p = torch.where(y > 0.5, s, 1.0 - s)
    a = torch.where(y > 0.5, torch.tensor(0.8), torch.tensor(0.2))
    assert torch.allclose(got, -a * (1.0 - p) ** 2 * torch.log(p.clamp(1e-4, 1 - 1e-4)), rtol=1e-6, atol=0)


def test_batch_loss_uses_the_pair_scorer():
    torch.manual_seed(1)
    enc_like = type("Enc", (), {})()
    head = PairLinear(8).eval()
    enc_like.score_matrix = head.matrix
    enc_like.score_pairs = head.pairs
    q, c = torch.randn(4, 8), torch.randn(4, 8)
    cfg = plain_loss(probability="raw", distance="batch_sum")
    got = batch_loss(q, c, torch.eye(4), cfg, scorer=enc_like)
    want = focal_terms(head.matrix(q, c), torch.eye(4), cfg).mean()
    assert got["focal"].item() == pytest.approx(want.item(), rel=1e-6)
    # infonce: the pair score as logit over the temperature
    cfg = plain_loss(loss="infonce", infonce_temperature=0.5)
    got = batch_loss(q, c, torch.eye(4), cfg, scorer=enc_like)["loss"]
    want = torch.nn.functional.cross_entropy(head.matrix(q, c) / 0.5, torch.arange(4))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


# ------------------------------------------------------------------ label splits

@pytest.fixture(scope="module")
def setup(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    return toy_kg(tok), tok, tiny_encoder_dir


def test_label_splits_known_answers_and_leak_sentence(setup):
    kg = setup[0]
    dev, test = kg.triples["dev"][0], kg.triples["test"][0]
    default = known_answers(kg, ["train"])
    assert np.array_equal(default.keys, train_known_answers(kg).keys)
    assert not default.contains(*dev) and not default.contains(*test)
    leaky = known_answers(kg, ["train", "dev", "test"])
    assert leaky.contains(*dev) and leaky.contains(*test)
    R = kg.num_relations  # the inverse rows of held-out triples are known too (the authors' doubled splits)
    assert leaky.contains(test[2], test[1] + R, test[0])
    assert label_leak(["train"]) is None and "test" in label_leak(["train", "dev", "test"])
    for bad in (["dev", "test"], ["train", "valid"]):
        with pytest.raises(ValueError, match="label_splits"):
            known_answers(kg, bad)
    rows = split_rows(kg, "dev", True)
    assert len(rows) == 2 * len(kg.triples["dev"])


# ------------------------------------------------------------------ a run with every authors' switch

AUTHORS = {"scorer": "pair_linear", "probability": "raw", "distance": "batch_sum", "label_splits": ["train", "dev", "test"],
           "selection": "dev_loss", "warmup_fraction": 0.0, "adam_betas": [0.9, 0.98], "adam_eps": 1e-6,
           "pooling": "pooler", "epochs": 3, "early_stop_patience": 5}


@pytest.fixture(scope="module")
def authors_run(setup, tmp_path_factory):
    from transformers import AutoModel

    from lpbert_core.finetune.finetune_loop import finetune

    kg, tok, enc_dir = setup
    tmp = tmp_path_factory.mktemp("authors_run")
    res = finetune(kg, AutoModel.from_pretrained(enc_dir), tok, {**CFG, **AUTHORS}, tmp / "model", tmp / "log.csv",
                   tmp / "ckpt", torch.device("cpu"), {"dataset": "toy"}, log=lambda m: None,
                   head_ranking="relation_candidates")
    return res, tmp


def test_authors_switches_train_and_are_recorded(authors_run):
    res, tmp = authors_run
    assert not res["killed"]
    info = json.loads((tmp / "model/lpbert_run.json").read_text())
    assert info["scorer"] == "pair_linear" and info["selection"] == "dev_loss"
    assert info["leaky"] is True and "test" in info["leak"] and info["label_splits"] == ["train", "dev", "test"]
    assert info["dev_head_ranking"] == "relation_candidates"
    assert (tmp / "model" / PAIR_SCORER_FILE).exists()
    log = pd.read_csv(tmp / "log.csv")
    assert log["loss"].notna().all() and log["dev_loss"].notna().all()
    # selection on the dev loss: the best epoch is the lowest dev loss
    assert info["best_epoch"] == int(log.loc[log["dev_loss"].idxmin(), "epoch"])
    assert info["best_dev_loss"] == pytest.approx(log["dev_loss"].min())


def test_dev_loss_selection_early_stops(setup, tmp_path, monkeypatch):
    """Patience applies to the dev loss: rising dev losses stop the run after `early_stop_patience` epochs."""
    import lpbert_core.finetune.finetune_loop as loop
    from transformers import AutoModel

    kg, tok, enc_dir = setup
    losses = iter([1.0, 0.5, 0.7, 0.8, 0.9])
    from lpbert_core.finetune import dev_point

    monkeypatch.setattr(dev_point, "dev_in_batch_loss", lambda *a, **k: next(losses))
    res = loop.finetune(kg, AutoModel.from_pretrained(enc_dir), tok,
                        {**CFG, "epochs": 5, "selection": "dev_loss", "early_stop_patience": 2}, tmp_path / "model",
                        tmp_path / "log.csv", tmp_path / "ckpt", torch.device("cpu"), {"dataset": "toy"},
                        log=lambda m: None, head_ranking="inverse_query")
    assert res["info"]["best_epoch"] == 2 and res["progress"]["epoch"] == 4


def test_saved_pair_linear_run_reloads_and_scores_identically(setup, tmp_path):
    from transformers import AutoModel

    kg, tok, enc_dir = setup
    torch.manual_seed(5)
    model = SiameseModel(AutoModel.from_pretrained(enc_dir), "mean", scorer="pair_linear").eval()
    with torch.no_grad():
        model.pair_head.linear.bias.fill_(0.25)
    save_run_model(model, tok, tmp_path, {"max_length": 16})
    loaded, info = load_run_model(tmp_path)
    assert info["scorer"] == "pair_linear" and loaded.pair_head is not None
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    b = SequenceBuilder(kg, 16, 16)
    for head_ranking in ("inverse_query", "relation_candidates"):
        a = evaluate_split(model, kg, b, "train", torch.device("cpu"), batch_size=4, chunk_size=3,
                           precision="fp32", head_ranking=head_ranking)[0]
        c = evaluate_split(loaded, kg, b, "train", torch.device("cpu"), batch_size=4, chunk_size=3,
                           precision="fp32", head_ranking=head_ranking)[0]
        pd.testing.assert_frame_equal(a, c)


def test_score_rule_and_predictor_on_the_authors_run(authors_run, setup, tmp_path, kg_layout_writer):
    """metrics.json says leaky, the head ranking and the scorer; the predictor replays the ranks."""
    from lpbert_core.evaluate.predict import LinkPredictor
    from lpbert_core.evaluate.scoring import run_score

    res, tmp = authors_run
    kg, tok, _ = setup
    # the pipeline layout the predictor and the score rule read (text + tokens tables)
    text, tokens = kg_layout_writer(kg, tok, tmp_path / "toy")
    out = run_score(settings=paper_section("score", batch_size=4, chunk_size=3, head_ranking="relation_candidates"),
                    inputs={"model": tmp / "model", "triples": text / "triples.parquet",
                            "manifest": tokens / "manifest.json"},
                    outputs={"ranks": tmp_path / "ranks.parquet", "metrics": tmp_path / "metrics.json"},
                    log=lambda m: None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["leaky"] is True and "test" in saved["leak"]
    assert saved["head_ranking"] == "relation_candidates" and saved["scorer"] == "pair_linear"
    assert saved["head_direction_trained"] is True and "StAR" in saved["protocol"]
    assert out["metrics"] == saved["metrics"]
    lp = LinkPredictor.from_run(tmp / "model", text, tokens)
    lp.score_settings = saved["settings"]
    frame, metrics = lp.evaluate("test")
    pd.testing.assert_frame_equal(frame, pd.read_parquet(tmp_path / "ranks.parquet"))
    # top-k head prediction follows relation_candidates: the predictor's best score is the rank-1 score
    t = kg.entity_ids[kg.triples["test"][0][2]]
    r = kg.relation_ids[kg.triples["test"][0][1]]
    top = lp.top_k(relation=r, tail=t, k=3)
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"] >= top[2]["score"]


# ------------------------------------------------------------------ StAR-style head ranking

@pytest.mark.parametrize("scorer", ["cosine", "pair_linear"])
def test_relation_candidates_head_ranks_by_brute_force(setup, scorer):
    from transformers import AutoModel

    kg, _, enc_dir = setup
    torch.manual_seed(7)
    model = SiameseModel(AutoModel.from_pretrained(enc_dir), "mean", scorer=scorer).eval()
    b = SequenceBuilder(kg, 16, 16)
    dev = torch.device("cpu")
    frame, _, _ = evaluate_split(model, kg, b, "train", dev, batch_size=4, chunk_size=3, precision="fp32",
                                 head_ranking="relation_candidates")
    plain, _, _ = evaluate_split(model, kg, b, "train", dev, batch_size=4, chunk_size=3, precision="fp32",
                                 head_ranking="inverse_query")
    tail = frame["direction"] == "tail"
    pd.testing.assert_frame_equal(frame[tail], plain[tail])  # tail queries: unchanged
    # head query (?, r, t): candidate h' scored s(query(h', r), entity(t)), filtered by the known heads of (t, r)
    E = kg.num_entities
    ent = encode_entities(model, b, dev, 4)
    index = build_filter_index(np.concatenate([kg.triples[s] for s in ("train", "dev", "test")]), E)
    q = build_queries(kg.triples["train"], kg.num_relations)
    heads = np.flatnonzero(q.direction == "head")
    want = []
    for i in heads:
        cands = encode_queries(model, b, range(E), [q.relation[i]] * E, dev, 4)
        with torch.no_grad():
            scores = model.score_matrix(cands, ent[q.anchor[i]:q.anchor[i] + 1])[:, 0]
        mask = index.mask(torch.tensor([q.anchor[i]]), torch.tensor([q.relation[i]]), "head")
        want.append(filtered_ranks(scores[None], torch.tensor([q.gold[i]]), mask)["realistic"].item())
    got = frame.loc[~tail, "realistic"].tolist()
    assert got == pytest.approx(want, abs=1e-9)
    # the frame's rows are the same queries in the same order as the inverse-query ranking's
    pd.testing.assert_frame_equal(frame.drop(columns=["optimistic", "pessimistic", "realistic"]),
                                  plain.drop(columns=["optimistic", "pessimistic", "realistic"]))


# ------------------------------------------------------------------ the overlay

def test_overlay_sets_every_authors_switch():
    cfg = yaml.safe_load((REPO / "configs" / "authors-code.yaml").read_text())
    ft = cfg["finetune"]
    assert ft["pooling"] == "pooler" and ft["probability"] == "raw" and ft["distance"] == "batch_sum"
    assert ft["label_splits"] == ["train", "dev", "test"] and ft["selection"] == "dev_loss"
    assert ft["warmup_fraction"] == 0 and ft["scorer"] == "pair_linear"
    assert ft["adam_betas"] == [0.9, 0.98] and ft["adam_eps"] == 1e-6
    assert ft["per_dataset"]["WN18RR"] == {"scorer": "cosine", "inverse_augmentation": False}
    assert ft["per_dataset"]["umls"] == {"lr_encoder": 3e-5, "early_stop_patience": 5}
    assert cfg["score"]["per_dataset"]["WN18RR"]["head_ranking"] == "relation_candidates"
    assert cfg["pretrain"]["em_head_norm"] == "layernorm"
    pt = cfg["pretrain"]
    assert (pt["optimizer"], pt["lr_schedule"], pt["mlm_mask_token"], pt["segment_separators"]) == (
        "adam", "plateau", "pad", False)
    assert pt["lr_encoder"] == pt["lr_new"] == 1e-4 and pt["weight_decay"] == 0 and pt["warmup_fraction"] == 0
    assert "leaky" in cfg["tables"]["scale_note"]
    # every run of the overlay is the authors' reading: its table puts `lpbert` in the authors'-code column
    assert cfg["tables"]["reproduction"] == {"paper_text": None, "authors_code": "lpbert"}
    assert "# pre-training departures: see below" in (REPO / "configs" / "authors-code.yaml").read_text()


@pytest.mark.parametrize("overlays", [["configs/authors-code.yaml"], ["configs/cpu.yaml", "configs/authors-code.yaml"]])
def test_overlay_dry_run_lists_every_table_row(tmp_path, overlays):
    import shutil
    import subprocess
    import sys

    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "configs").mkdir()
    for name in overlays:
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "resources").symlink_to(REPO / "resources")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "all", "-n",
                             "--configfile", *overlays], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for run in ("lpbert", "t4-none-nobatch", "t4-none", "t4-mlm", "t4-mem", "t4-mem-mrm", "kgbert"):
        assert f"results/WN18RR/runs/{run}/metrics.json" in result.stdout
    for dataset in ("umls", "FB15k-237"):
        assert f"results/{dataset}/runs/lpbert/metrics.json" in result.stdout
