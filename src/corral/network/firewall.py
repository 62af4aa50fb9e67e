"""Isolation between bridge networks, in iptables' filter table.

Docker keeps containers of different bridge networks apart with its
DOCKER-ISOLATION-STAGE-1/2 chains. We do the same in two chains of our own:

    CORRAL-ISOLATION     -i BR ! -o BR -j CORRAL-ISOLATION-2   (per network)
                         -i BR ! -o BR -j DROP                 (internal: no way out)
                         -o BR ! -i BR -j DROP                 (internal: no way in)
    CORRAL-ISOLATION-2   -o BR -j DROP                         (per network)

so a packet that leaves one of our bridges for another is dropped, and one
that leaves for the host's uplink is not. CORRAL-ISOLATION is the firewall
plugin's admin chain (``iptablesAdminChainName``): the plugin jumps to it
first thing from its CNI-FORWARD chain, ahead of the ACCEPT rules it adds
per container. Rules are added idempotently (``-C`` before ``-A``) and
removed with the network; the two chains stay, empty, as the plugins' own
chains do. The caller holds the networks' lock around every change.
"""

from __future__ import annotations

import subprocess

from .conflist import ADMIN_CHAIN
from .errors import NetworkError

STAGE2 = ADMIN_CHAIN + "-2"


def rules(bridge: str, internal: bool) -> list[tuple[str, list[str]]]:
    """The (chain, rule) pairs that isolate the network on ``bridge``."""
    found = []
    if internal:
        found += [(ADMIN_CHAIN, ["-i", bridge, "!", "-o", bridge, "-j", "DROP"]),
                  (ADMIN_CHAIN, ["-o", bridge, "!", "-i", bridge, "-j", "DROP"])]
    found += [(ADMIN_CHAIN, ["-i", bridge, "!", "-o", bridge, "-j", STAGE2]),
              (STAGE2, ["-o", bridge, "-j", "DROP"])]
    return found


def isolate(bridge: str, internal: bool) -> None:
    """Add the network's rules (and the chains) unless present."""
    for chain in (ADMIN_CHAIN, STAGE2):
        if _iptables("-n", "-L", chain, check=False) != 0:
            _iptables("-N", chain)
    for chain, rule in rules(bridge, internal):
        if _iptables("-C", chain, *rule, check=False) != 0:
            _iptables("-A", chain, *rule)


def release(bridge: str, internal: bool) -> None:
    """Remove the network's rules, every copy of each."""
    for chain, rule in rules(bridge, internal):
        while _iptables("-C", chain, *rule, check=False) == 0:
            _iptables("-D", chain, *rule)


def _iptables(*args: str, check: bool = True) -> int:
    command = ["iptables", "-w", "-t", "filter", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise NetworkError(f"run '{command[0]}': {exc.strerror}") from exc
    if check and done.returncode != 0:
        raise NetworkError(f"iptables '{' '.join(args)}': {done.stderr.strip()}")
    return done.returncode
