"""Container records: what the engine knows of each container, in SQLite
(``<root>/containers.db``, WAL, shared by corrald and every ``corral``
process on the root; docs/dev/manager.md, "Paths").

A container's *record* is static: its ID, name, image, the checked create
body, the spec's choices the engine needs later (stop signal, init), and a
lifecycle mark. The dynamic state of a started container is the shim's
(``state.json``); the record only keeps the last state it saw, for when the
shim's run directory is gone (after a reboot).

The mark makes every change undoable by the next process after a crash:

    creating ──> created ──> removing ──> (row deleted)

A record is written ``creating`` before anything is made on disk, and marked
``created`` only once the bundle, snapshot and files exist, so
``Engine.reconcile`` can undo a half-made one; removal marks ``removing``
first, so a killed removal is finished. Names are a UNIQUE column, so two
processes creating the same name race in SQLite, and one loses.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._sqlite import open_db, transaction
from .errors import InvalidArgument, NotFound, name_in_use, no_such_container

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    mark TEXT NOT NULL,             -- creating, created, removing
    created REAL NOT NULL,
    image_id TEXT NOT NULL,         -- sha256:... of the config
    image_ref TEXT NOT NULL,        -- as the client wrote it
    document TEXT NOT NULL,         -- JSON: config, host_config, path, args ...
    started INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    last_state TEXT                 -- JSON: the shim's state as last seen
);
CREATE TABLE IF NOT EXISTS execs (
    id TEXT PRIMARY KEY,
    container TEXT NOT NULL,
    created REAL NOT NULL,
    document TEXT NOT NULL,         -- JSON: the exec's checked body
    pid INTEGER NOT NULL DEFAULT 0,
    running INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER
);
CREATE INDEX IF NOT EXISTS execs_by_container ON execs(container);
"""


@dataclass
class Container:
    """One container record."""

    id: str
    name: str
    mark: str
    created: float
    image_id: str
    image_ref: str
    document: dict
    started: bool = False
    paused: bool = False
    last_state: dict | None = None

    @property
    def config(self) -> dict:
        return self.document["config"]

    @property
    def host_config(self) -> dict:
        return self.document["host_config"]


@dataclass
class ExecRecord:
    id: str
    container: str
    created: float
    document: dict
    pid: int = 0
    running: bool = False
    exit_code: int | None = None
    extra: dict = field(default_factory=dict)


class Records:
    """The containers.db of one root; one connection, safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = open_db(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def transaction(self):
        return transaction(self._db, self._lock)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # Containers ------------------------------------------------------------

    def insert(self, container: Container) -> None:
        """Add a record (mark ``creating``); Conflict if the name is taken."""
        try:
            with self.transaction() as db:
                db.execute("INSERT INTO containers VALUES (?,?,?,?,?,?,?,?,?,?)",
                           (container.id, container.name, container.mark,
                            container.created, container.image_id, container.image_ref,
                            json.dumps(container.document), int(container.started),
                            int(container.paused), None))
        except sqlite3.IntegrityError:
            holder = self._query("SELECT id FROM containers WHERE name = ?",
                                 (container.name,))
            if holder:
                raise name_in_use(container.name, holder[0][0]) from None
            raise

    def update(self, container_id: str, **values: object) -> None:
        """Set columns of one record (``document`` and ``last_state`` as JSON)."""
        columns = []
        args: list[object] = []
        for key, value in values.items():
            if key not in ("name", "mark", "document", "started", "paused", "last_state"):
                raise ValueError(f"records: no column '{key}'")
            columns.append(f"{key} = ?")
            if key in ("document", "last_state") and value is not None:
                value = json.dumps(value)
            args.append(int(value) if isinstance(value, bool) else value)
        try:
            with self.transaction() as db:
                db.execute(f"UPDATE containers SET {', '.join(columns)} WHERE id = ?",
                           (*args, container_id))
        except sqlite3.IntegrityError:
            holder = self._query("SELECT id FROM containers WHERE name = ?",
                                 (values.get("name"),))
            raise name_in_use(str(values.get("name")), holder[0][0] if holder else "") \
                from None

    def delete(self, container_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM execs WHERE container = ?", (container_id,))
            db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def get(self, container_id: str) -> Container:
        rows = self._query("SELECT * FROM containers WHERE id = ?", (container_id,))
        if not rows:
            raise no_such_container(container_id)
        return _container(rows[0])

    def all(self) -> list[Container]:
        rows = self._query("SELECT * FROM containers ORDER BY created DESC")
        return [_container(row) for row in rows]

    def name_taken(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM containers WHERE name = ?", (name,)))

    def resolve(self, ref: str) -> Container:
        """The record ``ref`` names, as Docker looks it up: full ID, then
        exact name (with or without ``/``), then a unique ID prefix."""
        if not ref:
            raise no_such_container(ref)
        rows = self._query("SELECT * FROM containers WHERE id = ?", (ref,))
        if not rows:
            rows = self._query("SELECT * FROM containers WHERE name = ?",
                               (ref.removeprefix("/"),))
        if not rows and all(c in "0123456789abcdef" for c in ref):
            rows = self._query("SELECT * FROM containers WHERE id LIKE ?", (f"{ref}%",))
            if len(rows) > 1:
                raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        if not rows:
            raise no_such_container(ref)
        return _container(rows[0])

    def uses_image(self, image_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM containers WHERE image_id = ?",
                                (image_id,)))

    # Execs -----------------------------------------------------------------

    def insert_exec(self, record: ExecRecord) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO execs VALUES (?,?,?,?,?,?,?)",
                       (record.id, record.container, record.created,
                        json.dumps(record.document), record.pid, int(record.running),
                        record.exit_code))

    def update_exec(self, exec_id: str, *, pid: int | None = None,
                    running: bool | None = None, exit_code: int | None = None) -> None:
        with self.transaction() as db:
            if pid is not None:
                db.execute("UPDATE execs SET pid = ? WHERE id = ?", (pid, exec_id))
            if running is not None:
                db.execute("UPDATE execs SET running = ? WHERE id = ?",
                           (int(running), exec_id))
            if exit_code is not None:
                db.execute("UPDATE execs SET exit_code = ? WHERE id = ?",
                           (exit_code, exec_id))

    def claim_exec(self, exec_id: str) -> bool:
        """Mark a never-started exec running; False if it has been started
        (by any process: the check and the change are one statement)."""
        with self.transaction() as db:
            cursor = db.execute("UPDATE execs SET running = 1 WHERE id = ? AND running = 0 "
                                "AND exit_code IS NULL", (exec_id,))
            return cursor.rowcount == 1

    def get_exec(self, exec_id: str) -> ExecRecord:
        rows = self._query("SELECT * FROM execs WHERE id = ?", (exec_id,))
        if not rows:
            raise NotFound(f"No such exec instance: {exec_id}")
        row = rows[0]
        return ExecRecord(row[0], row[1], row[2], json.loads(row[3]), row[4],
                          bool(row[5]), row[6])

    def exec_ids(self, container_id: str) -> list[str]:
        return [r[0] for r in self._query(
            "SELECT id FROM execs WHERE container = ? ORDER BY created", (container_id,))]


def _container(row: tuple) -> Container:
    return Container(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]),
                     bool(row[7]), bool(row[8]), json.loads(row[9]) if row[9] else None)


def now() -> float:
    return time.time()
