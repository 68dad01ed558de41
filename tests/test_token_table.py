"""The vectorised batch assembly (lpbert_core.model.token_table) gives exactly the tensors of SequenceBuilder + collate_pairs:
queries with long heads and long relations cut as the builder cuts them, candidates cut to max_length - 2."""
import numpy as np
import pytest
import torch

from conftest import make_toy_kg
from lpbert_core.model.sequences import SequenceBuilder, collate_pairs
from lpbert_core.model.token_table import TokenTable

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()


@pytest.fixture(scope="module")
def kg(tiny_encoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    rng = np.random.default_rng(0)
    ents = {f"e{i}": (WORDS[i % len(WORDS)], " ".join(rng.choice(WORDS, size=int(rng.integers(0, 30)))))
            for i in range(30)}
    rels = {"r0": "has part", "r1": "is a kind of thing that is also related to some other long relation text"}
    return make_toy_kg(tok, ents, rels, {"train": [("e0", "r0", "e1"), ("e2", "r1", "e3")],
                                         "dev": [("e0", "r0", "e5")], "test": [("e1", "r1", "e7")]})


@pytest.mark.parametrize("max_length", [6, 9, 16, 64])
def test_token_table_equals_the_builder(kg, max_length):
    builder = SequenceBuilder(kg, max_length, max_length)
    table = TokenTable.from_builder(builder)
    rng = np.random.default_rng(max_length)
    heads = rng.integers(0, kg.num_entities, 40)
    rels = rng.integers(0, 2 * kg.num_relations, 40)
    want = collate_pairs([builder.query(int(h), int(r)) for h, r in zip(heads, rels)], kg.special.pad)
    got = table.queries(heads, rels)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    ents = rng.integers(0, kg.num_entities, 40)
    want = collate_pairs([(s, [0] * len(s)) for s in (builder.candidate(int(e)) for e in ents)], kg.special.pad)
    got = table.candidates(ents)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert table.queries(heads[:0], rels[:0])["input_ids"].shape == (0, 0)
