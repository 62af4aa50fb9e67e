"""Networking through the real docker CLI against a private corrald (its own
default bridge and subnet: ``--bridge``, ``--bip``): published ports reached
from the host and ``docker port``, names on a user network, isolation,
``docker network ...``, Docker's errors with nothing left behind, corrald
SIGKILLed and restarted; one reference test against Debian's dockerd.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from corral import _syscalls
from corral.network import NetworkError, Networks
from tests.integration import peers
from tests.integration.test_networking import (
    fetch,
    free_port,
    host_address,
    unique_subnet,
)


class NetworkedCorrald(peers.Corrald):
    """corrald (with a default bridge and subnet of its own, as every test's)
    whose clean-up also takes what a SIGKILLed run of it left on the host."""

    def networks(self) -> Networks:
        return Networks(self.root, self.run_dir, default_bridge=self.bridge,
                        default_subnet=unique_subnet())

    def cleanup(self) -> None:
        self.stop()
        peers.kill_processes(peers.processes_mentioning(str(self.run_dir)))
        networks = self.networks()
        for attachment in networks.attachments():
            try:
                networks.detach(attachment.network.id, attachment.container_id)
            except NetworkError:
                pass
        for path in (self.run_dir / "netns").glob("*"):
            networks.remove_netns(path.name)
        for network in networks.list():
            if network.driver == "bridge":
                networks._teardown(network)
        networks.close()
        if (self.run_dir / "netns").is_dir():
            try:
                _syscalls.umount2(str(self.run_dir / "netns"), _syscalls.MNT_DETACH)
            except OSError:
                pass
        super().cleanup()


@pytest.fixture(scope="module")
def corrald():
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not on PATH (scripts/setup installs it)")
    daemon = NetworkedCorrald(peers.make_workdir("net"))
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture(scope="module")
def image(corrald, busybox_image) -> str:
    corrald.ok("pull", busybox_image)
    return busybox_image


def footprint(corrald, *tags: str) -> dict:
    """veths on the daemon's bridges, rules naming ``tags``, netns mounts."""
    networks = corrald.networks()
    bridges = [n.bridge for n in networks.list() if n.driver == "bridge"]
    networks.close()
    veths = [line for bridge in bridges for line in subprocess.run(
        ["ip", "-o", "link", "show", "master", bridge], capture_output=True,
        text=True).stdout.splitlines()]
    rules = subprocess.run(["iptables-save"], capture_output=True,
                           text=True).stdout.splitlines()
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if f"{corrald.run_dir}/netns/" in line]
    return {"veths": len(veths), "netns": len(mounts),
            "rules": sorted(r for r in rules if any(t in r for t in tags if t))}


NOTHING = {"veths": 0, "netns": 0, "rules": []}


def settled(corrald, *tags: str, timeout: float = 10.0) -> dict:
    """The footprint once it is NOTHING, or as it is at the deadline: a
    removal's release goes on in corrald's worker after rm returns."""
    deadline = time.monotonic() + timeout
    while (found := footprint(corrald, *tags)) != NOTHING and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    return found
HTTPD = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"


def test_httpd_on_a_published_port_and_docker_port(corrald, image):
    port = free_port()
    name = f"web-{uuid.uuid4().hex[:6]}"
    container_id = corrald.ok("run", "-d", "--name", name, "-p", f"{port}:80", image,
                              "sh", "-c", HTTPD.format(text="served")).strip()
    assert fetch(f"http://127.0.0.1:{port}/").strip() == "served"
    assert fetch(f"http://{host_address()}:{port}/").strip() == "served"
    assert corrald.ok("port", name).splitlines() == [f"80/tcp -> 0.0.0.0:{port}"]
    assert corrald.ok("port", name, "80").strip() == f"0.0.0.0:{port}"
    assert f"0.0.0.0:{port}->80/tcp" in corrald.ok("ps", "--filter", f"name={name}")
    ip = corrald.ok("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).strip()
    bindings = json.loads(corrald.ok("inspect", "-f", "{{json .HostConfig.PortBindings}}",
                                     name))
    assert bindings == {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]}
    tags = (container_id, f"{ip}/", f"--dport {port} ")
    assert footprint(corrald, *tags) != NOTHING
    corrald.ok("rm", "-f", name)
    assert settled(corrald, *tags) == NOTHING


