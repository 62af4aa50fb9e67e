"""corrald killed with SIGKILL in the middle of 20 concurrent `docker run -d`,
then started again: every container is either running and known, or cleanly
absent; no orphan shim, mount or cgroup."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import peers


@pytest.fixture
def daemon(busybox_image):
    corrald = peers.Corrald(peers.make_workdir("crash")).start()
    corrald.ok("pull", busybox_image)
    yield corrald
    corrald.cleanup()


def shim_ids(run_dir: Path) -> set[str]:
    """Container IDs of the live shims under RUN_DIR (by their pid files)."""
    ids = set()
    shims = run_dir / "shims"
    for pid_file in shims.glob("*/shim.pid") if shims.exists() else []:
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (OSError, ValueError):
            continue
        ids.add(pid_file.parent.name)
    return ids


def container_cgroups() -> set[str]:
    return {path.name for path in Path("/sys/fs/cgroup/memory/corral").iterdir()
            if path.is_dir()} if Path("/sys/fs/cgroup/memory/corral").exists() else set()


def rootfs_mounts(root: Path) -> set[str]:
    found = set()
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4]
            if point.startswith(f"{root}/containers/") and point.endswith("/rootfs"):
                found.add(point.split("/")[-2])
    return found


def test_sigkill_during_concurrent_runs_then_restart(daemon, busybox_image):
    cgroups_before = container_cgroups()

    def run(index: int) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "run", "-d", "--name", f"crash-{index}",
                               busybox_image, "sleep", "300"], capture_output=True,
                              text=True, env=daemon.env(), timeout=120)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(run, i) for i in range(20)]
        # Kill it once a few runs are through and the rest are under way.
        deadline = time.monotonic() + 30
        while sum(f.done() for f in futures) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait()
        results = [f.result() for f in futures]
    assert any(r.returncode != 0 for r in results), "every run finished before the kill"

    daemon.start()
    listed = daemon.ok("ps", "-a", "--no-trunc", "--format",
                       "{{.ID}} {{.State}} {{.Names}}").split("\n")
    states = {line.split()[0]: line.split()[1] for line in listed if line.strip()}
    running = {cid for cid, state in states.items() if state == "running"}
    assert set(states.values()) <= {"running", "created", "exited"}
    # Every live shim belongs to a running container the daemon knows, and
    # every running container has its shim, rootfs and cgroup.
    assert shim_ids(daemon.run_dir) == running
    assert rootfs_mounts(daemon.root) >= running
    assert rootfs_mounts(daemon.root) <= set(states)
    assert container_cgroups() - cgroups_before <= running
    # A run that got its ID back before the kill is a container the daemon knows.
    for result in results:
        if result.returncode == 0:
            assert result.stdout.strip() in states

    if states:
        daemon.ok("rm", "-f", *states)
    assert shim_ids(daemon.run_dir) == set()
    assert rootfs_mounts(daemon.root) == set()
    assert container_cgroups() - cgroups_before == set()
