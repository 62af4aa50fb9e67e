"""corral.network with the real CNI plugins (Debian's 1.1.1) in real namespaces.

Each test has its own root, run directory, bridges and subnets
(network_fixtures.py); processes run in a namespace through nsenter.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from corral.network import (
    InvalidNetworkArgument,
    NetworkConflict,
    NetworkError,
    NetworkNotFound,
    PortBindFailed,
    PortInUse,
    PortMapping,
    PredefinedNetwork,
)

from .network_fixtures import (  # noqa: F401
    host_address,
    make_networks,
    networks_fixture,
    ns_run,
    teardown,
    unique_bridge,
    unique_subnet,
)


def user_network(networks, name, **options):
    return networks.create(name, subnet=unique_subnet(),
                           options={"com.docker.network.bridge.name": unique_bridge()},
                           **options)


def attached(networks, network, container_id, **options):
    netns = networks.create_netns(container_id)
    return netns, networks.attach(network, container_id, netns,
                                  name=options.pop("name", container_id), **options)


def reaches(netns, address) -> bool:
    return ns_run(netns, "busybox", "ping", "-c", "1", "-W", "1", address).returncode == 0


def test_one_network_connects_and_another_is_isolated(networks):
    user_network(networks, "front")
    user_network(networks, "back")
    ns1, one = attached(networks, "front", "c1")
    ns2, two = attached(networks, "front", "c2")
    ns3, three = attached(networks, "back", "c3")

    assert reaches(ns1, two.ip) and reaches(ns2, one.ip)
    assert not reaches(ns3, one.ip)
    assert not reaches(ns1, three.ip)
    routes = ns_run(ns1, "ip", "route").stdout
    assert f"default via {one.gateway}" in routes
    assert one.mac and re.fullmatch(r"[0-9a-f:]{17}", one.mac)
    networks.check("front", "c1")


def test_internal_network_has_no_way_out(networks):
    user_network(networks, "inner", internal=True)
    user_network(networks, "outer")
    ns1, _ = attached(networks, "inner", "c1")
    _, other = attached(networks, "outer", "c2")

    assert "default" not in ns_run(ns1, "ip", "route").stdout
    assert not reaches(ns1, other.ip)


def test_published_port_reached_from_loopback_and_host_address(networks):
    user_network(networks, "web")
    netns = networks.create_netns("c1")
    server = subprocess.Popen(["nsenter", f"--net={netns}", sys.executable, "-m",
                               "http.server", "8000", "--bind", "0.0.0.0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd="/")
    try:
        attachment = networks.attach("web", "c1", netns, name="c1",
                                     ports=[PortMapping(8000)])
        port = attachment.ports[0].host_port
        assert port > 0
        for address in ("127.0.0.1", host_address()):
            assert _get(f"http://{address}:{port}/") == 200, address
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait()


def _get(url: str) -> int:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_taken_ports_refused_and_attach_undone(networks):
    user_network(networks, "web")
    attached(networks, "web", "c1", ports=[PortMapping(80, host_port=18081)])
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        bound = holder.getsockname()[1]
        before = _leftovers(networks)
        netns = networks.create_netns("c2")
        with pytest.raises(PortInUse, match="Bind for 0.0.0.0:18081 failed: "
                           "port is already allocated"):
            networks.attach("web", "c2", netns, name="c2",
                            ports=[PortMapping(80, host_port=18081)])
        # A host socket: what docker-proxy says when its bind fails.
        with pytest.raises(PortBindFailed, match=f"listen tcp4 0.0.0.0:{bound}: "
                           "bind: address already in use"):
            networks.attach("web", "c2", netns, name="c2",
                            ports=[PortMapping(80, host_port=bound)])
        networks.remove_netns("c2")
        assert _leftovers(networks) == before
    assert [a.container_id for a in networks.attachments(network="web")] == ["c1"]


def test_names_aliases_and_short_ids_resolved(networks):
    network = user_network(networks, "names")
    long_id = "ab" * 32
    netns, web = attached(networks, "names", long_id, name="web", aliases=["www"])
    assert networks.resolver("names") == network.gateway
    for name in ("web", "www", long_id[:12], "WEB"):
        answer = ns_run(netns, "busybox", "nslookup", name, network.gateway)
        assert answer.returncode == 0 and web.ip in answer.stdout, (name, answer)

    networks.rename(long_id, "site")
    assert web.ip in ns_run(netns, "busybox", "nslookup", "site", network.gateway).stdout
    started = time.monotonic()
    other = ns_run(netns, "busybox", "nslookup", "no-such-name.invalid",
                   network.gateway)
    assert other.returncode != 0 and time.monotonic() - started < 8

    # Clients from outside the subnet get no answer: the host itself, and a
    # container of another network (whose packets reach the gateway address).
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query("web", "A"), network.gateway, timeout=1)
    user_network(networks, "elsewhere")
    stranger, _ = attached(networks, "elsewhere", "c2")
    refused = ns_run(stranger, "busybox", "timeout", "3", "busybox", "nslookup", "web",
                     network.gateway)
    assert web.ip not in refused.stdout


def test_dead_resolver_restarted_and_stopped_with_its_network(networks):
    network = user_network(networks, "names")
    attached(networks, "names", "c1")
    pid = networks.resolvers.running(network)
    os.kill(pid, signal.SIGKILL)
    while networks.resolvers.running(network) == pid:
        time.sleep(0.01)
    netns, two = attached(networks, "names", "c2")
    assert networks.resolvers.running(network) not in (None, pid)
    assert two.ip in ns_run(netns, "busybox", "nslookup", "c2", network.gateway).stdout

    networks.detach("names", "c1")
    networks.detach("names", "c2")
    pid = networks.resolvers.running(network)
    networks.remove("names")
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_default_bridge_and_predefined_networks(networks):
    names = {n.name: n.driver for n in networks.list()}
    assert names == {"bridge": "bridge", "host": "host", "none": "null"}
    netns, attachment = attached(networks, "bridge", "c1")
    assert networks.resolver("bridge") is None
    assert attachment.network.dns is False
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    for name in ("host", "none"):
        with pytest.raises(InvalidNetworkArgument):
            networks.attach(name, "c1", netns, name="c1")
        with pytest.raises(PredefinedNetwork):
            networks.remove(name)
    with pytest.raises(NetworkConflict):
        networks.attach("bridge", "c1", netns, name="c1")


def test_network_lifecycle_and_bad_input(networks):
    network = user_network(networks, "life", labels={"a": "b"})
    assert networks.get(network.id[:10]).name == "life"
    with pytest.raises(NetworkConflict, match="already exists"):
        user_network(networks, "life")
    with pytest.raises(NetworkConflict, match="Pool overlaps"):
        networks.create("other", subnet=network.subnet)
    chosen = networks.create("auto")
    assert chosen.subnet.startswith(("172.", "192.168.")) and chosen.dns
    attached(networks, "life", "c1")
    with pytest.raises(NetworkConflict, match="has active endpoints"):
        networks.remove("life")
    assert networks.prune() == ["auto"]
    networks.detach("life", "c1")
    networks.detach("life", "c1")          # idempotent
    networks.remove("life")
    with pytest.raises(NetworkNotFound, match="network life not found"):
        networks.get("life")
    assert not Path("/sys/class/net", network.bridge).exists()


SHARED_CHAINS = {"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING",
                 "CNI-FORWARD", "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ",
                 "CNI-HOSTPORT-SETMARK", "CORRAL-FORWARD", "CORRAL-ISOLATION",
                 "CORRAL-ISOLATION-2"}


def _rules() -> list[str]:
    found = []
    for command in ("iptables-save", "ip6tables-save"):
        output = subprocess.run([command], capture_output=True, text=True).stdout
        found += [line for line in output.splitlines() if not line.startswith("#")]
    return found


@pytest.fixture
def other_root(tmp_path):
    """Networks of a second root on the same host (another corrald's)."""
    made = make_networks(tmp_path / "other")
    yield made
    teardown(made)


def test_a_port_published_by_another_root_is_allocated(networks, other_root):
    # Two roots keep their attachments apart; the nat table is what both see
    # (a fresh user's report: both published 8080, the first DNAT won).
    port = _unbound_port()
    attached(networks, "bridge", "c1", ports=[PortMapping(80, host_port=port)])
    netns = other_root.create_netns("c2")
    before = _leftovers(other_root)
    for host_ip in ("", "0.0.0.0", "127.0.0.1"):
        with pytest.raises(PortInUse, match=f"Bind for {host_ip or '0.0.0.0'}:{port} "
                           "failed: port is already allocated"):
            other_root.attach("bridge", "c2", netns, name="c2", ports=[
                PortMapping(80, host_ip=host_ip, host_port=port)])
    assert _leftovers(other_root) == before
    assert other_root.attachments() == []
    other_root.remove_netns("c2")


def test_two_roots_claiming_one_port_at_once_get_it_once(networks, other_root):
    import threading

    port = _unbound_port()
    both = threading.Barrier(2)
    outcome = {}

    def claim(root, container_id):
        netns = root.create_netns(container_id)
        both.wait()
        try:
            root.attach("bridge", container_id, netns, name=container_id,
                        ports=[PortMapping(80, host_port=port)])
            outcome[container_id] = "published"
        except PortInUse as exc:
            outcome[container_id] = str(exc)

    workers = [threading.Thread(target=claim, args=pair)
               for pair in ((networks, "c1"), (other_root, "c2"))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(outcome.values())[-1] == "published", outcome
    assert sorted(outcome.values())[0] == (f"Bind for 0.0.0.0:{port} failed: port "
                                           "is already allocated"), outcome
    rules = subprocess.run(["iptables", "-t", "nat", "-S", "CORRAL-HOSTPORTS"],
                           capture_output=True, text=True).stdout
    assert len([r for r in rules.splitlines() if f"--dport {port} " in r]) == 1


def test_an_address_the_host_lacks_cannot_be_assigned(networks):
    netns = networks.create_netns("c1")
    before = _leftovers(networks)
    for port in (_unbound_port(), 0):
        with pytest.raises(PortBindFailed, match=r"Error starting userland proxy: "
                           r"listen tcp4 10\.9\.9\.9:\d+: bind: cannot assign "
                           r"requested address\Z"):
            networks.attach("bridge", "c1", netns, name="c1", ports=[
                PortMapping(80, host_ip="10.9.9.9", host_port=port)])
    assert _leftovers(networks) == before and networks.attachments() == []
    networks.remove_netns("c1")


def _unbound_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def _leftovers(networks, marks=()) -> dict:
    """What this test's networks hold on the host; other engineers' networks
    change the host at the same time, so only what names ours is counted."""
    ours = [n for n in networks.list() if n.driver == "bridge"]
    bridges = {n.bridge for n in ours}
    prefixes = [n.subnet.rsplit(".", 1)[0] + "." for n in ours]
    words = [*bridges, *prefixes, *marks]
    links = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True,
                                      text=True).stdout)
    places = (str(networks.root), str(networks.test_run))
    return {
        "links": sorted(link["ifname"] for link in links
                        if link["ifname"] in bridges or link.get("master") in bridges),
        "addresses": sorted(info["local"] for link in links
                            for info in link.get("addr_info", ())
                            if info["local"].startswith(tuple(prefixes))),
        "rules": sorted(r for r in _rules() if any(w in r for w in words)),
        "files": sorted(str(p) for p in (networks.root / "cni").rglob("*")),
        "mounts": [m for m in Path("/proc/mounts").read_text().splitlines()
                   if any(place in m for place in places)],
        "attachments": len(networks.attachments()),
    }


