"""Mount specs and performing them (containerd's ``mount.Mount`` model).

Snapshotters only *describe* mounts, as ``Mount`` values; this module is the
one place that turns them into mount(2) calls (through ``corral._syscalls``),
so snapshotters stay testable without root.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import _syscalls
from .errors import FailedPrecondition, InvalidArgument, NotSupported


@dataclass(frozen=True)
class Mount:
    """One mount: ``type`` "bind" or a filesystem type, its source and options.

    Options are those of mount(8): flag words ("ro", "rbind", "nosuid") and
    filesystem data ("lowerdir=...").
    """

    type: str
    source: str
    options: tuple[str, ...]


_FLAGS = {
    "ro": _syscalls.MS_RDONLY,
    "rw": 0,
    "nosuid": _syscalls.MS_NOSUID,
    "nodev": _syscalls.MS_NODEV,
    "noexec": _syscalls.MS_NOEXEC,
    "noatime": _syscalls.MS_NOATIME,
    "relatime": _syscalls.MS_RELATIME,
    "bind": _syscalls.MS_BIND,
    "rbind": _syscalls.MS_BIND | _syscalls.MS_REC,
}
# mount(2) copies at most one page of filesystem data.
_DATA_LIMIT = 4095
# unmount retries EBUSY this many times, 20 ms apart, before a lazy detach.
_BUSY_RETRIES = 10


def mount_all(mounts: Sequence[Mount], target: Path) -> None:
    """Mount ``mounts`` on ``target`` in order (each over the one before).

    Raises:
        InvalidArgument: options too long for the kernel.
        NotSupported: the kernel lacks the filesystem type.
        FailedPrecondition: the mount failed; the message has the kernel's cause.
    """
    for mount in mounts:
        _mount_one(mount, str(target))


def _split(options: tuple[str, ...]) -> tuple[int, str]:
    flags = 0
    data = []
    for option in options:
        flag = _FLAGS.get(option)
        if flag is None:
            data.append(option)
        else:
            flags |= flag
    return flags, ",".join(data)


def _mount_one(mount: Mount, target: str) -> None:
    flags, data = _split(mount.options)
    if len(data) > _DATA_LIMIT:
        raise InvalidArgument(f"mount {mount.type} on '{target}': options are "
                              f"{len(data)} bytes, more than a page")
    try:
        if flags & _syscalls.MS_BIND:
            _bind(mount.source, target, flags)
        else:
            _syscalls.mount(mount.source, target, mount.type, flags, data or None)
    except OSError as exc:
        cls = NotSupported if exc.errno == errno.ENODEV else FailedPrecondition
        raise cls(f"mount {mount.type} '{mount.source}' on '{target}': "
                  f"{exc.strerror}") from exc


def _bind(source: str, target: str, flags: int) -> None:
    # A bind mount ignores MS_RDONLY and the other per-mount flags at first:
    # they take effect with a remount of the new bind mount.
    bind = _syscalls.MS_BIND | (flags & _syscalls.MS_REC)
    _syscalls.mount(source, target, None, bind)
    rest = flags & ~(_syscalls.MS_BIND | _syscalls.MS_REC)
    if rest:
        try:
            _syscalls.mount(None, target, None,
                            _syscalls.MS_BIND | _syscalls.MS_REMOUNT | rest)
        except OSError:
            _syscalls.umount2(target, _syscalls.MNT_DETACH)
            raise


def unmount(target: Path) -> None:
    """Unmount ``target``, every mount stacked on it; nothing if none.

    A busy mount is retried for a short while and then detached lazily
    (MNT_DETACH): it goes away when its last user does.

    Raises:
        FailedPrecondition: umount2 failed otherwise.
    """
    path = str(target)
    busy = 0
    while True:
        try:
            _syscalls.umount2(path, _syscalls.UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return  # not (or no longer) a mount point
            if exc.errno != errno.EBUSY:
                raise FailedPrecondition(f"unmount '{path}': {exc.strerror}") from exc
            busy += 1
            if busy <= _BUSY_RETRIES:
                time.sleep(0.02)
                continue
            _detach(path)
            return


def _detach(path: str) -> None:
    try:
        _syscalls.umount2(path, _syscalls.MNT_DETACH | _syscalls.UMOUNT_NOFOLLOW)
    except OSError as exc:
        raise FailedPrecondition(f"unmount '{path}': {exc.strerror}") from exc


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted at ``path``, from /proc/self/mountinfo.

    ``os.path.ismount`` cannot tell: a bind mount from the same filesystem
    has the same device number as its parent directory.
    """
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with space, tab, newline and
            # backslash octal-escaped.
            point = line.split(b" ", 5)[4].decode(errors="surrogateescape")
            if _unescape(point) == target:
                return True
    return False


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return (text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))
