"""The client side of attach and exec: relaying a container's stream to
this terminal (or to our stdout and stderr) and our stdin to it.

The stream is the Docker API's hijacked stream: raw with a tty; without,
frames of an 8-byte header (stream number, three zero bytes, big-endian
length) and a payload.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import tty as ttymod
from collections.abc import Callable, Iterable, Iterator

from . import escape

_HEADER = struct.Struct(">BxxxL")


def _split(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole frames at the start of BUFFER, and what is left of it."""
    found, offset = [], 0
    while len(buffer) - offset >= _HEADER.size:
        stream, length = _HEADER.unpack_from(buffer, offset)
        end = offset + _HEADER.size + length
        if len(buffer) < end:
            break
        found.append((stream, buffer[offset + _HEADER.size:end]))
        offset = end
    return found, buffer[offset:]


def frames(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(stream, payload) of each frame in a multiplexed byte stream."""
    buffer = b""
    for chunk in chunks:
        found, buffer = _split(buffer + chunk)
        yield from found


class _Demux:
    """Feeds bytes of a multiplexed stream to stdout (1) and stderr (2)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.outputs = {1: sys.stdout.buffer, 2: sys.stderr.buffer}

    def feed(self, data: bytes) -> None:
        found, self.buffer = _split(self.buffer + data)
        for stream, payload in found:
            out = self.outputs.get(stream, sys.stdout.buffer)
            out.write(payload)
            out.flush()


def relay(sock: socket.socket, *, tty: bool, stdin: bool,
          resize: Callable[[int, int], None] | None = None,
          detach_keys: str = escape.DEFAULT) -> bool:
    """Copy the stream to our stdout/stderr and (with ``stdin``) our stdin
    to the stream, until the other side closes it, or until the detach keys
    are typed (with a tty and stdin): whether they were. With a tty and our
    stdin a terminal, the terminal is in raw mode meanwhile and its size
    follows SIGWINCH.

    Raises:
        ValueError: ``detach_keys`` names no key sequence.
    """
    watcher = escape.Watcher(escape.parse(detach_keys)) if tty and stdin else None
    raw = tty and stdin and os.isatty(0)
    with contextlib.ExitStack() as stack:
        if raw:
            stack.enter_context(_raw_terminal(0))
        if tty and resize is not None and os.isatty(1):
            stack.enter_context(_follow_size(1, resize))
        detached = _pump(sock, tty=tty, stdin=stdin, watcher=watcher)
    if detached:
        print("read escape sequence", file=sys.stderr)
    return detached


def _pump(sock: socket.socket, *, tty: bool, stdin: bool,
          watcher: escape.Watcher | None) -> bool:
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "stream")
    if stdin:
        selector.register(0, selectors.EVENT_READ, "stdin")
    demux = None if tty else _Demux()
    out = sys.stdout.buffer
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "stdin":
                    data = os.read(0, 65536)
                    if watcher is not None and data:
                        data, detached = watcher.feed(data)
                        if detached:
                            with contextlib.suppress(OSError):
                                sock.sendall(data)
                            return True
                        if not data:
                            continue
                    try:
                        if data:
                            sock.sendall(data)
                        else:
                            sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        data = b""  # the other side is done with our input
                    if not data:
                        selector.unregister(0)
                    continue
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    return False
                if not data:
                    return False
                if demux is None:
                    out.write(data)
                    out.flush()
                else:
                    demux.feed(data)
    finally:
        selector.close()


@contextlib.contextmanager
def _raw_terminal(fd: int):
    saved = termios.tcgetattr(fd)
    # TCSANOW, not setraw's default TCSAFLUSH: what was typed ahead, while
    # the container started, is kept for it.
    ttymod.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size(fd: int = 1) -> tuple[int, int] | None:
    """(lines, columns) of the terminal on ``fd``; None for no terminal, or one
    that has no size yet (0x0: a fresh pty), which docker does not send."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    if not size.lines and not size.columns:
        return None
    return size.lines, size.columns


@contextlib.contextmanager
def _follow_size(fd: int, resize: Callable[[int, int], None]):
    def on_winch(signum, frame) -> None:
        size = terminal_size(fd)
        if size:
            with contextlib.suppress(Exception):
                resize(*size)

    previous = signal.signal(signal.SIGWINCH, on_winch)
    on_winch(signal.SIGWINCH, None)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)
