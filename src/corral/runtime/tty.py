"""Relaying a container's terminal when the caller gave no console socket.

``run`` and ``exec`` without ``--console-socket`` act as their own console
socket: the container sends its pty master over a socketpair, and we copy
bytes between our stdin/stdout and that master until the container closes
its side, with our terminal in raw mode and its size passed on.
"""

from __future__ import annotations

import os
import select
import signal

from .console import receive_master, set_size


class Relay:
    def __init__(self) -> None:
        import _socket

        parent, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._parent = parent
        self.child_end = child.detach()
        self.master = -1

    def receive(self) -> None:
        """Take the pty master the container sent."""
        os.close(self.child_end)
        self.child_end = -1
        self.master = receive_master(self._parent)
        self._parent.close()
        self._copy_size()

    def _copy_size(self) -> None:
        if os.isatty(0):
            size = os.get_terminal_size(0)
            set_size(self.master, size.lines, size.columns)

    def run_until_exit(self, pid: int) -> None:
        saved = None
        if os.isatty(0):
            import termios
            import tty

            saved = termios.tcgetattr(0)
            tty.setraw(0)
            signal.signal(signal.SIGWINCH, lambda signum, frame: self._copy_size())
        try:
            self._pump()
        finally:
            if saved is not None:
                import termios

                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            os.close(self.master)

    def _pump(self) -> None:
        sources = [self.master, 0]
        while True:
            try:
                readable, _, _ = select.select(sources, [], [])
            except InterruptedError:
                continue
            if self.master in readable:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""  # EIO: the last holder of the slave is gone
                if not data:
                    return
                _write_all(1, data)
            if 0 in readable:
                data = os.read(0, 65536)
                if not data:
                    sources.remove(0)
                else:
                    _write_all(self.master, data)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]
