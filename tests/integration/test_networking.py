"""Containers on networks through the engine (corral.manager.networking over
corral.network): published ports reached from the host, names resolved on
a user network and isolation between networks, host/none/container modes,
the files a container sees, Docker's errors for bad input with nothing left
behind, and reconcile after a crash.

Each test has a default bridge and subnet of its own, so that it neither
meets a host network nor a test running beside it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from corral.manager import errors
from tests.integration.engines import make_engine, remove_all

HTTPD = "mkdir -p /www && echo hello-from-{tag} > /www/index.html && " \
        "exec httpd -f -p 80 -h /www"


def unique_subnet() -> str:
    return f"10.{random.randint(150, 199)}.{random.randint(0, 255)}.0/24"


def leftovers(engine, *extra: str) -> dict:
    """What the engine's networks leave on the host: veths on their bridges,
    firewall rules naming one of ``extra`` (container IDs and addresses, bridges),
    netns mounts.
    Only ours: other tests on this machine make their own at the same time.
    Counted once the engine's releases after removals have ended."""
    engine.wait_releases()
    tags = [t for t in extra if t]
    bridges = [n.bridge for n in engine.networks.list() if n.driver == "bridge"]
    veths = [line for bridge in bridges for line in subprocess.run(
        ["ip", "-o", "link", "show", "master", bridge], capture_output=True,
        text=True).stdout.splitlines()]
    rules = subprocess.run(["iptables-save"], capture_output=True,
                           text=True).stdout.splitlines()
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if f"{engine.run}/netns/" in line]
    return {"veths": len(veths), "netns": len(mounts),
            "rules": sorted(r for r in rules if any(t in r for t in tags))}


NOTHING = {"veths": 0, "netns": 0, "rules": []}


@pytest.fixture
def engine(tmp_path, busybox_image, make_client):
    # A default bridge of its own; remove_all takes every bridge network of
    # the root off the host.
    engine = make_engine(tmp_path, busybox_image, make_client(), "n-")
    yield engine
    remove_all(engine)
    shutil.rmtree(engine.run, ignore_errors=True)


