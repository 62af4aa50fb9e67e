"""The name resolver of one user network: a small DNS server on its gateway.

Docker's embedded DNS server answers containers on user networks for the
names of the containers on the same network, their aliases and short IDs,
and forwards other names to the host's resolvers. This process does that
for one network:

    python -m corral.network.resolver --db ROOT/networks.db --network ID
        --listen GATEWAY --subnet CIDR --pid-file FILE [--ready-fd FD]

- it listens on GATEWAY port 53, UDP and TCP (RFC 1035 4.2: TCP messages are
  prefixed by a two-byte length), and answers only containers attached to
  the network, found by the query's source address in CIDR;
- as Docker's embedded DNS, a container is answered for the names on every
  network it is attached to (a second one too, through `network connect`),
  with the address on a network the two share, this one first;
- names come from the attachments table, re-read whenever SQLite's
  ``PRAGMA data_version`` says another connection committed; the network's
  row gone means the network was removed, and the process exits;
- A queries for a known name get the container's address (TTL 600, as
  Docker); other types for a known name get an empty NOERROR answer;
- the name of a container on no network of the asker's is NXDOMAIN, not
  asked of the host's resolvers (they must not learn our names);
- other names go to the nameservers of the host's /etc/resolv.conf, with a
  short timeout: SERVFAIL when none answers, so clients do not hang.

Messages are parsed and built with dnspython.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sqlite3
import struct
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 600
FORWARD_TIMEOUT = 1.0
MAX_UPSTREAMS = 2


class Names:
    """Every network's names, from networks.db, re-read when it changes.

    Answers as Docker's embedded DNS does: the asking container is found by
    its address on this network, and a name is looked up on each network it
    is attached to, this one first, so the address given is one the asker
    reaches (on a network the two share).
    """

    def __init__(self, db: Path, network_id: str) -> None:
        self.db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0,
                                  isolation_level=None)
        self.network_id = network_id
        self.version: int | None = None
        self.members: dict[str, str] = {}             # address here -> container
        self.networks_of: dict[str, list[str]] = {}   # container -> its networks
        self.names: dict[str, dict[str, str]] = {}    # network -> name -> address
        self.removed = False

    def member(self, client: str) -> str | None:
        """The ID of the container attached here with address ``client``."""
        self.refresh()
        return self.members.get(client)

    def lookup(self, asker: str, name: str) -> str | None:
        """The address of ``name`` (case-insensitive, no trailing dot) for
        container ``asker``: None unless on a network the asker is on."""
        self.refresh()
        key = name.rstrip(".").lower()
        for network_id in self.networks_of.get(asker, ()):
            address = self.names.get(network_id, {}).get(key)
            if address is not None:
                return address
        return None

    def known(self, name: str) -> bool:
        """Whether ``name`` is a container's on any network."""
        key = name.rstrip(".").lower()
        return any(key in on_network for on_network in self.names.values())

    def refresh(self) -> None:
        """Re-read the attachments if another connection committed."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version == self.version:
            return
        self.version = version
        if self.db.execute("SELECT 1 FROM networks WHERE id = ?",
                           (self.network_id,)).fetchone() is None:
            self.removed = True
        rows = self.db.execute(
            "SELECT network_id, container_id, name, aliases, ip FROM attachments "
            "ORDER BY rowid").fetchall()
        self._index(rows)

    def _index(self, rows: list[tuple]) -> None:
        members, networks_of, names = {}, {}, {}
        for network_id, container_id, name, aliases, ip in rows:
            if network_id == self.network_id:
                members[ip] = container_id
            networks_of.setdefault(container_id, []).append(network_id)
            keys = (container_id[:12], *json.loads(aliases), name.lstrip("/"))
            on_network = names.setdefault(network_id, {})
            on_network.update((key.lower(), ip) for key in keys if key)
        for attached in networks_of.values():
            attached.sort(key=lambda n: n != self.network_id)  # stable: this first
        self.members, self.networks_of, self.names = members, networks_of, names


class Resolver:
    """Answers one query message at a time, for the UDP and TCP fronts."""

    def __init__(self, names: Names, subnet: str, listen: str,
                 upstreams: list[str]) -> None:
        self.names = names
        self.subnet = ipaddress.IPv4Network(subnet)
        # The gateway is the host's own address there, not a container's.
        self.listen = ipaddress.IPv4Address(listen)
        self.upstreams = [u for u in upstreams if u != listen][:MAX_UPSTREAMS]

    def asker(self, client: str) -> str | None:
        """The container that ``client`` is on this network; None for any
        other client (the host, an address no container holds), refused."""
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(client)
            if address in self.subnet and address != self.listen:
                return self.names.member(str(address))
        return None

    async def answer(self, wire: bytes, asker: str) -> bytes | None:
        """The response to container ``asker``'s query in wire form (None:
        not worth one)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR or len(query.question) != 1:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        address = self.names.lookup(asker, name)
        if address is None and self.names.known(name):
            return _nxdomain(query)
        if address is None:
            return await self._forward(query, wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        if question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(
                question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, address))
        return response.to_wire()

    async def _forward(self, query: dns.message.Message, wire: bytes) -> bytes:
        for upstream in self.upstreams:
            try:
                reply = await dns.asyncquery.udp(query, upstream,
                                                 timeout=FORWARD_TIMEOUT)
            except (dns.exception.DNSException, OSError):
                continue
            return reply.to_wire()
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        response.set_rcode(dns.rcode.SERVFAIL)
        return response.to_wire()


def _nxdomain(query: dns.message.Message) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.RA
    response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        asker = self.resolver.asker(addr[0])
        if asker is not None:
            asyncio.ensure_future(self._reply(data, addr, asker))

    async def _reply(self, data: bytes, addr: tuple, asker: str) -> None:
        response = await self.resolver.answer(data, asker)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


async def _tcp_client(resolver: Resolver, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername") or ("",)
    try:
        while (asker := resolver.asker(peer[0])) is not None:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            response = await resolver.answer(await reader.readexactly(length), asker)
            if response is None:
                break
            writer.write(struct.pack("!H", len(response)) + response)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def upstream_servers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The nameservers of the host's resolv.conf (IPv4 and IPv6)."""
    servers = []
    with contextlib.suppress(OSError):
        for line in resolv_conf.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                servers.append(fields[1])
    return servers


async def serve(args: argparse.Namespace) -> None:
    """Bind both sockets, report ready, answer until the network goes."""
    names = Names(Path(args.db), args.network)
    resolver = Resolver(names, args.subnet, args.listen, upstream_servers())
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(resolver),
                                                 local_addr=(args.listen, 53))
    tcp = await asyncio.start_server(
        lambda r, w: _tcp_client(resolver, r, w), args.listen, 53,
        reuse_address=True)
    Path(args.pid_file).write_text(str(os.getpid()))
    _ready(args.ready_fd, "ready")
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    while not stop.is_set() and not names.removed:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)
        names.refresh()   # notices a removed network while no one asks
    udp.close()
    tcp.close()
    with contextlib.suppress(FileNotFoundError):
        if Path(args.pid_file).read_text() == str(os.getpid()):
            Path(args.pid_file).unlink()


def _ready(fd: int | None, line: str) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, (line + "\n").encode())
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """The resolver's command line."""
    parser = argparse.ArgumentParser(prog="corral-resolver")
    for flag in ("--db", "--network", "--listen", "--subnet", "--pid-file"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--ready-fd", type=int)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        _ready(args.ready_fd, f"listen on '{args.listen}:53': {exc.strerror}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
