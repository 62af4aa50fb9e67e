"""The manager's engine against real containers: busybox from the test
registry pulled into a store of the test's own, corral-shim and
corral-runtime underneath (docs/dev/manager.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.manager import errors, shims
from corral.manager import spec as specs
from tests.integration.engines import make_engine, remove_all

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def engine(tmp_path, busybox_image, make_client):
    engine = make_engine(tmp_path, busybox_image, make_client(), "e-")
    yield engine
    remove_all(engine)
    _assert_clean(engine.root, engine.run)
    shutil.rmtree(engine.run)


def _assert_clean(root: Path, run: Path) -> None:
    assert not list((root / "containers").iterdir())
    assert not list((run / "shims").iterdir())
    assert not [p for p in (run / "runtime").iterdir()]
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(root / "containers") in line]


def body(engine, *cmd, **extra) -> dict:
    document = {"Image": engine.image, "Cmd": list(cmd) or None}
    document.update(extra)
    return document


# Create, inspect, list, rename, remove ----------------------------------------------

def test_create_inspect_list_rename_remove(engine):
    created = engine.create(body(engine, "sh", "-c", "echo hi", Labels={"a": "b"}),
                            name="first")
    container_id = created["Id"]
    assert len(container_id) == 64 and created["Warnings"] == []
    document = engine.inspect("first")
    assert document["Id"] == container_id
    assert document["Name"] == "/first"
    assert document["Path"] == "sh" and document["Args"] == ["-c", "echo hi"]
    assert document["State"]["Status"] == "created"
    assert document["State"]["Running"] is False
    assert document["Config"]["Labels"] == {"a": "b"}
    assert document["Config"]["Hostname"] == container_id[:12]
    assert any(e.startswith("PATH=") for e in document["Config"]["Env"])
    assert document["HostConfig"]["NetworkMode"] == "default"
    assert document["Image"].startswith("sha256:")
    assert engine.inspect(container_id[:8])["Id"] == container_id

    assert engine.list() == []
    rows = engine.list(all=True)
    assert [r["Names"] for r in rows] == [["/first"]]
    assert rows[0]["State"] == "created" and rows[0]["Status"] == "Created"
    assert rows[0]["Command"] == "sh -c echo hi"

    engine.rename("first", "second")
    assert engine.inspect(container_id)["Name"] == "/second"
    with pytest.raises(errors.NotFound, match="No such container: first"):
        engine.inspect("first")
    engine.remove("second")
    with pytest.raises(errors.NotFound):
        engine.inspect(container_id)
    actions = [e["Action"] for e in engine.events(since=0, until=time.time())]
    assert actions == ["create", "rename", "destroy"]


def test_names_are_unique(engine):
    first = engine.create(body(engine, "true"), name="taken")["Id"]
    with pytest.raises(errors.Conflict) as caught:
        engine.create(body(engine, "true"), name="taken")
    assert str(caught.value) == (
        f'Conflict. The container name "/taken" is already in use by container '
        f'"{first}". You have to remove (or rename) that container to be able to '
        f'reuse that name.')
    other = engine.create(body(engine, "true"))["Id"]
    with pytest.raises(errors.Conflict):
        engine.rename(other, "taken")
    assert len(engine.list(all=True)) == 2
    assert len(list((engine.root / "containers").iterdir())) == 2


@pytest.mark.parametrize("bad, message", [
    ({"HostConfig": {"Memroy": 1}}, "HostConfig.Memroy: unknown option"),
    ({"HostConfig": {"Memory": "1g"}}, "cannot unmarshal string into Go struct field "
                                       "HostConfig.Memory of type int64"),
    ({"Tty": "yes"}, "Config.Tty of type bool"),
    ({"Image": "nosuch:1"}, "No such image: nosuch:1"),
    ({"User": "nobody-here"}, "no user 'nobody-here'"),
    ({"HostConfig": {"Devices": [{"PathOnHost": "/dev/kvm"}]}}, "not supported"),
])
def test_bad_create_leaves_nothing(engine, bad, message):
    with pytest.raises(errors.Error, match=message):
        engine.create(body(engine, "true", **bad), name="bad")
    assert engine.records.all() == []
    assert not list((engine.root / "containers").iterdir())
    assert not [s for s in engine.store.snapshots.walk() if s.kind == "active"]


# Start, wait, stop, kill, restart, pause --------------------------------------------

def run(engine, *cmd, **extra) -> str:
    container_id = engine.create(body(engine, *cmd, **extra))["Id"]
    engine.start(container_id)
    return container_id


def test_start_wait_exit_code_and_logs(engine):
    container_id = run(engine, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert engine.wait(container_id) == {"StatusCode": 3, "Error": None}
    state = engine.inspect(container_id)["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 3
    assert state["StartedAt"] != "0001-01-01T00:00:00Z"
    assert dict((s, d) for s, d in engine.logs(container_id)) == {1: b"out\n",
                                                                   2: b"err\n"}
    assert engine.list(all=True)[0]["Status"].startswith("Exited (3) ")
    with pytest.raises(errors.NotModified):
        engine.stop(container_id)
    engine.start(container_id)
    assert engine.wait(container_id)["StatusCode"] == 3
    assert [line for _, line in engine.logs(container_id, stdout=True, stderr=False)] \
        == [b"out\n", b"out\n"]


def test_stop_sends_stop_signal_then_kill(engine):
    # The shell ignores TERM: stop must SIGKILL it after the timeout (137).
    stubborn = run(engine, "sh", "-c", "trap '' TERM; while :; do sleep 0.1; done")
    polite = run(engine, "sh", "-c", "trap 'exit 42' USR1; while :; do sleep 0.1; done",
                 StopSignal="SIGUSR1")
    assert engine.inspect(stubborn)["State"]["Running"] is True
    time.sleep(0.3)
    started = time.monotonic()
    engine.stop(stubborn, timeout=1)
    assert 0.9 < time.monotonic() - started < 5
    assert engine.inspect(stubborn)["State"]["ExitCode"] == 137
    engine.stop(polite, timeout=10)
    assert engine.inspect(polite)["State"]["ExitCode"] == 42
    actions = [e["Action"] for e in engine.events(since=0, until=time.time(),
                                                  filters={"container": [polite]})]
    assert actions == ["create", "start", "kill", "die", "stop"]


def test_kill_restart_pause_unpause(engine):
    container_id = run(engine, "sleep", "60")
    engine.pause(container_id)
    assert engine.inspect(container_id)["State"]["Status"] == "paused"
    assert engine.list()[0]["Status"].endswith("(Paused)")
    freezer = _freezer_state(container_id)
    assert freezer in (None, "FROZEN")
    engine.unpause(container_id)
    assert engine.inspect(container_id)["State"]["Status"] == "running"
    first_pid = engine.inspect(container_id)["State"]["Pid"]
    engine.restart(container_id, timeout=1)
    state = engine.inspect(container_id)["State"]
    assert state["Running"] and state["Pid"] != first_pid
    engine.kill(container_id, "KILL")
    assert engine.wait(container_id)["StatusCode"] == 137
    with pytest.raises(errors.Conflict, match="is not running"):
        engine.kill(container_id)


def _freezer_state(container_id: str) -> str | None:
    path = Path(f"/sys/fs/cgroup/freezer/corral/{container_id}/freezer.state")
    return path.read_text().strip() if path.exists() else None


def test_remove_running_needs_force(engine):
    container_id = run(engine, "sleep", "60")
    with pytest.raises(errors.Conflict, match="cannot remove a running container"):
        engine.remove(container_id)
    engine.remove(container_id, force=True)
    assert engine.list(all=True) == []
    assert not Path(f"/sys/fs/cgroup/memory/corral/{container_id}").exists()


def test_command_not_found_is_127_and_leaves_a_created_container(engine):
    container_id = engine.create(body(engine, "nosuchprogram"))["Id"]
    with pytest.raises(errors.StartFailed) as caught:
        engine.start(container_id)
    assert "executable file not found in $PATH" in str(caught.value)
    assert caught.value.exit_status == 127
    state = engine.inspect(container_id)["State"]
    assert state["Status"] == "created" and state["ExitCode"] == 127
    assert not list((engine.run / "shims").iterdir())
    assert not list((engine.run / "runtime").iterdir())


# Several processes on one root ------------------------------------------------------

def _engine_process(engine, code: str) -> subprocess.Popen:
    """A Python process running ``code`` with ``engine`` bound to an Engine
    on the same root and run directory as the test's."""
    prelude = ("import sys, time\nfrom pathlib import Path\n"
               "from corral.manager.engine import Engine\n"
               f"engine = Engine(Path({str(engine.root)!r}), Path({str(engine.run)!r}))\n"
               f"image = {engine.image!r}\n")
    return subprocess.Popen([sys.executable, "-c", prelude + code],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})


