"""The socket side of the shim: requests on shim.sock (docs/dev/manager.md).

Each connection sends one JSON line. ``state``, ``kill`` and ``resize`` are
answered at once and closed; ``wait`` and ``stop`` are kept and answered
when the run exits; ``attach`` turns into a ``streams.Client`` that lives
until the run's output has all been sent. Bytes a client sends after its
attach line, even in the same segment, are the container's stdin.
"""

from __future__ import annotations

import _socket

from . import streams
from .errors import Error, InvalidArgument
from .loop import IN
from .wire import MAX_REQUEST, encode, parse_request

TIOCSWINSZ = 0x5414


class Server:
    """Request handling, mixed into ``supervisor.Shim`` (whose state it uses)."""

    def _accept(self, events: int) -> None:
        while self.listener is not None:
            try:
                fd, _ = self.listener._accept()
            except OSError:
                return  # EAGAIN, or out of fds: the client sees its connect fail
            sock = _socket.socket(fileno=fd)
            sock.setblocking(False)
            buffer = bytearray()
            self.loop.register(fd, IN, lambda events, sock=sock, buffer=buffer:
                               self._on_request(sock, buffer))

    def _on_request(self, sock: _socket.socket, buffer: bytearray) -> None:
        try:
            data = sock.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buffer += data
        line, newline, rest = bytes(buffer).partition(b"\n")
        if not newline and data and len(buffer) < MAX_REQUEST:
            return
        self.loop.unregister(sock.fileno())
        try:
            if not newline:
                raise InvalidArgument("request: no complete line")
            if self._dispatch(sock, parse_request(line), rest):
                return  # the connection lives on (wait, stop, attach)
        except Error as exc:
            answer(sock, {"error": str(exc)})
        except (TypeError, ValueError) as exc:
            answer(sock, {"error": f"request: {exc}"})
        sock.close()

    def _dispatch(self, sock: _socket.socket, message: dict, rest: bytes) -> bool:
        """Serve MESSAGE; True when SOCK was kept (it will be answered later)."""
        op = message["op"]
        if op == "state":
            answer(sock, {"ok": True, **self.state})
            return False
        if op == "wait":
            return self._wait(sock)
        if op == "stop":
            return self._stop(sock, message)
        if op == "kill":
            self._kill(message)
            answer(sock, {"ok": True})
            return False
        if op == "resize":
            self._resize(message)
            answer(sock, {"ok": True})
            return False
        return self._attach(sock, message, rest)

    def _wait(self, sock: _socket.socket) -> bool:
        if self.state["status"] == "exited":
            self.waiters.append(sock)
            self._answer_waiters()
            return True
        self.waiters.append(sock)
        return True

    def _stop(self, sock: _socket.socket, message: dict) -> bool:
        signum = _signal_number(message.get("signal", 15))
        timeout = message.get("timeout", 10)
        self.stopped = True
        self.waiters.append(sock)
        if self.state["status"] == "restarting":
            self._cancel_restart()
        elif self.state["status"] == "exited":
            self._answer_waiters()
        elif self.pid:
            self._signal(signum)
            if timeout is not None and timeout >= 0:
                self.kill_timer = self.loop.call_later(float(timeout), self._escalate)
        return True

    def _escalate(self) -> None:
        if self.pid:
            self.log("info", f"stop '{self.options.id}': no exit after the timeout, "
                             "sending SIGKILL")
            self._signal(9)

    def _signal(self, signum: int) -> None:
        try:
            self.runtime.run("kill", self.options.id, str(signum))
        except Error as exc:
            self.log("warning", f"kill '{self.options.id}': {exc}")

    def _kill(self, message: dict) -> None:
        signum = _signal_number(message.get("signal", 9))
        stop = bool(message.get("stop", True))
        if stop:
            self.stopped = True
        if self.state["status"] == "restarting" and stop:
            self._cancel_restart()
            return
        if not self.pid:
            raise Error(f"kill '{self.options.id}': container not running")
        try:
            self.runtime.run("kill", self.options.id, str(signum))
        except Error as exc:
            raise Error(f"kill '{self.options.id}': {exc}") from exc

    def _resize(self, message: dict) -> None:
        if self.master < 0:
            raise Error(f"resize '{self.options.id}': "
                        + ("the container has no tty" if not self.options.tty
                           else "container not running"))
        height, width = int(message.get("height", 0)), int(message.get("width", 0))
        if not (0 < height < 65536 and 0 < width < 65536):
            raise InvalidArgument(f"resize '{self.options.id}': bad size {height}x{width}")
        import fcntl
        import struct

        fcntl.ioctl(self.master, TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def _attach(self, sock: _socket.socket, message: dict, rest: bytes) -> bool:
        if self.finishing:
            raise Error(f"attach '{self.options.id}': container not running")
        client = streams.Client(sock, stdin=bool(message.get("stdin")),
                                stdout=bool(message.get("stdout", True)),
                                stderr=bool(message.get("stderr", True)),
                                tty=self.options.tty)
        answer(sock, {"ok": True, "tty": self.options.tty})
        self.loop.register(client.fd, IN, lambda events: self._on_client(client, events))
        self.client_masks[client.fd] = IN
        self.output.add(client, bool(message.get("replay")))
        if rest and client.stdin:
            self._write_stdin(rest)
        self._update_clients()
        return True



def _signal_number(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgument(f"signal '{value}': not a signal number or name")
    if isinstance(value, str) and not value.isdigit():
        import _signal

        name = value.upper() if value.upper().startswith("SIG") else "SIG" + value.upper()
        number = getattr(_signal, name, None)
        if not isinstance(number, int):
            raise InvalidArgument(f"signal '{value}': unknown signal")
        return number
    number = int(value)
    if not 0 < number < 65:
        raise InvalidArgument(f"signal '{value}': out of range")
    return number


def answer(sock: _socket.socket, message: dict) -> None:
    # Answers are short; a client that does not read them loses them.
    try:
        sock.send(encode(message))
    except OSError:
        pass
