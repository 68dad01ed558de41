"""Sample layouts of the pre-training tasks (paper eqs. 1-9), decoded for a known triple."""

from __future__ import annotations

import numpy as np
import pytest

from lpbert_core.model.encoders import load_tokenizer
from conftest import make_toy_kg
from lpbert_core.pretrain.pretrain_samples import (
    IGNORE,
    MEM_HEAD,
    MEM_TAIL,
    MLM_ONLY,
    MRM,
    apply_local_mlm,
    build_samples,
    collate,
    draw_tasks,
    mem_head_layout,
    mem_tail_layout,
    mrm_layout,
    plain_mlm_layout,
    split_context_budget,
    variant_plan,
)

PAPER_PROBS = {"mem_head": 0.4, "mem_tail": 0.4, "mrm": 0.2}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def kg(tok):
    entities = {
        "dog": ("dog", "a domesticated carnivorous mammal"),
        "animal": ("animal", "a living organism that feeds on organic matter"),
        "cat": ("cat", ""),
    }
    relations = {"hyp": "is a kind of", "sim": "similar to"}
    triples = {"train": [("dog", "hyp", "animal"), ("cat", "hyp", "animal"), ("dog", "sim", "cat")],
               "dev": [("cat", "sim", "dog")]}
    return make_toy_kg(tok, entities, relations, triples)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def special_positions(seq, token_id):
    return [i for i, x in enumerate(seq) if x == token_id]


def test_mem_tail_layout_exact(tok, kg):
    head_text, rel, tail_name = ids(tok, "dog, a domesticated carnivorous mammal"), ids(tok, "is a kind of"), ids(tok, "animal")
    lay = mem_tail_layout(kg, 0, 0, 1, max_length=64)
    c, s, m = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    expected = [c] + head_text + [s] + rel + [s] + [m] * len(tail_name) + [s]
    assert lay.input_ids.tolist() == expected
    assert tok.decode(lay.input_ids) == "[CLS] dog, a domesticated carnivorous mammal [SEP] is a kind of [SEP] [MASK] [SEP]"
    # EM labels: the tail's name tokens exactly at the [MASK]s, nothing else (the tail's description is dropped)
    mask_pos = special_positions(expected, m)
    assert [i for i, x in enumerate(lay.em_labels) if x != IGNORE] == mask_pos
    assert lay.em_labels[mask_pos].tolist() == tail_name
    # local MLM may touch only the head's text (paper: MEM-tail -> E_h, D_h)
    assert np.flatnonzero(lay.mlm_allowed).tolist() == list(range(1, 1 + len(head_text)))
    assert lay.task == MEM_TAIL


def test_mem_head_layout_exact(tok, kg):
    tail_text, rel, head_name = ids(tok, "animal, a living organism that feeds on organic matter"), ids(tok, "is a kind of"), ids(tok, "dog")
    lay = mem_head_layout(kg, 0, 0, 1, max_length=64)
    c, s, m = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    expected = [c] + [m] * len(head_name) + [s] + rel + [s] + tail_text + [s]
    assert lay.input_ids.tolist() == expected
    assert special_positions(expected, s) == [1 + len(head_name), 2 + len(head_name) + len(rel), len(expected) - 1]
    assert [i for i, x in enumerate(lay.em_labels) if x != IGNORE] == list(range(1, 1 + len(head_name)))
    assert lay.em_labels[1 : 1 + len(head_name)].tolist() == head_name
    start = 3 + len(head_name) + len(rel)
    assert np.flatnonzero(lay.mlm_allowed).tolist() == list(range(start, start + len(tail_text)))
    assert lay.task == MEM_HEAD


def test_mrm_layout_exact(tok, kg):
    head_text, tail_text, rel = ids(tok, "dog, a domesticated carnivorous mammal"), ids(tok, "cat"), ids(tok, "similar to")
    lay = mrm_layout(kg, 0, 1, 2, max_length=64)
    c, s, m = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    expected = [c] + head_text + [s] + [m] * len(rel) + [s] + tail_text + [s]
    assert lay.input_ids.tolist() == expected
    rel_start = 2 + len(head_text)
    rel_pos = list(range(rel_start, rel_start + len(rel)))
    assert special_positions(expected, m) == rel_pos
    assert [i for i, x in enumerate(lay.em_labels) if x != IGNORE] == rel_pos
    assert lay.em_labels[rel_pos].tolist() == rel
    # MLM on both entities' text, never on the relation nor on specials
    allowed = np.flatnonzero(lay.mlm_allowed).tolist()
    tail_start = rel_start + len(rel) + 1
    assert allowed == list(range(1, 1 + len(head_text))) + list(range(tail_start, tail_start + len(tail_text)))
    assert lay.task == MRM