def _chains(rules: list[str]) -> set[str]:
    named = set()
    for rule in rules:
        fields = rule.split()
        for flag in ("-A", "-j", "-g"):
            if flag in fields and fields.index(flag) + 1 < len(fields):
                named.add(fields[fields.index(flag) + 1])
    return {c for c in named if c.startswith("CNI-") and c not in SHARED_CHAINS}


def test_teardown_leaves_nothing(networks):
    user_network(networks, "tidy")
    # The shared chains (CORRAL-HOSTPORTS*, and the plugins' own) are made
    # once and stay: count after a first run.
    attached(networks, "tidy", "warm", ports=[PortMapping(80)])
    networks.detach("tidy", "warm")
    networks.remove_netns("warm")
    ids = [f"tidy-{n}-{os.getpid()}" for n in range(3)]
    before = _leftovers(networks, ids)

    attached(networks, "tidy", ids[0], ports=[PortMapping(80), PortMapping(53, "udp")])
    attached(networks, "tidy", ids[1], ports=[PortMapping(80)])
    attached(networks, "bridge", ids[2], ports=[PortMapping(80)])
    during = _leftovers(networks, ids)
    assert len(during["links"]) >= len(before["links"]) + 3
    assert during["files"] != before["files"]
    # Published ports: a DNAT and two MASQUERADE rules per mapping, by ID.
    assert [sum(i in r for r in during["rules"]) for i in ids] == [6, 3, 3]

    networks.detach("tidy", ids[0])
    networks.remove_netns(ids[0])
    # Crash recovery: the namespace went first, then the detach.
    networks.remove_netns(ids[1])
    networks.detach("tidy", ids[1])
    networks.remove_netns(ids[2])
    networks.detach("bridge", ids[2])
    after = _leftovers(networks, ids)
    # The default bridge was first used in this run: it stays, with its
    # address and isolation rules, until the fixture removes it.
    default = networks.get("bridge")
    after["links"].remove(default.bridge)
    after["addresses"].remove(default.gateway)
    after["rules"] = [r for r in after["rules"] if default.bridge not in r]
    after["files"] = [f for f in after["files"] if "/ipam/bridge" not in f]
    assert after == before
    assert not _chains(during["rules"]) - _chains(before["rules"])


