"""`corral` container verbs without a daemon, and beside a corrald on the same
state: a container started by either is seen, logged and stopped by both.

Images come from the test registry (tests/image_fixtures.py). Each test has
its own store root; the run directory is short because shim sockets live
under it and a unix socket path has at most 107 bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration import peers
from tests.integration.engines import drop_networks, set_default_bridge

CORRAL = str(Path(sys.executable).parent / "corral")


class Cli:
    def __init__(self, root: Path, run: Path, host: str | None = None) -> None:
        self.root, self.run_dir, self.host = root, run, host

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 input: bytes | None = None) -> subprocess.CompletedProcess:
        argv = [CORRAL, "--root", str(self.root), "--run-root", str(self.run_dir)]
        if self.host:
            argv += ["-H", self.host]
        result = subprocess.run([*argv, *args], capture_output=True, timeout=timeout,
                                input=input)
        result.stdout = result.stdout.decode(errors="replace")
        result.stderr = result.stderr.decode(errors="replace")
        if check and result.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr}")
        return result


@pytest.fixture
def corral(tmp_path, busybox_image):
    run = Path(f"/tmp/cc-{uuid.uuid4().hex[:8]}")
    cli = Cli(tmp_path / "root", run)
    set_default_bridge(cli.root, run)
    cli("pull", "-q", busybox_image)
    yield cli
    ids = cli("ps", "-aq", "--no-trunc", check=False).stdout.split()
    if ids:
        cli("rm", "-f", *ids, check=False)
    peers.kill_processes(peers.processes_mentioning(str(run)))
    drop_networks(cli.root, run)
    peers.unmount_under(tmp_path)
    peers.remove_tree(run)


def wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_detached_container_lifecycle(corral, busybox_image):
    container_id = corral("run", "-d", "--name", "web", busybox_image, "sh", "-c",
                          "echo started; echo oops >&2; sleep 60").stdout.strip()
    assert len(container_id) == 64
    listed = corral("ps").stdout.splitlines()
    assert listed[0].split()[:2] == ["CONTAINER", "ID"]
    assert container_id[:12] in listed[1] and listed[1].split()[-1] == "web"
    wait_for(lambda: "started" in corral("logs", "web").stdout)
    logs = corral("logs", "web")
    assert logs.stdout == "started\n" and logs.stderr == "oops\n"
    top = corral("top", "web").stdout
    assert "sleep 60" in top
    assert corral("inspect", "-f", "{{.State.Status}} {{.Name}}", "web").stdout == \
        "running /web\n"
    assert corral("stop", "-t", "1", "web").stdout == "web\n"
    assert corral("inspect", "-f", "{{.State.ExitCode}}", "web").stdout == "137\n"
    assert "Exited (137)" in corral("ps", "-a").stdout
    assert corral("rm", "web").stdout == "web\n"
    assert corral("ps", "-aq").stdout == ""


def test_exit_codes_and_wait(corral, busybox_image):
    corral("run", "-d", "--name", "three", busybox_image, "sh", "-c", "exit 3")
    assert corral("wait", "three").stdout == "3\n"
    missing = corral("run", "-d", busybox_image, "no-such-program", check=False)
    assert missing.returncode == 127
    assert "executable file not found" in missing.stderr


def test_name_in_use_and_unknown_container(corral, busybox_image):
    corral("create", "--name", "taken", busybox_image)
    again = corral("create", "--name", "taken", busybox_image, check=False)
    assert again.returncode == 125
    assert 'The container name "/taken" is already in use' in again.stderr
    unknown = corral("stop", "nobody-here", check=False)
    assert unknown.returncode == 1 and "No such container: nobody-here" in unknown.stderr


def test_resources_reach_the_container(corral, busybox_image):
    corral("run", "-d", "--name", "limited", "-m", "64m", "--pids-limit", "30",
           busybox_image, "sleep", "60")
    document = json.loads(corral("inspect", "limited").stdout)[0]
    assert document["HostConfig"]["Memory"] == 64 << 20
    assert document["HostConfig"]["PidsLimit"] == 30
    stats = corral("stats", "--no-stream", "limited").stdout.splitlines()
    assert stats[0].startswith("CONTAINER ID") and "/ 64MiB" in stats[1]


def test_bad_flags_are_refused_before_anything_is_made(corral, busybox_image):
    result = corral("run", "-d", "-m", "lots", busybox_image, check=False)
    # Docker's status for its own failures (a fresh user saw 1 here).
    assert result.returncode == 125 and "invalid size: 'lots' for --memory" in result.stderr
    assert corral("ps", "-aq").stdout == ""


@pytest.fixture
def shared_corrald(corral, tmp_path):
    daemon = peers.Corrald(peers.make_workdir("cc-d"))
    daemon.root = corral.root
    daemon.run_dir = corral.run_dir
    daemon.start()
    yield daemon
    daemon.stop()
    peers.remove_tree(daemon.workdir)


def test_corral_and_corrald_share_their_containers(corral, shared_corrald, busybox_image):
    # Started without the daemon, seen and stopped through it by the docker CLI.
    corral("run", "-d", "--name", "from-cli", busybox_image, "sh", "-c",
           "echo cli; sleep 60")
    assert "from-cli" in shared_corrald.ok("ps")
    wait_for(lambda: "cli" in shared_corrald.ok("logs", "from-cli"))
    shared_corrald.ok("stop", "-t", "1", "from-cli")
    assert corral("inspect", "-f", "{{.State.Status}}", "from-cli").stdout == "exited\n"
    # Started through the daemon, seen and stopped by corral without it.
    shared_corrald.ok("run", "-d", "--name", "from-docker", busybox_image, "sh", "-c",
                      "echo docker; sleep 60")
    assert "from-docker" in corral("ps").stdout
    wait_for(lambda: "docker" in corral("logs", "from-docker").stdout)
    corral("stop", "-t", "1", "from-docker")
    assert "Exited (137)" in shared_corrald.ok("ps", "-a", "--filter", "name=from-docker")
    # And corral -H talks to the daemon with the same verbs.
    remote = Cli(corral.root, corral.run_dir, host=f"unix://{shared_corrald.socket}")
    assert sorted(remote("ps", "-a", "--format", "{{.Names}}").stdout.split()) == \
        ["from-cli", "from-docker"]
    remote("rm", "from-cli", "from-docker")
    assert corral("ps", "-aq").stdout == ""


def test_restart_policies_at_the_daemons_start(corral, shared_corrald, busybox_image):
    for policy in ("always", "unless-stopped", "no"):
        shared_corrald.ok("run", "-d", "--name", policy, "--restart", policy,
                          busybox_image, "sleep", "300")
        shared_corrald.ok("stop", "-t", "0", policy)
    shared_corrald.stop()
    shared_corrald.start()
    states = dict(line.split() for line in shared_corrald.ok(
        "ps", "-a", "--format", "{{.Names}} {{.State}}").splitlines())
    # Docker's rules: always comes back even after a stop; unless-stopped and
    # no stay stopped.
    assert states == {"always": "running", "unless-stopped": "exited", "no": "exited"}
    # And without a daemon, `corral system boot` applies the same rules.
    corral("stop", "-t", "0", "always")
    assert corral("system", "boot").stdout.split() and \
        corral("inspect", "-f", "{{.State.Status}}", "always").stdout == "running\n"


# Regressions from a fresh user's report ------------------------------------------------

def test_rm_container_whose_start_fails_is_removed(corral, shared_corrald, busybox_image):
    result = shared_corrald.docker("run", "--rm", busybox_image, "no-such-program",
                                   timeout=60)
    assert result.returncode == 127 and "executable file not found" in result.stderr
    failed = corral("run", "-d", "--rm", busybox_image, "no-such-program", check=False)
    assert failed.returncode == 127
    assert corral("ps", "-aq").stdout == ""


def test_a_missing_user_is_not_a_missing_image(corral, shared_corrald, busybox_image):
    local = corral("run", "--rm", "--user", "nobody", busybox_image, "id", check=False)
    assert local.returncode == 125 and "no user 'nobody'" in local.stderr
    assert "Unable to find image" not in local.stderr
    remote = shared_corrald.docker("run", "--rm", "--user", "nobody", busybox_image, "id",
                                   timeout=60)
    assert remote.returncode == 125 and "Unable to find image" not in remote.stderr


def test_stop_of_a_stopped_container_succeeds(corral, busybox_image):
    corral("create", "--name", "idle", busybox_image)
    assert corral("stop", "idle").stdout == "idle\n"


def test_foreground_run_forwards_sigterm(corral, busybox_image):
    import signal

    process = subprocess.Popen(
        [CORRAL, "--root", str(corral.root), "--run-root", str(corral.run_dir), "run",
         "--name", "fg", busybox_image, "sh", "-c",
         "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 3 and "got TERM" in out


def test_piped_stdin_keeps_the_exit_code(corral, busybox_image):
    result = corral("run", "-i", "--rm", busybox_image, "sh", "-c", "exit 5",
                    input=b"\n", check=False)
    assert result.returncode == 5, result.stderr


def test_foreground_run_rm_takes_its_anonymous_volumes(corral, busybox_image):
    # The CLI's own removal after a foreground --rm run left them behind.
    corral("run", "--rm", "-v", "/anon", busybox_image, "true")
    corral("run", "--rm", "-v", "/anon", busybox_image, "nosuchcommand", check=False)
    corral("volume", "create", "kept")
    corral("run", "--rm", "-v", "kept:/kept", busybox_image, "true")
    assert corral("volume", "ls", "-q").stdout.split() == ["kept"]
