"""Subnets of bridge networks: checking what a user gives, choosing a free one.

Docker takes the address pools 172.17.0.0/16 to 172.31.0.0/16, then
192.168.0.0/16 in /20 steps, and skips a pool that overlaps a network it
has or a route of the host. We do the same from 172.18.0.0/16 (the default
"bridge" network has a subnet of its own), and also skip the host's own
addresses (`ip -j addr`), since a bridge on an address the host already has
breaks the host's routing. IPv4 only (docs/limitations.md).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import InvalidNetworkArgument, NetworkConflict

IPv4Network = ipaddress.IPv4Network
OVERLAP = "invalid pool request: Pool overlaps with other one on this address space"


@dataclass(frozen=True)
class Addressing:
    """The checked subnet, gateway and ip_range of one network."""

    subnet: str
    gateway: str
    ip_range: str

    def range_bounds(self) -> tuple[str, str]:
        """First and last address host-local may lease (gateway excluded by it)."""
        network = ipaddress.IPv4Network(self.ip_range or self.subnet)
        first, last = network.network_address + 1, network.broadcast_address - 1
        if network.prefixlen >= 31:
            first, last = network.network_address, network.broadcast_address
        return str(first), str(last)


def parse_cidr(text: str) -> IPv4Network:
    """An IPv4 network in CIDR form, its host bits zero."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidNetworkArgument(f"invalid CIDR address: {text}") from None
    if network.version != 4:
        raise InvalidNetworkArgument(f"subnet '{text}': only IPv4 is supported")
    if str(network) != text and network.with_prefixlen != text:
        raise InvalidNetworkArgument(
            f"subnet '{text}': host bits set, the network is {network}")
    if network.prefixlen > 30:
        raise InvalidNetworkArgument(f"subnet '{text}': too small for containers")
    return network


def parse_address(text: str, what: str) -> ipaddress.IPv4Address:
    """An IPv4 address given for ``what`` ("gateway", "ip")."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidNetworkArgument(f"invalid {what} address: {text}") from None
    if address.version != 4:
        raise InvalidNetworkArgument(f"{what} '{text}': only IPv4 is supported")
    return address


def addressing(subnet: str, gateway: str | None = None,
               ip_range: str | None = None) -> Addressing:
    """Check a subnet with its optional gateway and ip_range (Docker's rules)."""
    network = parse_cidr(subnet)
    if gateway:
        address = parse_address(gateway, "gateway")
        if address not in network or address in (network.network_address,
                                                  network.broadcast_address):
            raise InvalidNetworkArgument(f"no matching subnet for gateway {gateway}")
    else:
        address = network.network_address + 1
    if ip_range:
        pool = parse_cidr(ip_range)
        if not pool.subnet_of(network):
            raise InvalidNetworkArgument(f"no matching subnet for range {ip_range}")
    return Addressing(str(network), str(address), ip_range or "")


def pool() -> Iterator[IPv4Network]:
    """Docker's default address pools, without the default bridge's."""
    for second in range(18, 32):
        yield ipaddress.IPv4Network(f"172.{second}.0.0/16")
    for third in range(0, 256, 16):
        yield ipaddress.IPv4Network(f"192.168.{third}.0/20")


def overlapping(candidate: IPv4Network, taken: Iterable[IPv4Network]) -> bool:
    """True if ``candidate`` shares an address with any of ``taken``."""
    return any(candidate.overlaps(other) for other in taken)


def check_free(subnet: str, networks: Iterable[str]) -> None:
    """Refuse a given subnet that overlaps another network (Docker's text)."""
    if overlapping(ipaddress.IPv4Network(subnet),
                   (ipaddress.IPv4Network(s) for s in networks if s)):
        raise NetworkConflict(OVERLAP)


def choose(networks: Iterable[str], host: Iterable[IPv4Network]) -> IPv4Network:
    """The first pool that overlaps neither a network nor the host's routes."""
    taken = [ipaddress.IPv4Network(s) for s in networks if s] + list(host)
    for candidate in pool():
        if not overlapping(candidate, taken):
            return candidate
    raise NetworkConflict(
        "could not find an available, non-overlapping IPv4 address pool among "
        "the defaults to assign to the network")


def host_networks() -> list[IPv4Network]:
    """The host's routes and addresses, as the networks they cover.

    The default route (0.0.0.0/0) is left out: it overlaps everything and
    says nothing about which addresses are in use.
    """
    found = []
    for entry in _ip_json("route"):
        if entry.get("dst", "default") != "default":
            found.append(_network(entry["dst"]))
    for link in _ip_json("addr"):
        for info in link.get("addr_info", ()):
            if info.get("family") == "inet":
                found.append(_network(f"{info['local']}/{info['prefixlen']}"))
    return [network for network in found if network is not None]


def _network(text: str) -> IPv4Network | None:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return network if network.version == 4 else None


def _ip_json(what: str) -> list[dict]:
    try:
        output = subprocess.run(["ip", "-4", "-j", what], capture_output=True,
                                check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise NetworkConflict(f"list host {what}s: {exc}") from exc
    return json.loads(output or "[]")
