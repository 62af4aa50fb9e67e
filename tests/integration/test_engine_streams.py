"""Streams of the engine: attach, resize and exec against real containers
(busybox from the test registry, corral-shim and corral-runtime underneath;
docs/dev/manager.md, "Streams"), the relay (attach.Pump) on its own, and the
daemonless ``corral`` CLI's run and exec, which call the same methods.

Every test ends with nothing left: no exec process or zombie among our
children, no relay thread, no exec directory, no container (the fixture's
check).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corral.manager import errors
from corral.manager.attach import Pump, socket_pair
from corral.manager.execs import check_exec, merge_env
from corral.shim import protocol
from tests.integration import peers
from tests.integration.engines import make_engine, remove_all

CORRAL = str(Path(sys.executable).parent / "corral")
# The client may size the terminal only once the process runs: wait for it.
STTY_SIZE = ('for i in $(seq 100); do size=$(stty size 2>&1); '
             'case $size in [1-9]*) break;; esac; sleep 0.05; done; echo "$size"')


@pytest.fixture
def engine(tmp_path, busybox_image, make_client):
    engine = make_engine(tmp_path, busybox_image, make_client(), "s-")
    before = set(_children())
    yield engine
    remove_all(engine)
    _assert_nothing_left(engine.run, before)
    shutil.rmtree(engine.run)


def _assert_nothing_left(run: Path, children: set[str]) -> None:
    def left() -> list[str]:
        return _relay_threads() + sorted(set(_children()) - children)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and left():
        time.sleep(0.05)
    assert left() == []
    assert not list((run / "shims").iterdir())
    assert not (run / "execs").exists() or not list((run / "execs").iterdir())


def _relay_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("attach-", "exec-"))]


def _children() -> list[str]:
    """Our child processes (zombies included) but pytest's own helpers."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():
                found.append(f"{entry.name} {fields[0]} {stat.split('(', 1)[1][:30]}")
    return found


def create(engine, *cmd, **extra) -> str:
    return engine.create({"Image": engine.image, "Cmd": list(cmd), **extra})["Id"]


def read_all(sock, tty: bool = False, timeout: float = 30) -> dict[int, bytes]:
    sock.settimeout(timeout)
    got: dict[int, bytes] = {}
    for stream, data in protocol.demux(sock, tty=tty):
        got[stream] = got.get(stream, b"") + data
    sock.close()
    return got


# The relay on its own -----------------------------------------------------------

def test_pump_frames_sources_and_passes_stdin_and_its_end():
    ours, theirs = socket_pair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    closed = []

    def close_stdin():
        closed.append(True)
        os.close(in_w)

    pump = Pump(ours, {out_r: 1, err_r: 2}, sink=in_w, close_sink=close_stdin)
    thread = threading.Thread(target=pump.run)
    thread.start()
    theirs.sendall(b"to stdin")
    theirs.shutdown(socket.SHUT_WR)
    assert os.read(in_r, 100) == b"to stdin"
    assert os.read(in_r, 100) == b""  # the half-close closed the process's stdin
    os.write(out_w, b"out")
    os.write(err_w, b"err")
    os.close(out_w)
    os.close(err_w)
    thread.join(5)
    assert not thread.is_alive() and closed == [True]
    ours.close()  # the pump's owner closes it
    assert read_all(theirs) == {1: b"out", 2: b"err"}
    for fd in (out_r, err_r, in_r):
        os.close(fd)


def test_pump_ends_when_the_client_closes():
    ours, theirs = socket_pair()
    read_end, write_end = os.pipe()
    thread = threading.Thread(target=Pump(ours, {read_end: None}).run)
    thread.start()
    theirs.close()
    thread.join(5)
    assert not thread.is_alive()
    for fd in (read_end, write_end):
        os.close(fd)
    ours.close()


def test_pump_with_keep_reading_drains_output_nobody_reads():
    ours, theirs = socket_pair()
    read_end, write_end = os.pipe()
    thread = threading.Thread(target=Pump(ours, {read_end: 1}, keep_reading=True).run)
    thread.start()
    theirs.close()
    # More than a pipe holds: the writer is not blocked by the lost client.
    writer = threading.Thread(target=os.write, args=(write_end, b"x" * (1 << 20)))
    writer.start()
    writer.join(5)
    assert not writer.is_alive() and thread.is_alive()
    os.close(write_end)
    thread.join(5)
    assert not thread.is_alive()
    os.close(read_end)
    ours.close()


