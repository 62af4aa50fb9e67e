"""Isolation between bridge networks, in iptables' filter table.

Docker keeps containers of different bridge networks apart with its
DOCKER-ISOLATION-STAGE-1/2 chains. We do the same in two chains of our own:

    CORRAL-ISOLATION     -i BR ! -o BR -j CORRAL-ISOLATION-2   (per network)
                         -i BR ! -o BR -j DROP                 (internal: no way out)
                         -o BR ! -i BR -j DROP                 (internal: no way in)
    CORRAL-ISOLATION-2   -o BR -j DROP                         (per network)

so a packet that leaves one of our bridges for another is dropped, and one
that leaves for the host's uplink is not. Outbound NAT is ours too, one rule
per network in the nat table as Docker's (conflist.py says why not the
bridge plugin's ``ipMasq``):

    CORRAL-MASQ          -s SUBNET ! -o BR -j MASQUERADE       (unless internal)
 CORRAL-ISOLATION is the firewall
plugin's admin chain (``iptablesAdminChainName``): the plugin jumps to it
first thing from its CNI-FORWARD chain, ahead of the ACCEPT rules it adds
per container. Rules are added idempotently (``-C`` before ``-A``) and
removed with the network; the chains stay, empty, as the plugins' own
chains do. The caller holds the networks' lock around every change.
"""

from __future__ import annotations

import subprocess

from .conflist import ADMIN_CHAIN, masquerade
from .errors import NetworkError
from .models import Network

STAGE2 = ADMIN_CHAIN + "-2"
MASQ = "CORRAL-MASQ"
# (table, chain, the built-in chain that jumps to it or None)
CHAINS = (("filter", ADMIN_CHAIN, None), ("filter", STAGE2, None),
          ("nat", MASQ, "POSTROUTING"))


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
    found += [(ADMIN_CHAIN, ["-i", bridge, "!", "-o", bridge, "-j", STAGE2]),
              (STAGE2, ["-o", bridge, "-j", "DROP"])]
    return [rule if len(rule) == 3 else ("filter", *rule) for rule in found]


def isolate(bridge: str, internal: bool, subnet: str = "",
            nat: bool = False) -> None:
    """Add the network's rules (and the chains, and their jumps) unless present."""
    for table, chain, parent in CHAINS:
        if _iptables(table, "-n", "-L", chain, check=False) != 0:
            _iptables(table, "-N", chain)
        if parent and _iptables(table, "-C", parent, "-j", chain, check=False):
            _iptables(table, "-A", parent, "-j", chain)
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
