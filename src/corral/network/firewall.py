"""Forwarding, isolation and outbound NAT of bridge networks, in iptables.

Docker accepts its containers' forwarded traffic per network (FORWARD
rules on docker0), so a host whose FORWARD policy is DROP, as dockerd sets
it, still forwards for them; it keeps the containers of different bridge
networks apart with its DOCKER-ISOLATION-STAGE-1/2 chains. We do the same
in chains of our own, made once per network (at its creation, and again at
its bridge's first use) and removed with it, not per container:

    FORWARD              -j CORRAL-FORWARD                     (first rule)
    CORRAL-FORWARD       -j CORRAL-ISOLATION                   (first rule)
                         -o BR -m conntrack --ctstate RELATED,ESTABLISHED
                               -j ACCEPT                       (per network)
                         -o BR -m conntrack --ctstate DNAT -j ACCEPT
                         -i BR -j ACCEPT
    CORRAL-ISOLATION     -i BR ! -o BR -j DROP                 (internal: no way out)
                         -o BR ! -i BR -j DROP                 (internal: no way in)
                         -i BR ! -o BR -m conntrack --ctstate DNAT
                               -j RETURN                       (a published port)
                         -i BR ! -o BR -j CORRAL-ISOLATION-2   (per network)
    CORRAL-ISOLATION-2   -o BR -j DROP                         (per network)

so a packet that leaves one of our bridges for another is dropped unless
it goes to a port published on the host, one that leaves for the host's
uplink is accepted, and of what comes in only replies
and connections to a published port (DNAT: hostports.py's rules) are accepted,
as Docker's DOCKER chain accepts per published port. Outbound NAT is ours
too, one rule per network in the nat table as Docker's (conflist.py says
why not the bridge plugin's ``ipMasq``):

    CORRAL-MASQ          -s SUBNET ! -o BR -j MASQUERADE       (unless internal)

The firewall plugin would accept the same per container, at about 30 ms
on each ADD and DEL (one iptables run per rule); the rules above cost
nothing per container. Rules are added idempotently (``-C`` before ``-A``)
and removed with the network; the chains stay, empty. The caller holds the
networks' lock around every change.
"""

from __future__ import annotations

import subprocess

from .conflist import masquerade
from .errors import NetworkError
from .models import Network

FORWARD = "CORRAL-FORWARD"
ADMIN_CHAIN = "CORRAL-ISOLATION"
STAGE2 = ADMIN_CHAIN + "-2"
MASQ = "CORRAL-MASQ"
# (table, chain, the chain that jumps to it first thing, or None)
CHAINS = (("filter", STAGE2, None), ("filter", ADMIN_CHAIN, FORWARD),
          ("filter", FORWARD, "FORWARD"), ("nat", MASQ, "POSTROUTING"))


def rules(bridge: str, internal: bool, subnet: str = "",
          nat: bool = False) -> list[tuple[str, str, list[str]]]:
    """The (table, chain, rule) triples of the network on ``bridge``."""
    found = []
    if nat and subnet and not internal:
        found.append(("nat", MASQ, ["-s", subnet, "!", "-o", bridge,
                                    "-j", "MASQUERADE"]))
    if internal:
        found += [(ADMIN_CHAIN, ["-i", bridge, "!", "-o", bridge, "-j", "DROP"]),
                  (ADMIN_CHAIN, ["-o", bridge, "!", "-i", bridge, "-j", "DROP"])]
    # A published port is for every network, as Docker's: a connection
    # DNATed to it leaves isolation before the drops (internal ones aside).
    found += [(ADMIN_CHAIN, ["-i", bridge, "!", "-o", bridge, "-m", "conntrack",
                             "--ctstate", "DNAT", "-j", "RETURN"]),
              (ADMIN_CHAIN, ["-i", bridge, "!", "-o", bridge, "-j", STAGE2]),
              (STAGE2, ["-o", bridge, "-j", "DROP"]),
              (FORWARD, ["-o", bridge, "-m", "conntrack", "--ctstate",
                         "RELATED,ESTABLISHED", "-j", "ACCEPT"]),
              (FORWARD, ["-o", bridge, "-m", "conntrack", "--ctstate", "DNAT",
                         "-j", "ACCEPT"]),
              (FORWARD, ["-i", bridge, "-j", "ACCEPT"])]
    return [rule if len(rule) == 3 else ("filter", *rule) for rule in found]


def isolate(bridge: str, internal: bool, subnet: str = "",
            nat: bool = False) -> None:
    """Add the network's rules (and the chains, and their jumps) unless present."""
    for table, chain, _ in CHAINS:
        if _iptables(table, "-n", "-L", chain, check=False) != 0:
            _iptables(table, "-N", chain)
    for table, chain, parent in CHAINS:
        # First in its parent: ahead of whatever else FORWARD holds (a
        # dockerd's rules), and the isolation ahead of our ACCEPTs.
        if parent and _iptables(table, "-C", parent, "-j", chain, check=False):
            _iptables(table, "-I", parent, "1", "-j", chain)
    for table, chain, rule in rules(bridge, internal, subnet, nat):
        if _iptables(table, "-C", chain, *rule, check=False) != 0:
            _iptables(table, "-A", chain, *rule)


def release(bridge: str, internal: bool, subnet: str = "",
            nat: bool = False) -> None:
    """Remove the network's rules, every copy of each."""
    for table, chain, rule in rules(bridge, internal, subnet, nat):
        while _iptables(table, "-C", chain, *rule, check=False) == 0:
            _iptables(table, "-D", chain, *rule)


def add_network(network: Network) -> None:
    """Isolation and outbound NAT for ``network``."""
    isolate(network.bridge, network.internal, network.subnet, masquerade(network))


def remove_network(network: Network) -> None:
    """The rules of `add_network` removed."""
    release(network.bridge, network.internal, network.subnet, masquerade(network))


def _iptables(table: str, *args: str, check: bool = True) -> int:
    command = ["iptables", "-w", "-t", table, *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise NetworkError(f"run '{command[0]}': {exc.strerror}") from exc
    if check and done.returncode != 0:
        raise NetworkError(f"iptables '{' '.join(args)}': {done.stderr.strip()}")
    return done.returncode
