"""The three data stages as single calls (what the Snakemake scripts run)."""

from __future__ import annotations

import logging
from pathlib import Path

from .archive import copy_folder, fetch_files, safe_extract, sha256_of, verify_sha256
from .atomic import write_parquet
from .text_tables import TextSettings, build_text_tables
from .tokens import tokenize_tables

log = logging.getLogger(__name__)


def run_download(source: dict, raw_dir: str | Path) -> None:
    """`source` is one entry of the config's `sources`: archive (+sha256), archive_url (+sha256), files, or folder."""
    if "archive" in source or "archive_url" in source:
        archive = source.get("archive")
        if archive is None:
            from .archive import download

            archive = Path(raw_dir).with_suffix(".download.tar.gz")
            log.info("downloading %s", source["archive_url"])
            download(source["archive_url"], archive)
        if source.get("sha256"):
            verify_sha256(archive, source["sha256"])
            log.info("%s: SHA-256 ok (%s)", archive, source["sha256"])
        else:
            log.warning("%s: no sha256 in config; archive not verified (sha256 is %s)", archive, sha256_of(archive))
        names = safe_extract(archive, raw_dir)
        if "archive_url" in source and "archive" not in source:
            Path(archive).unlink(missing_ok=True)
    elif "files" in source:
        names = fetch_files(source["files"], raw_dir)
    else:
        names = copy_folder(source["folder"], raw_dir)
    log.info("%s: %d files: %s", raw_dir, len(names), ", ".join(names))


def run_join_text(raw_dir: str | Path, settings: dict, outputs: dict[str, str]) -> None:
    tables = build_text_tables(raw_dir, TextSettings(**settings))
    # all three tables are computed (and validated) before anything is written
    for name in ("entities", "relations", "triples"):
        write_parquet(outputs[name], tables[name])
    counts = tables["triples"][~tables["triples"]["inverse"]]["split"].value_counts().to_dict()
    log.info("%d entities, %d relations, triples per split %s", len(tables["entities"]), len(tables["relations"]), counts)


def run_tokenize(text_dir: str | Path, out_dir: str | Path, encoder_key: str, encoder_source: str) -> None:
    manifest = tokenize_tables(text_dir, out_dir, encoder_key, encoder_source)
    log.info("tokenized with %s: %s", manifest["tokenizer_class"], manifest["lengths"])
