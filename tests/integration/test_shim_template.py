"""Shims forked by a template (shim/template.py): started in a fork rather
than a Python start, sharing the template's pages; containers that live on
when the template is gone; and recovery after an engine killed while the
template forks or the shim starts (docs/dev/manager.md, "corral-shim")."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from corral.manager import shims
from corral.manager.engine import Engine
from corral.shim import template
from tests.integration.test_engine import (  # noqa: F401 (engine: a fixture)
    _engine_process,
    _shim_ids,
    _wait_for,
    body,
    engine,
    run,
)

CGROUPS = Path("/sys/fs/cgroup/pids/corral")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _shim_pid(manager, container_id: str) -> int:
    return int((manager.state_dir(container_id) / "shim.pid").read_text())


def _templates(run_dir: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"corral.shim.template" in cmdline and str(run_dir).encode() in cmdline \
                    and _parent(int(entry.name)) != os.getpid():
                found.append(int(entry.name))
    return found


def _template_of(manager, container_id: str) -> int:
    parent = _parent(_shim_pid(manager, container_id))
    assert parent in _templates(manager.run)
    return parent


def _gone(pid: int, timeout: float = 5) -> bool:
    return _wait_for(lambda: not shims.alive(pid), timeout)


def test_shims_are_forked_by_one_template_and_outlive_it(engine):  # noqa: F811
    first = run(engine, "sleep", "60")
    second = run(engine, "sleep", "60")
    template_pid = _template_of(engine, first)
    assert _parent(_shim_pid(engine, second)) == template_pid
    assert shims.shim_alive(engine.state_dir(first))
    # Seen in /proc as any shim: its own ID and state directory.
    args = Path(f"/proc/{_shim_pid(engine, first)}/cmdline").read_bytes().split(b"\0")
    assert args[:5] == [b"corral-shim", b"--id", first.encode(), b"--state-dir",
                        str(engine.state_dir(first)).encode()]

    os.kill(template_pid, signal.SIGKILL)
    assert _gone(template_pid)
    # The containers run on, and stop as ever; a new start makes a new template.
    assert engine.inspect(first)["State"]["Running"] is True
    engine.stop(first, timeout=0)
    assert engine.inspect(first)["State"]["ExitCode"] == 137
    third = run(engine, "sleep", "60")
    assert _template_of(engine, third) != template_pid


def test_a_shim_has_the_environment_of_the_engine_that_asks(engine, monkeypatch,  # noqa: F811
                                                          tmp_path):
    def spawn(mark: str) -> str:
        monkeypatch.setenv("CORRAL_TEST_MARK", mark)
        # The host's network: nothing for engine.start to set up that we skip.
        container_id = engine.create(body(engine, "sleep", "60",
                                          HostConfig={"NetworkMode": "host"}))["Id"]
        # What the shim runs once the container is gone shows its environment.
        command = ("/bin/sh", "-c", f'echo "$CORRAL_TEST_MARK" > {tmp_path}/{mark}')
        directory = engine.directory(container_id)
        shims.spawn(container_id, bundle=directory,
                    state_dir=engine.state_dir(container_id),
                    runtime_root=engine.runtime_root,
                    log_path=directory / "json.log", events_db=engine.events_db,
                    options=shims.ShimOptions(exit_command=command))
        return container_id

    first, second = spawn("one"), spawn("two")
    assert _template_of(engine, first) == _template_of(engine, second)
    for container_id in (first, second):
        engine.stop(container_id, timeout=0)
    assert _wait_for(lambda: (tmp_path / "two").exists())
    assert _wait_for(lambda: (tmp_path / "one").exists())
    assert (tmp_path / "one").read_text() == "one\n"
    assert (tmp_path / "two").read_text() == "two\n"


def test_template_off_starts_plain_shims(engine, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CORRAL_SHIM_TEMPLATE", "0")
    container_id = run(engine, "sleep", "60")
    args = Path(f"/proc/{_shim_pid(engine, container_id)}/cmdline").read_bytes()
    assert b"corral.shim.main" in args and b"corral.shim.template" not in args
    assert not _templates(engine.run)


def test_a_code_change_gets_a_new_template(engine, monkeypatch):  # noqa: F811
    first = run(engine, "sleep", "60")
    old = _template_of(engine, first)
    monkeypatch.setattr(template, "code_token", lambda: "0ddc0de0")
    second = run(engine, "sleep", "60")
    assert (engine.run / "shim-template-0ddc0de0.sock").exists()
    assert _template_of(engine, second) != old
    # The old one still answers for its shims' sake until it idles out.
    assert shims.alive(old) and engine.inspect(first)["State"]["Running"] is True


def test_a_wiped_run_directory_gets_a_new_template(engine):  # noqa: F811
    container_id = run(engine, "sleep", "60")
    old = _template_of(engine, container_id)
    # As a reboot: nothing runs any more, and the run directory is empty.
    engine.stop(container_id, timeout=0)
    # (Mount points, the network namespaces', are the engine's to undo.)
    mounts = {line.split()[4] for line in
              Path("/proc/self/mountinfo").read_text().splitlines()}
    for entry in engine.run.iterdir():
        if str(entry) not in mounts:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    assert _gone(old)
    after = Engine(engine.root, engine.run)  # as corrald's start after a boot
    try:
        after.start(container_id)
        assert after.inspect(container_id)["State"]["Running"] is True
        assert _template_of(after, container_id) != old
    finally:
        after.close()


def _slow_start(engine, seconds: float) -> str:  # noqa: F811
    """A created container whose runtime create sleeps in a createRuntime
    hook, after its cgroup is made: a long look at a start in progress."""
    container_id = engine.create(body(engine, "sleep", "60"))["Id"]
    config = engine.directory(container_id) / "config.json"
    spec = json.loads(config.read_text())
    spec.setdefault("hooks", {})["createRuntime"] = [
        {"path": shutil.which("sleep"), "args": ["sleep", str(seconds)]}]
    config.write_text(json.dumps(spec))
    return container_id


def _start_elsewhere(engine, container_id: str):  # noqa: F811
    return _engine_process(engine, f"engine.start({container_id!r})\n")


def test_reconcile_after_a_kill_while_the_shim_starts(engine):  # noqa: F811
    run(engine, "true")  # a template, warm
    container_id = _slow_start(engine, 1.5)
    process = _start_elsewhere(engine, container_id)
    assert _wait_for(lambda: (CGROUPS / container_id).is_dir())
    process.kill()
    process.wait()
    # The start goes on in the shim: it is seen at work, whoever looks.
    assert engine.inspect(container_id)["State"]["Status"] == "created"
    assert container_id in _shim_ids(engine.run)
    assert container_id in shims.running_shims(engine.run / "shims")
    done = engine.reconcile()
    assert container_id not in done["orphans"] + done["undone"]
    assert _wait_for(lambda: engine.inspect(container_id)["State"]["Running"])
    assert (CGROUPS / container_id).is_dir()


def test_reconcile_after_a_kill_before_the_template_forks(engine):  # noqa: F811
    run(engine, "true")
    [template_pid] = _templates(engine.run)
    container_id = engine.create(body(engine, "sleep", "60"))["Id"]
    os.kill(template_pid, signal.SIGSTOP)
    try:
        process = _start_elsewhere(engine, container_id)
        marker = engine.state_dir(container_id) / template.SPAWNING
        assert _wait_for(marker.exists)
        time.sleep(0.3)  # the request sent: the engine waits for the answer
        process.kill()
        process.wait()
        # Queued at the template, not yet forked: only the mark tells.
        assert container_id not in _shim_ids(engine.run)
        assert container_id in shims.running_shims(engine.run / "shims")
        done = engine.reconcile()
        assert container_id not in done["orphans"] + done["undone"]
    finally:
        os.kill(template_pid, signal.SIGCONT)
    assert _wait_for(lambda: engine.inspect(container_id)["State"]["Running"])
    assert not marker.exists()


def test_a_stale_mark_is_no_shim(engine):  # noqa: F811
    run(engine, "true")
    [socket_path] = engine.run.glob("shim-template-*.sock")
    container_id = engine.create(body(engine, "sleep", "60"))["Id"]
    # What an engine killed before it sent its request leaves.
    marker = engine.state_dir(container_id) / template.SPAWNING
    marker.parent.mkdir(parents=True)
    marker.write_text(str(socket_path))
    assert container_id in shims.running_shims(engine.run / "shims")
    old = time.time() - shims.START_TIMEOUT - 1
    os.utime(marker, (old, old))
    assert container_id not in shims.running_shims(engine.run / "shims")
    engine.start(container_id)
    assert engine.inspect(container_id)["State"]["Running"] is True


def test_racing_starters_share_one_template(engine):  # noqa: F811
    processes = [_engine_process(engine, (
        "c = engine.create({'Image': image, 'Cmd': ['sleep', '60']})\n"
        "engine.start(c['Id'])\n")) for _ in range(4)]
    for process in processes:
        assert process.wait(timeout=60) == 0
    ids = [c.id for c in engine.records.all()]
    assert len({_template_of(engine, i) for i in ids}) == 1
    assert len(_templates(engine.run)) == 1


def test_a_bad_request_leaves_the_template_serving(engine):  # noqa: F811
    import socket

    run(engine, "true")
    [template_pid] = _templates(engine.run)
    [socket_path] = engine.run.glob("shim-template-*.sock")
    read_end, write_end = os.pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(socket_path))
        sock.sendmsg([b"not json"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      write_end.to_bytes(4, "little"))])
        assert b"error" in sock.makefile("rb").readline()
    os.close(read_end)
    os.close(write_end)
    container_id = run(engine, "sleep", "60")
    assert _template_of(engine, container_id) == template_pid


def test_engine_objects_on_one_root_share_the_template(engine):  # noqa: F811
    other = Engine(engine.root, engine.run)
    try:
        first = run(engine, "sleep", "60")
        second = other.create(body(engine, "sleep", "60"))["Id"]
        other.start(second)
        assert _template_of(engine, first) == _template_of(other, second)
    finally:
        other.close()


def test_a_start_after_a_kill_before_the_fork_makes_one_shim(engine):  # noqa: F811
    # The engine dies with its request queued at the template; a second start
    # came before the fork and, finding no shim, made one of its own: two
    # shims ran one container.
    run(engine, "true")
    [template_pid] = _templates(engine.run)
    container_id = engine.create(body(engine, "sleep", "60"))["Id"]
    os.kill(template_pid, signal.SIGSTOP)
    try:
        process = _start_elsewhere(engine, container_id)
        marker = engine.state_dir(container_id) / template.SPAWNING
        assert _wait_for(marker.exists)
        time.sleep(0.3)
        process.kill()
        process.wait()
    finally:
        # The fork comes while the second start waits for it.
        threading.Timer(0.5, os.kill, (template_pid, signal.SIGCONT)).start()
    engine.start(container_id)
    assert _wait_for(lambda: engine.inspect(container_id)["State"]["Running"])
    time.sleep(0.5)
    assert _shim_count(container_id) == 1


def _shim_count(container_id: str) -> int:
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if shims.looks_like_shim(args) and container_id.encode() in args:
            count += 1
    return count