def test_exec_body_checks_and_env_merge():
    with pytest.raises(errors.InvalidArgument, match=r"^No exec command specified$"):
        check_exec({"Cmd": []})
    with pytest.raises(errors.InvalidArgument) as caught:
        check_exec({"Cmd": "ls"})
    assert str(caught.value) == ("json: cannot unmarshal string into Go struct field "
                                 "ExecConfig.Cmd of type []string")
    with pytest.raises(errors.InvalidArgument, match="ExecConfig.Tty of type bool"):
        check_exec({"Cmd": ["ls"], "Tty": "yes"})
    with pytest.raises(errors.InvalidArgument, match="needs to be an absolute path"):
        check_exec({"Cmd": ["ls"], "WorkingDir": "tmp"})
    with pytest.raises(errors.InvalidArgument, match="Go value of type types.ExecConfig"):
        check_exec([1])
    config = check_exec({"Cmd": ["ls"], "Bogus": 1})
    assert config["Env"] is None and config["Tty"] is False and config["User"] == ""
    assert merge_env(["A=1", "B=2", "C=3"], ["B=x", "D=4", "C"]) == ["A=1", "B=x",
                                                                    "D=4"]


# Attach and resize ----------------------------------------------------------------

def test_attach_before_start_gets_both_streams_from_the_start(engine):
    container_id = create(engine, "sh", "-c", "echo out; echo err >&2; exit 3")
    sock = engine.attach(container_id, stdout=True, stderr=True)
    engine.start(container_id)
    assert read_all(sock) == {1: b"out\n", 2: b"err\n"}
    assert engine.wait(container_id)["StatusCode"] == 3


def test_attach_honours_the_stream_selection(engine):
    container_id = create(engine, "sh", "-c", "echo out; echo err >&2")
    sock = engine.attach(container_id, stdout=False, stderr=True)
    engine.start(container_id)
    assert read_all(sock) == {2: b"err\n"}


def test_a_run_over_before_the_attach_is_taken_from_the_log(engine, monkeypatch):
    # The shim's socket is held out of reach until the run is over and the
    # shim gone, as when a short run ends before the attach is accepted.
    container_id = create(engine, "sh", "-c", "echo quick; echo err >&2")
    over = threading.Event()
    real = engine._attach_shim
    monkeypatch.setattr(engine, "_attach_shim",
                        lambda *args: real(*args) if over.is_set() else None)
    sock = engine.attach(container_id)
    engine.start(container_id)
    engine.wait(container_id)
    deadline = time.monotonic() + 10
    while (engine.run / "shims" / container_id / "shim.sock").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    over.set()
    assert read_all(sock) == {1: b"quick\n", 2: b"err\n"}


def test_attach_with_stdin_once(engine):
    container_id = create(engine, "cat", OpenStdin=True, StdinOnce=True,
                          AttachStdin=True)
    sock = engine.attach(container_id, stdin=True)
    sock.sendall(b"hello ")  # before the start: kept until the attach is made
    engine.start(container_id)
    sock.sendall(b"world\n")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == {1: b"hello world\n"}
    assert engine.wait(container_id)["StatusCode"] == 0


