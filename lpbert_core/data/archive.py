"""Fetch step of the data stages: verify an archive (SHA-256 when the config pins one, and always the compressed
stream's own CRC to its end), extract it without trusting its member paths, and record where every file came from
(`SOURCE.json` in the raw folder)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from lpbert_core.runtime.atomic import atomic_dir, atomic_path
from lpbert_core.errors import InputError

PROVENANCE_FILE = "SOURCE.json"  # written into every raw folder; no graph reader looks at it

# magic bytes -> (name, opener) of the compressions tarfile reads
_COMPRESSIONS = (
    (b"\x1f\x8b", "gzip", gzip.open, "gz"),
    (b"BZh", "bz2", bz2.open, "bz2"),
    (b"\xfd7zXZ\x00", "xz", lzma.open, "xz"),
)
# what a damaged compressed stream raises (gzip.BadGzipFile and bz2's "Invalid data stream" are OSErrors)
_STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise InputError(path, f"SHA-256 mismatch: expected {expected}, got {actual} (corrupt or wrong archive)")


def _compression(path: Path) -> tuple[str | None, object, str]:
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, name, opener, mode in _COMPRESSIONS:
        if head.startswith(magic):
            return name, opener, mode
    return None, None, ""


def check_stream(archive: str | Path) -> str | None:
    """Decompress the whole archive once and discard the bytes, so the compressed stream is checked to its end
    (gzip: CRC-32 and length of every member; bz2/xz: their own checks). `tarfile` stops reading at the end-of-archive
    blocks and never reaches the gzip trailer, so without this a flipped byte or a cut-off download can pass.
    Returns the compression's name (None for a plain tar). Raises InputError naming the archive."""
    archive = Path(archive)
    name, opener, _ = _compression(archive)
    if opener is None:
        return None
    try:
        with opener(archive, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except EOFError:
        raise InputError(archive, f"truncated archive: the {name} stream ends early (incomplete download?)") from None
    except _STREAM_ERRORS as exc:
        raise InputError(archive, f"corrupt archive: damaged {name} data ({_one_line(exc)})") from None
    return name


def renamed(exc: InputError, path: str | Path) -> InputError:
    """The same error about a temporary copy, naming where the user's file came from instead."""
    return InputError(path, exc.message, exc.line)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _open_tar(archive: Path) -> tarfile.TarFile:
    """Open with the compression the magic bytes name (not "r:*", whose error lists every method tried)."""
    name, _, mode = _compression(archive)
    try:
        return tarfile.open(archive, f"r:{mode}")
    except (tarfile.TarError, *_STREAM_ERRORS) as exc:
        what = f"{name}-compressed, but not a tar archive inside" if name else "not a tar archive, compressed or plain"
        raise InputError(archive, f"{what}: {_one_line(exc)}") from None


def _check_member(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    """Refuse members that could write outside the target: absolute paths, '..', links, devices."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")):
        raise InputError(archive, f"unsafe archive member {member.name!r}: absolute path")
    if ".." in name.parts:
        raise InputError(archive, f"unsafe archive member {member.name!r}: '..' in path")
    if member.issym() or member.islnk():
        raise InputError(archive, f"unsafe archive member {member.name!r}: links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise InputError(archive, f"unsafe archive member {member.name!r}: not a regular file or folder")
    return name


def extract_into(archive: str | Path, target: str | Path, strip_top: bool = True,
                 member_folder: str | None = None) -> list[str]:
    """Check the compressed stream, then extract a tar archive into the existing folder `target` (not atomic: the
    caller owns the folder). With `strip_top`, a single top-level folder (e.g. `umls/`) is dropped so files land
    directly in `target`. `member_folder` (e.g. `grail/WN18RR_v1`): only the files under that folder of the archive,
    which lands directly in `target`; its absence is an error naming the archive. Returns the extracted relative
    paths."""
    archive, target = Path(archive), Path(target)
    check_stream(archive)
    with _open_tar(archive) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, *_STREAM_ERRORS) as exc:
            raise InputError(archive, f"corrupt tar archive ({_one_line(exc)})") from None
        names = [_check_member(archive, m) for m in members]
        if member_folder is not None:
            prefix = PurePosixPath(member_folder.strip("/")).parts
            keep = [(m, n) for m, n in zip(members, names) if n.parts[:len(prefix)] == prefix]
            if not any(len(n.parts) > len(prefix) for _, n in keep):
                raise InputError(archive, f"no folder {member_folder!r} in the archive")
            members, names = [m for m, _ in keep], [PurePosixPath(*n.parts[len(prefix) - 1:]) for _, n in keep]
            strip_top = True  # the member folder's own name is the single top level
        tops = {n.parts[0] for n in names if n.parts}
        strip = strip_top and len(tops) == 1 and any(len(n.parts) > 1 for n in names)
        written = []
        for member, name in zip(members, names):
            parts = name.parts[1:] if strip else name.parts
            if not parts or member.isdir():
                continue
            if parts == (PROVENANCE_FILE,):
                raise InputError(archive, f"archive member {member.name!r} clashes with the provenance file "
                                          f"{PROVENANCE_FILE} the download step writes")
            out_path = target.joinpath(*parts)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with tar.extractfile(member) as src, open(out_path, "wb") as out:
                    shutil.copyfileobj(src, out)
            except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:  # the stream itself was checked
                raise InputError(archive, f"corrupt tar archive at member {member.name!r} ({_one_line(exc)})") from None
            written.append("/".join(parts))
    if not written:
        raise InputError(archive, "archive contains no files")
    return sorted(written)


def safe_extract(archive: str | Path, dest: str | Path, strip_top: bool = True) -> list[str]:
    """`extract_into` a fresh folder that replaces `dest` atomically (nothing is left behind on error)."""
    with atomic_dir(dest) as tmp:
        return extract_into(archive, tmp, strip_top)


def download(url: str, dest: str | Path) -> None:
    """Download `url` to `dest` atomically (for connected users who point the config at upstream addresses)."""
    with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)


def fetch_files_into(files: dict, target: str | Path) -> dict[str, dict]:
    """Download individual files into the existing folder `target`: `files` maps a target file name to
    {url, sha256 (optional), member (optional: take this member out of a downloaded tar)}. Returns provenance per
    file (url, member, whether a sha256 was checked)."""
    target = Path(target)
    record = {}
    for name, spec in files.items():
        if name == PROVENANCE_FILE:
            raise InputError(spec["url"], f"file name {name!r} clashes with the provenance file the download step writes")
        path = target / name
        download(spec["url"], path)
        try:
            if spec.get("member"):
                check_stream(path)
                with _open_tar(path) as tar:
                    wanted = [m for m in tar.getmembers() if PurePosixPath(m.name).name == spec["member"]]
                    if not wanted:
                        raise InputError(path, f"archive has no member {spec['member']!r}")
                    _check_member(path, wanted[0])
                    data = tar.extractfile(wanted[0]).read()
                path.write_bytes(data)
            if spec.get("sha256"):
                verify_sha256(path, spec["sha256"])
        except InputError as exc:
            raise renamed(exc, spec["url"]) from None  # name the URL, not the temporary copy
        record[name] = {"url": spec["url"], "member": spec.get("member"), "sha256_checked": bool(spec.get("sha256"))}
    return record


def fetch_files(files: dict, dest: str | Path) -> list[str]:
    """`fetch_files_into` a fresh folder that replaces `dest` atomically."""
    with atomic_dir(dest) as tmp:
        fetch_files_into(files, tmp)
    return sorted(files)


# ------------------------------------------------------------------------------------------ bring your own graph

def folder_files(folder: str | Path) -> list[Path]:
    """The files a bring-your-own folder contributes, sorted by name: regular files and symbolic links to them
    (they are the user's files), plus dangling links (so the copy can name them). Hidden files (`.name`) and
    sub-folders are skipped."""
    folder = Path(folder)
    out = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() or (path.is_symlink() and not path.exists()):
            out.append(path)
    return out


def folder_fingerprint(folder: str | Path) -> str:
    """SHA-256 over (name, SHA-256 of content) of `folder_files`: what the download rule's params carry, so an edit
    that keeps a file's timestamp still reruns the stages below it. 'missing' when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for path in folder_files(folder):
        try:
            content = sha256_of(path)
        except OSError as exc:  # dangling link or unreadable: the download job names it
            content = f"unreadable: {exc.strerror}"
        digest.update(f"{path.name}\0{content}\n".encode())
    return digest.hexdigest()


def copy_folder_into(folder: str | Path, target: str | Path) -> dict[str, dict]:
    """Copy `folder_files(folder)` into the existing folder `target`, following links to regular files. A dangling
    link or an unreadable file is an InputError naming it. Returns {name: {"symlink_to": ...}} for followed links."""
    folder, target = Path(folder), Path(target)
    if not folder.is_dir():
        raise InputError(folder, "graph folder does not exist")
    record: dict[str, dict] = {}
    for path in folder_files(folder):
        if path.name == PROVENANCE_FILE:
            raise InputError(path, f"clashes with the provenance file {PROVENANCE_FILE} the download step writes: "
                                   "rename it")
        if not path.exists():
            raise InputError(path, f"broken symbolic link: it points to {os.readlink(path)!r}, which does not exist")
        try:
            shutil.copyfile(path, target / path.name)  # follows links
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror}") from None
        record[path.name] = {"symlink_to": str(path.resolve())} if path.is_symlink() else {}
    return record


def copy_folder(folder: str | Path, dest: str | Path) -> list[str]:
    """Bring-your-own-graph: `copy_folder_into` a fresh folder that replaces `dest` atomically."""
    with atomic_dir(dest) as tmp:
        names = sorted(copy_folder_into(folder, tmp))
    return names


# ------------------------------------------------------------------------------------------ provenance

def describe_files(folder: str | Path) -> dict[str, dict]:
    """{relative path: {sha256, bytes}} of every file under `folder` but the provenance file itself."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != PROVENANCE_FILE:
            out[rel] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    return out


def write_provenance(folder: str | Path, record: dict) -> None:
    """Write `SOURCE.json` into a raw folder that is still being built (inside its atomic_dir)."""
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    (Path(folder) / PROVENANCE_FILE).write_text(text)


def scratch_path(beside: str | Path, suffix: str) -> Path:
    """A fresh temporary file name next to `beside` (removed by the caller)."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{beside.name}.", suffix=suffix, dir=beside.parent)
    os.close(fd)
    return Path(name)
