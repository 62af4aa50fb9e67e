"""Exec: a second process in a running container (the API reference's
"Exec" section; docs/dev/manager.md, "Streams").

``exec_create`` checks the body as Docker's ``types.ExecConfig`` decodes it
and records it (the ``execs`` table). ``exec_start`` writes the process as
the container's own ``process`` of config.json with the exec's changes,
runs ``corral-runtime exec --process FILE --pid-file P`` (not detached: the
runtime waits for the process and exits with its status) and waits for the
start's outcome: the pid file, written once the process has exec'd, or the
runtime's exit with its error in ``--log``. Without a tty the process has
pipes; with one the runtime sends the pty master over ``--console-socket``
(SCM_RIGHTS) and we keep it for ``exec_resize``. A thread relays (attach.Pump),
records ExitCode once the process has exited, then closes the stream, so
``exec_inspect`` after the stream's end has the exit code.

As dockerd 20.10 does, a process that cannot start (no such program, a bad
working directory, an unknown user) gives exit code 126 and, on an attached
start, ``OCI runtime exec failed: ...: unknown`` on the stream; a detached
start raises it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ..image import errors as image_errors
from ..image.bundle import resolve_user
from ..shim import protocol
from . import shims
from . import spec as specs
from .attach import Pump, socket_pair
from .docker_model import LI, LS, B, S, _check, _json_type
from .errors import Conflict, Error, InvalidArgument, NotFound
from .records import ExecRecord

EXEC_FIELDS = {"Cmd": LS, "Env": LS, "User": S, "WorkingDir": S, "Tty": B,
               "AttachStdin": B, "AttachStdout": B, "AttachStderr": B, "Privileged": B,
               "DetachKeys": S, "ConsoleSize": LI}
CANNOT_START = 126  # dockerd's exit code for an exec whose process never ran
START_TIMEOUT = 30.0
TIOCSWINSZ = 0x5414
_SUN_PATH = 107  # the longest unix socket path


def check_exec(body: object) -> dict:
    """The body of ``POST /containers/{id}/exec``, checked: every known field
    with its zero value when absent. Unknown fields are ignored, as by Docker.

    Raises:
        InvalidArgument: a field of the wrong type (Go's message), no command,
            a relative working directory, a ConsoleSize not of two numbers.
    """
    if not isinstance(body, dict):
        raise InvalidArgument(f"json: cannot unmarshal {_json_type(body)} into Go value "
                              f"of type types.ExecConfig")
    config = {key: _check(body.get(key), kind, f"ExecConfig.{key}")
              for key, kind in EXEC_FIELDS.items()}
    if not config["Cmd"]:
        raise InvalidArgument("No exec command specified")
    workdir = config["WorkingDir"]
    if workdir and not workdir.startswith("/"):
        raise InvalidArgument(f"the working directory '{workdir}' is invalid, it needs "
                              f"to be an absolute path")
    size = config["ConsoleSize"]
    if size is not None and len(size) != 2:
        raise InvalidArgument("json: cannot unmarshal array into Go struct field "
                              "ExecConfig.ConsoleSize of type [2]uint")
    return config


def merge_env(base: list[str], changes: list[str]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: ``K=V`` replaces K or is appended;
    a bare ``K`` removes K."""
    result = list(base)
    for change in changes:
        key = change.partition("=")[0]
        keys = [entry.partition("=")[0] for entry in result]
        if "=" not in change:
            result = [entry for entry in result if entry.partition("=")[0] != key]
        elif key in keys:
            result[keys.index(key)] = change
        else:
            result.append(change)
    return result


def exec_document(record: ExecRecord, running: bool) -> dict:
    """Docker's ``GET /exec/{id}/json``."""
    config = record.document
    cmd = config["Cmd"]
    process = {"tty": config["Tty"], "entrypoint": cmd[0], "arguments": cmd[1:],
               "privileged": config["Privileged"]}
    if config["User"]:
        process["user"] = config["User"]
    return {"ID": record.id, "Running": running,
            "ExitCode": None if running else record.exit_code,
            "ProcessConfig": process, "OpenStdin": config["AttachStdin"],
            "OpenStderr": config["AttachStderr"], "OpenStdout": config["AttachStdout"],
            "CanRemove": False, "ContainerID": record.container,
            "DetachKeys": config["DetachKeys"], "Pid": record.pid if running else 0}


class StartError(Error):
    """The exec's process could not start; the message is dockerd's."""


class Execs:
    """Mixin of Engine: the exec endpoints. The engine holds ``_exec_ptys``
    (exec ID to pty master, for the execs this process runs) and its lock."""

    def exec_create(self, ref: str, body: dict) -> dict:
        """``POST /containers/{id}/exec``: ``{"Id"}``.

        Raises:
            InvalidArgument: a bad body. NotFound: no such container.
            Conflict: it is not running, or paused.
        """
        config = check_exec(body)
        container, state = self._running(ref)
        if state.status == "paused":
            raise Conflict(f"Container {container.id} is paused, unpause the container "
                           f"before exec")
        exec_id = secrets.token_hex(32)
        self.records.insert_exec(ExecRecord(exec_id, container.id, time.time(), config))
        self._event(container, f"exec_create: {' '.join(config['Cmd'])}", execID=exec_id)
        return {"Id": exec_id}

    def exec_inspect(self, exec_id: str) -> dict:
        """``GET /exec/{id}/json``; NotFound for an unknown ID."""
        record = self.records.get_exec(exec_id)
        # A record left running by a process that died with its exec.
        running = record.running and (not record.pid or shims.alive(record.pid))
        return exec_document(record, running)

    def exec_resize(self, exec_id: str, *, height: int, width: int) -> None:
        """``POST /exec/{id}/resize``: the size of the exec's pty.

        Raises:
            NotFound: no such exec, or it is not running here. Conflict: it has
            no tty. InvalidArgument: a size out of range.
        """
        record = self.records.get_exec(exec_id)
        if not (0 < height < 65536 and 0 < width < 65536):
            raise InvalidArgument(f"resize exec '{exec_id}': bad size {height}x{width}")
        if record.running and not record.document["Tty"]:
            raise Conflict(f"resize exec '{exec_id}': the exec has no tty")
        with self._exec_lock:
            master = self._exec_ptys.get(exec_id)
            if master is None:
                raise NotFound("no such exec")
            fcntl.ioctl(master, TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def exec_start(self, exec_id: str, *, detach: bool = False, tty: bool = False):
        """``POST /exec/{id}/start``: None when detached, else the stream (raw
        with ``tty``, else framed), which closes once ExitCode is recorded.

        Raises:
            NotFound: no such exec or container. Conflict: the container is
            not running, or the exec has run (or runs) already.
            InvalidArgument: a detached start whose process could not start.
        """
        record = self.records.get_exec(exec_id)
        container, _ = self._running(record.container)
        if not self.records.claim_exec(exec_id):
            done = self.records.get_exec(exec_id).exit_code is not None
            raise Conflict(f"Error: Exec command {exec_id} "
                           f"{'has already run' if done else 'is already running'}")
        run = _ExecRun(self, record, container, detach=detach)
        try:
            run.start()
        except StartError as exc:
            self._exec_ended(run, CANNOT_START)
            if detach:
                raise InvalidArgument(str(exc)) from None
            return _message_stream(f"{exc}\r\n".encode(), framed=not tty)
        except BaseException:
            run.kill()
            self._exec_ended(run, CANNOT_START)
            raise
        self.records.update_exec(exec_id, pid=run.pid)
        self._event(container, f"exec_start: {' '.join(record.document['Cmd'])}",
                    execID=exec_id)
        if run.master >= 0:
            with self._exec_lock:
                self._exec_ptys[exec_id] = run.master
        theirs = None
        if not detach:
            ours, theirs = socket_pair()
            run.client = ours
        threading.Thread(target=self._exec_relay, args=(run, not tty), daemon=True,
                         name=f"exec-{exec_id[:12]}").start()
        return theirs

    def _exec_relay(self, run: _ExecRun, framed: bool) -> None:
        code = 255
        try:
            run.relay(framed)
            code = run.wait()
        except Exception:  # nobody to raise to in this thread: log, and end
            import logging

            logging.getLogger(__name__).exception("exec '%s'", run.record.id)
            run.kill()
        finally:
            self._exec_ended(run, code)

    def _exec_ended(self, run: _ExecRun, code: int) -> None:
        """Record the exit, then release what the run holds: the stream last,
        so that whoever reads it to its end finds the exit code."""
        exec_id = run.record.id
        with self._exec_lock:
            self._exec_ptys.pop(exec_id, None)
            run.close_fds()
        try:
            self.records.update_exec(exec_id, running=False, exit_code=code)
            with contextlib.suppress(NotFound):
                self._event(self.records.get(run.record.container), "exec_die",
                            execID=exec_id, exitCode=str(code))
        finally:
            run.cleanup()


def _message_stream(data: bytes, *, framed: bool):
    """A stream that carries DATA (on stdout when framed), then ends."""
    ours, theirs = socket_pair()
    with ours:
        ours.sendall(protocol.frame(1, data) if framed else data)
    return theirs


class _ExecRun:
    """One start of an exec: its files, the runtime's process, its stdio."""

    def __init__(self, engine, record: ExecRecord, container, *, detach: bool) -> None:
        self.engine = engine
        self.record = record
        self.container = container
        self.config = record.document
        self.detach = detach
        self.client = None  # the engine's end of the stream, when attached
        self.process: subprocess.Popen | None = None
        self.master = -1
        self.pid = 0
        self.directory: Path | None = None

    # Starting ----------------------------------------------------------------

    def start(self) -> None:
        """Run the runtime; return once the process has exec'd.

        Raises:
            StartError: it could not (dockerd's message).
        """
        process = self._process()
        self.directory = _work_dir(self.engine.run / "execs", self.record.id)
        (self.directory / "process.json").write_text(json.dumps(process))
        if self.config["Tty"]:
            self._start_tty()
        else:
            self._start_pipes()
        self.pid = self._await_pid()

    def _runtime_args(self, console: str = "") -> list[str]:
        directory = self.directory
        args = [str(shims.RUNTIME), "--root", str(self.engine.runtime_root),
                "--log", str(directory / "log.json"), "--log-format", "json",
                "exec", "--process", str(directory / "process.json"),
                "--pid-file", str(directory / "exec.pid")]
        if console:
            args += ["--console-socket", console]
        return [*args, self.container.id]

    def _process(self) -> dict:
        """The container's process with the exec's changes."""
        bundle = self.engine.directory(self.container.id)
        spec = json.loads((bundle / "config.json").read_text())
        process = dict(spec["process"], args=list(self.config["Cmd"]),
                       terminal=self.config["Tty"])
        process["env"] = merge_env(process.get("env") or [], self.config["Env"] or [])
        process.pop("consoleSize", None)
        size = self.config["ConsoleSize"]
        if self.config["Tty"] and size and all(size):
            process["consoleSize"] = {"height": size[0], "width": size[1]}
        if self.config["WorkingDir"]:
            process["cwd"] = self.config["WorkingDir"]
        if self.config["User"]:
            process["user"] = self._user(bundle / "rootfs", self.config["User"])
        if self.config["Privileged"]:
            caps = specs.capability_set({"Privileged": True})
            process["capabilities"] = {"bounding": caps, "effective": caps,
                                       "permitted": caps}
        return process

    def _user(self, rootfs: Path, user: str) -> dict:
        try:
            uid, gid, groups = resolve_user(rootfs, user)
        except image_errors.Error:
            raise StartError(f"unable to find user {user}: no matching entries in "
                             f"passwd file") from None
        # As Docker: the supplementary groups include the primary one.
        return {"uid": uid, "gid": gid, "additionalGids": sorted({gid, *groups})}

    def _start_pipes(self) -> None:
        pipe, null = subprocess.PIPE, subprocess.DEVNULL
        attached = not self.detach
        self.process = subprocess.Popen(
            self._runtime_args(), bufsize=0, start_new_session=True,
            stdin=pipe if attached and self.config["AttachStdin"] else null,
            stdout=pipe if attached and self.config["AttachStdout"] else null,
            stderr=pipe if attached and self.config["AttachStderr"] else null)

    def _start_tty(self) -> None:
        import socket

        from ..runtime.console import receive_master

        path = str(self.directory / "console.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) \
                as listener:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(0.02)
            self.process = subprocess.Popen(
                self._runtime_args(path), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    connection.settimeout(START_TIMEOUT)
                    self.master = receive_master(connection)
                os.set_inheritable(self.master, False)
                return
        raise StartError(self._failure())

    def _await_pid(self) -> int:
        pid_file = self.directory / "exec.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            exited = self.process.poll() is not None
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(pid_file.read_text())
            if exited:
                raise StartError(self._failure())
            time.sleep(0.002)
        self.kill()
        raise StartError(f"exec '{self.record.id}': no process after {START_TIMEOUT} s")

    def _failure(self) -> str:
        """dockerd's message for the runtime's failure to start the process."""
        self.process.wait()
        message = f"corral-runtime exec exited with status {self.process.returncode}"
        with contextlib.suppress(OSError):
            for line in (self.directory / "log.json").read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("level") == "error":
                        message = str(entry.get("msg"))
        return (f"OCI runtime exec failed: exec failed: unable to start container "
                f"process: {message}: unknown")

    # Running -----------------------------------------------------------------

    def relay(self, framed: bool) -> None:
        """Copy between the stream and the process until it has exited."""
        client = self.client
        if client is None:
            # Detached: output that cannot be dropped at the source (a pty's)
            # is read and dropped here.
            client, gone = socket_pair()
            gone.close()
        if self.master >= 0:
            stdin = self.config["AttachStdin"] and not self.detach
            pump = Pump(client, {self.master: 1 if framed else None},
                        sink=self.master if stdin else -1, keep_reading=True)
        else:
            outputs = [(self.process.stdout, 1), (self.process.stderr, 2)]
            stdin = self.process.stdin
            pump = Pump(client, {pipe.fileno(): stream if framed else None
                                 for pipe, stream in outputs if pipe is not None},
                        sink=stdin.fileno() if stdin is not None else -1,
                        close_sink=stdin.close if stdin is not None else None,
                        keep_reading=True)
        try:
            pump.run(exited=lambda: self.process.poll() is not None)
        finally:
            if client is not self.client:
                client.close()

    def wait(self) -> int:
        return self.process.wait()

    def kill(self) -> None:
        """Kill the runtime's exec and reap it."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()

    def close_fds(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.process is not None:
            for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def cleanup(self) -> None:
        """Remove the run's files, then close the stream."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        if self.client is not None:
            self.client.close()


def _work_dir(parent: Path, exec_id: str) -> Path:
    """A new directory for an exec's files, short enough for its console
    socket's path (under /tmp when ``parent`` is too long)."""
    parent.mkdir(mode=0o700, exist_ok=True)
    directory = parent / exec_id[:16]
    if len(str(directory / "console.sock")) > _SUN_PATH:
        return Path(tempfile.mkdtemp(prefix="corral-exec-"))
    directory.mkdir(mode=0o700)
    return directory


__all__ = ["Execs", "check_exec", "exec_document", "merge_env"]
