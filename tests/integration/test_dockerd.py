"""Drop-in proof, dockerd: `docker run --runtime corral` works as with runc.

One private dockerd (peers.Dockerd, over a private containerd, in a network
namespace of its own) knows corral-runtime as the runtime "corral", beside
its built-in "runc". Every test runs once per runtime and asserts the same
observed result for both. The image is Debian's busybox-static, loaded from
an archive written here; nothing is pulled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
import warnings

import pytest

from .peers import (
    CORRAL_RUNTIME,
    IMAGE,
    NAMESPACE,
    Dockerd,
    make_workdir,
    run_in_pty,
    write_image_archive,
)

pytestmark = pytest.mark.peers

# No network: this dockerd has no bridge.
RUN_FLAGS = ("--network", "none", "--pull", "never")


# The client sizes the terminal only after the container started: wait for it.
STTY_SIZE = ('for i in $(seq 50); do size=$(stty size 2>&1); '
             'case $size in [1-9]*) break;; esac; sleep 0.1; done; echo "$size"')


@pytest.fixture(scope="module")
def dockerd(rootfs_template, tmp_path_factory):
    for program in ("dockerd", "docker", "containerd"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install docker.io)")
    archive = write_image_archive(rootfs_template,
                                  tmp_path_factory.mktemp("image") / "busybox.tar")
    daemon = Dockerd(make_workdir("dkd"), {"corral": CORRAL_RUNTIME})
    try:
        daemon.start()
        daemon.load_image(archive)
        yield daemon
    finally:
        left = daemon.cleanup()
        if left:
            warnings.warn(f"dockerd left behind: {left}", stacklevel=1)


@pytest.fixture(scope="module", params=["corral", "runc"])
def runtime(request, dockerd) -> str:
    if request.param == "runc" and shutil.which("runc") is None:
        pytest.skip("runc is not installed (apt-get install runc)")
    return request.param


@pytest.fixture
def name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def run_flags(runtime: str, name: str, *flags: str) -> list[str]:
    return ["--runtime", runtime, "--name", name, *RUN_FLAGS, *flags]


def docker_run(dockerd: Dockerd, runtime: str, name: str, *args: str,
               flags: tuple[str, ...] = ("--rm",), input: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    return dockerd.docker("run", *run_flags(runtime, name, *flags), IMAGE, *args,
                          input=input, timeout=timeout)


def inspect(dockerd: Dockerd, name: str) -> dict:
    result = dockerd.docker("inspect", name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def remove_container(dockerd: Dockerd, name: str) -> None:
    dockerd.docker("rm", "--force", name)


def release_stuck_create(dockerd: Dockerd, runtime: str, container_id: str) -> None:
    """Free dockerd from a shim stuck in the runtime's create.

    dockerd holds the container's lock meanwhile (even `docker inspect`
    waits); the runtime's own delete makes its create return.
    """
    subprocess.run([runtime_binary(runtime), "--root", str(dockerd.runtime_root()),
                    "delete", "--force", container_id], capture_output=True, timeout=10)
    dockerd.containerd.kill_shim(container_id, NAMESPACE)


def runtime_binary(runtime: str) -> str:
    return CORRAL_RUNTIME if runtime == "corral" else shutil.which(runtime)


@pytest.fixture
def running(dockerd, runtime, name):
    """A detached container running `sleep`, by name; removed after the test."""
    result = docker_run(dockerd, runtime, name, "sleep", "1000", flags=("--detach",))
    assert result.returncode == 0, result.stderr
    yield name
    remove_container(dockerd, name)


def test_run_prints_hi(dockerd, runtime, name):
    result = docker_run(dockerd, runtime, name, "echo", "hi")

    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr


@pytest.mark.parametrize("code", [0, 3, 255])
def test_run_passes_on_the_exit_code(dockerd, runtime, name, code):
    result = docker_run(dockerd, runtime, name, "sh", "-c", f"exit {code}")

    assert result.returncode == code, result.stderr


def test_run_keeps_stdout_and_stderr_apart(dockerd, runtime, name):
    result = docker_run(dockerd, runtime, name, "sh", "-c", "echo out; echo err >&2")

    assert (result.returncode, result.stdout) == (0, "out\n"), result.stderr
    assert "err" in result.stderr.splitlines()


def test_run_interactive_reads_stdin(dockerd, runtime, name):
    result = docker_run(dockerd, runtime, name, "sh", "-c", 'read line; echo "got $line"',
                        flags=("--rm", "--interactive"), input="hello\n")

    assert (result.returncode, result.stdout) == (0, "got hello\n"), result.stderr


def test_run_in_the_hosts_cgroup_namespace(dockerd, runtime, name):
    # What dockerd does by default on a cgroup v1 host: a read-only cgroup
    # mount without a cgroup namespace (a regression test: it once failed).
    result = dockerd.docker("run", "--rm", "--runtime", runtime, "--name", name,
                            "--network", "none", "--cgroupns", "host", "--pull", "never",
                            IMAGE, "sh", "-c", "ls /sys/fs/cgroup | grep -x pids")

    assert (result.returncode, result.stdout) == (0, "pids\n"), result.stderr


def test_run_applies_the_default_seccomp_profile(dockerd, runtime, name):
    result = docker_run(dockerd, runtime, name, "grep", "^Seccomp:", "/proc/self/status")

    # 2 is SECCOMP_MODE_FILTER.
    assert (result.returncode, result.stdout.split()) == (0, ["Seccomp:", "2"])


def test_run_with_a_tty(dockerd, runtime, name, tmp_path):
    cidfile = tmp_path / "cid"
    try:
        code, output = run_in_pty(
            dockerd.docker_cmd("run", "--tty", "--cidfile", str(cidfile),
                               *run_flags(runtime, name, "--rm"), IMAGE,
                               "sh", "-c", f"tty; {STTY_SIZE}; exit 6"),
            env=dockerd.env(), rows=33, columns=101, timeout=8)
    except AssertionError:
        release_stuck_create(dockerd, runtime, cidfile.read_text())
        raise
    finally:
        remove_container(dockerd, name)

    assert code == 6, output
    assert output.replace("\r", "").splitlines()[:2] == ["/dev/pts/0", "33 101"]


def test_exec_runs_beside_the_init_process(dockerd, running):
    result = dockerd.docker("exec", running, "sh", "-c",
                            "cat /proc/1/cmdline | tr '\\0' ' '; exit 5")

    assert (result.returncode, result.stdout) == (5, "sleep 1000 "), result.stderr


def test_exec_interactive_reads_stdin(dockerd, running):
    result = dockerd.docker("exec", "--interactive", running, "cat", input="piped\n")

    assert (result.returncode, result.stdout) == (0, "piped\n"), result.stderr


def test_exec_with_a_tty(dockerd, running):
    code, output = run_in_pty(dockerd.docker_cmd("exec", "--tty", running, "sh", "-c",
                                                 "tty; exit 4"), env=dockerd.env())

    assert (code, output.replace("\r", "").splitlines()[0]) == (4, "/dev/pts/0")


def test_stop_ends_a_container_that_handles_sigterm_at_once(dockerd, runtime, name):
    result = docker_run(dockerd, runtime, name, "sh", "-c",
                        "trap 'echo got TERM; exit 7' TERM; echo ready; sleep 1000 & wait",
                        flags=("--detach",))
    assert result.returncode == 0, result.stderr
    try:
        wait_for_log(dockerd, name, "ready\n")

        started = time.monotonic()
        result = dockerd.docker("stop", "--time", "10", name)
        took = time.monotonic() - started

        assert result.returncode == 0, result.stderr
        assert took < 5, f"docker stop took {took:.1f}s for a container that exits on TERM"
        state = inspect(dockerd, name)["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 7)
        assert dockerd.docker("logs", name).stdout == "ready\ngot TERM\n"
    finally:
        remove_container(dockerd, name)


def test_stop_kills_a_container_that_ignores_sigterm_after_the_timeout(dockerd, running):
    # `sleep` as pid 1 has no handler for SIGTERM, so the kernel drops it.
    started = time.monotonic()
    result = dockerd.docker("stop", "--time", "2", running)
    took = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert 2 <= took < 8, f"docker stop --time 2 took {took:.1f}s"
    state = inspect(dockerd, running)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 137)


def test_kill_sends_the_signal(dockerd, running):
    result = dockerd.docker("kill", "--signal", "KILL", running)

    assert result.returncode == 0, result.stderr
    assert dockerd.docker("wait", running).stdout == "137\n"


def test_pause_and_unpause(dockerd, running):
    assert dockerd.docker("pause", running).returncode == 0
    assert inspect(dockerd, running)["State"]["Status"] == "paused"

    assert dockerd.docker("unpause", running).returncode == 0
    assert inspect(dockerd, running)["State"]["Status"] == "running"
    result = dockerd.docker("exec", running, "echo", "alive")
    assert result.stdout == "alive\n", result.stderr


def test_the_container_ran_under_the_chosen_runtime(dockerd, runtime, running):
    container = inspect(dockerd, running)
    assert container["HostConfig"]["Runtime"] == runtime

    # What dockerd told the shim to run, as the shim recorded it ...
    options = dockerd.shim_options(container["Id"])
    assert options["binary_name"] == {"corral": CORRAL_RUNTIME, "runc": "runc"}[runtime]
    assert f"{options['root']}/{NAMESPACE}" == str(dockerd.runtime_root())
    # ... and that runtime's own record of the container it made.
    result = subprocess.run([runtime_binary(runtime), "--root", str(dockerd.runtime_root()), "state",
                             container["Id"]], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert (state["status"], state["pid"]) == ("running", container["State"]["Pid"])


def wait_for_log(dockerd: Dockerd, name: str, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in dockerd.docker("logs", name).stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not log {text!r}")
