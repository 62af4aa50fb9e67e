"""Hostile bundles and container processes must not reach the host."""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.mark.parametrize("link", ["/etc", "../../../../../../etc", "/../etc"])
def test_mount_through_a_symlink_stays_in_the_rootfs(corral, bundle_factory,
                                                     container_id, link):
    """CVE-2021-30465 class: /mnt -> /etc in the rootfs must not mount on the host."""
    name = f"corral-evil-{uuid.uuid4().hex[:8]}"
    bundle = bundle_factory(["sh", "-c", f"ls /etc; ls /mnt/{name}"])
    os.symlink(link, bundle.rootfs / "mnt")
    bundle.spec["mounts"].append(
        {"destination": f"/mnt/{name}", "type": "tmpfs", "source": "tmpfs"})
    bundle.write()
    result = corral.run("run", "-b", str(bundle.path), container_id)
    assert not os.path.exists(f"/etc/{name}"), "a directory was made on the host"
    with open("/proc/self/mountinfo") as f:
        assert name not in f.read()
    assert result.returncode == 0, result.stderr
    # The mount landed inside the rootfs, where the symlink points in there.
    assert name in result.stdout


def test_bind_mount_destination_symlink_to_host_file(corral, bundle_factory,
                                                     container_id, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("original\n")
    bundle = bundle_factory(["cat", "/target"])
    os.symlink(str(victim), bundle.rootfs / "target")
    source = tmp_path / "payload"
    source.write_text("payload\n")
    bundle.spec["mounts"].append(
        {"destination": "/target", "type": "bind", "source": str(source),
         "options": ["bind"]})
    bundle.write()
    corral.run("run", "-b", str(bundle.path), container_id)
    with open("/proc/self/mountinfo") as f:
        assert str(victim) not in f.read()
    assert victim.read_text() == "original\n"


@pytest.mark.parametrize("fd", range(3, 12))
def test_cwd_through_a_leaked_fd_is_refused(any_runtime, bundle_factory, container_id, fd):
    """CVE-2024-21626 class: no fd of the runtime leads the cwd to the host."""
    bundle = bundle_factory(["sh", "-c", "pwd; cat state.json spec.json config.json"])
    bundle.spec["process"]["cwd"] = f"/proc/self/fd/{fd}"
    bundle.write()
    result = any_runtime.run("run", "-b", str(bundle.path), container_id)
    assert "ociVersion" not in result.stdout
    assert "(unreachable)" not in result.stdout


def test_no_runtime_fd_reaches_the_container(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "ls -l /proc/self/fd/"])
    bundle.write()
    result = any_runtime.run("run", "-b", str(bundle.path), container_id)
    assert result.returncode == 0, result.stderr
    fds = [line.split()[-3] for line in result.stdout.splitlines() if "->" in line]
    # 0, 1, 2 and ls's own directory fd.
    assert len(fds) <= 4, result.stdout


def test_runtime_in_the_container_cannot_be_reached(any_runtime, bundle_factory,
                                                   container_id):
    """CVE-2019-5736 / CVE-2016-9962 class: the waiting init cannot be reached.

    While the container is created, its pid 1 is the runtime itself; a process
    exec'd into the container (default capabilities, no CAP_SYS_PTRACE) must
    not write its exe, open its fds or read its memory. runc re-executes itself
    from a memfd; corral's init is not dumpable, so even the links are closed.
    """
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("create", "-b", str(bundle.path), container_id, check=True)
    result = any_runtime.run(
        "exec", container_id, "sh", "-c",
        "readlink /proc/1/exe; echo exe=$?; cat /proc/1/fd/* </dev/null; echo fd=$?;"
        " head -c1 /proc/1/mem; echo mem=$?; echo x >> /proc/1/exe; echo write=$?",
    )
    assert "fd=1" in result.stdout
    assert "mem=1" in result.stdout
    assert "write=1" in result.stdout or "write=2" in result.stdout
    if any_runtime.name == "corral":
        assert "exe=1" in result.stdout
