"""One container's supervisor: its runs, its state.json, its socket.

A *run* is one create + start of the container through corral-runtime, up to
the exit of its process and the ``delete`` after it; the restart policy may
follow one run with another (docs/dev/manager.md). The shim is a child
subreaper (set in ``main``), so the container's init, whose parent, the
runtime's ``create``, exits at once, becomes our child, and we reap it with
its real wait status.

At an exit we first read what the pipes hold, ``delete`` the container (it
kills what is left in its cgroup), then read the pipes to their end: output
written just before the exit is never lost, and a process that escaped
holds nothing open for ever. state.json is rewritten (temporary file, then
rename) at every change, before waiters are answered, so a client that
reads it after ``wait`` sees the exit.
"""

from __future__ import annotations

import _socket
import os
import time

from corral import _json

from . import oom, streams
from .errors import Error
from .jsonlog import LogWriter, timestamp_ns
from .loop import ERR, IN, OUT, Loop
from .restart import Backoff, RestartPolicy
from .server import Server, answer
from .verbs import Runtime

ZERO_TIME = "0001-01-01T00:00:00Z"
FLUSH_GRACE = 2.0  # seconds given to attached clients to take the last output


class Options:
    """The shim's command line (see main.parse_args)."""

    def __init__(self) -> None:
        self.id = ""
        self.bundle = ""
        self.state_dir = ""
        self.runtime = ""
        self.runtime_root = ""
        self.log_path = ""
        self.log_max_size = 0
        self.log_max_file = 1
        self.tty = False
        self.stdin = False
        self.stdin_once = False
        self.restart = RestartPolicy()
        self.events_db = ""
        self.ready_fd = -1
        self.name = ""
        self.image = ""
        self.exit_command: list[str] = []


def now() -> str:
    return timestamp_ns(time.time_ns())