def test_plain_mlm_layout(tok, kg):
    lay = plain_mlm_layout(kg, 0, 0, 1, max_length=64)
    text = tok.decode(lay.input_ids)
    assert text == ("[CLS] dog, a domesticated carnivorous mammal [SEP] is a kind of [SEP] "
                    "animal, a living organism that feeds on organic matter [SEP]")
    assert (lay.em_labels == IGNORE).all()
    specials = {tok.cls_token_id, tok.sep_token_id}
    assert lay.mlm_allowed.tolist() == [x not in specials for x in lay.input_ids.tolist()]
    assert lay.task == MLM_ONLY


def test_truncation_cuts_context_never_masked_element(tok, kg):
    rel, tail_name = ids(tok, "is a kind of"), ids(tok, "animal")
    lay = mem_tail_layout(kg, 0, 0, 1, max_length=12)
    assert len(lay.input_ids) == 12
    assert lay.em_labels[lay.em_labels != IGNORE].tolist() == tail_name
    assert lay.input_ids[-1 - len(tail_name) - 1 - len(rel) - 1 : -1 - len(tail_name) - 1].tolist()[1:] == rel
    assert int(lay.mlm_allowed.sum()) == 12 - 4 - len(rel) - len(tail_name)
    head = mem_head_layout(kg, 0, 0, 1, max_length=10)
    assert len(head.input_ids) == 10 and head.em_labels[head.em_labels != IGNORE].tolist() == ids(tok, "dog")
    # MRM: the relation stays whole, head and tail share the rest
    mrm = mrm_layout(kg, 0, 0, 1, max_length=14)
    assert len(mrm.input_ids) == 14
    assert mrm.em_labels[mrm.em_labels != IGNORE].tolist() == rel
    # exactly room for masked element + relation: the context entity disappears entirely, the target stays whole
    tiny = mem_tail_layout(kg, 0, 0, 1, max_length=4 + len(rel) + len(tail_name))
    assert tok.decode(tiny.input_ids) == "[CLS] [SEP] is a kind of [SEP] [MASK] [SEP]"
    assert tiny.em_labels[tiny.em_labels != IGNORE].tolist() == tail_name


def test_last_resort_keeps_one_mask(tok):
    long_name = "alpha beta gamma delta epsilon zeta"
    kg = make_toy_kg(tok, {"a": (long_name, "some description"), "b": ("b", "")}, {"r": "related to"},
                     {"train": [("b", "r", "a")]})
    name = ids(tok, long_name)
    rel = ids(tok, "related to")
    lay = mem_tail_layout(kg, 1, 0, 0, max_length=4 + len(rel) + 3)
    labels = lay.em_labels[lay.em_labels != IGNORE].tolist()
    assert labels == name[:3]  # cut at the END of the masked element, relation whole, no context
    assert not lay.mlm_allowed.any()


def test_split_context_budget():
    assert split_context_budget(3, 4, 10) == (3, 4)
    assert split_context_budget(2, 20, 10) == (2, 8)  # short head kept whole
    assert split_context_budget(20, 3, 10) == (7, 3)  # short tail kept whole
    assert split_context_budget(20, 20, 11) == (5, 6)  # halves


def test_local_mlm_never_touches_masked_element_and_frequencies(tok, kg):
    rng = np.random.default_rng(0)
    lay = mrm_layout(kg, 0, 0, 1, max_length=64)
    allowed = lay.mlm_allowed
    picked = masked = randomised = kept = 0
    for _ in range(4000):
        s = apply_local_mlm(lay, rng, kg.special, 0.15)
        lab = s.mlm_labels != IGNORE
        assert not (lab & ~allowed).any()  # labels only in allowed spans
        assert (s.input_ids[~allowed] == lay.input_ids[~allowed]).all()  # relation [MASK]s and specials untouched
        assert (s.mlm_labels[lab] == lay.input_ids[lab]).all()
        assert (s.em_labels == lay.em_labels).all()
        picked += lab.sum()
        masked += (s.input_ids[lab] == tok.mask_token_id).sum()
        same = s.input_ids[lab] == lay.input_ids[lab]
        kept += same.sum()
        randomised += (~same & (s.input_ids[lab] != tok.mask_token_id)).sum()
    rate = picked / (4000 * allowed.sum())
    assert abs(rate - 0.15) < 0.01
    assert abs(masked / picked - 0.8) < 0.02
    assert abs(randomised / picked - 0.1) < 0.015
    assert abs(kept / picked - 0.1) < 0.015


