"""Network namespaces kept by bind mounts, as `ip netns` keeps them.

A namespace lives while a process is in it or a mount of its nsfs file
exists. We make one per container before the container exists (CNI ADD
needs it), so a mount keeps it: RUN/netns/ID, a bind mount of the new
namespace's ``/proc/self/task/TID/ns/net``.

How we make it without a fork: unshare(CLONE_NEWNET) applies to the calling
thread only (namespaces are per task), so a short-lived thread unshares,
brings its loopback up through a socket made in the new namespace (a socket
stays in the namespace it was made in), bind-mounts its own namespace file
and ends. The process's other threads never leave the host's namespace.

As iproute2 does for /run/netns, the directory is a mount of its own with
shared propagation: a mount namespace copied from the host afterwards (a
container's, before pivot_root drops the host tree) sees our unmount too,
and does not keep a removed namespace alive.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
import threading
from pathlib import Path

from corral import _syscalls

from .errors import NetworkError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def create(directory: Path, container_id: str) -> Path:
    """A new network namespace at DIRECTORY/ID with lo up; refused if it exists."""
    _share(directory)
    path = directory / container_id
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o444)
    except OSError as exc:
        raise NetworkError(f"create netns '{path}': {exc.strerror}") from exc
    os.close(fd)
    failure: list[BaseException] = []
    worker = threading.Thread(target=_unshare_and_mount, args=(path, failure),
                              name=f"netns-{container_id[:12]}")
    worker.start()
    worker.join()
    if failure:
        with contextlib.suppress(OSError):
            path.unlink()
        raise NetworkError(f"create netns '{path}': {failure[0]}") from failure[0]
    return path


def remove(directory: Path, container_id: str) -> None:
    """Unmount and delete DIRECTORY/ID; nothing if it is gone already."""
    path = directory / container_id
    if is_netns(path):
        try:
            _syscalls.umount2(str(path), _syscalls.MNT_DETACH)
        except OSError as exc:
            # EINVAL: no longer a mount point; ENOENT: no longer there at
            # all. Another releaser was first.
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise NetworkError(f"remove netns '{path}': {exc.strerror}") from exc
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def is_netns(path: Path | str) -> bool:
    """True if ``path`` is a mounted namespace file (not an empty leftover)."""
    # Every namespace file is on the one nsfs superblock: same st_dev.
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _unshare_and_mount(path: Path, failure: list[BaseException]) -> None:
    try:
        _syscalls.unshare(_syscalls.CLONE_NEWNET)
        _loopback_up()
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        _syscalls.mount(source, str(path), None, _syscalls.MS_BIND)
    except OSError as exc:
        failure.append(exc)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _share(directory: Path) -> None:
    """Make ``directory`` a shared mount of its own (once)."""
    directory.mkdir(parents=True, exist_ok=True)
    if _mount_point(directory):
        return
    try:
        _syscalls.mount(str(directory), str(directory), None, _syscalls.MS_BIND)
        _syscalls.mount(None, str(directory), None, _syscalls.MS_SHARED)
    except OSError as exc:
        raise NetworkError(f"share netns dir '{directory}': {exc.strerror}") from exc


def _mount_point(directory: Path) -> bool:
    wanted = os.path.realpath(directory)
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == wanted:
                return True
    return False
