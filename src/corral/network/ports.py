"""Host ports for published container ports: checking them, choosing free ones.

A port is published by DNAT rules only (hostports.py); no socket holds it on the
host (Docker's docker-proxy would). So at attach we refuse a port that
another attachment publishes (of this root, or any root: the host's nat
table), with Docker's "port is already allocated"; and one we cannot bind
ourselves with what docker-proxy says for that errno ("address already in
use" for a host socket, "cannot assign requested address" for an address
the host lacks). Host port 0 takes a free port from the kernel's ephemeral
range, as Docker does.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable, Sequence
from dataclasses import replace
from errno import EADDRINUSE

from .errors import InvalidNetworkArgument, PortBindFailed, PortInUse
from .models import PortMapping
from .subnets import parse_address

DEFAULT_RANGE = (49153, 60999)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ip_local_port_range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        return DEFAULT_RANGE
    return low, high


def check(mapping: PortMapping) -> None:
    """Refuse a mapping no CNI plugin could publish."""
    if mapping.protocol not in ("tcp", "udp"):
        raise InvalidNetworkArgument(f"invalid proto '{mapping.protocol}'")
    for port in (mapping.container_port, mapping.host_port):
        if not 0 <= port <= 65535:
            raise InvalidNetworkArgument(f"invalid port '{port}'")
    if mapping.container_port == 0:
        raise InvalidNetworkArgument("invalid port '0'")
    if mapping.host_ip:
        parse_address(mapping.host_ip, "host ip")


def clashes(one: PortMapping, other: PortMapping) -> bool:
    """True if both would publish the same host port (no address, or
    0.0.0.0, is every address)."""
    wild = ("", "0.0.0.0")
    return (one.host_port == other.host_port and one.protocol == other.protocol
            and (one.host_ip in wild or other.host_ip in wild
                 or one.host_ip == other.host_ip))


def bind_errno(mapping: PortMapping) -> int | None:
    """The errno of binding the host port ourselves, None if it binds."""
    kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        # NOTE: SO_REUSEADDR so that connections in TIME_WAIT do not count;
        # a listening socket still conflicts.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((mapping.host_ip or "0.0.0.0", mapping.host_port))
        except OSError as exc:
            return exc.errno
    return None


def bound_on_host(mapping: PortMapping) -> bool:
    """True if we cannot bind the port ourselves (a host socket holds it)."""
    return bind_errno(mapping) is not None


def resolve(wanted: Sequence[PortMapping], published: Iterable[PortMapping],
            port_range: tuple[int, int] | None = None) -> list[PortMapping]:
    """``wanted`` with every host port chosen, or PortInUse for a taken one."""
    taken = list(published)
    resolved = []
    for mapping in wanted:
        check(mapping)
        if mapping.host_port:
            if any(clashes(mapping, other) for other in taken):
                raise PortInUse(mapping.host_ip, mapping.host_port)
            errno = bind_errno(mapping)
            if errno is not None:
                raise PortBindFailed(mapping.host_ip, mapping.host_port,
                                     mapping.protocol, errno)
        else:
            mapping = _free(mapping, taken, port_range or ephemeral_range())
        taken.append(mapping)
        resolved.append(mapping)
    return resolved


def _free(mapping: PortMapping, taken: list[PortMapping],
          port_range: tuple[int, int]) -> PortMapping:
    low, high = port_range
    start = random.randint(low, high)
    for offset in range(high - low + 1):
        candidate = replace(mapping, host_port=low + (start - low + offset) % (
            high - low + 1))
        if any(clashes(candidate, other) for other in taken):
            continue
        errno = bind_errno(candidate)
        if errno is None:
            return candidate
        if errno != EADDRINUSE:
            # Another port would fail alike (an address the host lacks).
            raise PortBindFailed(candidate.host_ip, candidate.host_port,
                                 candidate.protocol, errno)
    raise PortInUse(mapping.host_ip, 0)