def test_user_networks_names_and_isolation(corrald, image):
    front, back = f"front-{uuid.uuid4().hex[:6]}", f"back-{uuid.uuid4().hex[:6]}"
    front_id = corrald.ok("network", "create", "--subnet", unique_subnet(),
                          front).strip()
    corrald.ok("network", "create", back)
    listed = corrald.ok("network", "ls")
    assert listed.splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [front_id[:12], front, "bridge", "local"] in [line.split() for line in
                                                         listed.splitlines()]
    assert front_id[:12] in corrald.ok("network", "ls", "-q", "--filter",
                                       f"name={front}")
    server = f"srv-{uuid.uuid4().hex[:6]}"
    corrald.ok("run", "-d", "--name", server, "--network", front, "--network-alias",
               "www", image, "sh", "-c", HTTPD.format(text="inside"))
    address = corrald.ok("inspect", "-f",
                         f"{{{{(index .NetworkSettings.Networks \"{front}\").IPAddress}}}}",
                         server).strip()
    out = corrald.ok("run", "--rm", "--network", front, image, "sh", "-c",
                     f"nslookup {server}; nslookup www; wget -q -O - http://{address}/")
    assert out.count(address) >= 2 and "inside" in out, out
    blocked = corrald.docker("run", "--rm", "--network", back, image, "sh", "-c",
                             f"timeout 3 wget -q -O - http://{address}/ || echo blocked")
    assert "blocked" in blocked.stdout, blocked
    document = json.loads(corrald.ok("network", "inspect", front))[0]
    assert document["Name"] == front and document["Driver"] == "bridge"
    assert [c["Name"] for c in document["Containers"].values()] == [server]
    in_use = corrald.docker("network", "rm", front)
    assert in_use.returncode == 1
    assert "has active endpoints" in in_use.stderr, in_use.stderr
    corrald.ok("rm", "-f", server)
    assert corrald.ok("network", "rm", front).strip() == front
    assert back in corrald.ok("network", "prune", "-f")


def test_connect_disconnect_and_modes(corrald, image):
    net = f"cx-{uuid.uuid4().hex[:6]}"
    corrald.ok("network", "create", "--subnet", "10.249.9.0/24", net)
    name = f"c-{uuid.uuid4().hex[:6]}"
    corrald.ok("run", "-d", "--name", name, image, "sleep", "60")
    corrald.ok("network", "connect", "--ip", "10.249.9.20", "--alias", "side", net, name)
    assert "inet 10.249.9.20/24" in corrald.ok("exec", name, "ip", "-4", "addr")
    corrald.ok("network", "disconnect", net, name)
    assert "10.249.9.20" not in corrald.ok("exec", name, "ip", "-4", "addr")
    joined = corrald.ok("run", "--rm", "--network", f"container:{name}", image,
                        "cat", "/etc/hostname")
    assert joined.strip() == corrald.ok("inspect", "-f", "{{.Config.Hostname}}",
                                        name).strip()
    lo_only = corrald.ok("run", "--rm", "--network", "none", image, "ls", "/sys/class/net")
    assert lo_only.split() == ["lo"]
    files = corrald.ok("run", "--rm", "--dns", "192.0.2.1", "--add-host", "db:192.0.2.2",
                       image, "cat", "/etc/resolv.conf", "/etc/hosts")
    assert "nameserver 192.0.2.1" in files and "192.0.2.2\tdb" in files
    corrald.ok("rm", "-f", name)
    corrald.ok("network", "rm", net)


def test_docker_errors_and_nothing_left(corrald, image):
    port = free_port()
    first = corrald.ok("run", "-d", "-p", f"{port}:80", image, "sleep", "60").strip()
    before = footprint(corrald, first)
    taken = corrald.docker("run", "-d", "--name", "second", "-p", f"{port}:80", image,
                           "sleep", "60")
    assert taken.returncode == 125
    assert f"Bind for 0.0.0.0:{port} failed: port is already allocated" in taken.stderr
    second = corrald.ok("inspect", "-f", "{{.Id}}", "second").strip()
    assert footprint(corrald, first, second) == before
    corrald.ok("rm", "-f", first, "second")
    unknown = corrald.docker("run", "--rm", "--network", "nosuchnet", image, "true")
    assert unknown.returncode == 125
    assert "network nosuchnet not found" in unknown.stderr
    corrald.ok("network", "create", "--subnet", "10.248.0.0/24", "ov1")
    overlap = corrald.docker("network", "create", "--subnet", "10.248.0.0/25", "ov2")
    assert overlap.returncode == 1 and "overlaps" in overlap.stderr, overlap.stderr
    assert "ov2" not in corrald.ok("network", "ls")
    corrald.ok("network", "rm", "ov1")