def exit_code(status: int) -> int:
    """A wait status as a shell's exit code: 128 + N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Shim(Server):
    """The container's supervisor; ``start_run`` once, then ``serve``."""

    def __init__(self, options: Options) -> None:
        self.options = options
        directory = options.state_dir
        self.sock_path = os.path.join(directory, "shim.sock")
        self.state_path = os.path.join(directory, "state.json")
        self.log_path = os.path.join(directory, "shim.log")
        self.runtime = Runtime(options.runtime, options.runtime_root, self.log_path)
        self.loop = Loop(self._reap)
        self.output = streams.Output(
            LogWriter(options.log_path, options.log_max_size, options.log_max_file),
            options.tty)
        self.state = {"status": "created", "pid": 0, "shim_pid": os.getpid(),
                      "started_at": ZERO_TIME, "finished_at": ZERO_TIME, "exit_code": 0,
                      "oom_killed": False, "restart_count": 0, "error": ""}
        self.pid = 0
        self.oom_file = ""
        self.outputs: dict[int, int] = {}  # fd -> stream
        self.stdin_fd = -1
        self.master = -1
        self.stdin_pending = bytearray()
        self.stdin_close = False
        self.stopped = False
        self.waiters: list[_socket.socket] = []
        self.client_masks: dict[int, int] = {}
        self.kill_timer = self.restart_timer = None
        self.backoff = Backoff()
        self.started = 0.0
        self.listener: _socket.socket | None = None
        self.finishing = False

    # -- logging and state -------------------------------------------------

    def log(self, level: str, message: str) -> None:
        """One line of shim.log, in the runtime's JSON format."""
        line = _json.dumps({"level": level, "msg": message, "time": now()}) + "\n"
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def write_state(self, **changes) -> None:
        self.state.update(changes)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(_json.dumps(self.state))
        os.replace(tmp, self.state_path)

    def record_event(self, action: str, attributes: dict[str, str]) -> None:
        """Append an event from a forked child, so this process never loads sqlite3."""
        if not self.options.events_db:
            return
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                from .events import record

                named = {key: value for key, value in (("name", self.options.name),
                                                       ("image", self.options.image))
                         if value}
                record(self.options.events_db, "container", action, self.options.id,
                       {**named, **attributes})
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status:
            self.log("warning", f"record event '{action}': the writer failed")

    # -- a run ---------------------------------------------------------------

    def listen(self) -> None:
        """Bind shim.sock (before the first run: a spawner may attach at once)."""
        self.listener = _listen(self.sock_path)
        self.loop.register(self.listener.fileno(), IN, self._accept)

    def start_run(self) -> None:
        """Create and start the container; its pid in ``self.pid``.

        Raises:
            RuntimeFailed: create or start failed (nothing of it is left).
        """
        self.output.new_run()
        if self.options.tty:
            self._start_tty()
        else:
            self._start_pipes()
        self.started = time.monotonic()
        self.stopped = False
        self.write_state(status="running", pid=self.pid, started_at=now(),
                         finished_at=ZERO_TIME, exit_code=0, error="", oom_killed=False)

    def _start_pipes(self) -> None:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC) if self.options.stdin else (null, -1)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        ours = [fd for fd in (stdin_w, out_r, err_r) if fd >= 0]
        try:
            self._create_and_start((stdin_r, out_w, err_w))
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in {null, stdin_r, out_w, err_w}:
                os.close(fd)
        for fd in ours:
            os.set_blocking(fd, False)
        self.stdin_fd = stdin_w
        for fd, stream in ((out_r, 1), (err_r, 2)):
            self.outputs[fd] = stream
            self.loop.register(fd, IN, lambda events, fd=fd: self._on_output(fd))

    def _start_tty(self) -> None:
        console_path = os.path.join(self.options.state_dir, "console.sock")
        console = _listen(console_path)
        try:
            self._create_and_start(None, console_path, console)
        finally:
            console.close()
            _unlink(console_path)
        os.set_blocking(self.master, False)
        self.outputs[self.master] = 1
        self.loop.register(self.master, IN, lambda events: self._on_output(self.master))

    def _create_and_start(self, stdio, console_path: str = "", console=None) -> None:
        options = self.options
        pid_file = os.path.join(options.state_dir, "init.pid")
        args = ["--bundle", options.bundle, "--pid-file", pid_file]
        if console_path:
            args += ["--console-socket", console_path]
        try:
            # One runtime process for create and start (``run --detach``):
            # each runtime call costs a Python start, and nothing needs doing
            # between the two. The pty master waits in the console socket.
            self.runtime.run("run", "--detach", *args, options.id, stdio=stdio)
            with open(pid_file) as f:
                self.pid = int(f.read())
            # Found now: at the exit the process is gone, not yet its cgroup.
            self.oom_file = oom.counter_file(self.pid)
            if console is not None:
                self.master = _receive_master(console)
        except BaseException:
            self._force_delete()
            if self.master >= 0:
                os.close(self.master)
                self.master = -1
            raise
        finally:
            _unlink(pid_file)

    def _force_delete(self) -> None:
        try:
            self.runtime.run("delete", "--force", self.options.id)
        except Error as exc:
            self.log("error", f"delete '{self.options.id}': {exc}")

    # -- output and stdin ----------------------------------------------------

    def _on_output(self, fd: int) -> None:
        if not self._read_output(fd):
            self.loop.unregister(fd)
        self._update_clients()

    def _read_output(self, fd: int) -> bool:
        """Read one chunk of FD into the output; False at its end."""
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            data = b""  # EIO: the pty's last slave holder is gone
        if not data:
            return False
        self.output.feed(self.outputs[fd], data)
        return True

    def _drain(self, to_end: bool) -> None:
        for fd in list(self.outputs):
            while True:
                try:
                    more = self._read_output(fd)
                except OSError:
                    more = False
                if not more or not _readable(fd):
                    break
            if to_end:
                self.loop.unregister(fd)
                os.close(fd)
                del self.outputs[fd]

    def _write_stdin(self, data: bytes) -> None:
        target = self.master if self.options.tty else self.stdin_fd
        if target < 0:
            return  # no stdin (or closed already): dropped, as Docker does
        self.stdin_pending += data
        self._flush_stdin()

    def _flush_stdin(self, events: int = 0) -> None:
        target = self.master if self.options.tty else self.stdin_fd
        while self.stdin_pending and target >= 0:
            try:
                del self.stdin_pending[:os.write(target, self.stdin_pending)]
            except BlockingIOError:
                break
            except OSError:
                self.stdin_pending.clear()  # EPIPE: the container closed its stdin
        waiting = bool(self.stdin_pending)
        if target >= 0 and not self.options.tty:
            if waiting and target not in self.client_masks:
                self.loop.register(target, OUT, self._flush_stdin)
                self.client_masks[target] = OUT
            elif not waiting and target in self.client_masks:
                self.loop.unregister(target)
                del self.client_masks[target]
        elif self.options.tty and self.master >= 0 and self.master in self.outputs:
            self.loop.modify(self.master, IN | (OUT if waiting else 0))
        if not waiting and self.stdin_close:
            self._close_stdin()
        self._update_clients()

    def _close_stdin(self) -> None:
        """stdin-once: the attached client closed its side; so do we."""
        if self.stdin_pending:
            self.stdin_close = True
            return
        self.stdin_close = False
        if self.stdin_fd >= 0:
            self.loop.unregister(self.stdin_fd)
            self.client_masks.pop(self.stdin_fd, None)
            os.close(self.stdin_fd)
            self.stdin_fd = -1

    # -- attached clients ----------------------------------------------------

    def _on_client(self, client: streams.Client, events: int) -> None:
        if events & OUT:
            client.send()
        if events & ERR:
            client.dead = True
        elif events & IN:
            try:
                data = client.sock.recv(1 << 16)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data:
                if client.stdin:
                    self._write_stdin(data)
            elif data == b"":
                self._client_eof(client)
        self._update_clients()

    def _client_eof(self, client: streams.Client) -> None:
        # Not with a tty, as dockerd: a terminal's user ends the input with
        # its own Ctrl-D, and a client that leaves (detach keys, a closed
        # window) leaves the shell running for the next attach.
        if client.stdin and self.options.stdin_once and not self.options.tty:
            self._close_stdin()
        client.stdin = False
        client.reading = False

    def _update_clients(self) -> None:
        for client in self.output.collect():
            self.loop.unregister(client.fd)
            self.client_masks.pop(client.fd, None)
            client.close()
        for client in self.output.clients:
            mask = (IN if client.reading and not self.stdin_pending
                    else 0) | (OUT if client.pending else 0)
            if self.client_masks.get(client.fd) != mask:
                self.loop.modify(client.fd, mask)
                self.client_masks[client.fd] = mask
        if self.finishing and not self.output.clients:
            self.loop.stopped = True

    # -- exits, restarts, the end --------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self._on_exit(status)

    def _on_exit(self, status: int) -> None:
        code = exit_code(status)
        self.pid = 0
        if self.kill_timer is not None:
            self.kill_timer.cancel()
        # The output first, then the exit: waiters (docker run, docker wait)
        # learn it before the runtime's delete, which takes a process.
        self._drain(to_end=True)
        self._end_stdio()
        self.output.end_run()
        self._update_clients()

        restart = self.options.restart.should_restart(
            code, self.state["restart_count"], self.stopped)
        oom_killed = oom.killed(self.oom_file)
        self.write_state(status="restarting" if restart else "exited", pid=0,
                         exit_code=code, finished_at=now(), oom_killed=oom_killed)
        # The events before the answer, so that they precede whatever the
        # waiter records next (the engine's "stop", say), as in Docker.
        if oom_killed:
            self.record_event("oom", {})
        self.record_event("die", {"exitCode": str(code)})
        self._answer_waiters()
        try:
            self.runtime.run("delete", self.options.id)
        except Error as exc:
            self.log("warning", f"delete '{self.options.id}': {exc}")
            self._force_delete()
        if restart:
            delay = self.backoff.next_delay(time.monotonic() - self.started)
            self.log("info", f"restart '{self.options.id}' in {delay:.1f} s")
            self.restart_timer = self.loop.call_later(delay, self._restart)
        else:
            self.finish()

    def _end_stdio(self) -> None:
        if self.stdin_fd >= 0:
            self.loop.unregister(self.stdin_fd)
            self.client_masks.pop(self.stdin_fd, None)
            os.close(self.stdin_fd)
            self.stdin_fd = -1
        self.master = -1  # closed with the outputs
        self.stdin_pending.clear()
        self.stdin_close = False

    def _restart(self) -> None:
        self.restart_timer = None
        count = self.state["restart_count"] + 1
        self.state["restart_count"] = count
        try:
            self.start_run()
        except Error as exc:
            self.log("error", f"restart '{self.options.id}': {exc}")
            self.write_state(status="exited", error=str(exc), exit_code=failure_code(exc))
            self._answer_waiters()
            self.finish()
            return
        self.record_event("restart", {"restartCount": str(count)})

    def _cancel_restart(self) -> None:
        """A stop while waiting to restart: the container stays exited."""
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None
        self.write_state(status="exited")
        self._answer_waiters()
        self.finish()

    def _answer_waiters(self) -> None:
        message = {"ok": True, "exit_code": self.state["exit_code"],
                   "oom_killed": self.state["oom_killed"]}
        for sock in self.waiters:
            answer(sock, message)
            sock.close()
        self.waiters.clear()

    def finish(self) -> None:
        """The container is gone for good: stop listening; end once clients have all."""
        self.finishing = True
        if self.listener is not None:
            self.loop.unregister(self.listener.fileno())
            self.listener.close()
            self.listener = None
            _unlink(self.sock_path)
        self.loop.call_later(FLUSH_GRACE, self._stop_loop)
        self._update_clients()

    def _stop_loop(self) -> None:
        self.loop.stopped = True

    def serve(self) -> None:
        """Run the loop until the container is gone for good, then clean up."""
        try:
            self.loop.run()
        finally:
            self.close()

    def close(self) -> None:
        for client in self.output.clients:
            client.close()
        for sock in self.waiters:
            sock.close()
        self.output.log.close()
        if self.listener is not None:
            self.listener.close()
            _unlink(self.sock_path)
        self.loop.close()
        self._reap_all()
        self._run_exit_command()

    def _run_exit_command(self) -> None:
        """Start --exit-command, detached: it outlives us (it may remove the
        container, and this shim's own directory with it)."""
        if not self.options.exit_command or not self.finishing:
            return
        try:
            os.posix_spawn(self.options.exit_command[0], self.options.exit_command,
                           dict(os.environ), setsid=True)
        except OSError as exc:
            self.log("warning", f"exit command: {exc}")

    def _reap_all(self) -> None:
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    return
            except ChildProcessError:
                return

def failure_code(exc: Exception) -> int:
    """Docker's exit code for a process that could not start: 127, 126 or 128."""
    text = str(exc).lower()
    if "not found" in text or "no such file" in text:
        return 127
    if "permission denied" in text:
        return 126
    return 128


def _listen(path: str) -> _socket.socket:
    _unlink(path)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise Error(f"listen on '{path}': {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def _receive_master(console: _socket.socket) -> int:
    """The pty master the container's init sent over the console socket."""
    import _struct

    console.settimeout(10)
    connection = _socket.socket(fileno=console._accept()[0])
    try:
        connection.settimeout(10)
        _, ancillary, _, _ = connection.recvmsg(4096, _socket.CMSG_SPACE(4))
    finally:
        connection.close()
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= 4:
            return _struct.unpack("i", data[:4])[0]
    raise Error("console socket: no pty master received")