def test_task_draw_frequencies():
    rng = np.random.default_rng(1)
    tasks = draw_tasks(100_000, (0.4, 0.4, 0.2), rng)
    freq = np.bincount(tasks, minlength=3) / len(tasks)
    assert np.allclose(freq, [0.4, 0.4, 0.2], atol=0.01)
    mem_only, use_mlm = variant_plan("mem", PAPER_PROBS)
    assert mem_only == (0.5, 0.5, 0.0) and not use_mlm
    freq = np.bincount(draw_tasks(100_000, mem_only, rng), minlength=3) / 100_000
    assert np.allclose(freq, [0.5, 0.5, 0.0], atol=0.01)
    assert variant_plan("mlm", PAPER_PROBS) == (None, True)
    assert variant_plan("mem-mrm", PAPER_PROBS) == ((0.4, 0.4, 0.2), False)
    with pytest.raises(ValueError):
        variant_plan("none", PAPER_PROBS)


def test_build_samples_fresh_each_epoch_and_reproducible(kg):
    triples = np.repeat(kg.triples["train"], 200, axis=0)
    a = build_samples(kg, triples, "mem-mrm-mlm", 64, np.random.default_rng(5), PAPER_PROBS)
    b = build_samples(kg, triples, "mem-mrm-mlm", 64, np.random.default_rng(5), PAPER_PROBS)
    c = build_samples(kg, triples, "mem-mrm-mlm", 64, np.random.default_rng(6), PAPER_PROBS)
    assert [s.task for s in a] == [s.task for s in b]
    assert all((x.input_ids == y.input_ids).all() for x, y in zip(a, b))
    assert [s.task for s in a] != [s.task for s in c]
    assert any((s.mlm_labels != IGNORE).any() for s in a)
    for s in a:  # MLM never touches the masked element, whatever the task
        em = s.em_labels != IGNORE
        assert em.any() and (s.input_ids[em] == kg.special.mask).all()
        assert not (em & (s.mlm_labels != IGNORE)).any()
    no_mlm = build_samples(kg, triples, "mem-mrm", 64, np.random.default_rng(5), PAPER_PROBS)
    assert all((s.mlm_labels == IGNORE).all() for s in no_mlm)
    plain = build_samples(kg, triples, "mlm", 64, np.random.default_rng(5), PAPER_PROBS)
    assert all(s.task == MLM_ONLY and (s.em_labels == IGNORE).all() for s in plain)


def test_collate_pads_and_masks(kg, tok):
    samples = build_samples(kg, kg.triples["train"], "mem-mrm-mlm", 64, np.random.default_rng(0), PAPER_PROBS)
    batch = collate(samples, tok.pad_token_id)
    lengths = [len(s.input_ids) for s in samples]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["token_type_ids"] == 0).all()
    for i, n in enumerate(lengths):
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
        assert (batch["em_labels"][i, n:] == IGNORE).all() and (batch["mlm_labels"][i, n:] == IGNORE).all()
    assert batch["task"].tolist() == [s.task for s in samples]


# ------------------------------------------------------------------ authors'-code switches