def test_corrald_killed_then_restarted_releases_dead_containers(corrald, image):
    ids = [corrald.ok("run", "-d", "-p", f"{free_port()}:80", image, "sleep",
                      "300").strip() for _ in range(2)]
    addresses = [corrald.ok("inspect", "-f", "{{.NetworkSettings.IPAddress}}",
                            i).strip() for i in ids]
    tags = [*ids, *(f"{a}/" for a in addresses)]
    assert footprint(corrald, *tags)["veths"] == 2
    corrald.process.send_signal(signal.SIGKILL)
    corrald.process.wait()
    for container_id in ids:  # the containers die too, with no daemon to see it
        state = json.loads((corrald.run_dir / "shims" / container_id /
                            "state.json").read_text())
        shim = int((corrald.run_dir / "shims" / container_id / "shim.pid").read_text())
        subprocess.run(["kill", "-9", str(shim), str(state["pid"])])
    time.sleep(0.3)
    corrald.start()
    assert settled(corrald, *tags) == NOTHING
    corrald.ok("rm", *ids)


def test_reference_against_dockerd(corrald, image, rootfs_template, tmp_path):
    """The same network commands against Debian's dockerd: the same fields,
    columns and error messages."""
    if shutil.which("dockerd") is None:
        pytest.skip("dockerd is not installed (apt-get install docker.io)")
    archive = peers.write_image_archive(rootfs_template, tmp_path / "busybox.tar")
    dockerd = peers.Dockerd(peers.make_workdir("dnr"), {})
    try:
        dockerd.start()
        dockerd.load_image(archive)
        answers = {}
        for name, daemon, run_image in (("dockerd", dockerd, peers.IMAGE),
                                        ("corrald", corrald, image)):
            call = daemon.docker
            created = call("network", "create", "--subnet", "10.247.0.0/24", "refnet")
            assert created.returncode == 0, created.stderr
            inspected = json.loads(call("network", "inspect", "refnet").stdout)[0]
            header = call("network", "ls").stdout.splitlines()[0].split()
            unknown = call("create", "--network", "nosuch", run_image, "true").stderr
            container = call("run", "-d", "--network", "refnet", run_image, "sleep",
                             "30")
            assert container.returncode == 0, container.stderr
            in_use = call("network", "rm", "refnet").stderr.replace(inspected["Id"],
                                                                    "ID")
            call("rm", "-f", container.stdout.strip())
            call("network", "rm", "refnet")
            answers[name] = (sorted(inspected),
                             [c["Subnet"] for c in inspected["IPAM"]["Config"]], header,
                             unknown.strip(), in_use.strip())
        assert answers["corrald"] == answers["dockerd"]
    finally:
        dockerd.cleanup()


def test_the_corral_cli_through_corrald(corrald, image):
    corral = [str(Path(sys.executable).parent / "corral"), "-H",
              f"unix://{corrald.socket}"]
    name = f"cl-{uuid.uuid4().hex[:6]}"

    def ok(*args: str) -> str:
        result = subprocess.run([*corral, *args], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    network_id = ok("network", "create", name).strip()
    assert network_id in ok("network", "ls", "-q", "--no-trunc")
    port = free_port()
    ok("run", "-d", "--name", name, "--network", name, "-p", f"127.0.0.1:{port}:80",
       image, "sh", "-c", HTTPD.format(text="via-cli"))
    assert fetch(f"http://127.0.0.1:{port}/").strip() == "via-cli"
    assert ok("port", name).strip() == f"80/tcp -> 127.0.0.1:{port}"
    ok("network", "disconnect", name, name)
    ok("rm", "-f", name)
    assert ok("network", "rm", name).strip() == name
