"""The snapshotter interface and what its implementations share
(containerd's snapshot model: snapshots/snapshotter.go).

A snapshot is a filesystem tree. An *active* snapshot (``prepare``, under a
``key``) is writable; a *view* is an active one that is read-only;
``commit`` turns an active snapshot into a *committed* one under a ``name``,
which may then be the ``parent`` of others. Keys and names share one
namespace. Snapshotters return ``Mount`` specs; ``corral.image.mount``
performs them.

Metadata lives in SQLite (WAL, busy timeout) under the snapshotter's root,
shared by every process that opens it. The order of steps makes every crash
safe: a snapshot's directory is built under a temporary name and renamed to
its id inside the transaction that inserts its record, and a removal deletes
the record first. So a directory without a record is garbage, and
``cleanup`` (run by ``remove``) sweeps it; a record never lacks its directory.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ..mount import Mount

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
    parent TEXT REFERENCES snapshots (key),
    created REAL NOT NULL
)
"""
# Seconds a process waits for another's write transaction.
_BUSY_TIMEOUT = 30


@dataclass(frozen=True)
class Info:
    """A snapshot's record: kind "active", "view" or "committed"."""

    kind: str
    name: str
    parent: str | None
    created: float


class Snapshotter(Protocol):
    """What every snapshotter offers (containerd's Snapshotter interface)."""

    name: str

    def prepare(self, key: str, parent: str | None) -> list[Mount]:
        """A writable active snapshot ``key`` on top of committed ``parent``."""
        ...

    def view(self, key: str, parent: str | None) -> list[Mount]:
        """A read-only active snapshot ``key`` of committed ``parent``."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of active snapshot or view ``key``."""
        ...

    def commit(self, name: str, key: str) -> None:
        """Make active ``key`` the committed ``name`` (AlreadyExists if taken)."""
        ...

    def remove(self, key: str) -> None:
        """Remove snapshot ``key`` (FailedPrecondition if it has children)."""
        ...

    def stat(self, key: str) -> Info: ...

    def walk(self) -> Iterator[Info]: ...

    def usage(self, key: str) -> int:
        """Bytes on disk that snapshot ``key`` itself holds."""
        ...


@dataclass(frozen=True)
class Record:
    """A snapshot's row: ``id`` names its directory ``snapshots/<id>``."""

    id: int
    key: str
    kind: str
    parent: str | None
    created: float


