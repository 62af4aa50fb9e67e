"""Networks of a test's own: a private root and run directory, a bridge name
and subnets nobody else uses, and a finalizer that takes everything down even
when the test failed (attachments, namespaces, networks, resolvers, the
default bridge and its rules, the netns directory's own mount)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from corral import _syscalls
from corral.network import NetworkError, Networks, firewall

_serial = itertools.count(1)


def unique_bridge() -> str:
    """A bridge name of at most 15 characters, unique to this run."""
    return f"crt{os.getpid() % 10000}x{next(_serial)}"


def unique_subnet() -> str:
    """A /24 in 10.213.0.0/16, unique to this run."""
    return f"10.213.{(os.getpid() * 7 + next(_serial)) % 250 + 1}.0/24"


def ns_run(netns: Path, *command: str, timeout: float = 10.0,
           check: bool = False) -> subprocess.CompletedProcess:
    """Run a command in the namespace (nsenter: no `ip netns` state)."""
    return subprocess.run(["nsenter", f"--net={netns}", *command], timeout=timeout,
                          capture_output=True, text=True, check=check)


def host_address() -> str:
    """The host's first global IPv4 address (not loopback)."""
    links = json.loads(subprocess.run(["ip", "-4", "-j", "addr"], check=True,
                                      capture_output=True, text=True).stdout)
    for link in links:
        for info in link.get("addr_info", ()):
            if info.get("scope") == "global":
                return info["local"]
    pytest.skip("the host has no global IPv4 address")


def make_networks(tmp_path: Path) -> Networks:
    """Networks on a private root and run dir with a bridge of its own."""
    run = Path(tempfile.mkdtemp(prefix="crn-", dir="/tmp"))
    networks = Networks(tmp_path / "lib", run, default_bridge=unique_bridge(),
                        default_subnet=unique_subnet())
    networks.test_run = run
    return networks


def teardown(networks: Networks) -> None:
    """Everything the test made, gone; errors do not stop the next step."""
    for attachment in networks.attachments():
        try:
            networks.detach(attachment.network.id, attachment.container_id)
        except NetworkError:
            pass
    for path in (networks.test_run / "netns").glob("*"):
        networks.remove_netns(path.name)
    for network in networks.list():
        if not network.predefined:
            try:
                networks.remove(network.id)
            except NetworkError:
                pass
    default = networks.get("bridge")
    firewall.remove_network(default)
    subprocess.run(["ip", "link", "del", default.bridge], capture_output=True)
    networks.close()
    if (networks.test_run / "netns").is_dir():
        try:
            _syscalls.umount2(str(networks.test_run / "netns"), _syscalls.MNT_DETACH)
        except OSError:
            pass


@pytest.fixture(name="networks")
def networks_fixture(tmp_path):
    made = make_networks(tmp_path)
    yield made
    teardown(made)
