"""join_text: raw graph files -> entity, relation and triple tables with the text the paper's protocol uses."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lpbert_core.errors import InputError
from lpbert_core.config.settings import TextSettings
from lpbert_core.graph.kg_files import SPLIT_FILES, detect_layout, read_id_text, read_ids, read_triples, readable_id

log = logging.getLogger(__name__)

TEXT_FORMATS = ("name", "comma", "dash")


def split_name_description(text: str, text_format: str) -> tuple[str, str]:
    """`name`: all of it is the name. `comma`: WN18RR's `lemma, gloss`. `dash`: StAR's `Name -- description`."""
    if text_format == "name":
        return text.strip(), ""
    sep = "," if text_format == "comma" else " -- "
    name, _, desc = text.partition(sep)
    return name.strip(), desc.strip()


def _optional_text(folder: Path, filename: str | None, kind: str, required: bool) -> tuple[dict[str, str], Path | None]:
    if not filename:
        return {}, None
    path = folder / filename
    if not path.is_file():
        if required:
            where, note = _missing_file(folder, filename)
            raise InputError(where, f"{kind}_text file {filename!r} is named in the config but does not exist ({note})")
        log.warning("%s: no %s text file %s; ids will be used as text", folder, kind, filename)
        return {}, None
    return read_id_text(path), path


def _source_record(raw_dir: Path) -> tuple[str | None, str | None]:
    """(kind, origin) from raw/SOURCE.json: where the raw files came from; (None, None) when unknown."""
    import json

    try:
        record = json.loads((raw_dir / "SOURCE.json").read_text())
        return record.get("kind"), record.get("origin")
    except (OSError, ValueError, AttributeError):
        return None, None


def name_user_file(raw_dir: str | Path, error: InputError) -> InputError:
    """The same error at the path the user knows: a file of a bring-your-own folder is named at its own path (the
    raw/ copy in brackets); a file from an archive keeps its raw/ path and names the archive."""
    raw_dir = Path(raw_dir)
    path = Path(error.path)
    try:
        relative = path.relative_to(raw_dir)
    except ValueError:
        return error
    kind, origin = _source_record(raw_dir)
    if not origin:
        return error
    if kind == "folder":
        return InputError(Path(origin) / relative, f"{error.message} (copied to {path})", error.line)
    return InputError(path, f"{error.message} (file from {origin})", error.line)


def _missing_file(raw_dir: Path, filename: str) -> tuple[Path, str]:
    """Where the user would look for a missing raw file, and what is there: for a bring-your-own folder its own
    path (from raw/SOURCE.json), else the raw folder's path and the archive it came from."""
    names = sorted(p.name for p in raw_dir.iterdir()
                   if p.is_file() and p.name != "SOURCE.json" and not p.name.startswith("."))
    kind, origin = _source_record(raw_dir)
    listing = ", ".join(names) or "none"
    if kind == "folder" and origin:
        return Path(origin) / filename, f"files in {origin}: {listing}"
    return raw_dir / filename, f"files{f' from {origin}' if origin else ''}: {listing}"


def build_text_tables(raw_dir: str | Path, settings: TextSettings) -> dict[str, pd.DataFrame]:
    """Return {'entities', 'relations', 'triples'} frames as described in docs/CONTRACTS.md."""
    raw_dir = Path(raw_dir)
    if settings.text_format not in TEXT_FORMATS:
        raise ValueError(f"text_format must be one of {TEXT_FORMATS}, got {settings.text_format!r}")
    layout = detect_layout(raw_dir)

    entity_list = read_ids(raw_dir / "entities.txt") if (raw_dir / "entities.txt").is_file() else None
    relation_list = read_ids(raw_dir / "relations.txt") if (raw_dir / "relations.txt").is_file() else None
    known_entities = set(entity_list) if entity_list is not None else None
    known_relations = set(relation_list) if relation_list is not None else None

    rows = []
    seen_entities: dict[str, None] = {}
    seen_relations: dict[str, None] = {}
    for split, filename in SPLIT_FILES[layout].items():
        path = raw_dir / filename
        for head, rel, tail, line in read_triples(path):
            for ident in (head, tail):
                if known_entities is not None and ident not in known_entities:
                    raise InputError(path, f"unknown entity id {ident!r} (not in entities.txt)", line)
                seen_entities.setdefault(ident)
            if known_relations is not None and rel not in known_relations:
                raise InputError(path, f"unknown relation id {rel!r} (not in relations.txt)", line)
            seen_relations.setdefault(rel)
            rows.append((split, head, rel, tail))

    entity_ids = entity_list if entity_list is not None else list(seen_entities)
    relation_ids = relation_list if relation_list is not None else list(seen_relations)

    ent_text, ent_path = _optional_text(raw_dir, settings.entity_text, "entity", settings.entity_text_required)
    rel_text, rel_path = _optional_text(raw_dir, settings.relation_text, "relation", settings.relation_text_required)

    entities = _entity_frame(entity_ids, ent_text, settings.text_format, ent_path)
    relations = _relation_frame(relation_ids, rel_text, settings.inverse_prefix, rel_path)

    forward = pd.DataFrame(rows, columns=["split", "head", "relation", "tail"])
    forward["inverse"] = False
    backward = forward.rename(columns={"head": "tail", "tail": "head"})[forward.columns].copy()
    backward["inverse"] = True
    triples = pd.concat([forward, backward], ignore_index=True)
    return {"entities": entities, "relations": relations, "triples": triples}


