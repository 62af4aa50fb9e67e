"""Regressions from issue 5's fresh-user leftovers, each with the input that
failed: namespace and privilege modes, range checks, what a failed create
or an exit leaves behind, top's ps options, supplementary groups, a second
run directory on one root, version and event times, the exit statuses of a
failed start. Where dockerd's behaviour was not obvious it was checked
against Debian's dockerd 20.10 (the expected values below are its own).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.manager import errors
from tests.integration import peers
from tests.integration.engines import make_engine, remove_all

CORRAL = str(Path(sys.executable).parent / "corral")


@pytest.fixture(scope="module")
def archive(rootfs_template, tmp_path_factory) -> Path:
    return peers.write_image_archive(rootfs_template,
                                     tmp_path_factory.mktemp("loimg") / "busybox.tar")


@pytest.fixture(scope="module")
def corrald(archive):
    daemon = peers.Corrald(peers.make_workdir("lo"))
    try:
        daemon.start()
        daemon.ok("load", "--input", str(archive))
        yield daemon
    finally:
        daemon.cleanup()


def corral(daemon, *args: str, host: bool = False) -> subprocess.CompletedProcess:
    """The corral CLI on DAEMON's root and run directory: in process, or
    through DAEMON with ``host``."""
    argv = [CORRAL, "--root", str(daemon.root), "--run-root", str(daemon.run_dir)]
    if host:
        argv += ["-H", f"unix://{daemon.socket}"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def engine(tmp_path, busybox_image, make_client):
    engine = make_engine(tmp_path, busybox_image, make_client(), "lo-")
    yield engine
    remove_all(engine)
    shutil.rmtree(engine.run)


def run(engine, *cmd: str, **host) -> str:
    """Run CMD to its end in a container with HOST; its output."""
    body = {"Image": engine.image, "Cmd": list(cmd),
            "HostConfig": {"NetworkMode": "none", **host}}
    container_id = engine.create(body)["Id"]
    engine.start(container_id)
    engine.wait(container_id)
    output = b"".join(line for _, line in engine.logs(container_id, follow=False))
    engine.remove(container_id)
    return output.decode()


def status_field(text: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith(key + ":"))


# 1. --privileged, --uts/--pid/--ipc host -----------------------------------------

def test_privileged_gets_our_capabilities_no_seccomp_and_the_host_devices(engine):
    output = run(engine, "sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status; "
                 "ls /dev; grep -E ' /sys | /proc/kcore ' /proc/self/mountinfo; "
                 "echo end", Privileged=True)
    with open("/proc/self/status") as status:
        ours = status_field(status.read(), "CapBnd")
    assert status_field(output, "CapEff") == ours
    assert status_field(output, "Seccomp") == "0"
    devices = set(output.split())
    assert {name for name in os.listdir("/dev") if name.startswith("loop")} <= devices
    assert "/proc/kcore" not in output  # not masked
    sys_line = next(line for line in output.splitlines() if " /sys " in line)
    assert " rw," in sys_line


def test_cap_add_all_gets_what_we_hold(engine):
    output = run(engine, "grep", "CapEff", "/proc/self/status", CapAdd=["ALL"])
    with open("/proc/self/status") as status:
        assert status_field(output, "CapEff") == status_field(status.read(), "CapBnd")


def test_uts_host_has_the_hosts_hostname(engine):
    assert run(engine, "hostname", UTSMode="host") == f"{socket.gethostname()}\n"


def test_uts_host_with_a_hostname_is_refused_as_dockerd_refuses_it(engine):
    body = {"Image": engine.image, "Hostname": "x", "HostConfig": {"UTSMode": "host"}}
    with pytest.raises(errors.InvalidArgument) as caught:
        engine.create(body)
    assert str(caught.value) == "conflicting options: hostname and the UTS mode"
    assert engine.records.all() == []


def test_pid_host_sees_the_hosts_processes(engine):
    output = run(engine, "cat", "/proc/1/comm", PidMode="host")
    assert output == Path("/proc/1/comm").read_text()


def test_ipc_host_shares_the_hosts_dev_shm(engine):
    marker = Path(f"/dev/shm/corral-leftovers-{os.getpid()}")
    marker.write_text("seen\n")
    try:
        assert run(engine, "cat", str(marker), IpcMode="host") == "seen\n"
    finally:
        marker.unlink()


# 2. NanoCpus, logs since/until ------------------------------------------------------

@pytest.mark.parametrize("nano_cpus", [-1, (len(os.sched_getaffinity(0)) + 1) * 10**9])
def test_nano_cpus_out_of_range_is_refused_at_create(engine, nano_cpus):
    count = len(os.sched_getaffinity(0))
    body = {"Image": engine.image, "HostConfig": {"NanoCpus": nano_cpus}}
    with pytest.raises(errors.InvalidArgument) as caught:
        engine.create(body)
    assert str(caught.value) == (f"Range of CPUs is from 0.01 to {count}.00, as there "
                                 f"are only {count} CPUs available")
    assert engine.records.all() == []


def test_all_cpus_are_in_range(engine):
    count = len(os.sched_getaffinity(0))
    body = {"Image": engine.image, "HostConfig": {"NanoCpus": count * 10**9}}
    engine.remove(engine.create(body)["Id"])


def test_logs_with_a_bad_since_is_a_400_with_dockerds_message(corrald):
    corrald.ok("create", "--name", "logs-since", "--network", "none", peers.IMAGE)
    for query, part in (("since=abc", "abc"), ("until=1.5x", "5x"),
                        ("since=1.", "")):
        status, body, _ = corrald.request(
            "GET", f"/containers/logs-since/logs?stdout=1&{query}")
        assert (status, json.loads(body)) == (
            400, {"message": f'strconv.ParseInt: parsing "{part}": invalid syntax'})
    status, _, _ = corrald.request("GET", "/containers/logs-since/logs?stdout=1&"
                                   "since=1700000000.5&until=-1")
    assert status == 200
    status, _, _ = corrald.request("GET", "/containers/nope/logs?stdout=1&since=abc")
    assert status == 404


@pytest.mark.parametrize("host", [False, True])
def test_corral_logs_with_a_bad_since_says_what_docker_logs_says(corrald, host):
    corrald.ok("create", "--name", f"logs-cli-{host}", "--network", "none", peers.IMAGE)
    result = corral(corrald, "logs", "--since", "abc", f"logs-cli-{host}", host=host)
    assert (result.returncode, result.stderr) == (
        1, 'corral: invalid value for "since": failed to parse value as time or '
           'duration: "abc"\n')
    result = corral(corrald, "logs", "--since", "abc", "nope", host=host)
    assert (result.returncode, result.stderr) == (1, "corral: No such container: nope\n")


# 3. Locks of failed creates, the rootfs of a container not running -------------------

def test_a_create_refused_for_its_name_leaves_no_lock(engine):
    engine.create({"Image": engine.image}, name="taken")
    locks = set(os.listdir(engine.run / "locks"))
    with pytest.raises(errors.Conflict):
        engine.create({"Image": engine.image}, name="taken")
    assert set(os.listdir(engine.run / "locks")) == locks


def test_run_rm_leaves_no_lock(corrald):
    before = set(os.listdir(corrald.run_dir / "locks"))
    for host in (False, True):
        result = corral(corrald, "run", "--rm", "--network", "none", peers.IMAGE, "true",
                        host=host)
        assert result.returncode == 0, result.stderr
    # The shim's exit command may come last: give it its moment.
    assert wait_until(lambda: set(os.listdir(corrald.run_dir / "locks")) <= before)


def rootfs_mounted(engine, container_id: str) -> bool:
    return os.path.ismount(engine.directory(container_id) / "rootfs")


def wait_until(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("network", ["none", "host"])
def test_an_exit_nobody_watches_unmounts_the_rootfs(engine, network):
    body = {"Image": engine.image, "Cmd": ["sh", "-c", "cat /kept; echo kept > /kept"],
            "HostConfig": {"NetworkMode": network}}
    container_id = engine.create(body)["Id"]
    engine.start(container_id)
    # The shim's exit command does it; the engine is not asked.
    assert wait_until(lambda: not rootfs_mounted(engine, container_id))
    engine.start(container_id)  # mounted again, with what the first run wrote
    engine.wait(container_id)
    assert [line for _, line in engine.logs(container_id, stderr=False)] == [b"kept\n"]


def test_restarts_by_the_policy_keep_the_rootfs_and_the_last_exit_unmounts_it(engine):
    body = {"Image": engine.image, "Cmd": ["sh", "-c", "sleep 0.3; exit 3"],
            "HostConfig": {"NetworkMode": "none",
                           "RestartPolicy": {"Name": "on-failure",
                                             "MaximumRetryCount": 2}}}
    container_id = engine.create(body)["Id"]
    engine.start(container_id)
    assert wait_until(lambda: engine.inspect(container_id)["RestartCount"] >= 1)
    assert rootfs_mounted(engine, container_id)
    assert wait_until(lambda: engine.inspect(container_id)["State"]["Status"]
                      == "exited")
    assert wait_until(lambda: not rootfs_mounted(engine, container_id))


def test_stop_unmounts_the_rootfs(engine):
    body = {"Image": engine.image, "Cmd": ["sleep", "30"],
            "HostConfig": {"NetworkMode": "none"}}
    container_id = engine.create(body)["Id"]
    engine.start(container_id)
    assert rootfs_mounted(engine, container_id)
    engine.stop(container_id, timeout=0)
    assert not rootfs_mounted(engine, container_id)


def test_reconcile_unmounts_the_rootfs_of_a_run_whose_shim_died(engine):
    body = {"Image": engine.image, "Cmd": ["sleep", "30"],
            "HostConfig": {"NetworkMode": "none"}}
    container_id = engine.create(body)["Id"]
    engine.start(container_id)
    state = json.loads((engine.state_dir(container_id) / "state.json").read_text())
    os.kill(state["shim_pid"], 9)
    os.kill(state["pid"], 9)
    assert wait_until(lambda: not engine.inspect(container_id)["State"]["Running"])
    assert rootfs_mounted(engine, container_id)
    engine.reconcile()
    assert not rootfs_mounted(engine, container_id)


# 4. top's ps options ------------------------------------------------------------------

@pytest.fixture(scope="module")
def sleeper(corrald):
    """A running container of corrald's, named ``sleeper``."""
    corrald.ok("run", "-d", "--name", "sleeper", "--network", "none", peers.IMAGE,
               "sleep", "300")
    yield "sleeper"
    corrald.docker("rm", "-f", "sleeper")


