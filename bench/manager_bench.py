#!/usr/bin/env python3
"""The manager against Debian's dockerd and podman.

Three measures, each contestant driven by the same client:

1. ``docker run --rm --network none IMAGE true`` through the real docker
   CLI against corrald and against dockerd, and ``podman run --rm`` with
   the same flags, alternating: min/median/max and the ratio to dockerd.
2. N idle containers (``sleep``): memory per container, as the PSS of the
   per-container supervisors (corral-shim; containerd-shim-runc-v2; conmon)
   plus the growth of the daemons (corrald; dockerd + containerd; podman
   has none), over N.
3. C concurrent clients (docker-py) creating, starting and removing
   containers for D seconds: cycles per second and the p50/p99 latency
   (the daemons only: podman serves no API unless ``podman system service``
   runs, which is not how it is used).

Both daemons run privately (own sockets, roots, network namespace for
dockerd) and get the same busybox image by ``docker load``; podman gets a
root, run root, tmp and network config directory of its own (nothing of
the host's defaults is touched) and the image by ``podman load`` of the
docker-archive that corrald saves (``docker save`` against it). podman
runs runc, as the others do (PEERS.md: it defaults to crun, which refuses
this machine's hybrid cgroups), with the rlimits root may set here, and
logs to a k8s-file as the daemons log to json-file. Run as root:
``.venv/bin/python bench/manager_bench.py [--rounds 20] [--idle 100]
[--clients 20 --duration 60]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bundles import build_rootfs  # noqa: E402
from tests.integration import peers  # noqa: E402

IMAGE = peers.IMAGE


class Contestant:
    name = ""
    serves_api = True  # a Docker Engine API socket for docker-py

    def docker(self, *args: str, check: bool = True, timeout: float = 120):
        result = subprocess.run(["docker", *args], capture_output=True, text=True,
                                env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise SystemExit(f"{self.name}: docker {' '.join(args)}: {result.stderr}")
        return result

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def socket(self) -> str:
        raise NotImplementedError


class CorraldContestant(Contestant):
    name = "corrald"

    def __init__(self, work: Path) -> None:
        self.daemon = peers.Corrald(peers.make_workdir("bench-cd")).start()

    def env(self):
        return self.daemon.env()

    def socket(self):
        return str(self.daemon.socket)

    def supervisors(self) -> list[int]:
        # This daemon's only: shims and the template name its run directory.
        return [pid for pid in pids_named("corral") if any(
            mark in " ".join(peers._cmdline(pid)) for mark in
            ("corral-shim", "corral.shim.main", "corral.shim.template"))
            and str(self.daemon.run_dir) in " ".join(peers._cmdline(pid))]

    def daemons(self) -> list[int]:
        return [self.daemon.process.pid]

    def stop(self):
        self.daemon.cleanup()


class DockerdContestant(Contestant):
    name = "dockerd"

    def __init__(self, work: Path) -> None:
        self.daemon = peers.Dockerd(peers.make_workdir("bench-dd"), runtimes={}).start()

    def env(self):
        return {**os.environ, "DOCKER_HOST": f"unix://{self.daemon.socket}",
                "DOCKER_CONFIG": str(self.daemon.client_config)}

    def socket(self):
        return str(self.daemon.socket)

    def supervisors(self) -> list[int]:
        return [pid for pid in pids_named("containerd-shim")
                if str(self.daemon.workdir) in " ".join(peers._cmdline(pid))]

    def daemons(self) -> list[int]:
        return [self.daemon.process.pid, self.daemon.containerd.pid]

    def stop(self):
        self.daemon.stop()


class PodmanContestant(Contestant):
    """podman, driven by the same argument lists as the docker CLI."""

    name = "podman"
    serves_api = False
    # Per container: PEERS.md's runtime and rlimits, and a log file (not the
    # host's journal).
    RUN_FLAGS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
                 "--log-driver", "k8s-file")

    def __init__(self, work: Path) -> None:
        self.work = peers.make_workdir("bench-pm")
        self.globals = ["--root", str(self.work / "root"),
                        "--runroot", str(self.work / "run"),
                        "--tmpdir", str(self.work / "tmp"),
                        "--network-config-dir", str(self.work / "net"),
                        "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
                        "--events-backend", "file", "--runtime", "runc"]

    def docker(self, *args: str, check: bool = True, timeout: float = 120):
        if args and args[0] == "run":
            # A cgroup parent of its own, removed at the end (not libpod_parent).
            args = ("run", *self.RUN_FLAGS, "--cgroup-parent", f"/{self.work.name}",
                    *args[1:])
        result = subprocess.run(["podman", *self.globals, *args], capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise SystemExit(f"podman {' '.join(args)}: {result.stderr}")
        return result

    def supervisors(self) -> list[int]:
        return [pid for pid in pids_named("conmon")
                if str(self.work) in " ".join(peers._cmdline(pid))]

    def daemons(self) -> list[int]:
        return []

    def stop(self):
        self.docker("rm", "-af", check=False, timeout=300)
        self.docker("unmount", "-a", check=False)
        peers.kill_processes(peers.processes_mentioning(str(self.work)))
        peers.unmount_under(self.work)
        peers.remove_tree(self.work)
        peers.remove_cgroups(self.work.name)


def pids_named(fragment: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if fragment in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def pss_kb(pid: int) -> int:
    """PSS of one process, kB, from smaps_rollup (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def total_pss(pids: list[int]) -> int:
    return sum(pss_kb(pid) for pid in pids)


# 1. run --rm --------------------------------------------------------------------

def bench_run(contestants: list[Contestant], rounds: int) -> None:
    times: dict[str, list[float]] = {c.name: [] for c in contestants}
    for _ in range(rounds):
        for contestant in contestants:
            start = time.perf_counter()
            contestant.docker("run", "--rm", "--network", "none", IMAGE, "true")
            times[contestant.name].append(time.perf_counter() - start)
    base = statistics.median(times["dockerd"])
    print(f"\nrun --rm true ({rounds} rounds, alternating)")
    print(f"{'':10} {'min ms':>8} {'median ms':>10} {'max ms':>8} {'x dockerd':>10}")
    for name, values in times.items():
        mid = statistics.median(values)
        print(f"{name:10} {min(values) * 1e3:8.1f} {mid * 1e3:10.1f} "
              f"{max(values) * 1e3:8.1f} {mid / base:10.2f}")


# 2. idle containers --------------------------------------------------------------------

def bench_idle(contestant: Contestant, count: int) -> tuple[float, float, float]:
    """(supervisors kB, daemon growth kB, total kB) per container."""
    before = total_pss(contestant.daemons())
    ids = []
    for _ in range(count):
        ids.append(contestant.docker("run", "-d", "--network", "none", IMAGE,
                                     "sleep", "3600").stdout.strip())
    time.sleep(2)
    supervisors = total_pss(contestant.supervisors())
    growth = total_pss(contestant.daemons()) - before
    for start in range(0, len(ids), 25):
        contestant.docker("rm", "-f", *ids[start:start + 25], timeout=300)
    return supervisors / count, growth / count, (supervisors + growth) / count


# 3. concurrent clients -------------------------------------------------------------------

def bench_concurrent(contestant: Contestant, clients: int, duration: float):
    import docker

    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client_loop() -> int:
        client = docker.DockerClient(base_url=f"unix://{contestant.socket()}",
                                     version="auto", timeout=120)
        done = 0
        while time.monotonic() < deadline:
            start = time.perf_counter()
            container = client.containers.create(IMAGE, ["true"], network_mode="none")
            container.start()
            container.wait()
            container.remove(force=True)
            with lock:
                latencies.append(time.perf_counter() - start)
            done += 1
        client.close()
        return done

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        cycles = sum(pool.map(lambda _: client_loop(), range(clients)))
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return cycles / elapsed, statistics.median(latencies), p99


def load_podman(corrald: Contestant, work: Path) -> PodmanContestant:
    """podman with the image that corrald saves as a docker-archive."""
    saved = work / "saved.tar"
    corrald.docker("save", "-o", str(saved), IMAGE)
    podman = PodmanContestant(work)
    podman.docker("load", "-i", str(saved))
    return podman


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--idle", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--skip", action="append", default=[],
                        choices=("run", "idle", "concurrent"))
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="corral-manager-bench-"))
    archive = peers.write_image_archive(build_rootfs(work / "rootfs"), work / "image.tar")
    contestants: list[Contestant] = []
    try:
        contestants = [CorraldContestant(work), DockerdContestant(work)]
        for contestant in contestants:
            contestant.docker("load", "-i", str(archive))
        if shutil.which("podman") is not None:
            contestants.append(load_podman(contestants[0], work))
        else:
            print("podman is not installed (apt-get install podman): left out")
        if "run" not in options.skip:
            bench_run(contestants, options.rounds)
        if "idle" not in options.skip:
            print(f"\n{options.idle} idle containers: PSS per container, kB")
            print(f"{'':10} {'supervisor':>11} {'daemons':>9} {'total':>9}")
            for contestant in contestants:
                shim, daemon, total = bench_idle(contestant, options.idle)
                print(f"{contestant.name:10} {shim:11.0f} {daemon:9.0f} {total:9.0f}")
        if "concurrent" not in options.skip:
            print(f"\n{options.clients} clients for {options.duration:.0f} s: "
                  f"create+start+wait+rm cycles")
            print(f"{'':10} {'cycles/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
            for contestant in [c for c in contestants if c.serves_api]:
                rate, p50, p99 = bench_concurrent(contestant, options.clients,
                                                  options.duration)
                print(f"{contestant.name:10} {rate:9.1f} {p50 * 1e3:8.0f} {p99 * 1e3:8.0f}")
    finally:
        for contestant in contestants:
            contestant.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
