"""The three data stages as single calls (what the Snakemake scripts run)."""

from __future__ import annotations

import logging
from pathlib import Path

from lpbert_core.data.archive import (copy_folder_into, describe_files, extract_into, fetch_files_into, renamed, scratch_path,
                      sha256_of, verify_sha256, write_provenance)
from lpbert_core.runtime.atomic import atomic_dir, write_json, write_parquet
from lpbert_core.errors import InputError
from lpbert_core.graph.kg_files import CANDIDATES_FOLDER
from lpbert_core.data.text_tables import build_text_tables, graph_summary, name_user_file, summary_lines
from lpbert_core.config.settings import TextSettings
from lpbert_core.data.tokens import tokenize_tables

log = logging.getLogger(__name__)


def run_download(*, settings: dict, outputs: dict) -> dict:
    """The download rule. settings: one entry of the config's `sources` (JobSettings.download_params): archive
    (+sha256), archive_url (+sha256), files, or folder; it names the stage's inputs itself. outputs: raw (the folder).
    Fills outputs.raw (replaced atomically) and writes `raw/SOURCE.json`: where the files came from, the archive's
    SHA-256 and whether the config pinned it, and every file with its SHA-256. Returns that record."""
    source, raw_dir = settings, Path(outputs["raw"])
    with atomic_dir(raw_dir) as tmp:
        if "archive" in source or "archive_url" in source:
            record = _fetch_archive(source, raw_dir, tmp)
            if source.get("text_from"):
                record["text_source"] = _copy_graph_text(source["text_from"], raw_dir, tmp)
            if source.get("candidates"):
                record["candidates"] = {"archive_folder": source["candidates"], "files": extract_into(
                    source["archive"], tmp / CANDIDATES_FOLDER, member_folder=source["candidates"])}
        elif "files" in source:
            record = {"kind": "files", "origin": None, "downloads": fetch_files_into(source["files"], tmp)}
        else:
            links = {name: info["symlink_to"] for name, info in copy_folder_into(source["folder"], tmp).items() if info}
            record = {"kind": "folder", "origin": str(source["folder"]), "symlinks_followed": links}
        record["files"] = describe_files(tmp)
        write_provenance(tmp, record)
    log.info("%s: %d files: %s", raw_dir, len(record["files"]), ", ".join(record["files"]))
    return record


def _fetch_archive(source: dict, raw_dir: Path, tmp: Path) -> dict:
    archive = source.get("archive")
    scratch = None
    try:
        if archive is None:
            from lpbert_core.data.archive import download

            scratch = archive = scratch_path(raw_dir, ".download")
            log.info("downloading %s", source["archive_url"])
            download(source["archive_url"], archive)
        digest = sha256_of(archive)
        if source.get("sha256"):
            verify_sha256(archive, source["sha256"])
            log.info("%s: SHA-256 ok (%s)", archive, source["sha256"])
        else:
            log.warning("%s: no sha256 in config; the archive is not pinned (its sha256 is %s); its compressed stream "
                        "is still checked to the end", archive, digest)
        extract_into(archive, tmp, member_folder=source.get("member"))
    except InputError as exc:
        if scratch is None:
            raise
        raise renamed(exc, source["archive_url"]) from None  # name the URL, not the scratch file
    finally:
        if scratch is not None:
            scratch.unlink(missing_ok=True)
    kind = "archive" if "archive" in source else "archive_url"
    record = {"kind": kind, "origin": str(source.get("archive") or source["archive_url"]), "archive_sha256": digest,
              "sha256_checked": bool(source.get("sha256"))}
    if source.get("member"):
        record["archive_folder"] = source["member"]
    return record




def _copy_graph_text(text_source: dict, raw_dir: Path, tmp: Path) -> dict:
    """`text_from` (a graph whose archive holds only triples, e.g. GraIL's inductive splits): the entity and
    relation text files of another vendored source, cut to the ids this graph's triple files use, so the graph's raw
    folder names no entity of any other graph (an inductive test graph's entities never reach its training graph)."""
    import tempfile

    from lpbert_core.graph.kg_files import SPLIT_FILES, detect_layout, iter_lines, read_triples

    archive = Path(text_source["archive"])
    if text_source.get("sha256"):
        verify_sha256(archive, text_source["sha256"])
    layout = detect_layout(tmp)
    entities, relations = set(), set()
    for filename in SPLIT_FILES[layout].values():
        for head, rel, tail, _ in read_triples(tmp / filename):
            entities.update((head, tail))
            relations.add(rel)
    kept = {}
    with tempfile.TemporaryDirectory(dir=raw_dir.parent, prefix=f".{raw_dir.name}.text-") as scratch:
        extract_into(archive, scratch)
        for key, ids in (("entity_text", entities), ("relation_text", relations)):
            name = text_source[key]
            path = Path(scratch) / name
            if not path.is_file():
                raise InputError(archive, f"no {name} in the archive (text_from {text_source['name']!r})")
            lines = [line for _, line in iter_lines(path) if line.split("\t", 1)[0] in ids]
            found = {line.split("\t", 1)[0] for line in lines}
            if found != ids:
                missing = sorted(ids - found)
                log.warning("%s: %d ids of this graph have no line in %s (e.g. %s)", raw_dir, len(missing), name,
                            ", ".join(missing[:3]))
            (tmp / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            kept[name] = {"lines": len(lines), "ids": len(ids)}
    return {"name": text_source["name"], "origin": str(archive), "archive_sha256": sha256_of(archive),
            "files": kept}


def run_join_text(*, settings: TextSettings | dict, inputs: dict, outputs: dict) -> dict:
    """The join_text rule. settings: JobSettings.resolve("text", dataset) or its plain form, JobSettings.text_params. inputs: raw (the download's folder). outputs: entities,
    relations, triples (parquet) and summary (what the graph contains; by default beside triples.parquet).
    Writes the three text tables and summary.json, and logs the summary, with a WARNING for what a standard
    benchmark would not have."""
    raw_dir = inputs["raw"]
    try:
        tables = build_text_tables(raw_dir, TextSettings.from_mapping(settings))
    except InputError as exc:
        raise name_user_file(raw_dir, exc) from None
    summary = graph_summary(tables)
    # all three tables (and the summary) are computed and validated before anything is written
    for name in ("entities", "relations", "triples"):
        write_parquet(outputs[name], tables[name])
    write_json(outputs.get("summary") or Path(outputs["triples"]).with_name("summary.json"), summary)
    info, warnings = summary_lines(summary)
    for line in info:
        log.info("%s", line)
    for line in warnings:
        log.warning("%s", line)
    return summary


def run_tokenize(*, settings: dict, inputs: dict, outputs: dict) -> None:
    """The tokenize rule. settings: encoder_key, encoder_source. inputs: entities, relations (text tables).
    outputs: entities, relations, manifest (token tables, in one folder)."""
    manifest = tokenize_tables(Path(inputs["entities"]).parent, Path(outputs["manifest"]).parent,
                               settings["encoder_key"], settings["encoder_source"])
    log.info("tokenized with %s: %s", manifest["tokenizer_class"], manifest["lengths"])