@pytest.mark.parametrize("host", [False, True])
def test_corral_top_passes_ps_options(corrald, sleeper, host):
    result = corral(corrald, "top", sleeper, "-o", "pid,comm", host=host)
    assert result.returncode == 0, result.stderr
    pid = corrald.ok("inspect", "--format", "{{.State.Pid}}", sleeper).strip()
    # docker top's table: cells padded to 20 at least
    assert result.stdout == f"PID                 COMMAND\n{pid:<20}sleep\n"
    assert corral(corrald, "top", sleeper, host=host).stdout.startswith(
        "UID                 PID                 PPID ")


def test_docker_top_through_corrald_takes_ps_options_and_errors_as_dockerd(corrald,
                                                                            sleeper):
    assert corrald.ok("top", sleeper, "-o", "pid,comm").startswith(
        "PID                 COMMAND\n")
    for args, message in ((("-o", "comm"), "Couldn't find PID field in ps output"),
                          (("--bogus",), "ps: error: unknown gnu long option")):
        result = corrald.docker("top", sleeper, *args)
        assert (result.returncode, result.stderr) == (
            1, f"Error response from daemon: {message}\n")
    status, body, _ = corrald.request("GET", f"/containers/{sleeper}/top?ps_args=aux")
    assert status == 200 and json.loads(body)["Titles"][:2] == ["USER", "PID"]