def test_attach_to_a_running_container_gets_new_output_and_logs_first(engine):
    container_id = create(engine, "sh", "-c", "echo first; read x; echo second $x",
                          OpenStdin=True)
    engine.start(container_id)
    deadline = time.monotonic() + 10
    while [d for _, d in engine.logs(container_id)] != [b"first\n"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    new_only = engine.attach(container_id)
    with_logs = engine.attach(container_id, stdin=True, logs=True)
    time.sleep(0.2)  # both attached to the shim before the output
    with_logs.sendall(b"go\n")
    assert read_all(with_logs) == {1: b"first\nsecond go\n"}
    assert read_all(new_only) == {1: b"second go\n"}


def test_attach_without_stream_gives_the_log_and_ends(engine):
    container_id = create(engine, "sh", "-c", "echo a; echo b >&2")
    engine.start(container_id)
    engine.wait(container_id)
    sock = engine.attach(container_id, logs=True, stream=False)
    assert read_all(sock) == {1: b"a\n", 2: b"b\n"}


def test_a_closed_attach_of_a_created_container_stops_waiting(engine):
    container_id = create(engine, "true")
    sock = engine.attach(container_id)
    time.sleep(0.1)
    assert _relay_threads()
    sock.close()
    deadline = time.monotonic() + 5
    while _relay_threads():
        assert time.monotonic() < deadline, "the attach thread waits on"
        time.sleep(0.02)


def test_resize_a_tty_container(engine):
    container_id = create(engine, "sh", "-c", STTY_SIZE, Tty=True)
    with pytest.raises(errors.Conflict, match="is not running"):
        engine.resize(container_id, height=10, width=20)
    sock = engine.attach(container_id)
    engine.start(container_id)
    engine.resize(container_id, height=33, width=101)
    with pytest.raises(errors.InvalidArgument, match="bad size"):
        engine.resize(container_id, height=0, width=20)
    assert read_all(sock, tty=True) == {1: b"33 101\r\n"}
    plain = create(engine, "sleep", "10")
    engine.start(plain)
    with pytest.raises(errors.Conflict, match="no tty"):
        engine.resize(plain, height=10, width=20)


# Exec -----------------------------------------------------------------------------

def _running(engine, **extra) -> str:
    container_id = create(engine, "sleep", "60", **extra)
    engine.start(container_id)
    return container_id


def _exec(engine, container_id, *cmd, tty=False, **extra) -> tuple[str, object]:
    body = {"Cmd": list(cmd), "AttachStdout": True, "AttachStderr": True, "Tty": tty,
            **extra}
    exec_id = engine.exec_create(container_id, body)["Id"]
    return exec_id, engine.exec_start(exec_id, tty=tty)


def test_exec_streams_exit_code_inspect_and_events(engine):
    container_id = _running(engine)
    started = time.time() - 1
    exec_id, sock = _exec(engine, container_id, "sh", "-c", "echo o; echo e >&2; exit 5")
    assert read_all(sock) == {1: b"o\n", 2: b"e\n"}
    document = engine.exec_inspect(exec_id)
    assert document["Running"] is False and document["ExitCode"] == 5
    assert document["ContainerID"] == container_id and document["ID"] == exec_id
    assert document["ProcessConfig"] == {"tty": False, "entrypoint": "sh",
                                         "arguments": ["-c", "echo o; echo e >&2; exit 5"],
                                         "privileged": False}
    assert (document["OpenStdin"], document["OpenStdout"]) == (False, True)
    assert engine.inspect(container_id)["ExecIDs"] == [exec_id]
    actions = [e["Action"] for e in engine.events(since=started, until=time.time() + 0.1,
                                                  filters={"container": [container_id]})]
    assert [a.split(":")[0] for a in actions if a.startswith("exec")] == [
        "exec_create", "exec_start", "exec_die"]
    assert "exec_create: sh -c echo o; echo e >&2; exit 5" in actions
    with pytest.raises(errors.Conflict, match="has already run"):
        engine.exec_start(exec_id)


def test_exec_stdin_env_workdir_user(engine):
    container_id = _running(engine, Env=["KEEP=1", "OVER=old"])
    exec_id, sock = _exec(engine, container_id, "sh", "-c",
                          "cat; echo $KEEP $OVER $NEW; pwd; id", AttachStdin=True,
                          Env=["OVER=new", "NEW=2"], WorkingDir="/tmp", User="app")
    sock.sendall(b"piped\n")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == {1: b"piped\n1 new 2\n/tmp\n"
                                 b"uid=1000(app) gid=1000(app) groups=1000(app)\n"}
    assert engine.exec_inspect(exec_id)["ExitCode"] == 0


def test_exec_failures_are_126_with_dockers_message(engine):
    container_id = _running(engine)
    exec_id, sock = _exec(engine, container_id, "nonexist")
    assert read_all(sock) == {1: b'OCI runtime exec failed: exec failed: unable to '
                                 b'start container process: exec: "nonexist": '
                                 b'executable file not found in $PATH: unknown\r\n'}
    assert engine.exec_inspect(exec_id)["ExitCode"] == 126
    exec_id, sock = _exec(engine, container_id, "id", User="nosuchuser")
    assert read_all(sock) == {1: b"unable to find user nosuchuser: no matching "
                                 b"entries in passwd file\r\n"}
    exec_id = engine.exec_create(container_id, {"Cmd": ["/no/such"]})["Id"]
    with pytest.raises(errors.InvalidArgument, match="no such file or directory|"
                                                     "No such file or directory"):
        engine.exec_start(exec_id, detach=True)
    assert engine.exec_inspect(exec_id)["ExitCode"] == 126


def test_exec_needs_a_running_container(engine):
    container_id = create(engine, "true")
    with pytest.raises(errors.Conflict, match=f"Container {container_id} is not running"):
        engine.exec_create(container_id, {"Cmd": ["ls"]})
    with pytest.raises(errors.NotFound, match="No such exec instance"):
        engine.exec_inspect("nope")
    with pytest.raises(errors.NotFound, match="No such container"):
        engine.exec_create("nope", {"Cmd": ["ls"]})


def test_detached_exec_runs_and_records_its_exit(engine):
    container_id = _running(engine)
    exec_id = engine.exec_create(container_id, {"Cmd": ["sh", "-c", "sleep 0.3; "
                                                        "exit 4"]})["Id"]
    assert engine.exec_start(exec_id, detach=True) is None
    document = engine.exec_inspect(exec_id)
    assert document["Running"] is True and document["Pid"] > 0
    assert Path(f"/proc/{document['Pid']}").exists()
    deadline = time.monotonic() + 10
    while engine.exec_inspect(exec_id)["Running"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert engine.exec_inspect(exec_id)["ExitCode"] == 4


def test_exec_with_a_tty_resize_and_console_size(engine):
    container_id = _running(engine)
    exec_id, sock = _exec(engine, container_id, "sh", "-c",
                          f"tty; stty size; read x; {STTY_SIZE}; exit 2", tty=True,
                          AttachStdin=True, ConsoleSize=[20, 70])
    sock.settimeout(10)
    first = b""
    while first.count(b"\n") < 2:
        first += sock.recv(1024)
    assert first.startswith(b"/dev/pts/") and first.endswith(b"\r\n20 70\r\n")
    engine.exec_resize(exec_id, height=40, width=120)
    sock.sendall(b"\n")
    rest = read_all(sock, tty=True)[1]
    assert rest.endswith(b"40 120\r\n")
    assert engine.exec_inspect(exec_id)["ExitCode"] == 2
    with pytest.raises(errors.NotFound, match="no such exec"):
        engine.exec_resize(exec_id, height=40, width=120)


def test_a_client_gone_leaves_the_exec_running_to_its_end(engine):
    container_id = _running(engine)
    exec_id, sock = _exec(engine, container_id, "sh", "-c",
                          "sleep 0.3; head -c 300000 /dev/zero; exit 9")
    sock.close()
    deadline = time.monotonic() + 10
    while engine.exec_inspect(exec_id)["Running"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert engine.exec_inspect(exec_id)["ExitCode"] == 9


def test_removing_the_container_ends_its_execs(engine):
    container_id = _running(engine)
    exec_id, sock = _exec(engine, container_id, "sleep", "60")
    engine.remove(container_id, force=True)
    assert read_all(sock, timeout=10) == {}


# The daemonless corral CLI ----------------------------------------------------------

@pytest.fixture
def cli(engine):
    def run_cli(*args: str, input: bytes | None = None, tty: bool = False):
        argv = [CORRAL, "--root", str(engine.root), "--run-root", str(engine.run), *args]
        if tty:
            return peers.run_in_pty(argv, rows=33, columns=101)
        result = subprocess.run(argv, capture_output=True, input=input, timeout=60)
        return result.returncode, result.stdout.decode(), result.stderr.decode()
    return run_cli


def test_corral_run_and_exec_without_a_daemon(engine, cli):
    image = engine.image
    assert cli("run", "--rm", image, "sh", "-c", "echo out; echo err >&2; exit 3") == (
        3, "out\n", "err\n")
    assert cli("run", "--rm", "-i", image, "cat", input=b"hi\n") == (0, "hi\n", "")
    status, shown = cli("run", "--rm", "-t", image, "sh", "-c", f"{STTY_SIZE}; exit 2",
                        tty=True)
    # Without -i our terminal is not raw: it adds a CR of its own, as with Docker.
    assert (status, shown) == (2, "33 101\r\r\n")
    container_id = _running(engine)
    assert cli("exec", container_id, "sh", "-c", "echo o; echo e >&2; exit 5") == (
        5, "o\n", "e\n")
    assert cli("exec", "-i", container_id, "cat", input=b"piped\n") == (0, "piped\n", "")
    status, shown = cli("exec", "-it", container_id, "sh", "-c",
                        f"{STTY_SIZE}; exit 6", tty=True)
    assert (status, shown) == (6, "33 101\r\n")
    status, out, _ = cli("exec", container_id, "nonexist")
    assert status == 126 and "executable file not found in $PATH: unknown" in out
    assert [c for c in engine.records.all() if c.id != container_id] == []