def test_another_process_sees_logs_and_stops_a_container(engine):
    process = _engine_process(engine, (
        "c = engine.create({'Image': image, 'Cmd': ['sh', '-c', "
        "'echo hello; exec sleep 60']}, name='shared')\n"
        "engine.start(c['Id'])\nprint(c['Id'])\n"))
    container_id = process.communicate(timeout=60)[0].strip()
    assert process.returncode == 0
    assert engine.inspect("shared")["State"]["Running"] is True
    assert _wait_for(lambda: list(engine.logs("shared")) == [(1, b"hello\n")])
    engine.stop("shared", timeout=1)
    assert engine.inspect(container_id)["State"]["Status"] == "exited"


def _wait_for(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_reconcile_after_a_killed_process(engine):
    process = _engine_process(engine, (
        "for i in range(200):\n"
        "    c = engine.create({'Image': image, 'Cmd': ['sleep', '60']})\n"
        "    print(c['Id'], flush=True)\n"
        "    engine.start(c['Id'])\n"))
    printed = [process.stdout.readline().strip() for _ in range(3)]
    # Somewhere inside a create or a start.
    time.sleep(0.05 + (time.monotonic() % 0.1))
    process.kill()
    process.wait()
    printed += process.stdout.read().split()
    engine.reconcile()
    known = {c.id for c in engine.records.all()}
    assert len(known) >= 3
    # A start the process was inside goes on in its shim, which outlives it.
    for container_id in known:
        assert _wait_for(lambda c=container_id: _settled(engine, c))
    for container in engine.records.all():
        assert container.mark == "created"
    assert {p.name for p in (engine.root / "containers").iterdir()} == known
    assert {p.name for p in (engine.run / "runtime").iterdir()} <= known
    assert {p.name for p in (engine.run / "shims").iterdir()} <= known
    active = {s.name for s in engine.store.snapshots.walk() if s.kind == "active"}
    assert active == known
    assert _shim_ids(engine.run) <= known
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if any(i in line for i in set(printed) - known)]
    cgroups = Path("/sys/fs/cgroup/pids/corral")
    for container_id in printed:
        running = container_id in known and engine.inspect(container_id)["State"]["Running"]
        assert (cgroups / container_id).is_dir() == running, _why(engine, container_id)


