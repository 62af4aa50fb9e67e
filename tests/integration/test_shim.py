"""corral-shim with real containers under the real corral-runtime.

Each test spawns the installed ``corral-shim`` the way the engine will
(docs/dev/manager.md): flags, a ready fd, then the socket protocol, and
observes the result: the json-file log, state.json, the events table, the
processes and the runtime's state directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from corral.shim import jsonlog, protocol
from corral.shim.errors import Error

from ..conftest import CORRAL_RUNTIME

SHIM = str(Path(sys.executable).parent / "corral-shim")


class Shim:
    """One spawned shim: its paths, its ready line, and helpers to observe it."""

    def __init__(self, state_dir: Path, log_path: Path, runtime_root: Path,
                 container_id: str, ready: dict) -> None:
        self.state_dir = state_dir
        self.log_path = log_path
        self.runtime_root = runtime_root
        self.id = container_id
        self.ready = ready
        self.sock = str(state_dir / "shim.sock")
        pid_file = state_dir / "shim.pid"
        self.pid = int(pid_file.read_text()) if pid_file.exists() else 0

    def request(self, message: dict, timeout: float | None = 10) -> dict:
        return protocol.request(self.sock, message, timeout)

    def state(self) -> dict:
        return protocol._json.loads((self.state_dir / "state.json").read_text())

    def logs(self, **kwargs) -> list[tuple[int, bytes]]:
        return list(jsonlog.read_logs(str(self.log_path), **kwargs))

    def wait_gone(self, timeout: float = 20) -> None:
        """Wait for the shim to exit; then check it left nothing behind."""
        deadline = time.monotonic() + timeout
        while _alive(self.pid):
            assert time.monotonic() < deadline, f"shim {self.pid} still running"
            time.sleep(0.05)
        assert not os.path.exists(self.sock)
        assert not (self.state_dir / "shim.pid").exists()
        assert not (self.runtime_root / self.id).exists(), "runtime state left behind"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def spawn(tmp_path, container_id):
    # The state dir holds unix sockets: keep its path short (108 bytes at most).
    state_root = Path(tempfile.mkdtemp(prefix="csh-", dir="/tmp"))
    runtime_root = tmp_path / "runtime"
    shims: list[Shim] = []

    def spawn(bundle, *flags: str, name: str = "", events_db: Path | None = None,
              spawner: list[str] | None = None) -> Shim:
        cid = container_id + name
        state_dir = state_root / cid
        log_path = tmp_path / f"{cid}-json.log"
        read_end, write_end = os.pipe()
        argv = [SHIM, "--id", cid, "--bundle", str(bundle.path),
                "--state-dir", str(state_dir), "--runtime", CORRAL_RUNTIME,
                "--runtime-root", str(runtime_root), "--log-path", str(log_path),
                "--ready-fd", str(write_end), *flags]
        if events_db is not None:
            argv += ["--events-db", str(events_db)]
        subprocess.run([*(spawner or []), *argv], pass_fds=[write_end], check=True,
                       timeout=30)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as ready:
            line = ready.read()
        shim = Shim(state_dir, log_path, runtime_root, cid,
                    protocol._json.loads(line) if line else {})
        shims.append(shim)
        return shim

    yield spawn
    for shim in shims:
        if _alive(shim.pid):
            try:
                shim.request({"op": "kill", "signal": 9})
            except Error:
                pass
    for shim in shims:
        if shim.pid:
            shim.wait_gone()
    shutil.rmtree(state_root, ignore_errors=True)


def without_pid_namespace(bundle):
    """Not pid 1 of a namespace: the default action of SIGTERM applies."""
    namespaces = bundle.spec["linux"]["namespaces"]
    bundle.spec["linux"]["namespaces"] = [ns for ns in namespaces if ns["type"] != "pid"]
    return bundle.write()


def wait_until(predicate, timeout: float = 20, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)
    return value


def test_output_lands_in_the_log_streams_apart_and_exit_code(bundle_factory, spawn):
    shim = spawn(bundle_factory(["sh", "-c", "echo out; echo err >&2; exit 3"]))
    assert shim.ready["pid"] > 0
    shim.wait_gone()

    state = shim.state()
    assert (state["status"], state["exit_code"], state["pid"]) == ("exited", 3, 0)
    assert state["finished_at"] >= state["started_at"]
    assert shim.logs() == [(1, b"out\n"), (2, b"err\n")]
    assert shim.logs(stderr=False) == [(1, b"out\n")]
    lines = shim.log_path.read_text().splitlines()
    assert '"stream":"stdout"' in lines[0] and lines[0].startswith('{"log":"out\\n"')


def test_exit_zero_and_the_container_outlives_its_spawner(bundle_factory, spawn):
    # The spawner is a shell that exits as soon as the shim has detached.
    bundle = bundle_factory(["sh", "-c", "sleep 1; echo late"])
    shim = spawn(bundle, spawner=["sh", "-c", 'exec "$@"', "spawner"])
    assert shim.request({"op": "state"})["status"] == "running"
    with open(f"/proc/{shim.pid}/stat") as f:
        assert f.read().rpartition(")")[2].split()[1] != str(os.getpid())
    answer = shim.request({"op": "wait"}, timeout=None)
    assert answer == {"ok": True, "exit_code": 0, "oom_killed": False}
    shim.wait_gone()
    assert shim.logs() == [(1, b"late\n")]


def test_kill_gives_137_and_sigterm_143(bundle_factory, spawn):
    killed = spawn(bundle_factory(["sleep", "300"]), name="k")
    termed = spawn(without_pid_namespace(bundle_factory(["sleep", "300"])), name="t")
    assert killed.request({"op": "kill", "signal": 9}) == {"ok": True}
    answer = termed.request({"op": "stop", "signal": 15, "timeout": 20}, timeout=None)
    assert answer["exit_code"] == 143
    killed.wait_gone()
    termed.wait_gone()
    assert killed.state()["exit_code"] == 137
    assert termed.state()["exit_code"] == 143


def test_stop_escalates_to_sigkill_after_the_timeout(bundle_factory, spawn):
    bundle = without_pid_namespace(bundle_factory(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]))
    shim = spawn(bundle)
    wait_until(lambda: shim.logs())  # the trap is set
    started = time.monotonic()
    answer = shim.request({"op": "stop", "signal": 15, "timeout": 1}, timeout=None)
    assert answer["exit_code"] == 137
    assert time.monotonic() - started >= 1.0
    shim.wait_gone()


def test_attach_with_replay_sees_all_output_written_before_it(bundle_factory, spawn):
    script = "seq 1 2000; echo to-stderr >&2; sleep 0.5"
    shim = spawn(bundle_factory(["sh", "-c", script]))
    wait_until(lambda: len(shim.logs()) == 2001)
    sock = protocol.attach(shim.sock, replay=True)
    received = {1: b"", 2: b""}
    for stream, data in protocol.demux(sock):
        received[stream] += data
    sock.close()
    expected = "".join(f"{i}\n" for i in range(1, 2001)).encode()
    assert received == {1: expected, 2: b"to-stderr\n"}


def test_stdin_through_attach_reaches_cat(bundle_factory, spawn):
    shim = spawn(bundle_factory(["cat"]), "--stdin", "--stdin-once")
    sock = protocol.attach(shim.sock, stdin=True)
    sock.sendall(b"hello\nworld\n")
    sock.shutdown(socket.SHUT_WR)
    output = b"".join(data for stream, data in protocol.demux(sock) if stream == 1)
    sock.close()
    assert output == b"hello\nworld\n"
    shim.wait_gone()
    assert shim.state()["exit_code"] == 0
    assert shim.logs() == [(1, b"hello\n"), (1, b"world\n")]


def test_tty_mode_with_resize(bundle_factory, spawn):
    bundle = bundle_factory(["sh", "-c", "read line; stty size; echo got:$line"],
                            terminal=True)
    shim = spawn(bundle, "--tty", "--stdin")
    sock = protocol.attach(shim.sock, stdin=True)
    assert shim.request({"op": "resize", "height": 33, "width": 101}) == {"ok": True}
    sock.sendall(b"abc\n")
    output = b"".join(data for _, data in protocol.demux(sock, tty=True))
    sock.close()
    assert b"33 101\r\n" in output and b"got:abc\r\n" in output
    shim.wait_gone()
    assert all(stream == 1 for stream, _ in shim.logs())


def test_resize_without_a_tty_is_an_error(bundle_factory, spawn):
    shim = spawn(bundle_factory(["sleep", "300"]))
    with pytest.raises(Error, match="has no tty"):
        shim.request({"op": "resize", "height": 10, "width": 10})
    with pytest.raises(Error, match="unknown op"):
        shim.request({"op": "frobnicate"})


def _events(db: Path, container_id: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT action FROM events WHERE actor_id = ? ORDER BY id", (container_id,))
        return [action for (action,) in rows]


def test_on_failure_2_restarts_exactly_twice(bundle_factory, spawn, tmp_path):
    db = tmp_path / "containers.db"
    shim = spawn(bundle_factory(["sh", "-c", "echo run; exit 1"]),
                 "--restart", "on-failure:2", events_db=db)
    shim.wait_gone()
    state = shim.state()
    assert (state["status"], state["restart_count"], state["exit_code"]) == ("exited", 2, 1)
    assert shim.logs() == [(1, b"run\n")] * 3
    assert _events(db, shim.id) == ["die", "restart", "die", "restart", "die"]


def test_always_restarts_with_growing_backoff_until_stopped(bundle_factory, spawn):
    shim = spawn(bundle_factory(["sh", "-c", "echo run"]), "--restart", "always")
    wait_until(lambda: shim.state()["restart_count"] >= 4)
    times = [jsonlog.parse_time_ns(line.split(b" ")[0].decode())
             for _, line in shim.logs(timestamps=True)][:5]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # 100, 200, 400, 800 ms of back-off, plus each run's own start.
    assert gaps[3] > gaps[1] > 0 and gaps[3] >= 800_000_000
    shim.request({"op": "stop", "timeout": 5}, timeout=None)
    shim.wait_gone()
    count = shim.state()["restart_count"]
    assert shim.state()["status"] == "exited"
    time.sleep(0.5)
    assert shim.state()["restart_count"] == count


def test_log_rotation_with_max_size_and_max_file(bundle_factory, spawn):
    script = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo line-$i; done"
    shim = spawn(bundle_factory(["sh", "-c", script]),
                 "--log-max-size", "20000", "--log-max-file", "3")
    shim.wait_gone()
    path = str(shim.log_path)
    assert os.path.exists(path + ".1") and os.path.exists(path + ".2")
    assert not os.path.exists(path + ".3")
    for name in (path + ".1", path + ".2"):
        assert 20000 <= os.path.getsize(name) < 20000 + 16 * 1024
    lines = [data for _, data in shim.logs()]
    numbers = [int(line[5:]) for line in lines]
    assert numbers == list(range(numbers[0], 3001)) and numbers[0] > 1
    assert shim.logs(tail=2) == [(1, b"line-2999\n"), (1, b"line-3000\n")]


def test_follow_reads_until_the_container_exits(bundle_factory, spawn):
    script = "echo one; sleep 0.5; echo two; sleep 0.5; echo three"
    shim = spawn(bundle_factory(["sh", "-c", script]))
    seen = []
    for _, data in jsonlog.read_logs(str(shim.log_path), follow=True,
                                     is_running=lambda: _alive(shim.pid)):
        seen.append((data, shim.state()["status"]))
    assert [data for data, _ in seen] == [b"one\n", b"two\n", b"three\n"]
    assert seen[0][1] == "running"


def test_command_not_found_is_reported_and_nothing_is_left(bundle_factory, spawn):
    shim = spawn(bundle_factory(["no-such-command"]))
    assert "executable file not found" in shim.ready["error"]
    assert "no-such-command" in shim.ready["error"]
    assert shim.pid == 0  # shim.pid removed before the ready line
    shim_pid = shim.state()["shim_pid"]
    wait_until(lambda: not _alive(shim_pid), timeout=5)
    assert not os.path.exists(shim.sock)
    assert not (shim.runtime_root / shim.id).exists()
    state = shim.state()
    assert (state["status"], state["exit_code"]) == ("exited", 127)
    assert "executable file not found" in state["error"]
    leftover = subprocess.run(["pgrep", "-f", f"--state-dir {shim.state_dir}"],
                              capture_output=True, text=True)
    assert leftover.stdout == ""


def test_idle_shim_memory(bundle_factory, spawn):
    shim = spawn(bundle_factory(["sleep", "300"]))
    time.sleep(0.5)
    with open(f"/proc/{shim.pid}/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f.read().splitlines()[1:])
    anon_kb = int(fields["Pss_Anon"].split()[0])
    pss_kb = int(fields["Pss"].split()[0])
    print(f"idle shim: Pss {pss_kb} kB, Pss_Anon {anon_kb} kB")
    # The interpreter alone is about 2.3 MB of anonymous memory here.
    assert anon_kb < 4500
    modules = subprocess.run(["cat", f"/proc/{shim.pid}/maps"], capture_output=True,
                             text=True).stdout
    assert "_ctypes" not in modules and "sqlite" not in modules


def test_exit_command_runs_once_gone_and_events_name_the_container(bundle_factory, spawn,
                                                                   tmp_path):
    db = tmp_path / "containers.db"
    marker = tmp_path / "exit-command-ran"
    command = json.dumps(["/bin/sh", "-c", f"echo done > {marker}"])
    shim = spawn(bundle_factory(["sh", "-c", "exit 0"]), "--name", "web",
                 "--image", "busybox:1", "--exit-command", command, events_db=db)
    shim.wait_gone()
    wait_until(marker.exists)
    assert marker.read_text() == "done\n"
    with sqlite3.connect(db) as connection:
        [(attributes,)] = connection.execute(
            "SELECT attributes FROM events WHERE actor_id = ? AND action = 'die'",
            (shim.id,))
    assert json.loads(attributes) == {"name": "web", "image": "busybox:1", "exitCode": "0"}


def test_a_bad_exit_command_is_refused(bundle_factory, spawn):
    with pytest.raises(subprocess.CalledProcessError):
        spawn(bundle_factory(["true"]), "--exit-command", "rm -rf /")
