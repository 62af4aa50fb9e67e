"""The ``events`` table of containers.db: what ``GET /events`` serves.

Rows are Docker's events (Engine API, ``GET /events``): a ``type``
(container, image, network, volume), an ``action`` (create, start, die,
restart, ...), the actor's ID and string ``attributes``, and the time in
nanoseconds. The shim appends ``die`` and ``restart``; the engine appends
the rest and reads them all back in ``id`` order, which is the order they
were written in (times can tie).

sqlite3 is imported only inside the functions: the shim records an event
from a forked child (see ``main``), so hundreds of idle shims never load
SQLite.
"""

from __future__ import annotations

import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_nano INTEGER NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_time ON events (time_nano);
"""

BUSY_TIMEOUT = 10.0


def connect(db_path: str):
    """A connection to DB_PATH in WAL mode, with the events table made."""
    import sqlite3

    connection = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(SCHEMA)
    return connection


def record(db_path: str, type: str, action: str, actor_id: str,
           attributes: dict[str, str] | None = None) -> None:
    """Append one event (TYPE, ACTION, ACTOR_ID, ATTRIBUTES) to DB_PATH, now."""
    from corral import _json

    connection = connect(db_path)
    try:
        connection.execute(
            "INSERT INTO events (time_nano, type, action, actor_id, attributes)"
            " VALUES (?, ?, ?, ?, ?)",
            (time.time_ns(), type, action, actor_id, _json.dumps(attributes or {})),
        )
    finally:
        connection.close()


def read(db_path: str, *, after_id: int = 0, since_nano: int | None = None,
         until_nano: int | None = None) -> list[dict]:
    """Events with an id above AFTER_ID, between the times given, as Docker's JSON.

    Each has Docker's fields (``Type``, ``Action``, ``Actor``, ``scope``,
    ``time``, ``timeNano``, and for containers the old ``status``, ``id``,
    ``from``) plus ``_id``, the row id to pass as AFTER_ID next time.
    """
    query = "SELECT id, time_nano, type, action, actor_id, attributes FROM events WHERE id > ?"
    params: list[int] = [after_id]
    if since_nano is not None:
        query += " AND time_nano >= ?"
        params.append(since_nano)
    if until_nano is not None:
        query += " AND time_nano <= ?"
        params.append(until_nano)
    connection = connect(db_path)
    try:
        rows = connection.execute(query + " ORDER BY id", params).fetchall()
    finally:
        connection.close()
    return [to_docker(*row) for row in rows]


def to_docker(row_id: int, time_nano: int, type: str, action: str, actor_id: str,
              attributes: str) -> dict:
    """One row as the Engine API's event message."""
    from corral import _json

    attrs = _json.loads(attributes)
    event = {
        "Type": type, "Action": action,
        "Actor": {"ID": actor_id, "Attributes": attrs},
        "scope": "local", "time": time_nano // 1_000_000_000, "timeNano": time_nano,
        "_id": row_id,
    }
    if type == "container":
        event.update(status=action, id=actor_id, **({"from": attrs["image"]}
                                                    if "image" in attrs else {}))
    return event
