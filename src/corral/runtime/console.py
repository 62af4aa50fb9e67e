"""The container's terminal: a pty made inside it, its master sent out.

With ``process.terminal`` the init (or exec'd) process opens /dev/ptmx inside
the container, so the pty belongs to the container's devpts instance, makes
the slave its stdio and controlling terminal, and passes the master to the
caller over the ``--console-socket`` unix socket with SCM_RIGHTS, as runc
does. The message text is the pty's name, which callers ignore.

Everything it needs is imported at the top: after pivot_root the host's
Python library is out of reach, so an import there would fail.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import struct

from corral import _syscalls as sc

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414


class Pty:
    def __init__(self, master: int, slave_path: str) -> None:
        self.master = master
        self.slave_path = slave_path


def open_pty(console_size: dict | None) -> Pty:
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    pty = Pty(master, f"/dev/pts/{number}")
    if console_size:
        set_size(master, console_size.get("height", 0), console_size.get("width", 0))
    return pty


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def mount_console(pty: Pty) -> None:
    """Bind the slave onto /dev/console, as the spec asks for a terminal."""
    try:
        os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    except OSError:
        pass
    sc.mount(pty.slave_path, "/dev/console", None, sc.MS_BIND)


def send_master(socket_fd: int, pty: Pty) -> None:
    sock = _socket.socket(fileno=socket_fd)
    try:
        sock.sendmsg(
            [pty.slave_path.encode()],
            [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", pty.master))],
        )
    finally:
        sock.detach()
        os.close(socket_fd)
    os.close(pty.master)


def receive_master(sock) -> int:
    """The pty master sent over SOCK by send_master (for ``run``)."""
    _, ancillary, _, _ = sock.recvmsg(4096, _socket.CMSG_SPACE(4))
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= 4:
            return struct.unpack("i", data[:4])[0]
    raise OSError("console socket: no pty master received")


def become_controlling(slave_path: str) -> None:
    """Make the pty slave stdio and the controlling terminal of this session."""
    slave = os.open(slave_path, os.O_RDWR)
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
