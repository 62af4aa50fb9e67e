"""Attach and resize of containers, and the relay behind every stream the
engine hands out (docs/dev/manager.md, "Streams").

``Engine.attach`` and a non-detached ``exec_start`` return one end of a
socketpair; a thread of the engine's (a ``Pump``) copies between the other
end and the process side: the shim's attach socket (whose bytes are framed
already), or an exec's pipes or pty master. So the caller gets a plain
socket at once, before anything runs: ``docker run`` and the daemonless
``corral run`` attach before they start the container, and the attach is
made when the container's shim is up, with ``replay`` so that output
written between the start and the attach is not lost.

A pump ends when the process side has ended and its output is delivered,
or when the caller has closed its end (``POLLHUP``, which a half-close does
not raise: ``shutdown(SHUT_WR)`` only closes the process's stdin).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from ..shim import protocol
from ..shim.errors import Error as ShimError
from .errors import Conflict, Error, InvalidArgument, NotFound

LIMIT = 1 << 20  # bytes buffered one way before the pump stops reading
_CHUNK = 1 << 16
_IN, _OUT = select.POLLIN, select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
ATTACH_WAIT = 300.0  # seconds an attach waits for a container to start
SETTLE = 2.0  # seconds a removal waits for attaches to take a missed run
_SHIM_TIMEOUT = 10.0


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(the engine's end, the caller's end), both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)


class Pump:
    """Copies between ``client`` (the engine's end of a socketpair) and a
    process, in the calling thread.

    Args:
        client: the socket whose peer the caller holds.
        sources: fds to read the process's output from, each with the stream
            number to frame its bytes with (1, 2), or None to pass them raw.
        sink: the fd the client's bytes go to (-1: they are dropped).
        close_sink: called once when the client has half-closed and all its
            bytes are written (closes the process's stdin).
        keep_reading: once the client is gone, go on reading (and dropping)
            the output until it ends, so the process never blocks on a full
            pipe (an exec runs on when its client leaves).
    """

    def __init__(self, client: socket.socket, sources: dict[int, int | None], *,
                 sink: int = -1, close_sink: Callable[[], None] | None = None,
                 keep_reading: bool = False) -> None:
        self.client = client
        self.client.setblocking(False)
        self.sources = dict(sources)
        self.sink = sink
        self.close_sink = close_sink
        self.keep_reading = keep_reading
        self.out = bytearray()
        self.into = bytearray()
        self.client_eof = False
        self.client_gone = False
        for fd in {*self.sources, sink} - {-1}:
            os.set_blocking(fd, False)

    def send(self, data: bytes) -> None:
        """Queue DATA for the client (logs, an error message), before output."""
        self.out += data

    def run(self, exited: Callable[[], bool] | None = None) -> None:
        """Copy until done. ``exited`` tells that the process side has ended:
        what its fds hold then is read, and they are not waited on for an
        end of file a leftover child may keep from coming."""
        poller = select.poll()
        registered: dict[int, int] = {}
        drained = False
        while not self._finished():
            masks = self._masks()
            for fd in [fd for fd in registered if fd not in masks]:
                poller.unregister(fd)
                del registered[fd]
            for fd, mask in masks.items():
                if registered.get(fd) != mask:
                    poller.register(fd, mask)
                    registered[fd] = mask
            for fd, event in poller.poll(50 if exited and not drained else None):
                self._handle(fd, event)
            if exited is not None and not drained and exited():
                drained = True
                self._drain()

    def _finished(self) -> bool:
        if self.client_gone:
            return not (self.keep_reading and self.sources)
        return not self.sources and not self.out

    def _masks(self) -> dict[int, int]:
        masks: dict[int, int] = {}
        if not self.client_gone:
            wants_input = not self.client_eof and len(self.into) < LIMIT
            masks[self.client.fileno()] = ((_IN if wants_input else 0)
                                           | (_OUT if self.out else 0))
        for fd in self.sources:
            if self.client_gone or len(self.out) < LIMIT:
                masks[fd] = masks.get(fd, 0) | _IN
        if self.into and self.sink >= 0:
            masks[self.sink] = masks.get(self.sink, 0) | _OUT
        return masks

    def _handle(self, fd: int, event: int) -> None:
        if fd == self.client.fileno():
            if event & _OUT:
                self._to_client()
            if event & _IN:
                self._from_client()
            elif event & _GONE:
                self._lose_client()
            return
        if fd in self.sources and event & (_IN | _GONE):
            self._read_source(fd)
        if fd == self.sink and event & (_OUT | _GONE):
            self._write_sink()

    def _lose_client(self) -> None:
        self.client_gone = True
        self.out.clear()
        self.into.clear()

    def _to_client(self) -> None:
        try:
            sent = self.client.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self._lose_client()
            return
        del self.out[:sent]

    def _from_client(self) -> None:
        try:
            data = self.client.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self._lose_client()
            return
        if not data:
            self.client_eof = True
        elif self.sink >= 0:
            self.into += data
            self._write_sink()
        self._maybe_close_sink()

    def _write_sink(self) -> None:
        try:
            del self.into[:os.write(self.sink, self.into)]
        except BlockingIOError:
            return
        except OSError:
            # The process closed its stdin: what it did not take is dropped.
            self.into.clear()
            self.sink = -1
        self._maybe_close_sink()

    def _maybe_close_sink(self) -> None:
        if self.client_eof and not self.into and self.close_sink is not None:
            close, self.close_sink = self.close_sink, None
            self.sink = -1
            with contextlib.suppress(OSError):
                close()

    def _read_source(self, fd: int) -> bool:
        """Read one chunk of FD; False once it has ended (or would block)."""
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""  # EIO: the last holder of a pty's slave is gone
        if not data:
            del self.sources[fd]
            if fd == self.sink:
                self.sink = -1
            return False
        if not self.client_gone:
            stream = self.sources[fd]
            self.out += data if stream is None else protocol.frame(stream, data)
            self._to_client()
        return True

    def _drain(self) -> None:
        for fd in list(self.sources):
            while fd in self.sources and self._read_source(fd):
                pass
            self.sources.pop(fd, None)


def _poll_delay(waited: float) -> float:
    # A start by this process wakes the attach at once (run_started); the
    # polls are for a start by another process (corral beside corrald).
    return 0.02 if waited < 10 else 0.1


def _framed(entries, tty: bool) -> bytes:
    return b"".join(data if tty else protocol.frame(stream, data)
                    for stream, data in entries)


class Attaching:
    """Mixin of Engine: ``attach`` and ``resize`` of containers."""

    _closing = False

    def attach(self, ref: str, *, stdin: bool = False, stdout: bool = True,
               stderr: bool = True, logs: bool = False, stream: bool = True):
        """``POST /containers/{id}/attach``: a socket in the hijacked-stream
        format, returned at once.

        A running container's new output follows (with ``logs``, its past log
        first). One not running yet is waited for (ATTACH_WAIT seconds at
        most, or until it is removed or the socket closed), then attached to
        with its output from the start of the run.

        Raises:
            NotFound: no such container.
        """
        container = self.resolve(ref)
        tty = bool(container.config["Tty"])
        since = time.time()
        ours, theirs = socket_pair()
        try:
            past = (_framed(self.logs(container.id, stdout=stdout, stderr=stderr), tty)
                    if logs else b"")
            state = self.state(container)
            shim = None
            if stream and state.running:
                shim = self._attach_shim(container.id, stdin, stdout, stderr, False)
            waiting = stream and not state.running
        except BaseException:
            ours.close()
            theirs.close()
            raise
        options = {"stdin": stdin, "stdout": stdout, "stderr": stderr, "tty": tty,
                   "since": since, "started_at": state.started_at}
        threading.Thread(target=self._attached, name=f"attach-{container.id[:12]}",
                         args=(container.id, ours, shim if not waiting else None, past,
                               waiting, options), daemon=True).start()
        return theirs

    def _attach_shim(self, container_id: str, stdin: bool, stdout: bool, stderr: bool,
                     replay: bool):
        """The shim's attach socket, or None when the run is over."""
        try:
            return protocol.attach(self._socket(container_id), stdin=stdin, stdout=stdout,
                                   stderr=stderr, replay=replay, timeout=_SHIM_TIMEOUT)
        except (ShimError, OSError):
            # OSError: a reset, when the shim stops listening with our
            # connection not yet accepted (the run is over).
            return None

    def _attached(self, container_id: str, ours: socket.socket, shim, past: bytes,
                  waiting: bool, options: dict) -> None:
        try:
            if waiting:
                shim, past = self._await_run(container_id, ours, past, options)
            self._pump_shim(ours, shim, past, options["stdin"])
        except Exception:  # a thread's error has nobody to go to: end the stream
            import logging

            logging.getLogger(__name__).exception("attach '%s'", container_id)
        finally:
            if shim is not None:
                shim.close()
            ours.close()

    def _pump_shim(self, ours: socket.socket, shim, past: bytes, stdin: bool) -> None:
        if shim is None:
            pump = Pump(ours, {})
        else:
            fd = shim.fileno()
            pump = Pump(ours, {fd: None}, sink=fd if stdin else -1,
                        close_sink=lambda: shim.shutdown(socket.SHUT_WR))
        pump.send(past)
        pump.run()

    def _settle_attaches(self, container_id: str, state) -> None:
        """Before a removal deletes the log: let this process's attaches that
        wait on the container take the run they missed (SETTLE s at most)."""
        deadline = time.monotonic() + SETTLE
        with self._attach_cond:
            while any(started != state.started_at
                      for started in self._attaches.get(container_id, ())):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or state.running:
                    return
                self._attach_cond.wait(remaining)

    def _await_run(self, container_id: str, ours: socket.socket, past: bytes,
                   options: dict):
        with self._attach_cond:
            self._attaches.setdefault(container_id, []).append(options["started_at"])
        try:
            return self._find_run(container_id, ours, past, options)
        finally:
            with self._attach_cond:
                waiting = self._attaches[container_id]
                waiting.remove(options["started_at"])
                if not waiting:
                    del self._attaches[container_id]
                self._attach_cond.notify_all()

    def _find_run(self, container_id: str, ours: socket.socket, past: bytes,
                  options: dict):
        """Wait for the container's next run; (its shim's socket, past bytes).

        The shim listens before it starts the container, so an attach made
        as soon as it does, with replay, misses nothing. A run that has
        ended before we got there is taken from the log instead.
        """
        begun = time.monotonic()
        watcher = select.poll()
        watcher.register(ours.fileno(), 0)  # POLLHUP: the caller closed its end
        while not watcher.poll(0):
            with self._started:
                self._started.wait(_poll_delay(time.monotonic() - begun))
            if self._closing or time.monotonic() - begun > ATTACH_WAIT:
                break
            try:
                container = self.records.get(container_id)
            except NotFound:
                return None, past
            if container.mark != "created":
                return None, past
            shim = self._attach_shim(container_id, options["stdin"], options["stdout"],
                                     options["stderr"], True)
            if shim is not None:
                return shim, past
            state = self.state(container)
            if not state.running and state.started_at != options["started_at"]:
                missed = self.logs(container_id, stdout=options["stdout"],
                                   stderr=options["stderr"], since=options["since"])
                return None, past + _framed(missed, options["tty"])
        return None, past

    def end_attaches(self, timeout: float = 2.0) -> None:
        """Before the engine closes: this process's attaches that still wait
        for a run give up, and are waited for (SQLite closed under a thread
        that reads it crashed the CLI after a failed ``run --rm``)."""
        self._closing = True
        self.run_started("")
        deadline = time.monotonic() + timeout
        with self._attach_cond:
            while self._attaches and time.monotonic() < deadline:
                self._attach_cond.wait(0.05)

    def run_started(self, container_id: str) -> None:
        """Wake this process's attaches waiting for a run (of any container:
        each looks at its own)."""
        with self._started:
            self._started.notify_all()

    def resize(self, ref: str, *, height: int, width: int) -> None:
        """``POST /containers/{id}/resize``: the size of the container's pty.

        Raises:
            Conflict: not running, or it has no tty. InvalidArgument: a size
            out of range.
        """
        container, _ = self._running(ref)
        if not (0 < height < 65536 and 0 < width < 65536):
            raise InvalidArgument(f"resize container '{container.id}': bad size "
                                  f"{height}x{width}")
        try:
            protocol.request(self._socket(container.id),
                             {"op": "resize", "height": height, "width": width},
                             _SHIM_TIMEOUT)
        except ShimError as exc:
            if not self.state(self.records.get(container.id)).running:
                raise Conflict(f"Container {container.id} is not running") from None
            if "no tty" in str(exc):
                raise Conflict(f"resize container '{container.id}': the container has "
                               f"no tty") from None
            raise Error(f"resize container '{container.id}': {exc}") from exc


__all__ = ["ATTACH_WAIT", "Attaching", "Pump", "socket_pair"]