# 5. Supplementary groups ---------------------------------------------------------------

USERS_IMAGE = "corral.test/users:1"
GROUPS = ("root:x:0:\nuser:x:1000:user\ntty:x:5:\naudio:x:29:user,other\n"
          "video:x:44:other\nstaff:x:50:user\n")


@pytest.fixture(scope="module")
def users_image(corrald, rootfs_template, tmp_path_factory):
    """busybox with /etc/group making ``user`` (uid 1000) a member of more."""
    rootfs = tmp_path_factory.mktemp("users") / "rootfs"
    shutil.copytree(rootfs_template, rootfs, symlinks=True)
    (rootfs / "etc/group").write_text(GROUPS)
    archive = peers.write_image_archive(rootfs, rootfs.parent / "users.tar",
                                        USERS_IMAGE)
    corrald.ok("load", "--input", str(archive))
    return USERS_IMAGE


# What dockerd 20.10 showed for each, with this /etc/group.
@pytest.mark.parametrize("args, groups", [
    (("-u", "1000"), "29 50 1000"),
    (("-u", "user"), "29 50 1000"),
    (("-u", "1000:1000"), "1000"),
    (("-u", "1000:staff"), "50"),
    (("-u", "4242"), "0"),
    ((), "0"),
    (("-u", "1000", "--group-add", "video", "--group-add", "777"), "29 44 50 777 1000"),
    (("--group-add", "audio"), "0 29"),
])
def test_supplementary_groups_as_dockerd_gives_them(corrald, users_image, args, groups):
    shown = corrald.ok("run", "--rm", "--network", "none", *args, users_image,
                       "grep", "Groups", "/proc/self/status")
    assert shown.split(None, 1)[1].split() == groups.split()


def test_group_add_of_a_group_the_image_lacks_is_refused(corrald, users_image):
    result = corrald.docker("create", "--group-add", "nosuch", users_image)
    assert result.returncode == 1 and result.stderr == (
        "Error response from daemon: Unable to find group nosuch: no matching entries "
        "in group file\n")


# 6. A second run directory on the same root -------------------------------------------

