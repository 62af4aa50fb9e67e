"""Digests and the content store: verification, atomic commit, resumed ingests."""

from __future__ import annotations

import hashlib
import os

import pytest

from corral.image.content import ContentStore
from corral.image.digest import Digest
from corral.image.errors import BadContent, InvalidArgument, NotFound

DATA = b"hello layer\n" * 1000
DIGEST = Digest("sha256", hashlib.sha256(DATA).hexdigest())


@pytest.mark.parametrize("text", [
    "sha256", "sha256:", "md5:" + "0" * 32, "sha256:" + "0" * 63, "sha256:" + "G" * 64,
    "sha256:" + "A" * 64, "sha256:../../../../etc/passwd", 42, None,
])
def test_bad_digests_are_refused(text):
    with pytest.raises(InvalidArgument, match="digest"):
        Digest.parse(text)


def test_sha512_is_accepted():
    digest = Digest.of(b"x", "sha512")
    assert Digest.parse(str(digest)) == digest
    assert len(digest.hex) == 128


def test_write_then_read(tmp_path):
    store = ContentStore(tmp_path)
    assert store.write(DATA) == DIGEST
    assert store.read(DIGEST) == DATA
    assert store.size(DIGEST) == len(DATA)
    assert [d for d, _ in store.walk()] == [DIGEST]


def test_a_blob_that_fails_its_digest_never_becomes_visible(tmp_path):
    store = ContentStore(tmp_path)
    wrong = Digest.of(b"something else")
    with pytest.raises(BadContent, match="digest mismatch"):
        store.write(DATA, wrong)
    assert not store.has(wrong)
    assert list((tmp_path / "ingest").iterdir()) == []


def test_more_bytes_than_the_descriptor_says_is_refused_at_once(tmp_path):
    store = ContentStore(tmp_path)
    with pytest.raises(BadContent, match="more than the 10 bytes"):
        with store.ingest(DIGEST, 10) as writer:
            writer.write(DATA)
    assert not store.has(DIGEST)


def test_an_interrupted_ingest_is_resumed(tmp_path):
    store = ContentStore(tmp_path)
    with pytest.raises(ConnectionError):
        with store.ingest(DIGEST, len(DATA)) as writer:
            writer.write(DATA[:5000])
            raise ConnectionError("dropped")
    assert not store.has(DIGEST)
    with store.ingest(DIGEST, len(DATA)) as writer:
        assert writer.offset == 5000
        writer.write(DATA[5000:])
        writer.commit()
    assert store.read(DIGEST) == DATA
    assert list((tmp_path / "ingest").iterdir()) == []


def test_a_damaged_blob_is_caught_on_read(tmp_path):
    store = ContentStore(tmp_path)
    store.write(DATA)
    path = store.path(DIGEST)
    os.chmod(path, 0o644)
    path.write_bytes(DATA[:-1] + b"!")
    with pytest.raises(BadContent, match="digest mismatch"):
        store.read(DIGEST)


def test_missing_blob(tmp_path):
    with pytest.raises(NotFound, match="not in the content store"):
        ContentStore(tmp_path).open(DIGEST)


def test_sweep_removes_idle_ingests_only(tmp_path):
    store = ContentStore(tmp_path)
    with pytest.raises(ConnectionError):
        with store.ingest(DIGEST, len(DATA)) as writer:
            writer.write(DATA[:10])
            raise ConnectionError
    assert store.sweep_ingests() == 1
    assert list((tmp_path / "ingest").iterdir()) == []
