"""Data stages on small hand-made graphs: text joining rules, tokens, and every kind of bad input."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path


import pytest

from lpbert_core.archive import safe_extract, sha256_of, verify_sha256
from lpbert_core.data_stages import run_join_text, run_tokenize
from lpbert_core.errors import InputError
from lpbert_core.kg import load_tokenized_kg
from lpbert_core.text_tables import TextSettings, build_text_tables, split_name_description

REPO = Path(__file__).resolve().parents[1]


def write_graph(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (folder / name).write_bytes(data)
    return folder


KGBERT = {
    "train.tsv": "a\tr1\tb\nb\tr2\tc\n",
    "dev.tsv": "a\tr2\tc\n",
    "test.tsv": "c\tr1\ta\n",
    "entities.txt": "a\nb\nc\n",
    "relations.txt": "r1\nr2\n",
    "entity2text.txt": "a\tstool, solid excretory product\nb\tdog, a domestic animal\nc\tcat\n",
    "relation2text.txt": "r1\thas part\nr2\thypernym\n",
}


def outputs(tmp_path: Path) -> dict[str, str]:
    return {k: str(tmp_path / "text" / f"{k}.parquet") for k in ("entities", "relations", "triples")}


def test_kgbert_layout_joins_name_description_and_inverse(tmp_path):
    raw = write_graph(tmp_path / "raw", KGBERT)
    tables = build_text_tables(raw, TextSettings(text_format="comma"))
    ent = tables["entities"].set_index("id")
    assert ent.loc["a", "name"] == "stool"
    assert ent.loc["a", "description"] == "solid excretory product"
    assert ent.loc["a", "text"] == "stool, solid excretory product"
    assert ent.loc["c", "description"] == "" and ent.loc["c", "text"] == "cat"
    rel = tables["relations"].set_index("id")
    assert rel.loc["r1", "inverse_text"] == "reversed has part"
    tri = tables["triples"]
    assert len(tri) == 8 and tri["inverse"].sum() == 4
    fwd = tri[~tri["inverse"]]
    assert fwd[["split", "head", "relation", "tail"]].values.tolist()[0] == ["train", "a", "r1", "b"]
    inv = tri[tri["inverse"]]
    assert inv[["head", "relation", "tail"]].values.tolist()[0] == ["b", "r1", "a"]


@pytest.mark.parametrize(
    "text, fmt, expected",
    [
        ("idea or concept", "name", ("idea or concept", "")),
        ("land reform, a redistribution, of land", "comma", ("land reform", "a redistribution, of land")),
        ("Ska -- Ska is a genre -- of music", "dash", ("Ska", "Ska is a genre -- of music")),
        ("NoDescription", "dash", ("NoDescription", "")),
    ],
)
def test_split_name_description(text, fmt, expected):
    assert split_name_description(text, fmt) == expected


def test_triples_only_graph_falls_back_to_readable_ids(tmp_path, caplog):
    raw = write_graph(
        tmp_path / "raw",
        {"train.txt": "/m/x_1\t/people/person/born_in\t/m/y\n", "valid.txt": "/m/y\t_has_part\t/m/x_1\n",
         "test.txt": "/m/x_1\t_has_part\t/m/y\n"},
    )
    with caplog.at_level("WARNING"):
        tables = build_text_tables(raw, TextSettings())
    assert "no entity text file" in caplog.text
    assert tables["entities"]["text"].tolist() == ["m x 1", "m y"]
    assert tables["relations"]["text"].tolist() == ["people person born in", "has part"]


def test_tokenize_round_trip_and_determinism(tmp_path):
    raw = write_graph(tmp_path / "raw", KGBERT)
    run_join_text(raw, {"text_format": "comma"}, outputs(tmp_path))
    run_tokenize(tmp_path / "text", tmp_path / "tok1", "minilm", "minilm")
    run_tokenize(tmp_path / "text", tmp_path / "tok2", "minilm", "minilm")
    for name in ("entities.parquet", "relations.parquet", "manifest.json"):
        assert (tmp_path / "tok1" / name).read_bytes() == (tmp_path / "tok2" / name).read_bytes()
    manifest = json.loads((tmp_path / "tok1" / "manifest.json").read_text())
    assert manifest["special_ids"] == {"cls": 101, "sep": 102, "mask": 103, "pad": 0, "vocab_size": 30522}
    assert len(manifest["vocab_sha256"]) == 64
    kg = load_tokenized_kg(tmp_path / "text", tmp_path / "tok1")
    assert kg.num_entities == 3 and kg.num_relations == 2
    assert kg.triples["train"].tolist() == [[0, 0, 1], [1, 1, 2]]
    assert kg.triples["test"].tolist() == [[2, 0, 0]]
    # the full text is "stool, solid excretory product"; the name alone is "stool"
    assert kg.entity_name_ids[0] == kg.entity_text_ids[0][: len(kg.entity_name_ids[0])]
    assert kg.relation_inverse_ids[0][-len(kg.relation_text_ids[0]):] == kg.relation_text_ids[0]


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize(
    "files, where, message",
    [
        ({"train.tsv": "a\tr1\tb\na\tr1\n"}, "train.tsv:2", "expected 3 non-empty tab-separated fields"),
        ({"dev.tsv": "a\tr2\tzzz\n"}, "dev.tsv:1", "unknown entity id 'zzz'"),
        ({"test.tsv": "c\tr9\ta\n"}, "test.tsv:1", "unknown relation id 'r9'"),
        ({"test.tsv": ""}, "test.tsv", "empty split"),
        ({"train.tsv": b"a\tr1\tb\nb\tr2\t\xff\xfe\n"}, "train.tsv:2", "not valid UTF-8"),
        ({"entity2text.txt": "a\tstool\nb\tdog\na\tchair\n"}, "entity2text.txt:3", "duplicate id 'a' with different text"),
        ({"train.tsv": "a\tr1\tb\n\nb\tr2\tc\n"}, "train.tsv:2", "blank line"),
        ({"entities.txt": "a\nb\nc\na\n"}, "entities.txt:4", "duplicate id 'a'"),
    ],
)
def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, files, where, message):
    raw = write_graph(tmp_path / "raw", {**KGBERT, **files})
    outs = outputs(tmp_path)
    with pytest.raises(InputError) as err:
        run_join_text(raw, {"text_format": "comma"}, outs)
    assert where in str(err.value) and message in str(err.value)
    assert not (tmp_path / "text").exists() or not any((tmp_path / "text").iterdir())


def test_same_id_twice_with_same_text_is_accepted(tmp_path):
    raw = write_graph(tmp_path / "raw", {**KGBERT, "entity2text.txt": KGBERT["entity2text.txt"] + "c\tcat\n"})
    assert len(build_text_tables(raw, TextSettings())["entities"]) == 3


def make_tar(path: Path, members: list[tuple[str, bytes | None, str]]) -> Path:
    """members: (name, data, kind) with kind 'file', 'symlink' or 'dir'."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "members, message",
    [
        ([("/abs/train.tsv", b"x", "file")], "absolute path"),
        ([("g/../../evil.txt", b"x", "file")], "'..' in path"),
        ([("g/train.tsv", b"x", "file"), ("g/link", None, "symlink")], "links are not allowed"),
    ],
)
def test_unsafe_archive_members_are_refused(tmp_path, members, message):
    archive = make_tar(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "raw"
    with pytest.raises(InputError, match=message) as err:
        safe_extract(archive, dest)
    assert "bad.tar.gz" in str(err.value)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tar.gz"]


def test_safe_extract_strips_single_top_folder(tmp_path):
    archive = make_tar(tmp_path / "g.tar.gz", [("g/train.tsv", b"a\tr\tb\n", "file"), ("g/test.tsv", b"", "file")])
    assert safe_extract(archive, tmp_path / "raw") == ["test.tsv", "train.tsv"]
    assert (tmp_path / "raw" / "train.tsv").read_bytes() == b"a\tr\tb\n"


def test_checksum_mismatch_names_the_archive(tmp_path):
    archive = make_tar(tmp_path / "g.tar.gz", [("g/train.tsv", b"x", "file")])
    verify_sha256(archive, sha256_of(archive))
    with pytest.raises(InputError, match="SHA-256 mismatch") as err:
        verify_sha256(archive, "0" * 64)
    assert "g.tar.gz" in str(err.value)


@pytest.mark.parametrize("name", ["umls", "WN18RR", "FB15k-237"])
def test_vendored_archives_match_config_checksums(name):
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    src = config["sources"][name]
    verify_sha256(REPO / src["archive"], src["sha256"])
