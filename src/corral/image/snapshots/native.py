"""The native snapshotter: every active snapshot is a full copy of its
parent's tree (containerd's snapshots/native), for filesystems where
overlayfs does not work.

The copy is our own, in Python, and keeps everything a layer can hold:
hard links (as links), device nodes, fifos, symlinks, owners, modes with
setuid bits, xattrs and mtimes; file data moves in the kernel with
copy_file_range(2), or sendfile(2) where that is refused. A view needs no
copy: it is a read-only bind of its parent's tree.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..mount import Mount
from .base import BaseSnapshotter, Record

_COPY_CHUNK = 1 << 30


class NativeSnapshotter(BaseSnapshotter):
    """Snapshots as plain directory trees, each a copy of its parent."""

    name = "native"

    def _populate(self, fs: Path, parents: list[Record], *, readonly: bool) -> None:
        if parents and not readonly:
            copy_tree(self.fs_path(parents[0]), fs)

    def _mounts(self, record: Record, parents: list[Record]) -> list[Mount]:
        if record.kind == "view":
            tree = self.fs_path(parents[0]) if parents else self.fs_path(record)
            return [Mount("bind", str(tree), ("rbind", "ro"))]
        return [Mount("bind", str(self.fs_path(record)), ("rbind", "rw"))]


def copy_tree(source: Path, target: Path) -> None:
    """Copy the tree ``source`` into the existing empty directory ``target``,
    with every attribute, hard links kept as links, symlinks not followed."""
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = []
    _copy_children(str(source), str(target), links, dirs)
    root = os.lstat(source)
    _attributes(str(source), str(target), root)
    dirs.append((str(target), root))
    # Last, and children first: writing into a directory changes its mtime.
    for path, st in dirs:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_children(source: str, target: str, links: dict[tuple[int, int], str],
                   dirs: list[tuple[str, os.stat_result]]) -> None:
    with os.scandir(source) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            to = os.path.join(target, entry.name)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(to, 0o700)
                _copy_children(entry.path, to, links, dirs)
                _attributes(entry.path, to, st)
                dirs.append((to, st))
                continue
            if st.st_nlink > 1:
                first = links.setdefault((st.st_dev, st.st_ino), to)
                if first != to:
                    os.link(first, to, follow_symlinks=False)
                    continue
            _copy_node(entry.path, to, st)
            _attributes(entry.path, to, st)
            os.utime(to, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_node(source: str, target: str, st: os.stat_result) -> None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        _copy_file(source, target, st.st_size)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        os.mknod(target, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    else:
        raise OSError(errno.EOPNOTSUPP, "cannot copy a socket", source)


def _copy_file(source: str, target: str, size: int) -> None:
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
        try:
            _copy_data(src, dst, size)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_data(src: int, dst: int, size: int) -> None:
    left = size
    use_range = True
    while left > 0:
        if use_range:
            try:
                done = os.copy_file_range(src, dst, min(left, _COPY_CHUNK))
            except OSError as exc:
                # EXDEV (old kernels), EINVAL or ENOSYS: sendfile moves it too.
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                                     errno.EOPNOTSUPP):
                    raise
                use_range = False
                continue
        else:
            done = os.sendfile(dst, src, None, min(left, _COPY_CHUNK))
        if done == 0:
            break  # the file shrank under us; what is there is copied
        left -= done


def _attributes(source: str, target: str, st: os.stat_result) -> None:
    """Owner, then mode (chown clears setuid), then xattrs (chown clears
    security.capability)."""
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    is_link = stat.S_ISLNK(st.st_mode)
    if not is_link:
        os.chmod(target, stat.S_IMODE(st.st_mode))
    for name in os.listxattr(source, follow_symlinks=False):
        value = os.getxattr(source, name, follow_symlinks=False)
        os.setxattr(target, name, value, follow_symlinks=False)
