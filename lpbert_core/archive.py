"""Fetch step of the data stages: verify an archive's SHA-256 and extract it without trusting its member paths."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath

from .atomic import atomic_dir, atomic_path
from .errors import InputError


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


def safe_extract(archive: str | Path, dest: str | Path, strip_top: bool = True) -> list[str]:
    """Extract a .tar.gz into `dest` (replaced atomically). With `strip_top`, a single top-level folder
    (e.g. `umls/`) is dropped so files land directly in `dest`. Returns the extracted relative paths."""
    archive, dest = Path(archive), Path(dest)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        names = [_check_member(archive, m) for m in members]
        tops = {n.parts[0] for n in names if n.parts}
        strip = strip_top and len(tops) == 1 and any(len(n.parts) > 1 for n in names)
        written = []
        with atomic_dir(dest) as tmp:
            for member, name in zip(members, names):
                parts = name.parts[1:] if strip else name.parts
                if not parts or member.isdir():
                    continue
                target = tmp.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                written.append("/".join(parts))
    if not written:
        raise InputError(archive, "archive contains no files")
    return sorted(written)


def download(url: str, dest: str | Path) -> None:
    """Download `url` to `dest` atomically (for connected users who point the config at upstream addresses)."""
    with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)


def fetch_files(files: dict, dest: str | Path) -> list[str]:
    """Download individual files into `dest` (replaced atomically): `files` maps a target file name to
    {url, sha256 (optional), member (optional: take this member out of a downloaded tar)}."""
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        for name, spec in files.items():
            target = tmp / name
            download(spec["url"], target)
            if spec.get("member"):
                with tarfile.open(target, "r:*") as tar:
                    wanted = [m for m in tar.getmembers() if PurePosixPath(m.name).name == spec["member"]]
                    if not wanted:
                        raise InputError(spec["url"], f"archive has no member {spec['member']!r}")
                    _check_member(target, wanted[0])
                    data = tar.extractfile(wanted[0]).read()
                target.write_bytes(data)
            if spec.get("sha256"):
                verify_sha256(target, spec["sha256"])
    return sorted(files)


def copy_folder(folder: str | Path, dest: str | Path) -> list[str]:
    """Bring-your-own-graph: copy the plain files of `folder` into `dest` (replaced atomically)."""
    folder, dest = Path(folder), Path(dest)
    if not folder.is_dir():
        raise InputError(folder, "graph folder does not exist")
    names = []
    with atomic_dir(dest) as tmp:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.is_symlink():
                shutil.copyfile(path, tmp / path.name)
                names.append(path.name)
    return names
