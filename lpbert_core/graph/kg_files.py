"""Readers for the raw graph files, strict about their format.

Two layouts are accepted (`detect_layout`): KG-BERT's (`train.tsv`, `dev.tsv`, `test.tsv`, `entity2text.txt`,
`relation2text.txt`, optional `entities.txt` / `relations.txt`) and ConvE's triples only (`train.txt`,
`valid.txt`, `test.txt`). Every problem raises `InputError` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from lpbert_core.errors import InputError

SPLIT_FILES = {
    "kg-bert": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
    "conve": {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"},
}
UTF8_BOM = b"\xef\xbb\xbf"


def detect_layout(folder: str | Path) -> str:
    folder = Path(folder)
    for layout, files in SPLIT_FILES.items():
        if all((folder / name).is_file() for name in files.values()):
            return layout
    expected = " or ".join("/".join(files.values()) for files in SPLIT_FILES.values())
    present = sorted(p.name for p in folder.iterdir()
                     if p.is_file() and p.name != "SOURCE.json" and not p.name.startswith(".")) if folder.is_dir() else []
    raise InputError(folder, f"no triple files found: expected {expected} (found: {', '.join(present) or 'no files'})")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, strictly UTF-8; a blank line is an error except at the very end.
    A UTF-8 byte-order mark at the start of the file (Windows editors write one) is dropped; a NUL byte is an error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from None
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the final newline
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(path, f"not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})", number)
        if "\x00" in line:
            raise InputError(path, f"NUL byte at character {line.index(chr(0)) + 1} (binary or UTF-16 file?)", number)
        line = line.rstrip("\r")
        if not line.strip():
            raise InputError(path, "blank line", number)
        yield number, line


def read_triples(path: str | Path) -> list[tuple[str, str, str, int]]:
    """(head, relation, tail, line) per line of a `head<TAB>relation<TAB>tail` file; an empty file is an error."""
    rows = []
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if len(fields) != 3 or not all(f.strip() for f in fields):
            raise InputError(
                path, f"expected 3 non-empty tab-separated fields (head, relation, tail), got {len(fields)}: {line[:80]!r}",
                number,
            )
        head, rel, tail = (f.strip() for f in fields)
        rows.append((head, rel, tail, number))
    if not rows:
        raise InputError(path, "empty split: no triples")
    return rows


def read_id_text(path: str | Path) -> dict[str, str]:
    """`id<TAB>text` lines -> dict. The same id twice is fine only with identical text."""
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in iter_lines(path):
        ident, sep, text = line.partition("\t")
        ident, text = ident.strip(), text.strip()
        if not sep or not ident:
            raise InputError(path, f"expected 'id<TAB>text', got {line[:80]!r}", number)
        if ident in texts and texts[ident] != text:
            raise InputError(
                path, f"duplicate id {ident!r} with different text (first at line {first_line[ident]})", number
            )
        texts.setdefault(ident, text)
        first_line.setdefault(ident, number)
    return texts


def read_ids(path: str | Path) -> list[str]:
    """One id per line; duplicates are an error (the id list defines the graph's vocabulary)."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in iter_lines(path):
        ident = line.strip()
        if "\t" in ident:
            raise InputError(path, f"expected one id per line, got {line[:80]!r}", number)
        if ident in seen:
            raise InputError(path, f"duplicate id {ident!r} (first at line {seen[ident]})", number)
        seen[ident] = number
        ids.append(ident)
    return ids


def readable_id(ident: str) -> str:
    """Fallback text for an id with none: `_` and `/` become spaces (e.g. `/people/person` -> `people person`)."""
    text = " ".join(ident.replace("_", " ").replace("/", " ").split())
    return text or ident


CANDIDATES_FOLDER = "candidates"  # raw/candidates/: presampled candidate lists (e.g. BERTRL's) of the test split
