"""The per-network name resolver (corral.network.resolver, resolvers.py) with
real containers on real networks: the names on a container's second network,
who is refused, a resolver killed and started again (reconcile, as at
corrald's start; a container start), and ``--ip`` equal to the gateway.

Queries are sent with dnspython from inside a container's network namespace
(nsenter), so the source address is the container's own, as for a query the
container sends itself, and the answer's rcode is seen exactly.
"""

# ruff: noqa: F811 (engine: the fixture of test_networking, taken as an argument)
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from corral.manager import errors
from tests.integration.test_networking import (  # noqa: F401 (engine: a fixture)
    engine,
    leftovers,
    unique_subnet,
)

QUERY = """
import sys, dns.message, dns.query, dns.rcode
query = dns.message.make_query(sys.argv[2], "A")
try:
    reply = dns.query.udp(query, sys.argv[1], timeout=float(sys.argv[3]))
except dns.exception.Timeout:
    print("timeout")
else:
    print(dns.rcode.to_text(reply.rcode()),
          *[item.address for rrset in reply.answer for item in rrset])
"""


def network(engine, name: str) -> str:
    engine.network_create({"Name": name, "IPAM": {"Config": [
        {"Subnet": unique_subnet()}]}})
    return engine.networks.get(name).gateway


def sleeper(engine, name: str, network_name: str) -> str:
    container_id = engine.create({"Image": engine.image, "Cmd": ["sleep", "600"],
                                  "HostConfig": {"NetworkMode": network_name}},
                                 name=name)["Id"]
    engine.start(container_id)
    return container_id


def ask(engine, container_id: str, server: str, name: str,
        timeout: float = 2.0) -> list[str]:
    """[rcode, addresses...] of an A query for ``name`` sent to ``server``
    from the container's namespace; ["timeout"] without an answer."""
    out = subprocess.run(
        ["nsenter", f"--net={engine.netns_path(container_id)}", sys.executable,
         "-c", QUERY, server, name, str(timeout)],
        capture_output=True, text=True, timeout=timeout + 10)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def address(engine, container_id: str, network_name: str) -> str:
    networks = engine.inspect(container_id)["NetworkSettings"]["Networks"]
    return networks[network_name]["IPAddress"]


def resolver_pid(engine, name: str) -> int:
    pid = engine.networks.resolvers.running(engine.networks.get(name))
    assert pid is not None
    return pid


def test_names_on_every_network_of_the_asker_and_only_those(engine):
    gateway_a, gateway_b = network(engine, "fnA"), network(engine, "fnB")
    a1 = sleeper(engine, "a1", "fnA")
    b1 = sleeper(engine, "b1", "fnB")
    c1 = sleeper(engine, "c1", "fnB")
    engine.network_connect("fnA", {"Container": b1,
                                   "EndpointConfig": {"Aliases": ["bee"]}})
    # b1 asks fnB's resolver (its resolv.conf's) for a1, which is on fnA only.
    assert ask(engine, b1, gateway_b, "a1") == ["NOERROR", address(engine, a1, "fnA")]
    # The address on a network the two share: b1's on fnA for a1, on fnB for c1.
    assert ask(engine, a1, gateway_a, "b1") == ["NOERROR", address(engine, b1, "fnA")]
    assert ask(engine, a1, gateway_a, "bee") == ["NOERROR", address(engine, b1, "fnA")]
    assert ask(engine, c1, gateway_b, "b1") == ["NOERROR", address(engine, b1, "fnB")]
    # c1 is on fnB only: a1 and fnA's alias are not its names.
    assert ask(engine, c1, gateway_b, "a1") == ["NXDOMAIN"]
    assert ask(engine, c1, gateway_b, "bee") == ["NXDOMAIN"]
    assert ask(engine, a1, gateway_a, "c1") == ["NXDOMAIN"]
    # A disconnect takes fnA's names away from b1 again.
    engine.network_disconnect("fnA", {"Container": b1})
    assert ask(engine, b1, gateway_b, "a1") == ["NXDOMAIN"]
    assert ask(engine, b1, gateway_b, "c1") == ["NOERROR", address(engine, c1, "fnB")]


def test_a_client_that_is_no_attached_container_is_refused(engine):
    gateway = network(engine, "fnR")
    r1 = sleeper(engine, "r1", "fnR")
    # A namespace with an address on the subnet that no attachment holds:
    # attached, then its row dropped (the veth and address stay).
    stranger = "stranger" + uuid.uuid4().hex[:8]
    netns = engine.networks.create_netns(stranger)
    fnr = engine.networks.get("fnR")
    try:
        engine.networks.attach("fnR", stranger, netns, name="stranger")
        assert ask(engine, r1, gateway, "stranger")[0] == "NOERROR"
        engine.networks.store.delete_attachment(fnr.id, stranger)
        out = subprocess.run(
            ["nsenter", f"--net={netns}", sys.executable, "-c", QUERY, gateway,
             "r1", "1"], capture_output=True, text=True, timeout=15)
        assert out.stdout.split() == ["timeout"], out
        assert ask(engine, r1, gateway, "stranger") == ["NXDOMAIN"]
    finally:
        engine.networks.detach("fnR", stranger)
        engine.networks.remove_netns(stranger)


def test_a_killed_resolver_comes_back(engine):
    gateway = network(engine, "fnK")
    k1 = sleeper(engine, "k1", "fnK")
    k2 = sleeper(engine, "k2", "fnK")
    expected = ["NOERROR", address(engine, k2, "fnK")]
    assert ask(engine, k1, gateway, "k2") == expected
    first = resolver_pid(engine, "fnK")
    # While it lives, a check starts nothing.
    assert engine.revive_resolvers() == []
    assert resolver_pid(engine, "fnK") == first
    os.kill(first, signal.SIGKILL)
    wait_gone(first)
    assert ask(engine, k1, gateway, "k2", timeout=1.0) == ["timeout"]
    # As at corrald's start.
    engine.reconcile()
    assert resolver_pid(engine, "fnK") != first
    assert ask(engine, k1, gateway, "k2") == expected
    # A container start on the network brings it back as well.
    second = resolver_pid(engine, "fnK")
    os.kill(second, signal.SIGKILL)
    wait_gone(second)
    sleeper(engine, "k3", "fnK")
    assert ask(engine, k1, gateway, "k3")[0] == "NOERROR"
    assert engine.revive_resolvers(k1) == []


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)


def test_the_gateway_as_ip_is_refused_with_nothing_made(engine):
    gateway = network(engine, "fnG")
    container_id = engine.create({
        "Image": engine.image, "Cmd": ["sleep", "600"],
        "HostConfig": {"NetworkMode": "fnG"},
        "NetworkingConfig": {"EndpointsConfig": {"fnG": {
            "IPAMConfig": {"IPv4Address": gateway}}}}})["Id"]
    bridge = engine.networks.get("fnG").bridge
    before = leftovers(engine, container_id, bridge)  # the network's own rules
    with pytest.raises(errors.Error, match=r"^Address already in use$"):
        engine.start(container_id)
    assert engine.networks.attachments(container_id=container_id) == []
    leases = engine.networks.ipam_dir / "fnG"
    assert [p.name for p in leases.glob("*") if p.name[0].isdigit()] == []
    assert leftovers(engine, container_id, bridge) == before
    assert before["veths"] == before["netns"] == 0