def test_an_engine_on_another_run_directory_sees_the_run_and_keeps_its_rootfs(engine):
    import tempfile

    from corral.manager.engine import Engine

    body = {"Image": engine.image, "Cmd": ["sleep", "30"],
            "HostConfig": {"NetworkMode": "none"}}
    container_id = engine.create(body, name="elsewhere")["Id"]
    engine.start(container_id)
    other_run = Path(tempfile.mkdtemp(prefix="lo2-", dir="/tmp"))
    other = Engine(engine.root, other_run)
    try:
        assert other.inspect("elsewhere")["State"]["Running"] is True
        assert [row["Id"] for row in other.list()] == [container_id]
        refused = (f"container '{container_id}': running under run directory "
                   f"'{engine.run}', not '{other_run}' (use --run-root {engine.run})")
        for call in (lambda: other.remove("elsewhere", force=True),
                     lambda: other.stop("elsewhere"), lambda: other.kill("elsewhere")):
            with pytest.raises(errors.Conflict) as caught:
                call()
            assert str(caught.value) == refused
        with pytest.raises(errors.Conflict, match="You cannot remove a running"):
            other.remove("elsewhere")
        assert rootfs_mounted(engine, container_id)
        assert engine.inspect(container_id)["State"]["Running"] is True

        engine.stop(container_id, timeout=0)
        assert other.inspect("elsewhere")["State"]["Status"] == "exited"
        other.remove("elsewhere")
    finally:
        other.close()
        shutil.rmtree(other_run)


# 7. version and event times, as the docker CLI prints them ---------------------------

def server_part(text: str) -> str:
    return text[text.index("Server:"):]


@pytest.mark.parametrize("host", [False, True])
def test_corral_version_shows_what_docker_version_shows_of_corrald(corrald, host):
    docker = corrald.ok("version")
    assert " API version:       1.47 (downgraded from 1.50)\n" in docker
    result = corral(corrald, "version", host=host)
    assert result.returncode == 0, result.stderr
    assert server_part(result.stdout) == server_part(docker)
    assert "  API version:      1.47 (minimum version 1.24)\n" in result.stdout
    client_api = "1.43" if host else "1.47"  # what the client speaks
    assert f" API version:       {client_api}\n" in result.stdout


@pytest.mark.parametrize("zone, suffix", [("UTC", "Z"), ("Europe/Paris", "+01:00"),
                                          ("Asia/Kolkata", "+05:30")])
def test_event_times_in_the_local_zone_as_the_docker_cli(corrald, zone, suffix):
    corrald.ok("create", "--name", f"ev-{zone.replace('/', '-')}", "--network", "none",
               peers.IMAGE)
    window = ("--since", "0", "--until", str(int(time.time()) + 1))
    env = {**corrald.env(), "TZ": zone}
    docker = subprocess.run(["docker", "events", *window], capture_output=True,
                            text=True, env=env, timeout=60)
    ours = subprocess.run([CORRAL, "--root", str(corrald.root), "--run-root",
                           str(corrald.run_dir), "events", *window],
                          capture_output=True, text=True, env=env, timeout=60)
    stamps = [line.split(" ", 1)[0] for line in ours.stdout.splitlines()]
    assert stamps and all(stamp.endswith(suffix) for stamp in stamps)
    assert stamps == [line.split(" ", 1)[0] for line in docker.stdout.splitlines()
                      if " container " in line]


# 8. The exit status of a failed start, carried, not guessed ---------------------------

# dockerd 20.10's docker run exits so for each (runc's words differ, the status not).
@pytest.mark.parametrize("args, status", [
    (("nosuch",), 127), (("/nonexist/x",), 127), (("/etc",), 126),
    (("/etc/passwd",), 126),
    (("-w", "/etc/passwd", peers.IMAGE, "true"), 125),
])
def test_a_failed_start_exits_as_docker_run_on_every_path(corrald, args, status):
    argv = ("run", "--rm", "--network", "none",
            *(args if args[0] == "-w" else (peers.IMAGE, *args)))
    assert corrald.docker(*argv).returncode == status  # its own guess, from our words
    for host in (False, True):
        result = corral(corrald, *argv, host=host)
        assert result.returncode == status, (host, result.stderr)


def test_corrald_sends_the_exit_status_with_dockers_message(corrald):
    container_id = corrald.ok("create", "--network", "none", peers.IMAGE, "/etc").strip()
    status, body, _ = corrald.request("POST", f"/containers/{container_id}/start")
    document = json.loads(body)
    assert (status, document["ExitStatus"]) == (500, 126)
    assert document["message"].endswith('exec: "/etc": is a directory')
    corrald.ok("rm", container_id)


@pytest.mark.parametrize("host", [False, True])
def test_an_error_that_is_not_a_start_is_125_whatever_its_words(corrald, host):
    # Its message says "No such file or directory": once read as a 127.
    result = corral(corrald, "run", "--rm", "--security-opt", "seccomp=/nonexist",
                    peers.IMAGE, "true", host=host)
    assert "No such file or directory" in result.stderr
    assert result.returncode == 125
