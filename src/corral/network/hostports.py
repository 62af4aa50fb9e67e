"""Published ports: DNAT from the host to a container, in iptables' nat table.

What the portmap plugin (1.1.1, with ``snat``) does per container, made by
us in one ``iptables-restore --noflush`` run instead of its ~19 iptables
runs on ADD and ~18 on DEL (measured: 47 ms and 116 ms against about 5 ms
each). Docker's bridge driver does the same from its DOCKER chain. The
chains are shared, made once (as the plugin's CNI-HOSTPORT-* chains are):

    PREROUTING   -m addrtype --dst-type LOCAL -j CORRAL-HOSTPORTS
    OUTPUT       -m addrtype --dst-type LOCAL -j CORRAL-HOSTPORTS
    POSTROUTING  -j CORRAL-HOSTPORTS-MASQ
    CORRAL-HOSTPORTS       -p P [-d HOSTIP] --dport HP -j DNAT --to IP:CP
    CORRAL-HOSTPORTS-MASQ  -s 127.0.0.1 -d IP -p P --dport CP -j MASQUERADE
                           -s SUBNET -d IP -p P --dport CP -j MASQUERADE

one DNAT rule and two MASQUERADE rules per mapping, each commented with
the container's ID. The first MASQUERADE makes ``127.0.0.1:HP`` work: the
DNATed packet leaves loopback for the bridge, which needs route_localnet
on the bridge (set once, at its first use); the second makes a container
on the network reach a published port through a host address, itself
included (hairpin mode on the bridge's ports is the bridge plugin's).
Forwarded traffic to a published port is accepted by firewall.py's
``--ctstate DNAT`` rule.

The rules are computed from the attachment's address and mappings, which
the CNI result cache holds (networks.py), so a DEL after a crash removes
exactly what the ADD made; removing rules that are gone is not an error.
The caller holds the networks' lock.

The nat table is the host's one truth of what is published: several roots
(a daemonless ``corral`` and a corrald of another root) each keep their
own attachments, and share the chains. So a claim of host ports reads the
DNAT rules (`published_on_host`) and, with the publish that follows, holds
a lock of the host (`host_lock`, a flock on a file in /run), never of one
root: two roots cannot both find a port free and both publish it.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import NetworkError
from .models import PortMapping

DNAT = "CORRAL-HOSTPORTS"
MASQ = "CORRAL-HOSTPORTS-MASQ"
HOST_LOCK = Path("/run/corral/hostports.lock")
# (chain, parent, the jump's match)
_JUMPS = ((DNAT, "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL"]),
          (DNAT, "OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL"]),
          (MASQ, "POSTROUTING", []))


def rules(container_id: str, ip: str, subnet: str,
          mappings: Sequence[PortMapping]) -> list[tuple[str, list[str]]]:
    """The (chain, rule) pairs that publish ``mappings`` to ``ip``."""
    found = []
    tag = ["-m", "comment", "--comment", container_id]
    for m in mappings:
        match = ["-p", m.protocol, "-m", m.protocol]
        host_ip = [] if m.host_ip in ("", "0.0.0.0") else ["-d", m.host_ip]
        found += [
            (DNAT, [*match, *host_ip, "--dport", str(m.host_port), *tag, "-j", "DNAT",
                    "--to-destination", f"{ip}:{m.container_port}"]),
            (MASQ, ["-s", "127.0.0.1/32", "-d", f"{ip}/32", *match, "--dport",
                    str(m.container_port), *tag, "-j", "MASQUERADE"]),
            (MASQ, ["-s", subnet, "-d", f"{ip}/32", *match, "--dport",
                    str(m.container_port), *tag, "-j", "MASQUERADE"])]
    return found


def publish(container_id: str, ip: str, subnet: str, bridge: str,
            mappings: Sequence[PortMapping]) -> None:
    """Add the rules of ``mappings`` (and the shared chains, the first time)."""
    if not mappings:
        return
    _route_localnet(bridge)
    lines = [f"-A {chain} {_quote(rule)}"
             for chain, rule in rules(container_id, ip, subnet, mappings)]
    try:
        _restore(lines)
    except NetworkError:
        # The shared chains are made once, on their first need (checking
        # them on every publish would cost six iptables runs).
        prepare()
        _restore(lines)


def unpublish(container_id: str, ip: str, subnet: str,
              mappings: Sequence[PortMapping]) -> None:
    """Remove the rules of ``mappings``; those already gone are skipped."""
    found = rules(container_id, ip, subnet, mappings)
    if not found:
        return
    try:
        _restore([f"-D {chain} {_quote(rule)}" for chain, rule in found])
    except NetworkError:
        # One is missing (an ADD cut short, or a second DEL): one by one.
        for chain, rule in found:
            while _iptables("-C", chain, *rule) == 0:
                _iptables("-D", chain, *rule)


@contextlib.contextmanager
def host_lock(path: Path = HOST_LOCK) -> Iterator[None]:
    """Hold the host's lock of published ports (every root takes the same)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a+b")  # noqa: SIM115 (held across the yield)
    except OSError as exc:
        raise NetworkError(f"open '{path}': {exc.strerror}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def published_on_host() -> list[tuple[str, PortMapping]]:
    """(container ID, mapping) of every DNAT rule in our chain, whichever
    root made it; none while the chain does not exist."""
    try:
        done = subprocess.run(["iptables", "-w", "-t", "nat", "-S", DNAT],
                              capture_output=True, text=True)
    except OSError as exc:
        raise NetworkError(f"run 'iptables': {exc.strerror}") from exc
    if done.returncode != 0:
        return []
    found = []
    for line in done.stdout.splitlines():
        parsed = parse_rule(line.split())
        if parsed is not None:
            found.append(parsed)
    return found


def parse_rule(words: list[str]) -> tuple[str, PortMapping] | None:
    """The (container ID, mapping) of one ``iptables -S`` line of ours."""
    if words[:2] != ["-A", DNAT] or "--dport" not in words or "-j" not in words:
        return None
    target = _after(words, "--to-destination")
    try:
        container_port = int(target.rpartition(":")[2])
        host_port = int(_after(words, "--dport"))
    except ValueError:
        return None
    host_ip = _after(words, "-d").removesuffix("/32")
    return _after(words, "--comment"), PortMapping(
        container_port, _after(words, "-p") or "tcp", host_ip, host_port)


def _after(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1] if flag in words[:-1] else ""


def prepare() -> None:
    """The shared chains and their jumps, unless present."""
    for chain, parent, match in _JUMPS:
        if _iptables("-n", "-L", chain) != 0:
            _iptables("-N", chain)
        if _iptables("-C", parent, *match, "-j", chain) != 0:
            if _iptables("-A", parent, *match, "-j", chain) != 0:
                raise NetworkError(f"iptables '-A {parent} -j {chain}': failed")


def _route_localnet(bridge: str) -> None:
    path = Path("/proc/sys/net/ipv4/conf", bridge, "route_localnet")
    try:
        if path.read_text().strip() != "1":
            path.write_text("1")
    except OSError as exc:
        raise NetworkError(f"set route_localnet on '{bridge}': {exc.strerror}") from exc


def _quote(rule: list[str]) -> str:
    # iptables-restore splits on blanks and honours double quotes.
    return " ".join(f'"{word}"' if " " in word or not word else word for word in rule)


def _restore(lines: list[str]) -> None:
    text = "*nat\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
    try:
        done = subprocess.run(["iptables-restore", "--noflush"], input=text,
                              capture_output=True, text=True)
    except OSError as exc:
        raise NetworkError(f"run 'iptables-restore': {exc.strerror}") from exc
    if done.returncode != 0:
        raise NetworkError(f"iptables-restore: {done.stderr.strip()}")


def _iptables(*args: str) -> int:
    try:
        return subprocess.run(["iptables", "-w", "-t", "nat", *args],
                              capture_output=True).returncode
    except OSError as exc:
        raise NetworkError(f"run 'iptables': {exc.strerror}") from exc