SERVER = """
import socket, sys
with socket.socket() as s:
    s.bind(("0.0.0.0", 9000)); s.listen(); print("ready", flush=True)
    connection, peer = s.accept(); print(peer[0], flush=True)
"""
CLIENT = "import socket, sys; socket.create_connection((sys.argv[1], 9000), 3).close()"


def test_outbound_nat_and_none_from_internal(networks):
    # A "remote" host: a namespace behind a veth of the host's, on a subnet
    # no bridge has; it sees the masqueraded source, the host's address.
    prefix = unique_subnet().rsplit(".", 1)[0]
    host_end, far_end = unique_bridge(), unique_bridge()
    remote = networks.create_netns("remote")
    subprocess.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name",
                    far_end, "netns", str(remote)], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{prefix}.1/24", "dev", host_end],
                       check=True)
        subprocess.run(["ip", "link", "set", host_end, "up"], check=True)
        ns_run(remote, "ip", "addr", "add", f"{prefix}.2/24", "dev", far_end,
               check=True)
        ns_run(remote, "ip", "link", "set", far_end, "up", check=True)
        user_network(networks, "out")
        user_network(networks, "closed", internal=True)
        outside, _ = attached(networks, "out", "c1")
        inside, _ = attached(networks, "closed", "c2")
        server = subprocess.Popen(["nsenter", f"--net={remote}", sys.executable, "-c",
                                   SERVER], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "ready"
            denied = ns_run(inside, sys.executable, "-c", CLIENT, f"{prefix}.2")
            assert denied.returncode != 0
            ns_run(outside, sys.executable, "-c", CLIENT, f"{prefix}.2", check=True)
            assert server.stdout.readline().strip() == f"{prefix}.1"
        finally:
            server.kill()
            server.wait()
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)


