"""SQLite as every layer uses it: one file shared by several processes.

WAL, so readers never wait for a writer; a long busy timeout, so writers of
different processes queue rather than fail; autocommit, with explicit
``BEGIN IMMEDIATE`` transactions that take the write lock at their start
(no deadlock between two readers that both decide to write).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

BUSY_TIMEOUT = 30.0


def open_db(path: Path | str, schema: str) -> sqlite3.Connection:
    """A connection to ``path`` (made with ``schema`` if new), for any thread."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection,
                lock: threading.Lock | threading.RLock | None = None
                ) -> Iterator[sqlite3.Connection]:
    """One write transaction; rolled back if the block raises. ``lock``
    serializes the threads of this process that share ``db``."""
    with lock if lock is not None else contextlib.nullcontext():
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
