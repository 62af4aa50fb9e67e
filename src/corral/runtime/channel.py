"""What the runtime's parent hands its children: a config by fork, then messages.

The parent forks stage 1 (see init.py) early, before it has made the
container's cgroup or imported what only it needs, so that the child's own
imports run on the other core meanwhile. This module is all the two sides
share, and it stays light on purpose: the parent imports it before the fork,
and nothing here may pull in ctypes or ``_syscalls`` (init.py imports those,
in the child only).

``InitConfig`` and ``ExecConfig`` are handed over by fork, nothing
serialized. What the parent learns after the fork (init's pid, the cgroup)
goes over a ``Channel``: a pair of close-on-exec pipes carrying one JSON
object per line. A child that fails sends ``{"error": message}`` and exits
(``run_child``); the parent raises it.
"""

from __future__ import annotations

import os

from corral import _json as json

from .errors import Error, SetupError


class Channel:
    """One end of the parent/child pipes: JSON objects, one per line."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buffer = b""

    def send(self, message: dict) -> None:
        os.write(self.write_fd, json.dumps(message).encode() + b"\n")

    def recv(self) -> dict | None:
        """The next message, or None when the other end has closed."""
        while b"\n" not in self._buffer:
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def expect(self, key: str) -> dict:
        message = self.recv()
        if message is None:
            raise SetupError("the runtime's parent process went away")
        if key not in message:
            raise SetupError(f"unexpected message {message!r}, wanted {key!r}")
        return message

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def describe(exc: BaseException) -> str:
    """One line for the parent: our own message, or the OS error and its path."""
    if isinstance(exc, Error):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" '{exc.filename}'" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"


def run_child(channel: Channel, body, *args) -> None:
    """Run BODY in a forked child; report its failure; never return."""
    try:
        body(channel, *args)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        try:
            channel.send({"error": describe(exc)})
        except OSError:
            pass
        os._exit(1)
    os._exit(0)


class InitConfig:
    """Everything init needs at fork time (the cgroup comes later, with "setup")."""

    def __init__(self, *, container_id: str, spec: dict, bundle: str, rootfs_path: str,
                 state_dir_fd: int, console_fd: int, no_pivot: bool,
                 preserve_fds: int) -> None:
        self.container_id = container_id
        self.spec = spec
        self.bundle = bundle
        self.rootfs_path = rootfs_path
        self.state_dir_fd = state_dir_fd
        self.console_fd = console_fd
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds


class ExecConfig:
    """Everything a process joining a running container needs, handed over by fork."""

    def __init__(self, *, proc: dict, spec: dict, namespace_paths: dict[str, str],
                 in_userns: bool, console_fd: int, preserve_fds: int) -> None:
        self.proc = proc
        self.spec = spec
        self.namespace_paths = namespace_paths
        self.in_userns = in_userns
        self.console_fd = console_fd
        self.preserve_fds = preserve_fds