class BaseSnapshotter:
    """Metadata, directories and the lifecycle; subclasses fill and mount."""

    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs = root / "snapshots"
        self.dirs.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "metadata.db", timeout=_BUSY_TIMEOUT,
                                   isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT * 1000}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(_SCHEMA)

    # --- hooks of the implementations ---

    def _populate(self, fs: Path, parents: list[Record], *, readonly: bool) -> None:
        """Fill a new snapshot's ``fs`` (made, empty) from its parent chain."""

    def _mounts(self, record: Record, parents: list[Record]) -> list[Mount]:
        raise NotImplementedError

    # --- the interface ---

    def prepare(self, key: str, parent: str | None) -> list[Mount]:
        return self._create(key, parent, "active")

    def view(self, key: str, parent: str | None) -> list[Mount]:
        return self._create(key, parent, "view")

    def mounts(self, key: str) -> list[Mount]:
        record = self._get(key)
        if record.kind == "committed":
            raise FailedPrecondition(f"mounts of snapshot '{key}': it is committed")
        return self._mounts(record, self._chain(record.parent))

    def commit(self, name: str, key: str) -> None:
        _check_key(name)
        with self._transaction() as db:
            record = self._get(key, db)
            if record.kind != "active":
                raise FailedPrecondition(f"commit snapshot '{key}': it is a "
                                         f"{record.kind} snapshot, not an active one")
            try:
                db.execute("UPDATE snapshots SET key = ?, kind = 'committed', "
                           "created = ? WHERE id = ?", (name, time.time(), record.id))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"commit snapshot '{key}' as '{name}': "
                                    f"'{name}' already exists") from None

    def remove(self, key: str) -> None:
        with self._transaction() as db:
            record = self._get(key, db)
            child = db.execute("SELECT key FROM snapshots WHERE parent = ? LIMIT 1",
                               (key,)).fetchone()
            if child:
                raise FailedPrecondition(f"remove snapshot '{key}': it has children "
                                         f"('{child[0]}')")
            db.execute("DELETE FROM snapshots WHERE id = ?", (record.id,))
        # The record is gone: from here the directory is garbage, which
        # cleanup would sweep if we were to crash now.
        self._delete_dir(self.dirs / str(record.id))
        self.cleanup()

    def stat(self, key: str) -> Info:
        return _info(self._get(key))

    def walk(self) -> Iterator[Info]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM snapshots ORDER BY id").fetchall()
        for row in rows:
            yield _info(Record(*row))

    def usage(self, key: str) -> int:
        return disk_usage(self.dirs / str(self._get(key).id) / "fs")

    def cleanup(self) -> None:
        """Delete directories that no record owns (left by a crash)."""
        with self._transaction() as db:
            ids = {str(row[0]) for row in db.execute("SELECT id FROM snapshots")}
            for entry in os.scandir(self.dirs):
                if entry.name.isdigit() and entry.name not in ids:
                    self._delete_dir(Path(entry.path))
                elif entry.name.startswith("new-") and not _alive(entry.name):
                    self._delete_dir(Path(entry.path))

    def close(self) -> None:
        self._db.close()

    # --- internals ---

    def _create(self, key: str, parent: str | None, kind: str) -> list[Mount]:
        _check_key(key)
        parents = self._chain(parent)
        if parent is not None and parents[0].kind != "committed":
            raise FailedPrecondition(f"prepare snapshot '{key}': parent '{parent}' "
                                     f"is not committed")
        # Built outside the transaction, under a name only this process uses.
        staging = self.dirs / f"new-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            (staging / "fs").mkdir(parents=True, mode=0o755)
            (staging / "work").mkdir(mode=0o700)
            self._populate(staging / "fs", parents, readonly=kind == "view")
            record = self._insert(key, parent, kind, staging)
        except BaseException:
            self._delete_dir(staging)
            raise
        return self._mounts(record, parents)

    def _insert(self, key: str, parent: str | None, kind: str, staging: Path) -> Record:
        with self._transaction() as db:
            try:
                cursor = db.execute(
                    "INSERT INTO snapshots (key, kind, parent, created) "
                    "VALUES (?, ?, ?, ?)", (key, kind, parent, time.time()))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"prepare snapshot '{key}': it already "
                                    f"exists") from None
            final = self.dirs / str(cursor.lastrowid)
            if final.exists():
                self._delete_dir(final)  # garbage of an id a crash left unused
            os.rename(staging, final)
            return self._get(key, db)

    def _chain(self, parent: str | None) -> list[Record]:
        """The parent and its ancestors, nearest first."""
        chain: list[Record] = []
        while parent is not None:
            record = self._get(parent)
            chain.append(record)
            parent = record.parent
        return chain

    def _get(self, key: str, db: sqlite3.Connection | None = None) -> Record:
        if db is None:
            with self._lock:
                row = self._db.execute("SELECT * FROM snapshots WHERE key = ?",
                                       (key,)).fetchone()
        else:
            row = db.execute("SELECT * FROM snapshots WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise NotFound(f"snapshot '{key}': does not exist")
        return Record(*row)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def _delete_dir(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def fs_path(self, record: Record) -> Path:
        return self.dirs / str(record.id) / "fs"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), one thread at a time.

    IMMEDIATE takes the write lock at once, so two processes that race for a
    name serialize on it instead of failing at COMMIT.
    """

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        try:
            self._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self._lock.release()


def _info(record: Record) -> Info:
    return Info(record.kind, record.key, record.parent, record.created)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or "\0" in key:
        raise InvalidArgument(f"snapshot key {key!r}: must be a non-empty string")


def _alive(staging_name: str) -> bool:
    """Whether the process that made ``new-<pid>-...`` still runs."""
    try:
        os.kill(int(staging_name.split("-")[1]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path``, each inode counted once (like du)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(path)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total