def test_no_separators_layout_exact(tok, kg):
    """segment_separators false: [CLS] h r t [SEP] (authors' code), same EM labels and MLM spans, 2 specials."""
    c, s, m = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    head_text, rel, tail_name = ids(tok, "dog, a domesticated carnivorous mammal"), ids(tok, "is a kind of"), ids(tok, "animal")
    lay = mem_tail_layout(kg, 0, 0, 1, max_length=64, separators=False)
    assert lay.input_ids.tolist() == [c] + head_text + rel + [m] * len(tail_name) + [s]
    assert tok.decode(lay.input_ids) == "[CLS] dog, a domesticated carnivorous mammal is a kind of [MASK] [SEP]"
    assert [i for i, x in enumerate(lay.em_labels) if x != IGNORE] == special_positions(lay.input_ids.tolist(), m)
    assert np.flatnonzero(lay.mlm_allowed).tolist() == list(range(1, 1 + len(head_text)))
    head_name = ids(tok, "dog")
    tail_text = ids(tok, "animal, a living organism that feeds on organic matter")
    lay = mem_head_layout(kg, 0, 0, 1, max_length=64, separators=False)
    assert lay.input_ids.tolist() == [c] + [m] * len(head_name) + rel + tail_text + [s]
    assert lay.em_labels[1:1 + len(head_name)].tolist() == head_name
    lay = mrm_layout(kg, 0, 0, 1, max_length=64, separators=False)
    assert lay.input_ids.tolist() == [c] + head_text + [m] * len(rel) + tail_text + [s]
    assert np.flatnonzero(lay.em_labels != IGNORE).tolist() == list(range(1 + len(head_text), 1 + len(head_text) + len(rel)))
    # the budget counts 2 specials: MEM-tail's context is cut to L - |R| - |t*| - 2 (authors' H')
    lay = mem_tail_layout(kg, 0, 0, 1, max_length=10, separators=False)
    assert len(lay.input_ids) == 10 and lay.input_ids.tolist()[-1] == s
    assert lay.input_ids.tolist()[1:10 - 1 - len(rel) - len(tail_name)] == head_text[:10 - 2 - len(rel) - len(tail_name)]
    # default (paper) layout unchanged
    assert mem_tail_layout(kg, 0, 0, 1, 64).input_ids.tolist() == mem_tail_layout(kg, 0, 0, 1, 64, True).input_ids.tolist()


def test_pad_mask_token(tok, kg):
    """mlm_mask_token pad: the 80% replacements are [PAD] ids, the MEM/MRM [MASK]s stay; same draws as `mask`."""
    lay = mrm_layout(kg, 0, 0, 1, max_length=64)
    real = apply_local_mlm(lay, np.random.default_rng(3), kg.special, probability=1.0)
    pad = apply_local_mlm(lay, np.random.default_rng(3), kg.special, probability=1.0, mask_token="pad")
    assert real.mlm_labels.tolist() == pad.mlm_labels.tolist()
    changed = real.input_ids != pad.input_ids
    assert changed.any()
    assert set(real.input_ids[changed].tolist()) == {tok.mask_token_id}
    assert set(pad.input_ids[changed].tolist()) == {tok.pad_token_id}
    em = lay.em_labels != IGNORE
    assert set(pad.input_ids[em].tolist()) == {tok.mask_token_id}  # the relation's [MASK]s are real
    with pytest.raises(ValueError, match="mlm_mask_token"):
        apply_local_mlm(lay, np.random.default_rng(3), kg.special, mask_token="unk")


def test_build_samples_switches_and_collate_without_attention_mask(kg):
    triples = kg.triples["train"]
    default = build_samples(kg, triples, "mem-mrm-mlm", 64, np.random.default_rng(1), PAPER_PROBS)
    explicit = build_samples(kg, triples, "mem-mrm-mlm", 64, np.random.default_rng(1), PAPER_PROBS, 0.15, 0.8, 0.1,
                             "mask", True)
    assert all(a.input_ids.tolist() == b.input_ids.tolist() for a, b in zip(default, explicit))
    authors = build_samples(kg, triples, "mem-mrm-mlm", 64, np.random.default_rng(1), PAPER_PROBS,
                            mlm_mask_token="pad", segment_separators=False)
    sep = kg.special.sep
    assert all(s.input_ids.tolist().count(sep) == 1 and s.input_ids[-1] == sep for s in authors)
    batch = collate(authors, kg.special.pad, attention_mask=False, pad_to=40)
    assert batch["input_ids"].shape == (len(authors), 40) and bool((batch["attention_mask"] == 1).all())
    assert batch["em_labels"].shape == batch["mlm_labels"].shape == (len(authors), 40)
    assert bool((batch["token_type_ids"] == 0).all())
    assert bool((batch["input_ids"][:, -1] == kg.special.pad).all())
    # with the real mask (default) nothing changes: dynamic padding, mask 0 on padding
    plain = collate(default, kg.special.pad)
    assert plain["input_ids"].shape[1] == max(len(s.input_ids) for s in default)