def _why(engine, container_id):
    try:
        state = engine.inspect(container_id)["State"]
    except errors.NotFound:
        return "unknown"
    cg = Path(f"/proc/{state['Pid']}/cgroup")
    return state, cg.read_text() if cg.exists() else None, _shim_ids(engine.run)


def _settled(engine, container_id: str) -> bool:
    """Running, or created with no shim at work on it."""
    status = engine.inspect(container_id)["State"]["Status"]
    return status == "running" or (status == "created"
                                   and container_id not in _shim_ids(engine.run))


def _shim_ids(run: Path) -> set[str]:
    """IDs of the live shims whose state directory is under ``run``."""
    ids = set()
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not shims.looks_like_shim(args) or b"--id" not in args:
            continue
        state_dir = args[args.index(b"--state-dir") + 1].decode()
        if state_dir.startswith(f"{run}/"):
            ids.add(args[args.index(b"--id") + 1].decode())
    return ids


# Spec options, top, stats -----------------------------------------------------------

def test_init_reaps_and_forwards_signals(engine):
    if not specs.init_binary().exists():
        pytest.skip("corral-init is not built (scripts/setup builds it)")
    container_id = run(engine, "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done",
                       HostConfig={"Init": True})
    top = engine.top(container_id)
    commands = [row[-1] for row in top["Processes"]]
    assert any(c.startswith("/sbin/docker-init -- sh") for c in commands)
    assert engine.inspect(container_id)["Path"] == "sh"
    engine.stop(container_id, timeout=5)
    assert engine.inspect(container_id)["State"]["ExitCode"] == 7


def test_limits_reach_the_cgroup_and_stats(engine):
    container_id = run(engine, "sleep", "60", HostConfig={
        "Memory": 64 << 20, "PidsLimit": 50, "NanoCpus": 500_000_000,
        "ReadonlyRootfs": True, "CapDrop": ["ALL"], "CapAdd": ["CHOWN"]})
    base = Path("/sys/fs/cgroup")
    if (base / "memory").is_dir():
        cgroup = f"corral/{container_id}"
        assert (base / "memory" / cgroup / "memory.limit_in_bytes").read_text() \
            == f"{64 << 20}\n"
        assert (base / "pids" / cgroup / "pids.max").read_text() == "50\n"
        assert (base / "cpu" / cgroup / "cpu.cfs_quota_us").read_text() == "50000\n"
    document = next(engine.stats(container_id, stream=False))
    assert document["memory_stats"]["limit"] == 64 << 20
    assert document["pids_stats"] == {"current": 1, "limit": 50}
    assert document["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert document["cpu_stats"]["online_cpus"] >= 1
    spec = (engine.directory(container_id) / "config.json").read_text()
    assert '"bounding": [\n   "CAP_CHOWN"\n  ]' in spec.replace("  ", " ") or \
        '"CAP_CHOWN"' in spec and '"CAP_KILL"' not in spec


def test_create_start_wait_is_fast(engine):
    # Warm: the first start pays for imports and the cgroup hierarchy.
    engine.wait(run(engine, "true"))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        container_id = run(engine, "true")
        assert engine.wait(container_id)["StatusCode"] == 0
        times.append(time.perf_counter() - started)
        engine.remove(container_id)
    times.sort()
    print(f"create+start+wait of true: median {times[2] * 1000:.0f} ms")
    # dockerd takes 270 ms here and we measure about 190 ms on a quiet
    # machine; the bound is a regression guard that a shared CI can meet.
    assert times[2] < 0.5