def _entity_frame(ids: list[str], texts: dict[str, str], text_format: str, source: Path | None) -> pd.DataFrame:
    names, descs, missing = [], [], 0
    for ident in ids:
        raw = texts.get(ident)
        if not raw:
            missing += 1
            name, desc = readable_id(ident), ""
        else:
            name, desc = split_name_description(raw, text_format)
            name = name or readable_id(ident)
        names.append(name)
        descs.append(desc)
    if missing:
        log.warning(
            "%d of %d entities have no text%s; their ids were made readable instead",
            missing, len(ids), f" in {source}" if source else "",
        )
    frame = pd.DataFrame({"id": ids, "name": names, "description": descs})
    frame["text"] = [f"{n}, {d}" if d else n for n, d in zip(names, descs)]
    return frame


def _relation_frame(ids: list[str], texts: dict[str, str], prefix: str, source: Path | None) -> pd.DataFrame:
    out, missing = [], 0
    for ident in ids:
        text = texts.get(ident)
        if not text:
            missing += 1
            text = readable_id(ident)
        out.append(text)
    if missing:
        log.warning(
            "%d of %d relations have no text%s; their ids were made readable instead",
            missing, len(ids), f" in {source}" if source else "",
        )
    return pd.DataFrame({"id": ids, "text": out, "inverse_text": [prefix + t for t in out]})


# ------------------------------------------------------------------------------------------ what the graph contains

SPLITS = ("train", "dev", "test")


def graph_summary(tables: dict[str, pd.DataFrame], examples: int = 5) -> dict:
    """What a graph contains, from the original-direction triples: counts per split; entities and relations of dev /
    test that no train triple uses (unseen at training time: count + the first few, in file order); duplicate triples
    within a split (rows beyond the first copy); dev / test triples that are also train triples (rows)."""
    tri = tables["triples"]
    tri = tri[~tri["inverse"]]
    by_split = {s: tri[tri["split"] == s] for s in SPLITS}
    keys = {s: list(zip(f["head"], f["relation"], f["tail"])) for s, f in by_split.items()}
    train_entities = set(by_split["train"]["head"]) | set(by_split["train"]["tail"])
    train_relations = set(by_split["train"]["relation"])
    train_triples = set(keys["train"])

    def unseen(values, known):
        first = list(dict.fromkeys(v for v in values if v not in known))
        return {"count": len(first), "examples": first[:examples]}

    summary = {
        "entities": int(len(tables["entities"])),
        "relations": int(len(tables["relations"])),
        "triples": {s: len(keys[s]) for s in SPLITS},
        "unseen_in_train": {
            s: {
                "entities": unseen((e for h, _, t in keys[s] for e in (h, t)), train_entities),
                "relations": unseen((r for _, r, _ in keys[s]), train_relations),
            }
            for s in ("dev", "test")
        },
        "duplicates_within_split": {s: len(keys[s]) - len(set(keys[s])) for s in SPLITS},
        "also_in_train": {s: sum(k in train_triples for k in keys[s]) for s in ("dev", "test")},
    }
    return summary


def summary_lines(summary: dict) -> tuple[list[str], list[str]]:
    """(info lines, warning lines) for the log. Warnings are what a standard benchmark would not have: test
    entities or relations unseen in train, test or dev triples also in train, duplicate triples."""
    t = summary["triples"]
    info = [f"{summary['entities']} entities, {summary['relations']} relations; triples: train {t['train']}, "
            f"dev {t['dev']}, test {t['test']}"]
    warn = []
    for split in ("dev", "test"):
        unseen = summary["unseen_in_train"][split]
        if not any(item["count"] for item in unseen.values()):
            info.append(f"{split}: every entity and relation also appears in train")
        for kind, item in unseen.items():
            if item["count"]:
                examples = ", ".join(repr(x) for x in item["examples"])
                noun = {"entities": "entity", "relations": "relation"}[kind] if item["count"] == 1 else kind
                text = f"{split}: {item['count']} {noun} in no train triple (unseen at training time), e.g. {examples}"
                (warn if split == "test" else info).append(text)
    for split, count in summary["duplicates_within_split"].items():
        if count:
            noun = "duplicate triple" if count == 1 else "duplicate triples"
            warn.append(f"{split}: {count} {noun} (a head, relation, tail repeated; copies beyond the first)")
    for split, count in summary["also_in_train"].items():
        if count:
            warn.append(f"{split}: {count} of {t[split]} triples are also train triples")
    if not any(summary["duplicates_within_split"].values()):
        info.append("no duplicate triples within a split")
    if not any(summary["also_in_train"].values()):
        info.append("no dev or test triple is also a train triple")
    return info, warn
