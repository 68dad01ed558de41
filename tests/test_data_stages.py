"""Data stages on small hand-made graphs: text joining rules, tokens, and every kind of bad input."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
from pathlib import Path


import pytest

from lpbert_core.data.archive import folder_fingerprint, safe_extract, sha256_of, verify_sha256
from lpbert_core.data.data_stages import run_download, run_join_text, run_tokenize
from lpbert_core.errors import InputError
from lpbert_core.graph.kg import load_tokenized_kg
from conftest import text_settings
from lpbert_core.data.text_tables import build_text_tables, split_name_description

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
    outs = {k: str(tmp_path / "text" / f"{k}.parquet") for k in ("entities", "relations", "triples")}
    return {**outs, "summary": str(tmp_path / "text" / "summary.json")}


def test_kgbert_layout_joins_name_description_and_inverse(tmp_path):
    raw = write_graph(tmp_path / "raw", KGBERT)
    tables = build_text_tables(raw, text_settings(text_format="comma"))
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
        tables = build_text_tables(raw, text_settings())
    assert "no entity text file" in caplog.text
    assert tables["entities"]["text"].tolist() == ["m x 1", "m y"]
    assert tables["relations"]["text"].tolist() == ["people person born in", "has part"]


def test_tokenize_round_trip_and_determinism(tmp_path):
    raw = write_graph(tmp_path / "raw", KGBERT)
    run_join_text(settings=text_settings(text_format="comma"), inputs={"raw": raw}, outputs=outputs(tmp_path))
    for out in ("tok1", "tok2"):
        run_tokenize(settings={"encoder_key": "minilm", "encoder_source": "minilm"},
                     inputs={"entities": tmp_path / "text" / "entities.parquet"},
                     outputs={"manifest": tmp_path / out / "manifest.json"})
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
        run_join_text(settings=text_settings(text_format="comma"), inputs={"raw": raw}, outputs=outs)
    assert where in str(err.value) and message in str(err.value)
    assert not (tmp_path / "text").exists() or not any((tmp_path / "text").iterdir())


def test_same_id_twice_with_same_text_is_accepted(tmp_path):
    raw = write_graph(tmp_path / "raw", {**KGBERT, "entity2text.txt": KGBERT["entity2text.txt"] + "c\tcat\n"})
    assert len(build_text_tables(raw, text_settings())["entities"]) == 3


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


# ------------------------------------------------------------------------------------------ archive integrity

def graph_archive(path: Path, lines: int = 2000) -> Path:
    """A gzipped tar of a KG-BERT-layout graph big enough that a byte in the middle lies inside member data."""
    rng = random.Random(0)
    train = "".join(f"e{rng.randrange(500)}\tr{rng.randrange(5)}\te{rng.randrange(500)}\n" for _ in range(lines))
    files = {"train.tsv": train, "dev.tsv": "e1\tr1\te2\n", "test.tsv": "e2\tr2\te3\n"}
    members = [(f"g/{name}", text.encode(), "file") for name, text in files.items()]
    return make_tar(path, members)


def test_download_records_provenance_and_join_text_ignores_it(tmp_path):
    archive = graph_archive(tmp_path / "g.tar.gz")
    raw = tmp_path / "raw"
    run_download(settings={"archive": str(archive), "sha256": sha256_of(archive)}, outputs={"raw": raw})
    record = json.loads((raw / "SOURCE.json").read_text())
    assert record["kind"] == "archive" and record["origin"] == str(archive)
    assert record["archive_sha256"] == sha256_of(archive) and record["sha256_checked"] is True
    assert sorted(record["files"]) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert record["files"]["dev.tsv"] == {"sha256": sha256_of(raw / "dev.tsv"), "bytes": 9}
    summary = run_join_text(settings=text_settings(), inputs={"raw": raw}, outputs=outputs(tmp_path))  # SOURCE.json is no graph file
    assert summary["triples"] == {"train": 2000, "dev": 1, "test": 1}


def _flip_middle(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_flip_middle, "corrupt archive: damaged gzip data"),
        (lambda data: data[: len(data) * 2 // 3], "truncated archive: the gzip stream ends early"),
        (lambda data: b"train.tsv\n" * 50, "not a tar archive, compressed or plain"),
        (lambda data: gzip.compress(b"a\tr\tb\n" * 50), "gzip-compressed, but not a tar archive inside"),
        (lambda data: b"", "not a tar archive"),
        (lambda data: gzip.compress(gzip.decompress(data)[:2000]), "corrupt tar archive (unexpected end of data)"),
    ],
    ids=["flipped-byte", "truncated", "not-gzip", "gzip-of-non-tar", "empty", "gzip-of-cut-tar"],
)
def test_damaged_archive_without_sha256_is_one_line_and_leaves_no_raw_folder(tmp_path, damage, message, caplog):
    archive = graph_archive(tmp_path / "g.tar.gz")
    archive.write_bytes(damage(archive.read_bytes()))
    raw = tmp_path / "out" / "raw"
    with pytest.raises(InputError) as err:
        run_download(settings={"archive": str(archive)}, outputs={"raw": raw})
    text = str(err.value)
    assert text.startswith(f"{archive}: ") and message in text and "\n" not in text
    assert "not pinned" in caplog.text  # no sha256 in the config: said, and the sha256 shown
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_archive_member_named_like_the_provenance_file_is_refused(tmp_path):
    archive = make_tar(tmp_path / "g.tar.gz", [("g/train.tsv", b"a\tr\tb\n", "file"), ("g/SOURCE.json", b"{}", "file")])
    with pytest.raises(InputError, match="clashes with the provenance file"):
        run_download(settings={"archive": str(archive)}, outputs={"raw": tmp_path / "raw"})
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------------------------ bring-your-own folders

CONVE = {"train.txt": "alice\tknows\tbob\nbob\tworks_at\tacme\n", "valid.txt": "alice\tworks_at\tacme\n",
         "test.txt": "bob\tknows\talice\n"}


def test_folder_follows_links_to_files_and_records_them(tmp_path):
    elsewhere = write_graph(tmp_path / "elsewhere", {"train.txt": CONVE["train.txt"], "names.txt": "alice\tAlice A.\n"})
    folder = write_graph(tmp_path / "mykg", {k: v for k, v in CONVE.items() if k != "train.txt"})
    (folder / "train.txt").symlink_to(elsewhere / "train.txt")
    (folder / "entity2text.txt").symlink_to(elsewhere / "names.txt")
    (folder / "sub").mkdir()
    (folder / ".hidden").write_text("x")
    raw = tmp_path / "raw"
    record = run_download(settings={"folder": str(folder)}, outputs={"raw": raw})
    assert sorted(record["files"]) == ["entity2text.txt", "test.txt", "train.txt", "valid.txt"]
    assert record["symlinks_followed"]["train.txt"] == str((elsewhere / "train.txt").resolve())
    assert not (raw / "train.txt").is_symlink()
    tables = build_text_tables(raw, text_settings())
    assert tables["entities"].set_index("id").loc["alice", "text"] == "Alice A."


def test_dangling_link_in_folder_names_the_link(tmp_path):
    folder = write_graph(tmp_path / "mykg", {k: v for k, v in CONVE.items() if k != "train.txt"})
    (folder / "train.txt").symlink_to(tmp_path / "gone.txt")
    with pytest.raises(InputError) as err:
        run_download(settings={"folder": str(folder)}, outputs={"raw": tmp_path / "out" / "raw"})
    assert str(err.value).startswith(f"{folder / 'train.txt'}: broken symbolic link")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_folder_fingerprint_follows_content_not_timestamps(tmp_path):
    folder = write_graph(tmp_path / "mykg", CONVE)
    before = folder_fingerprint(folder)
    stat = (folder / "train.txt").stat()
    (folder / "train.txt").write_text(CONVE["train.txt"].replace("acme", "acne"))
    os.utime(folder / "train.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert folder_fingerprint(folder) != before
    (folder / ".train.txt.swp").write_text("editor state")
    (folder / "train.txt").write_text(CONVE["train.txt"])
    assert folder_fingerprint(folder) == before  # hidden files are not part of the graph
    assert folder_fingerprint(tmp_path / "nope") == "missing"


def test_leading_bom_is_dropped(tmp_path):
    bom = "\ufeff"
    raw = write_graph(tmp_path / "raw", {**CONVE, "train.txt": bom + CONVE["train.txt"],
                                         "entity2text.txt": bom + "alice\tAlice\nbob\tBob\n"})
    ent = build_text_tables(raw, text_settings())["entities"]
    assert ent["id"].tolist() == ["alice", "bob", "acme"]
    assert ent["text"].tolist() == ["Alice", "Bob", "acme"]


@pytest.mark.parametrize(
    "files, where, message",
    [
        ({"train.txt": "alice\tknows\tbob\nbo\x00b\tknows\talice\n"}, "train.txt:2", "NUL byte at character 3"),
        ({"entity2text.txt": "alice\tAlice\n\x00\tnul\n"}, "entity2text.txt:2", "NUL byte"),
    ],
)
def test_nul_bytes_are_refused_with_file_and_line(tmp_path, files, where, message):
    raw = write_graph(tmp_path / "raw", {**CONVE, **files})
    with pytest.raises(InputError) as err:
        run_join_text(settings=text_settings(), inputs={"raw": raw}, outputs=outputs(tmp_path))
    assert where in str(err.value) and message in str(err.value)


def test_text_file_named_in_the_config_must_exist(tmp_path, caplog):
    folder = write_graph(tmp_path / "mykg", CONVE)
    raw = tmp_path / "raw"
    run_download(settings={"folder": str(folder)}, outputs={"raw": raw})
    settings = {"entity_text": "names.txt", "entity_text_required": True}
    with pytest.raises(InputError) as err:
        run_join_text(settings=text_settings(**settings), inputs={"raw": raw}, outputs=outputs(tmp_path))
    text = str(err.value)
    assert text == (f"{folder / 'names.txt'}: entity_text file 'names.txt' is named in the config but does not exist "
                    f"(files in {folder}: test.txt, train.txt, valid.txt)")
    assert not (tmp_path / "text").exists()
    # the default name, not named in the config: ids are made readable, with a warning
    with caplog.at_level("WARNING"):
        run_join_text(settings=text_settings(entity_text_required=False), inputs={"raw": raw}, outputs=outputs(tmp_path))
    assert "no entity text file entity2text.txt" in caplog.text


def test_missing_split_file_lists_what_the_folder_has(tmp_path):
    raw = write_graph(tmp_path / "raw", {k: v for k, v in CONVE.items() if k != "valid.txt"})
    with pytest.raises(InputError, match=r"no triple files found: .* \(found: test.txt, train.txt\)"):
        build_text_tables(raw, text_settings())


# ------------------------------------------------------------------------------------------ graph summary

def test_summary_counts_unseen_duplicates_and_overlap(tmp_path, caplog):
    raw = write_graph(tmp_path / "raw", {
        "train.txt": "alice\tknows\tbob\nbob\tworks_at\tacme\nalice\tknows\tbob\n",
        "valid.txt": "alice\tknows\tbob\ncarol\tknows\talice\n",
        "test.txt": "bob\tknows\talice\ndave\tlikes\terin\ndave\tlikes\terin\n",
    })
    with caplog.at_level("INFO"):
        summary = run_join_text(settings=text_settings(), inputs={"raw": raw}, outputs=outputs(tmp_path))
    assert json.loads((tmp_path / "text" / "summary.json").read_text()) == summary
    assert summary["entities"] == 6 and summary["relations"] == 3
    assert summary["triples"] == {"train": 3, "dev": 2, "test": 3}
    assert summary["unseen_in_train"]["dev"] == {"entities": {"count": 1, "examples": ["carol"]},
                                                 "relations": {"count": 0, "examples": []}}
    assert summary["unseen_in_train"]["test"] == {"entities": {"count": 2, "examples": ["dave", "erin"]},
                                                  "relations": {"count": 1, "examples": ["likes"]}}
    assert summary["duplicates_within_split"] == {"train": 1, "dev": 0, "test": 1}
    assert summary["also_in_train"] == {"dev": 1, "test": 0}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "test: 2 entities in no train triple (unseen at training time), e.g. 'dave', 'erin'" in warnings
    assert "test: 1 relation in no train triple (unseen at training time), e.g. 'likes'" in warnings
    assert "train: 1 duplicate triple (a head, relation, tail repeated; copies beyond the first)" in warnings
    assert "dev: 1 of 2 triples are also train triples" in warnings
    assert not any(w.startswith("dev: 1 entities") for w in warnings)  # unseen dev entities: info only
    assert "6 entities, 3 relations; triples: train 3, dev 2, test 3" in caplog.text


def test_clean_graph_summary_has_no_warnings(tmp_path, caplog):
    raw = write_graph(tmp_path / "raw", KGBERT)
    with caplog.at_level("INFO"):
        run_join_text(settings=text_settings(text_format="comma"), inputs={"raw": raw}, outputs=outputs(tmp_path))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert "no duplicate triples within a split" in caplog.text
    assert "test: every entity and relation also appears in train" in caplog.text


def test_url_sources_record_provenance_and_leave_no_scratch_file(tmp_path):
    """archive_url and files sources, through file:// URLs (urllib reads them like any other)."""
    archive = graph_archive(tmp_path / "g.tar.gz", lines=20)
    url = archive.resolve().as_uri()
    out = tmp_path / "out"
    record = run_download(settings={"archive_url": url, "sha256": sha256_of(archive)}, outputs={"raw": out / "a" / "raw"})
    assert record["kind"] == "archive_url" and record["origin"] == url and record["sha256_checked"] is True
    assert sorted(record["files"]) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert [p.name for p in (out / "a").iterdir()] == ["raw"]  # the downloaded archive is gone
    files = {"train.tsv": {"url": url, "member": "train.tsv"}, "dev.tsv": {"url": url, "member": "dev.tsv"},
             "test.tsv": {"url": url, "member": "test.tsv"}}
    record = run_download(settings={"files": files}, outputs={"raw": out / "f" / "raw"})
    assert record["kind"] == "files" and record["downloads"]["dev.tsv"] == {"url": url, "member": "dev.tsv",
                                                                             "sha256_checked": False}
    assert (out / "f" / "raw" / "dev.tsv").read_text() == "e1\tr1\te2\n"
    archive.write_bytes(archive.read_bytes()[:-20])
    with pytest.raises(InputError) as err:
        run_download(settings={"archive_url": url}, outputs={"raw": out / "b" / "raw"})
    assert str(err.value).startswith(f"{url}: truncated archive")
    with pytest.raises(InputError) as err:
        run_download(settings={"files": {"train.tsv": {"url": url, "member": "train.tsv"}}}, outputs={"raw": out / "c" / "raw"})
    assert str(err.value).startswith(f"{url}: truncated archive")
    with pytest.raises(InputError) as err:
        run_download(settings={"files": {"g.tar.gz": {"url": url, "sha256": "0" * 64}}}, outputs={"raw": out / "d" / "raw"})
    assert str(err.value).startswith(f"{url}: SHA-256 mismatch")
    assert not any((out / "c").iterdir()) and not any((out / "d").iterdir())
    assert not any((out / "b").iterdir())


def test_errors_in_raw_files_name_the_file_the_user_knows(tmp_path):
    """A folder source's file is named at its own path (raw/ copy in brackets); an archive's names the archive."""
    from lpbert_core.errors import InputError
    from lpbert_core.data.text_tables import name_user_file

    raw = tmp_path / "raw"
    raw.mkdir()
    error = InputError(raw / "train.txt", "bad line", 7)
    (raw / "SOURCE.json").write_text(json.dumps({"kind": "folder", "origin": "/data/mykg"}))
    assert str(name_user_file(raw, error)) == f"/data/mykg/train.txt:7: bad line (copied to {raw}/train.txt)"
    (raw / "SOURCE.json").write_text(json.dumps({"kind": "archive", "origin": "resources/x.tar.gz"}))
    assert str(name_user_file(raw, error)) == f"{raw}/train.txt:7: bad line (file from resources/x.tar.gz)"
    elsewhere = InputError(tmp_path / "other.txt", "bad", 1)
    assert name_user_file(raw, elsewhere) is elsewhere