def run(engine, command: str, **extra) -> str:
    body = {"Image": engine.image, "Cmd": ["sh", "-c", command]}
    host = extra.pop("HostConfig", {})
    name = extra.pop("name", None)
    body.update(extra)
    body["HostConfig"] = host
    container_id = engine.create(body, name=name)["Id"]
    engine.start(container_id)
    return container_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def host_address() -> str:
    """One of the host's own non-loopback addresses."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout.split()
    return out[out.index("inet") + 1].split("/")[0]


def logs(engine, container_id: str) -> str:
    engine.wait(container_id)
    return b"".join(data for _, data in engine.logs(
        container_id, stdout=True, stderr=True, follow=False, since=None, until=None,
        tail=None, timestamps=False)).decode()


# Published ports ---------------------------------------------------------------

def test_published_port_reached_from_the_host(engine):
    port = free_port()
    container_id = run(engine, HTTPD.format(tag="a"), ExposedPorts={"80/tcp": {}},
                       HostConfig={"PortBindings": {"80/tcp": [{"HostPort": str(port)}]}})
    assert fetch(f"http://127.0.0.1:{port}/").strip() == "hello-from-a"
    assert fetch(f"http://{host_address()}:{port}/").strip() == "hello-from-a"
    document = engine.inspect(container_id)
    settings = document["NetworkSettings"]
    assert settings["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0",
                                             "HostPort": str(port)}]}
    bridge = settings["Networks"]["bridge"]
    assert bridge["IPAddress"] == settings["IPAddress"]
    assert bridge["Gateway"] == settings["Gateway"] and bridge["IPPrefixLen"] == 24
    assert settings["SandboxKey"] == str(engine.run / "netns" / container_id)
    row = engine.list()[0]
    assert row["Ports"] == [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": port,
                             "Type": "tcp"}]
    hosts = (engine.directory(container_id) / "hosts").read_text()
    assert f"{bridge['IPAddress']}\t{container_id[:12]}" in hosts
    tags = (container_id, f"{bridge['IPAddress']}/", f"--dport {port} ")
    held = leftovers(engine, *tags)
    assert held["veths"] == held["netns"] == 1 and held["rules"]
    engine.stop(container_id, timeout=1)
    assert engine.inspect(container_id)["NetworkSettings"]["Ports"] == {}
    assert leftovers(engine, *tags) == NOTHING
    engine.start(container_id)  # a second run gets its network again
    assert fetch(f"http://127.0.0.1:{port}/").strip() == "hello-from-a"
    engine.remove(container_id, force=True)
    assert leftovers(engine, *tags) == NOTHING


def test_random_port_and_publish_all(engine):
    container_id = run(engine, HTTPD.format(tag="b"), ExposedPorts={"80/tcp": {}},
                       HostConfig={"PublishAllPorts": True})
    ports = engine.inspect(container_id)["NetworkSettings"]["Ports"]["80/tcp"]
    port = int(ports[0]["HostPort"])
    assert port > 0
    assert fetch(f"http://127.0.0.1:{port}/").strip() == "hello-from-b"


def test_a_port_already_taken_leaves_nothing(engine):
    port = free_port()
    first = run(engine, "sleep 30", HostConfig={
        "PortBindings": {"80/tcp": [{"HostPort": str(port)}]}})
    before = leftovers(engine, first)
    second = engine.create({"Image": engine.image, "Cmd": ["sleep", "30"], "HostConfig": {
        "PortBindings": {"80/tcp": [{"HostPort": str(port)}]}}})["Id"]
    with pytest.raises(errors.Error) as raised:
        engine.start(second)
    assert str(raised.value) == (f"Bind for 0.0.0.0:{port} failed: port is already "
                                 f"allocated")
    assert raised.value.status == 500
    assert leftovers(engine, first, second) == before
    assert not (engine.run / "netns" / second).exists()
    assert engine.networks.attachments(container_id=second) == []
    engine.remove(first, force=True)


# User networks -------------------------------------------------------------------

def test_names_resolve_on_a_user_network_and_networks_are_isolated(engine):
    engine.network_create({"Name": "front", "IPAM": {"Config": [
        {"Subnet": unique_subnet()}]}})
    engine.network_create({"Name": "back", "IPAM": {"Config": [
        {"Subnet": unique_subnet()}]}})
    server = run(engine, HTTPD.format(tag="s"), name="web",
                 HostConfig={"NetworkMode": "front"},
                 NetworkingConfig={"EndpointsConfig": {"front": {"Aliases": ["www"]}}})
    address = engine.inspect(server)["NetworkSettings"]["Networks"]["front"]["IPAddress"]
    tags = [engine.networks.get(name).bridge for name in ("front", "back")]
    client = run(engine, "nslookup web; nslookup www; "
                 f"wget -q -O - http://{address}/", HostConfig={"NetworkMode": "front"})
    out = logs(engine, client)
    assert out.count(address) >= 2, out
    assert "hello-from-s" in out
    resolv = (engine.directory(client) / "resolv.conf").read_text()
    assert resolv.startswith("nameserver ")
    outsider = run(engine, f"timeout 3 wget -q -O - http://{address}/ || echo blocked",
                   HostConfig={"NetworkMode": "back"})
    assert "blocked" in logs(engine, outsider)
    with pytest.raises(errors.Conflict, match="has active endpoints"):
        engine.network_remove("front")
    assert leftovers(engine, *tags)["rules"]
    for container_id in (server, client, outsider):
        tags.append(container_id)
        engine.remove(container_id, force=True)
    engine.network_remove("front")
    assert engine.network_prune()["NetworksDeleted"] == ["back"]
    assert leftovers(engine, *tags) == NOTHING
    assert not Path(f"/sys/class/net/{tags[0]}").exists()


def test_connect_and_disconnect_a_running_container(engine):
    engine.network_create({"Name": "extra", "IPAM": {"Config": [
        {"Subnet": "10.251.7.0/24"}]}})
    container_id = run(engine, "sleep 30")
    engine.network_connect("extra", {"Container": container_id,
                                     "EndpointConfig": {"IPAMConfig": {
                                         "IPv4Address": "10.251.7.9"}}})
    networks = engine.inspect(container_id)["NetworkSettings"]["Networks"]
    assert networks["extra"]["IPAddress"] == "10.251.7.9"
    with pytest.raises(errors.Error, match="already exists in network extra"):
        engine.network_connect("extra", {"Container": container_id})
    engine.network_disconnect("extra", {"Container": container_id})
    assert "extra" not in engine.inspect(container_id)["NetworkSettings"]["Networks"]
    with pytest.raises(errors.Error, match="is not connected to network extra"):
        engine.network_disconnect("extra", {"Container": container_id})


# Modes and files --------------------------------------------------------------------

def test_host_none_and_container_modes(engine):
    on_host = run(engine, "cat /proc/net/dev", HostConfig={"NetworkMode": "host"})
    assert "lo:" in logs(engine, on_host) and len(logs(engine, on_host).splitlines()) > 3
    alone = run(engine, "cat /proc/net/dev", HostConfig={"NetworkMode": "none"})
    interfaces = [line.split(":")[0].strip() for line in
                  logs(engine, alone).splitlines()[2:]]
    assert interfaces == ["lo"]
    first = run(engine, "sleep 30")
    ip = engine.inspect(first)["NetworkSettings"]["IPAddress"]
    joined = run(engine, "ip -4 addr show eth0",
                 HostConfig={"NetworkMode": f"container:{first}"})
    assert ip in logs(engine, joined)
    assert engine.inspect(joined)["NetworkSettings"]["Networks"] == {}


def test_ip_dns_and_add_host_seen_in_the_container(engine):
    engine.network_create({"Name": "fixed", "IPAM": {"Config": [
        {"Subnet": "10.252.3.0/24"}]}})
    container_id = run(
        engine, "cat /etc/hosts /etc/resolv.conf; ip -4 addr show eth0",
        Hostname="box", HostConfig={"NetworkMode": "fixed", "Dns": ["192.0.2.53"],
                                    "DnsSearch": ["example.test"],
                                    "ExtraHosts": ["db:192.0.2.7"]},
        NetworkingConfig={"EndpointsConfig": {"fixed": {"IPAMConfig": {
            "IPv4Address": "10.252.3.77"}}}})
    out = logs(engine, container_id)
    assert "192.0.2.7\tdb" in out and "10.252.3.77\tbox" in out
    assert "nameserver 192.0.2.53" in out and "search example.test" in out
    assert "inet 10.252.3.77/24" in out


# Bad input ---------------------------------------------------------------------------

def test_an_unknown_network_fails_the_start_with_nothing_made(engine):
    # As dockerd 20.10: the create succeeds, the start is a 404.
    container_id = engine.create({"Image": engine.image,
                                  "HostConfig": {"NetworkMode": "nosuchnet"}})["Id"]
    with pytest.raises(errors.NotFound) as raised:
        engine.start(container_id)
    assert str(raised.value) == "network nosuchnet not found"
    assert not (engine.run / "netns" / container_id).exists()
    assert engine.inspect(container_id)["State"]["Status"] == "created"


@pytest.mark.parametrize("host, networking, error, message", [
    ({"NetworkMode": "container:nosuch"}, None, errors.NotFound,
     "No such container: nosuch"),
    ({"PortBindings": {"80x/tcp": [{"HostPort": "1"}]}}, None, errors.InvalidArgument,
     'invalid port specification: "80x"'),
    ({"NetworkMode": "bridge"}, {"bridge": {"IPAMConfig": {"IPv4Address": "10.0.0.9"}}},
     errors.InvalidArgument,
     "user specified IP address is supported on user defined networks only"),
    ({"ExtraHosts": ["nocolon"]}, None, errors.InvalidArgument,
     'bad format for add-host: "nocolon"'),
])
def test_bad_create_is_refused_with_nothing_made(engine, host, networking, error,
                                                 message):
    body = {"Image": engine.image, "HostConfig": host}
    if networking:
        body["NetworkingConfig"] = {"EndpointsConfig": networking}
    with pytest.raises(error) as raised:
        engine.create(body)
    assert str(raised.value) == message
    assert not engine.records.all()
    assert not os.listdir(engine.containers_dir)


def test_overlapping_subnet_and_taken_name(engine):
    engine.network_create({"Name": "one", "IPAM": {"Config": [
        {"Subnet": "10.253.0.0/24"}]}})
    with pytest.raises(errors.Conflict) as raised:
        engine.network_create({"Name": "two", "IPAM": {"Config": [
            {"Subnet": "10.253.0.128/25"}]}})
    assert "overlaps" in str(raised.value)
    with pytest.raises(errors.Conflict, match="network with name one already exists"):
        engine.network_create({"Name": "one"})
    assert [n["Name"] for n in engine.network_list()
            if n["Name"] not in ("bridge", "host", "none")] == ["one"]


# Crash recovery ------------------------------------------------------------------------

def test_reconcile_releases_what_dead_containers_held(engine):
    container_id = run(engine, "sleep 300", HostConfig={
        "PortBindings": {"80/tcp": [{"HostPort": str(free_port())}]}})
    ip = engine.inspect(container_id)["NetworkSettings"]["IPAddress"]
    assert leftovers(engine, container_id, f"{ip}/") != NOTHING
    # The shim and the container die with no engine to see it.
    pid = engine.inspect(container_id)["State"]["Pid"]
    shim_pid = int((engine.state_dir(container_id) / "shim.pid").read_text())
    os.kill(shim_pid, 9)
    os.kill(pid, 9)
    time.sleep(0.2)
    engine.reconcile()
    assert leftovers(engine, container_id, f"{ip}/") == NOTHING
    assert engine.networks.attachments(container_id=container_id) == []


def test_a_run_that_ends_by_itself_releases_its_network(engine):
    # No engine watches: the shim's exit command releases it.
    container_id = run(engine, "sleep 0.3")
    ip = engine.inspect(container_id)["NetworkSettings"]["IPAddress"]
    assert leftovers(engine, container_id, f"{ip}/") != NOTHING
    engine.wait(container_id)
    deadline = time.monotonic() + 10
    while leftovers(engine, container_id, f"{ip}/") != NOTHING:
        assert time.monotonic() < deadline, leftovers(engine, container_id, f"{ip}/")
        time.sleep(0.1)
    engine.start(container_id)  # and a new run gets it back
    assert engine.inspect(container_id)["NetworkSettings"]["IPAddress"]


def test_restarts_by_the_policy_keep_the_namespace(engine):
    container_id = run(engine, "ip -4 addr show eth0; sleep 0.2; exit 3",
                       HostConfig={"RestartPolicy": {"Name": "on-failure",
                                                     "MaximumRetryCount": 2}})
    deadline = time.monotonic() + 20
    while engine.inspect(container_id)["RestartCount"] < 2 or \
            engine.inspect(container_id)["State"]["Running"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out = logs(engine, container_id)
    assert out.count("inet ") == 3, out


# Releases after the record ---------------------------------------------------------

def test_network_rm_right_after_rm_finishes_the_pending_release(engine):
    # rm returns with the DELs still on their way, in this engine's worker or
    # in another process (here one killed before it released anything):
    # network rm waits for the first, and finishes the second itself.
    for crash in (False, True):
        engine.network_create({"Name": "brief", "IPAM": {"Config": [
            {"Subnet": unique_subnet()}]}})
        container_id = run(engine, "sleep 300", HostConfig={
            "NetworkMode": "brief",
            "PortBindings": {"80/tcp": [{"HostPort": str(free_port())}]}})
        ip = engine.inspect(container_id)["NetworkSettings"]["Networks"][
            "brief"]["IPAddress"]
        tags = [container_id, f"{ip}/", engine.networks.get("brief").bridge]
        if crash:
            remove_cut_short(engine, container_id)
            assert engine.networks.attachments(container_id=container_id)
        else:
            engine.remove(container_id, force=True)
        with pytest.raises(errors.NotFound):
            engine.inspect(container_id)
        engine.network_remove("brief")
        assert leftovers(engine, *tags) == NOTHING
        assert not (engine.root / "cni" / "ipam" / "brief").exists()


CUT_SHORT = """
import os, sys
from pathlib import Path
from corral.manager.engine import Engine
engine = Engine(Path(sys.argv[1]), Path(sys.argv[2]), default_bridge=sys.argv[3],
                default_subnet=sys.argv[4])