def test_requested_address_and_failed_first_attach(networks):
    subnet = unique_subnet()
    prefix = subnet.rsplit(".", 1)[0]
    network = networks.create("fixed", subnet=subnet, ip_range=f"{prefix}.128/25",
                              options={"com.docker.network.bridge.name":
                                       unique_bridge()})
    netns = networks.create_netns("c1")
    with pytest.raises(InvalidNetworkArgument, match="outside the network's ip-range"):
        networks.attach("fixed", "c1", netns, name="c1", ip=f"{prefix}.5")
    # A plugin failure on a bridge's first use: no bridge, lease or cache left.
    with pytest.raises(NetworkError):
        networks.attach("fixed", "c1", netns, name="c1", ifname="x" * 20)
    assert not Path("/sys/class/net", network.bridge).exists()
    assert not list((networks.root / "cni" / "results").iterdir())
    assert networks.attachments() == []
    attachment = networks.attach("fixed", "c1", netns, name="c1", ip=f"{prefix}.200")
    assert attachment.ip == f"{prefix}.200"
    netns2 = networks.create_netns("c2")
    with pytest.raises(NetworkConflict, match="Address already in use"):
        networks.attach("fixed", "c2", netns2, name="c2", ip=f"{prefix}.200")


# Run under `unshare --net`: a host of its own whose FORWARD policy is DROP
# (as dockerd leaves a host), so the policy of the real host, where others
# work at the same time, is not touched; the namespace takes it away.
FORWARD_DROP = r"""
import json, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from corral.network import PortMapping
from tests.integration.network_fixtures import (make_networks, ns_run, teardown,
                                                unique_bridge, unique_subnet)
ACCEPTOR = ("import socket, sys; s = socket.socket(); s.bind(('0.0.0.0', "
            "int(sys.argv[1]))); s.listen(); print('ready', flush=True)\n"
            "while True: s.accept()[0].close()")
CONNECT = ("import socket, sys; socket.create_connection((sys.argv[1], "
           "int(sys.argv[2])), 2).close()")

def serve(netns, port):
    server = subprocess.Popen(["nsenter", f"--net={netns}", sys.executable, "-c",
                               ACCEPTOR, str(port)], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    return server

def connects(netns, address, port):
    command = [sys.executable, "-c", CONNECT, address, str(port)]
    if netns:
        return ns_run(netns, *command).returncode == 0
    return subprocess.run(command, capture_output=True).returncode == 0

def user(networks, name, **options):
    return networks.create(name, subnet=unique_subnet(), options={
        "com.docker.network.bridge.name": unique_bridge()}, **options)

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["iptables", "-P", "FORWARD", "DROP"], check=True)
networks = make_networks(Path(tempfile.mkdtemp()))
servers, found = [], {}
try:
    found["policy"] = subprocess.run(["iptables", "-S", "FORWARD"], check=True,
                                     capture_output=True, text=True).stdout.split("\n")[0]
    uplink, far = unique_bridge(), unique_bridge()
    remote = networks.create_netns("remote")
    subprocess.run(["ip", "link", "add", uplink, "type", "veth", "peer", "name", far,
                    "netns", str(remote)], check=True)
    subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", uplink], check=True)
    subprocess.run(["ip", "link", "set", uplink, "up"], check=True)
    ns_run(remote, "ip", "addr", "add", "192.0.2.2/24", "dev", far, check=True)
    ns_run(remote, "ip", "link", "set", far, "up", check=True)
    for name, options in (("a", {}), ("b", {}), ("closed", {"internal": True})):
        user(networks, name, **options)
    ns = {c: networks.create_netns(c) for c in ("c1", "c2", "c3", "c4")}
    servers += [serve(ns["c1"], 8000), serve(remote, 9000)]
    one = networks.attach("a", "c1", ns["c1"], name="c1", ports=[PortMapping(8000)])
    port = one.ports[0].host_port
    networks.attach("a", "c2", ns["c2"], name="c2")
    networks.attach("b", "c3", ns["c3"], name="c3")
    networks.attach("closed", "c4", ns["c4"], name="c4")
    found.update({
        "same network": connects(ns["c2"], one.ip, 8000),
        "other network": connects(ns["c3"], one.ip, 8000),
        "published, loopback": connects(None, "127.0.0.1", port),
        "published, from outside": connects(remote, "192.0.2.1", port),
        "published, from its network": connects(ns["c2"], "192.0.2.1", port),
        "published, from itself": connects(ns["c1"], "192.0.2.1", port),
        "outbound": connects(ns["c2"], "192.0.2.2", 9000),
        "internal, outbound": connects(ns["c4"], "192.0.2.2", 9000)})
finally:
    for server in servers:
        server.kill()
    teardown(networks)
    subprocess.run(["iptables", "-P", "FORWARD", "ACCEPT"], check=True)
print(json.dumps(found))
"""


def test_forward_policy_drop():
    # dockerd sets FORWARD's policy to DROP: our per-network rules must
    # still forward what Docker forwards, and no more.
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", FORWARD_DROP,
                           root], capture_output=True, text=True, timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "policy": "-P FORWARD DROP", "same network": True, "other network": False,
        "published, loopback": True, "published, from outside": True,
        "published, from its network": True, "published, from itself": True,
        "outbound": True, "internal, outbound": False}


def test_a_detach_after_its_namespace_went_deletes_the_hosts_end(networks):
    # The kernel deletes a namespace's veths when it frees the namespace, in
    # a work queue, later: a detach after a crash left the host's end for a
    # while (CI saw it). An open fd holds the namespace as a slow queue does.
    network = user_network(networks, "held")
    netns, _ = attached(networks, "held", "held-1")
    holder = os.open(netns, os.O_RDONLY)
    try:
        networks.remove_netns("held-1")
        networks.detach("held", "held-1")
        ends = subprocess.run(["ip", "-o", "link", "show", "master", network.bridge],
                              capture_output=True, text=True).stdout
        assert ends == ""
    finally:
        os.close(holder)
