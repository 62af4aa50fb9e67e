"""networks.db: the networks and their attachments, shared by every process.

SQLite in WAL through corral._sqlite, so the daemonless CLI, corrald and the
resolvers (which only read) work on one file. A network row is the whole
`Network`; an attachment row is the `Attachment` without its network, plus
the netns path it was made in. The CNI configuration is not stored: it is
generated from the row (conflist.py), and what a DEL needs is in the CNI
result cache.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from corral._sqlite import open_db, transaction

from .models import Attachment, Network, PortMapping

SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, driver TEXT NOT NULL,
    bridge TEXT NOT NULL, subnet TEXT NOT NULL, gateway TEXT NOT NULL,
    ip_range TEXT NOT NULL, internal INTEGER NOT NULL, labels TEXT NOT NULL,
    options TEXT NOT NULL, created REAL NOT NULL, dns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS attachments (
    network_id TEXT NOT NULL, container_id TEXT NOT NULL, name TEXT NOT NULL,
    ifname TEXT NOT NULL, ip TEXT NOT NULL, prefix_len INTEGER NOT NULL,
    gateway TEXT NOT NULL, mac TEXT NOT NULL, aliases TEXT NOT NULL,
    ports TEXT NOT NULL, netns TEXT NOT NULL,
    PRIMARY KEY (network_id, container_id));
CREATE INDEX IF NOT EXISTS attachments_container ON attachments (container_id);
"""

_NETWORK_COLUMNS = ("id, name, driver, bridge, subnet, gateway, ip_range, internal,"
                    " labels, options, created, dns")


class Store:
    """The rows of networks.db as `Network` and `Attachment` values."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path, SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def networks(self) -> list[Network]:
        """Every network, oldest first."""
        with self.lock:
            rows = self.db.execute(
                f"SELECT {_NETWORK_COLUMNS} FROM networks ORDER BY created").fetchall()
        return [_network(row) for row in rows]

    def insert_network(self, network: Network) -> None:
        """Add a network (the caller checked the name under the lock)."""
        values = asdict(network)
        values["labels"] = json.dumps(network.labels)
        values["options"] = json.dumps(network.options)
        with transaction(self.db, self.lock):
            self.db.execute(
                f"INSERT INTO networks ({_NETWORK_COLUMNS}) VALUES (:id, :name, "
                ":driver, :bridge, :subnet, :gateway, :ip_range, :internal, "
                ":labels, :options, :created, :dns)", values)

    def delete_network(self, network_id: str) -> None:
        """Drop a network row."""
        with transaction(self.db, self.lock):
            self.db.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def attachments(self, networks: dict[str, Network], *,
                    container_id: str | None = None,
                    network_id: str | None = None) -> list[tuple[Attachment, str]]:
        """Attachments (with their netns path), filtered; ``networks`` by ID."""
        query, args = ("SELECT * FROM attachments WHERE 1", [])
        if container_id is not None:
            query, args = query + " AND container_id = ?", [*args, container_id]
        if network_id is not None:
            query, args = query + " AND network_id = ?", [*args, network_id]
        with self.lock:
            cursor = self.db.execute(query + " ORDER BY rowid", args)
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor]
        return [(_attachment(row, networks[row["network_id"]]), row["netns"])
                for row in rows if row["network_id"] in networks]

    def insert_attachment(self, attachment: Attachment, netns: str) -> None:
        """Record an attachment made by a successful ADD."""
        values = asdict(attachment)
        values.update(network_id=attachment.network.id, netns=netns,
                      aliases=json.dumps(attachment.aliases),
                      ports=json.dumps([asdict(p) for p in attachment.ports]))
        del values["network"]
        with transaction(self.db, self.lock):
            self.db.execute(
                "INSERT INTO attachments (network_id, container_id, name, ifname,"
                " ip, prefix_len, gateway, mac, aliases, ports, netns) VALUES "
                "(:network_id, :container_id, :name, :ifname, :ip, :prefix_len,"
                " :gateway, :mac, :aliases, :ports, :netns)", values)

    def delete_attachment(self, network_id: str, container_id: str) -> None:
        """Forget an attachment."""
        with transaction(self.db, self.lock):
            self.db.execute("DELETE FROM attachments WHERE network_id = ? AND "
                            "container_id = ?", (network_id, container_id))

    def rename(self, container_id: str, name: str) -> None:
        """The container's new name on every network it is on."""
        with transaction(self.db, self.lock):
            self.db.execute("UPDATE attachments SET name = ? WHERE container_id = ?",
                            (name, container_id))


def _network(row: sqlite3.Row | tuple) -> Network:
    (id_, name, driver, bridge, subnet, gateway, ip_range, internal, labels,
     options, created, dns) = row
    return Network(id_, name, driver, bridge, subnet, gateway, ip_range,
                   bool(internal), json.loads(labels), json.loads(options),
                   created, bool(dns))


def _attachment(row: dict, network: Network) -> Attachment:
    return Attachment(network, row["container_id"], row["name"], row["ifname"],
                      row["ip"], row["prefix_len"], row["gateway"], row["mac"],
                      json.loads(row["aliases"]),
                      [PortMapping.from_dict(p) for p in json.loads(row["ports"])])
