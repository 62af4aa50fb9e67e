#!/usr/bin/env python3
"""Networking of corrald against Debian's dockerd.

Two measures, each daemon driven by the real docker CLI:

1. ``docker run --rm -p HOSTPORT:80 IMAGE true`` (the default bridge and one
   published port), alternating between the daemons: min/median/max and the
   ratio to dockerd (and the same runs with ``--network none``, for what
   the network costs). The issue's bar: at most half of dockerd's.
2. TCP throughput host -> container over the published port: a Python
   client sends N MB to busybox ``nc -l`` in a container and waits for the
   container's end to close; MB/s, the median of a few rounds. dockerd's
   path is its default one (docker-proxy on loopback, iptables DNAT).

dockerd runs in a network namespace of its own (its bridge, forwarding and
rules stay there), so its clients run in that namespace too (nsenter).
corrald runs on the host with a bridge and subnet of its own. Both get the
same busybox image by ``docker load``. Run as root:
``.venv/bin/python bench/network_bench.py [--rounds 20] [--megabytes 200]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bundles import build_rootfs  # noqa: E402
from tests.integration import peers  # noqa: E402

IMAGE = peers.IMAGE
CHUNK = 1 << 20

# The client of the throughput measure, run in the daemon's namespace.
CLIENT = r"""
import socket, sys, time
port, megabytes = int(sys.argv[1]), int(sys.argv[2])
chunk = b"x" * (1 << 20)
deadline = time.monotonic() + 10
while True:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
start = time.perf_counter()
for _ in range(megabytes):
    sock.sendall(chunk)
sock.shutdown(socket.SHUT_WR)
while sock.recv(65536):
    pass
print(time.perf_counter() - start)
"""


class Daemon:
    name = ""
    prefix: list[str] = []      # how a client enters the daemon's network

    def docker(self, *args: str, check: bool = True, timeout: float = 120):
        result = subprocess.run(["docker", *args], capture_output=True, text=True,
                                env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise SystemExit(f"{self.name}: docker {' '.join(args)}: {result.stderr}")
        return result

    def env(self) -> dict[str, str]:
        raise NotImplementedError


class Corrald(Daemon):
    name = "corrald"

    def __init__(self) -> None:
        from tests.integration.test_docker_networks import NetworkedCorrald

        self.daemon = NetworkedCorrald(peers.make_workdir("bench-nc")).start()

    def env(self):
        return self.daemon.env()

    def stop(self):
        self.daemon.cleanup()


class BridgedDockerd(peers.Dockerd):
    """peers.Dockerd with its default bridge, iptables and docker-proxy on."""

    def _spawn(self, argv, ready, timeout: float = 30) -> None:
        dropped = {"--bridge", "none", "--iptables=false", "--ip-forward=false",
                   "--ip-masq=false", "--userland-proxy=false"}
        argv = [a for a in argv if a not in dropped]
        if argv[:1] == ["nsenter"]:
            argv += ["--bip", "172.31.254.1/24"]
        super()._spawn(argv, ready, timeout)


class Dockerd(Daemon):
    name = "dockerd"

    def __init__(self) -> None:
        self.daemon = BridgedDockerd(peers.make_workdir("bench-nd"), runtimes={})
        self.daemon.start()
        self.prefix = ["nsenter", f"--net=/proc/{self.daemon.containerd.pid}/ns/net"]

    def env(self):
        return {**os.environ, "DOCKER_HOST": f"unix://{self.daemon.socket}",
                "DOCKER_CONFIG": str(self.daemon.client_config)}

    def stop(self):
        self.daemon.cleanup()


def free_port(prefix: list[str]) -> int:
    if not prefix:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    out = subprocess.run([*prefix, sys.executable, "-c", "import socket; s=socket."
                          "socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def bench_start(daemons: list[Daemon], rounds: int) -> None:
    times: dict[str, list[float]] = {d.name: [] for d in daemons}
    # What the network costs: the same run without one.
    times.update({f"{d.name} none": [] for d in daemons})
    for _ in range(rounds):
        for daemon in daemons:
            port = free_port(daemon.prefix)
            start = time.perf_counter()
            daemon.docker("run", "--rm", "-p", f"{port}:80", IMAGE, "true")
            times[daemon.name].append(time.perf_counter() - start)
            start = time.perf_counter()
            daemon.docker("run", "--rm", "--network", "none", IMAGE, "true")
            times[f"{daemon.name} none"].append(time.perf_counter() - start)
    report(f"run --rm -p PORT:80 true ({rounds} rounds, alternating)", times, "ms",
           1e3, lower_is_better=True)


def bench_throughput(daemons: list[Daemon], rounds: int, megabytes: int) -> None:
    rates: dict[str, list[float]] = {d.name: [] for d in daemons}
    for _ in range(rounds):
        for daemon in daemons:
            port = free_port(daemon.prefix)
            name = f"sink-{uuid.uuid4().hex[:8]}"
            daemon.docker("run", "-d", "--name", name, "-p", f"{port}:80", IMAGE, "sh",
                          "-c", "nc -l -p 80 > /dev/null")
            try:
                out = subprocess.run([*daemon.prefix, sys.executable, "-c", CLIENT,
                                      str(port), str(megabytes)], capture_output=True,
                                     text=True, timeout=300, check=True)
                rates[daemon.name].append(megabytes / float(out.stdout))
            finally:
                daemon.docker("rm", "-f", name, check=False)
    report(f"TCP host -> container over the published port ({megabytes} MB)", rates,
           "MB/s", 1.0, lower_is_better=False)


def report(title: str, values: dict[str, list[float]], unit: str, scale: float, *,
           lower_is_better: bool) -> None:
    base = statistics.median(values["dockerd"])
    print(f"\n{title}")
    print(f"{'':14} {'min ' + unit:>10} {'median':>10} {'max':>10} {'x dockerd':>10}")
    for name, numbers in values.items():
        mid = statistics.median(numbers)
        print(f"{name:14} {min(numbers) * scale:10.1f} {mid * scale:10.1f} "
              f"{max(numbers) * scale:10.1f} {mid / base:10.2f}")
    better = "lower" if lower_is_better else "higher"
    print(f"({better} is better)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--skip", action="append", default=[],
                        choices=("start", "throughput"))
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corral-network-bench-"))
    archive = peers.write_image_archive(build_rootfs(work / "rootfs"), work / "image.tar")
    daemons: list[Daemon] = []
    try:
        daemons = [Corrald(), Dockerd()]
        for daemon in daemons:
            daemon.docker("load", "-i", str(archive))
        daemons[0].docker("run", "--rm", IMAGE, "true")  # the first bridge set-up
        if "start" not in options.skip:
            bench_start(daemons, options.rounds)
        if "throughput" not in options.skip:
            bench_throughput(daemons, options.throughput_rounds, options.megabytes)
    finally:
        for daemon in daemons:
            daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
