"""The content store: blobs addressed by their digest (OCI image layout's
``blobs/<alg>/<hex>``, containerd's local content store).

A blob becomes visible only whole and verified. Writes go to an *ingest*
file named after the expected digest, and a verified ingest is renamed into
place, so a reader sees either nothing or the whole blob. An interrupted
write leaves its ingest file behind; the next write of the same digest takes
it up where it stopped (the registry client asks for the rest with a Range
request), after re-hashing what is already there.

Several processes share one store: each ingest file is held under an
exclusive ``flock`` while it is written, so two pulls of one layer do not
interleave; the second waits, then finds the blob committed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .digest import Digest, Verifier
from .errors import (
    BadContent,
    InvalidArgument,
    NoSpace,
    NotFound,
    is_no_space,
    no_space,
)

_CHUNK = 1 << 20


class ContentStore:
    """Blobs under ``<root>/blobs/<alg>/<hex>``, ingests under ``<root>/ingest``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._ingest = root / "ingest"
        for algorithm in ("sha256", "sha512"):
            (self._blobs / algorithm).mkdir(parents=True, exist_ok=True)
        self._ingest.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self._blobs / digest.algorithm / digest.hex

    def size(self, digest: Digest) -> int | None:
        """The blob's size, or None when the store does not have it."""
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            return None

    def has(self, digest: Digest) -> bool:
        return self.size(digest) is not None

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob '{digest}': not in the content store") from None

    def read(self, digest: Digest, *, limit: int = 16 << 20) -> bytes:
        """A small blob (manifest, config) whole, checked against its digest.

        Manifests and configs are read again and again and are small, so
        checking them on every read is cheap and catches a damaged store.
        """
        with self.open(digest) as file:
            data = file.read(limit + 1)
        if len(data) > limit:
            raise BadContent(f"blob '{digest}': larger than {limit} bytes")
        digest.verify(data, what=f"blob '{digest}'")
        return data

    def write(self, data: bytes, digest: Digest | None = None, *,
              what: str | None = None) -> Digest:
        """Store a small blob given whole; check it if its digest is given."""
        digest = digest or Digest.of(data)
        if self.has(digest):
            return digest
        with self.ingest(digest, len(data), what=what) as writer:
            if writer.offset:
                writer.restart()
            writer.write(data)
            writer.commit()
        return digest

    @contextlib.contextmanager
    def ingest(self, digest: Digest, size: int | None, *,
               what: str | None = None) -> Iterator[Writer]:
        """Open the ingest of ``digest`` for writing.

        The writer's ``offset`` says how much an earlier, interrupted write
        left; the caller writes the rest (or calls ``restart``) and then
        ``commit``. Content that fails its check is thrown away; an ingest
        left by an error of another kind (a dropped connection) is kept for
        the next attempt. If the blob is already committed when the lock is
        got, ``writer.done`` is true and nothing needs writing.
        """
        what = what or f"blob '{digest}'"
        path = self._ingest / f"{digest.algorithm}-{digest.hex}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            writer = Writer(self, digest, size, fd, path, what)
            if writer.done:
                _unlink_if_same(path, fd)
            try:
                yield writer
            except (BadContent, NoSpace):
                # Bad content is no use, and on a full disk the partial
                # ingest holds the space the user must free to go on.
                writer.discard()
                raise
            except BaseException:
                # Nothing to resume from: leave no empty ingest behind.
                if not writer.done and os.fstat(fd).st_size == 0:
                    _unlink_if_same(path, fd)
                raise
        finally:
            os.close(fd)

    def adopt(self, path: Path, digest: Digest) -> bool:
        """Move a file that the caller has verified to be ``digest`` into the
        store (it must be on the store's file system); False, and the file
        left alone, if the store has the blob already."""
        if self.has(digest):
            return False
        os.chmod(path, 0o600)
        os.rename(path, self.path(digest))
        return True

    def delete(self, digest: Digest) -> bool:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    def walk(self) -> Iterator[tuple[Digest, int]]:
        """Every committed blob and its size."""
        for algorithm in ("sha256", "sha512"):
            with os.scandir(self._blobs / algorithm) as entries:
                for entry in entries:
                    try:
                        digest = Digest.parse(f"{algorithm}:{entry.name}")
                    except InvalidArgument:
                        continue
                    yield digest, entry.stat().st_size

    def sweep_ingests(self) -> int:
        """Remove ingest files no process is writing; the number removed."""
        removed = 0
        for path in self._ingest.iterdir():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            else:
                path.unlink(missing_ok=True)
                removed += 1
            finally:
                os.close(fd)
        return removed


def _unlink_if_same(path: Path, fd: int) -> None:
    """Remove an ingest file that turned out not to be needed, unless
    another process has already put a new one at that path."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)


class Writer:
    """One ingest in progress; made by ``ContentStore.ingest``."""

    def __init__(self, store: ContentStore, digest: Digest, size: int | None,
                 fd: int, path: Path, what: str) -> None:
        self.store = store
        self.digest = digest
        self.what = what
        self._fd = fd
        self._path = path
        self._verifier = Verifier(digest, size, what=what)
        self.done = store.has(digest)
        self.offset = 0 if self.done else self._resume(size)

    def _resume(self, size: int | None) -> int:
        """Hash what an earlier attempt wrote; start over if it cannot fit."""
        length = os.fstat(self._fd).st_size
        if length and size is not None and length > size:
            length = 0
        os.ftruncate(self._fd, length)
        os.lseek(self._fd, 0, os.SEEK_SET)
        remaining = length
        while remaining:
            chunk = os.read(self._fd, min(_CHUNK, remaining))
            if not chunk:
                break
            self._verifier.update(chunk)
            remaining -= len(chunk)
        return length

    def restart(self) -> None:
        """Forget what is there, for a source that cannot resume."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._verifier = Verifier(self.digest, self._verifier.size, what=self.what)
        self.offset = 0

    def write(self, chunk: bytes) -> None:
        self._verifier.update(chunk)
        view = memoryview(chunk)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            if is_no_space(exc):
                raise no_space(self.what, self.store.root) from exc
            raise

    @property
    def written(self) -> int:
        return self._verifier.count

    def commit(self) -> None:
        """Check digest and size, then make the blob visible."""
        if self.done:
            return
        self._verifier.check()
        os.rename(self._path, self.store.path(self.digest))
        self.done = True

    def discard(self) -> None:
        self._path.unlink(missing_ok=True)
