"""Drop-in proof, containerd: its runc shim drives corral-runtime as it does runc.

A private containerd (peers.Containerd) runs the busybox image from Debian's
busybox-static; `ctr` tells the shim to call our runtime binary (BinaryName)
with a private state root (Root). Every test runs once with corral-runtime
and once with runc, and asserts the same observed result for both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
import warnings
from pathlib import Path

import pytest

from .peers import (
    CORRAL_RUNTIME,
    IMAGE,
    Containerd,
    make_workdir,
    run_in_pty,
    write_image_archive,
)

pytestmark = pytest.mark.peers

# The client sizes the terminal only after the container started: wait for it.
STTY_SIZE = ('for i in $(seq 50); do size=$(stty size 2>&1); '
             'case $size in [1-9]*) break;; esac; sleep 0.1; done; echo "$size"')


def _binary(name: str) -> str:
    if name == "corral":
        return CORRAL_RUNTIME
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return path


@pytest.fixture(scope="module", params=["corral", "runc"])
def containerd(request, rootfs_template, tmp_path_factory):
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (apt-get install containerd)")
    archive = write_image_archive(rootfs_template,
                                  tmp_path_factory.mktemp("image") / "busybox.tar")
    daemon = Containerd(make_workdir("ctd"), _binary(request.param))
    try:
        daemon.start()
        daemon.import_image(archive)
        yield daemon
    finally:
        left = daemon.cleanup()
        if left:
            warnings.warn(f"containerd with {request.param} left behind: {left}",
                          stacklevel=1)


@pytest.fixture
def container_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def ctr_run(containerd: Containerd, container_id: str, *args: str,
            flags: tuple[str, ...] = ("--rm",), timeout: float = 30):
    return containerd.ctr("run", *flags, *containerd.runtime_flags(), IMAGE,
                          container_id, *args, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def tasks(containerd: Containerd) -> dict[str, tuple[int, str]]:
    """`ctr task ls`: the pid and status of each task."""
    result = containerd.ctr("task", "ls")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    return {row[0]: (int(row[1]), row[2]) for row in rows if len(row) == 3}


def wait_task(containerd: Containerd, container_id: str, status: str,
              timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, now = tasks(containerd).get(container_id, (0, "absent"))
        if now == status:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"task {container_id} did not become {status}, is {now}")


def remove_container(containerd: Containerd, container_id: str) -> None:
    """Remove the container whatever state it is in, even half-created."""
    containerd.ctr("task", "kill", "--signal", "SIGKILL", container_id)
    # A shim stuck in the runtime's create is not a task yet: the runtime's
    # own delete releases it.
    subprocess.run([containerd.runtime_binary, "--root",
                    str(containerd.runtime_root / containerd.namespace),
                    "delete", "--force", container_id],
                   capture_output=True, timeout=10)
    deadline = time.monotonic() + 10
    while (tasks(containerd).get(container_id, (0, "STOPPED"))[1] != "STOPPED"
           and time.monotonic() < deadline):
        time.sleep(0.05)
    containerd.ctr("task", "delete", "--force", container_id)
    containerd.ctr("container", "delete", container_id)
    containerd.kill_shim(container_id)


@pytest.fixture
def running(containerd, container_id):
    """A detached container running `sleep`; removed after the test."""
    result = ctr_run(containerd, container_id, "sleep", "1000", flags=("--detach",))
    assert result.returncode == 0, result.stderr
    wait_task(containerd, container_id, "RUNNING")
    yield container_id
    remove_container(containerd, container_id)


@pytest.mark.parametrize(("script", "code", "output"), [
    ("echo hello from busybox", 0, "hello from busybox\n"),
    ("echo on the way out; exit 3", 3, "on the way out\n"),
    ("exit 255", 255, ""),
])
def test_run_prints_output_and_passes_on_the_exit_code(containerd, container_id,
                                                       script, code, output):
    result = ctr_run(containerd, container_id, "sh", "-c", script)

    assert (result.returncode, result.stdout) == (code, output), result.stderr


def test_run_keeps_stdout_and_stderr_apart(containerd, container_id):
    result = ctr_run(containerd, container_id, "sh", "-c", "echo out; echo err >&2")

    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")


def test_run_from_a_plain_directory_needs_no_image(containerd, container_id, tmp_path,
                                                   rootfs_template):
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(rootfs_template), str(rootfs)], check=True)

    # ctr's spec for --rootfs has no environment at all: name the binary by
    # its path (runc finds no "sh" without PATH; corral falls back on
    # execvp's default search path).
    result = containerd.ctr("run", "--rm", *containerd.runtime_flags(), "--rootfs",
                            str(rootfs), container_id, "/bin/sh", "-c",
                            "echo made it > /written; cat /written; exit 5",
                            stdin=subprocess.DEVNULL)

    assert (result.returncode, result.stdout) == (5, "made it\n"), result.stderr
    assert (rootfs / "written").read_text() == "made it\n"


def test_run_removes_the_container_with_rm(containerd, container_id):
    result = ctr_run(containerd, container_id, "true")

    assert result.returncode == 0, result.stderr
    assert container_id not in tasks(containerd)
    assert not (containerd.runtime_root / containerd.namespace / container_id).exists()
    assert not Path(f"/sys/fs/cgroup/pids/{containerd.namespace}/{container_id}").exists()


def test_tty_gives_the_container_a_terminal_of_the_clients_size(containerd,
                                                                container_id):
    # A regression test: create with a terminal once kept the caller's pipes.
    try:
        code, output = run_in_pty(
            containerd.ctr_cmd("run", "--rm", "--tty", *containerd.runtime_flags(),
                               IMAGE, container_id, "sh", "-c",
                               f"tty; {STTY_SIZE}; exit 6"),
            rows=33, columns=101, timeout=8)
    finally:
        remove_container(containerd, container_id)

    assert code == 6, output
    assert output.replace("\r", "").splitlines()[:2] == ["/dev/pts/0", "33 101"]


def test_exec_runs_beside_the_init_process(containerd, running):
    result = containerd.ctr("task", "exec", "--fifo-dir", str(containerd.fifo_dir),
                            "--exec-id", "e1", running,
                            "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; exit 4",
                            stdin=subprocess.DEVNULL)

    assert (result.returncode, result.stdout) == (4, "sleep 1000 "), result.stderr


def test_exec_with_a_tty(containerd, running):
    code, output = run_in_pty(containerd.ctr_cmd(
        "task", "exec", "--fifo-dir", str(containerd.fifo_dir), "--tty", "--exec-id", "e2",
        running, "sh", "-c", "tty; exit 3"))

    # After the exit ctr may still try to resize the gone process, and say so.
    assert (code, output.replace("\r", "").splitlines()[0]) == (3, "/dev/pts/0")


def test_task_ps_lists_the_container_processes(containerd, running):
    pid = tasks(containerd)[running][0]

    result = containerd.ctr("task", "ps", running)

    assert result.returncode == 0, result.stderr
    assert [int(row.split()[0]) for row in result.stdout.splitlines()[1:]] == [pid]


def test_kill_delivers_the_signal_to_init(containerd, container_id):
    # pid 1 of a namespace gets only the signals it handles: this one traps
    # SIGTERM, and a plain `sleep` would ignore it.
    with subprocess.Popen(
        containerd.ctr_cmd("run", "--rm", *containerd.runtime_flags(), IMAGE,
                           container_id, "sh", "-c",
                           "trap 'echo got TERM; exit 7' TERM; echo ready; "
                           "sleep 1000 & wait"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    ) as client:
        try:
            assert client.stdout.readline() == "ready\n"
            result = containerd.ctr("task", "kill", container_id)
            assert result.returncode == 0, result.stderr
            out, err = client.communicate(timeout=10)
        finally:
            client.kill()

    assert (client.returncode, out) == (7, "got TERM\n"), err


def test_kill_with_sigkill_stops_a_process_that_ignores_sigterm(containerd, running):
    result = containerd.ctr("task", "kill", "--signal", "SIGKILL", running)

    assert result.returncode == 0, result.stderr
    wait_task(containerd, running, "STOPPED")
    deleted = containerd.ctr("task", "delete", running)
    assert "exit code 137" in deleted.stderr


def test_pause_and_resume(containerd, running):
    assert containerd.ctr("task", "pause", running).returncode == 0
    assert tasks(containerd)[running][1] == "PAUSED"

    assert containerd.ctr("task", "resume", running).returncode == 0
    assert tasks(containerd)[running][1] == "RUNNING"


def test_the_shim_drove_the_configured_runtime(containerd, running):
    pid = tasks(containerd)[running][0]
    bundle = (containerd.workdir / "state" / "io.containerd.runtime.v2.task"
              / containerd.namespace / running)

    # What the shim was told to run, as it recorded it in the bundle ...
    options = json.loads((bundle / "options.json").read_text())
    assert options["binary_name"] == containerd.runtime_binary
    assert options["root"] == str(containerd.runtime_root)
    # ... and that runtime's own record of the container it made.
    result = subprocess.run(
        [containerd.runtime_binary, "--root",
         str(containerd.runtime_root / containerd.namespace), "state", running],
        capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert (state["id"], state["status"], state["pid"]) == (running, "running", pid)
    assert state["bundle"] == str(bundle)