# The process dies once the record is gone, before the release.
Engine.release_later = lambda self, container_id: os._exit(9)
engine.remove(sys.argv[5], force=True)
"""


def remove_cut_short(engine, container_id: str) -> None:
    """``rm -f`` in another process that dies between record and release."""
    killed = subprocess.run([sys.executable, "-c", CUT_SHORT, str(engine.root),
                             str(engine.run), engine.default_bridge,
                             engine.default_subnet, container_id], timeout=60)
    assert killed.returncode == 9


def test_a_crash_between_record_and_release_is_finished_by_reconcile(engine):
    port = free_port()
    container_id = run(engine, "sleep 300", HostConfig={
        "PortBindings": {"80/tcp": [{"HostPort": str(port)}]}})
    ip = engine.inspect(container_id)["NetworkSettings"]["IPAddress"]
    tags = [container_id, f"{ip}/"]
    remove_cut_short(engine, container_id)
    with pytest.raises(errors.NotFound):
        engine.inspect(container_id)
    held = leftovers(engine, *tags)
    assert held["veths"] == 1 and held["netns"] == 1 and held["rules"]
    assert engine.networks.attachments(container_id=container_id)
    # The port is still the dead container's: nobody else gets it yet.
    with pytest.raises(errors.Error, match="already allocated"):
        run(engine, "true", HostConfig={
            "PortBindings": {"80/tcp": [{"HostPort": str(port)}]}})
    assert container_id in engine.reconcile()["orphans"]
    assert leftovers(engine, *tags) == NOTHING
    assert engine.networks.attachments() == []
    leases = engine.root / "cni" / "ipam" / "bridge"
    assert ip not in {p.name for p in leases.iterdir()}


def test_a_published_port_is_reached_from_another_network(engine):
    # Docker publishes a port to containers of other bridge networks too; our
    # isolation dropped the connection, DNATed to the default bridge, from a
    # user network (a fresh user's report).
    port = free_port()
    server = run(engine, HTTPD.format(tag="p"),
                 HostConfig={"PortBindings": {"80/tcp": [{"HostPort": str(port)}]}})
    fetch(f"http://127.0.0.1:{port}/")
    engine.network_create({"Name": "other", "IPAM": {"Config": [
        {"Subnet": unique_subnet()}]}})
    client = run(engine, f"timeout 5 wget -q -O - http://{host_address()}:{port}/ "
                 "|| echo blocked", HostConfig={"NetworkMode": "other"})
    assert "hello-from-p" in logs(engine, client)
    # The server's own address stays out of reach from there.
    address = engine.inspect(server)["NetworkSettings"]["IPAddress"]
    direct = run(engine, f"timeout 3 wget -q -O - http://{address}/ || echo blocked",
                 HostConfig={"NetworkMode": "other"})
    assert "blocked" in logs(engine, direct)
    for container_id in (server, client, direct):
        engine.remove(container_id, force=True)
    engine.network_remove("other")


# A fresh user's reports ---------------------------------------------------------

def test_an_address_the_host_lacks_is_not_allocated_but_unassignable(engine):
    # dockerd: the bind of docker-proxy fails, and its bridge driver names
    # the endpoint; we said "port is already allocated".
    port = free_port()
    container_id = engine.create({"Image": engine.image, "Cmd": ["true"], "HostConfig": {
        "PortBindings": {"80/tcp": [{"HostIp": "10.9.9.9", "HostPort": str(port)}]}},
        }, name="nowhere")["Id"]
    with pytest.raises(errors.Error) as raised:
        engine.start(container_id)
    message = str(raised.value)
    assert message.startswith("driver failed programming external connectivity on "
                              "endpoint nowhere (")
    assert message.endswith(f"): Error starting userland proxy: listen tcp4 "
                            f"10.9.9.9:{port}: bind: cannot assign requested address")
    assert raised.value.status == 500
    assert leftovers(engine, container_id) == NOTHING
    assert engine.networks.attachments(container_id=container_id) == []


def test_connect_and_disconnect_rewrite_the_running_containers_hosts(engine):
    subnet = unique_subnet()
    prefix = subnet.rsplit(".", 1)[0] + "."
    engine.network_create({"Name": "later", "IPAM": {"Config": [{"Subnet": subnet}]}})
    # The container prints its /etc/hosts once the new address is in it.
    container_id = run(engine, f"for i in $(seq 100); do grep -q '^{prefix}' "
                       "/etc/hosts && break; sleep 0.1; done; cat /etc/hosts; sleep 30",
                       Hostname="box")
    first = engine.inspect(container_id)["NetworkSettings"]["IPAddress"]
    engine.network_connect("later", {"Container": container_id})
    added = engine.inspect(container_id)["NetworkSettings"]["Networks"]["later"]
    deadline = time.monotonic() + 10
    while f"{added['IPAddress']}\tbox" not in (seen := b"".join(
            data for _, data in engine.logs(
                container_id, stdout=True, stderr=True, follow=False, since=None,
                until=None, tail=None, timestamps=False)).decode()):
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)
    assert f"{first}\tbox\n{added['IPAddress']}\tbox\n" in seen
    engine.network_disconnect("later", {"Container": container_id})
    hosts = (engine.directory(container_id) / "hosts").read_text()
    assert hosts.endswith(f"{first}\tbox\n") and prefix not in hosts
    engine.remove(container_id, force=True)
    engine.network_remove("later")


def test_host_mode_warns_of_discarded_ports_and_copies_the_hosts_file(engine):
    created = engine.create({"Image": engine.image, "Cmd": ["cat", "/etc/hosts"],
                             "HostConfig": {"NetworkMode": "host", "PortBindings": {
                                 "80/tcp": [{"HostPort": str(free_port())}]}}})
    assert created["Warnings"] == ["Published ports are discarded when using host "
                                   "network mode"]
    engine.start(created["Id"])
    assert logs(engine, created["Id"]) == Path("/etc/hosts").read_text()
    assert engine.create({"Image": engine.image, "HostConfig": {
        "NetworkMode": "host"}})["Warnings"] == []
    with_extra = run(engine, "cat /etc/hosts", HostConfig={
        "NetworkMode": "host", "ExtraHosts": ["db:192.0.2.9"]})
    assert re.search(r"^192\.0\.2\.9\tdb$", logs(engine, with_extra), re.M)
