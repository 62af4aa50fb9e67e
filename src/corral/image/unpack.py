"""Applying one layer: a tar "changeset" onto a snapshot (OCI image spec,
layer.md, "Applying Changesets" and "Whiteouts").

``apply_layer`` reads the layer blob as stored, decompresses it as a stream,
hashes the uncompressed tar (that hash is the layer's diff_id), and writes
each entry into ``target``, a directory that already shows the merged lower
layers. Whiteouts are therefore applied by deleting what they name.

Layers are hostile input. Every entry is written relative to a pinned fd of
``target``: parent directories are opened with openat2(2) RESOLVE_IN_ROOT, so
a symlink planted by an earlier entry or a lower layer resolves inside
``target`` as it would inside the container, and the last component is made
with *at calls that never follow a symlink. A name with a ``..`` component is
refused. The stream itself, decompressed, hashed and split into tar
entries, comes from tarstream.py.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import _syscalls
from .digest import Digest
from .errors import LayerError
from .tarstream import Entry, Prefetch, TarReader, clean_name, decompressor

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_WHITEOUT = b".wh."
_OPAQUE = b".wh..wh..opq"
_RESOLVE = _syscalls.RESOLVE_IN_ROOT | _syscalls.RESOLVE_NO_MAGICLINKS
_DIR_FLAGS = _syscalls.O_PATH | os.O_DIRECTORY
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Open parent fds kept at once; a layer's entries come grouped by directory,
# so a small cache saves nearly every openat2.
_CACHE_LIMIT = 128


@dataclass(frozen=True)
class Applied:
    """What ``apply_layer`` read: the layer's diff_id, size and entry count."""

    diff_id: Digest
    size: int
    entries: int


def apply_layer(
    target: Path, stream: BinaryIO, compression: str | None, *, what: str
) -> Applied:
    """Apply the layer blob read from ``stream`` onto the directory ``target``.

    Args:
        target: the merged view of the lower layers (a mounted snapshot).
        stream: the blob as stored, compressed as ``compression`` says.
        compression: "gzip", "zstd" or None.
        what: how errors name the layer (its digest, usually).

    Returns:
        The diff_id (sha256 of the whole uncompressed tar), its size in bytes
        and the number of entries; the caller checks the diff_id against the
        image config.

    Raises:
        LayerError: a broken stream, a truncated or malformed tar, or an entry
            that cannot be applied (the message names it). ``target`` may be
            partly written; the caller throws the snapshot away.
    """
    try:
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LayerError(f"apply layer '{what}': open '{target}': "
                         f"{exc.strerror}") from exc
    writer = _Writer(root_fd, what)
    prefetch = Prefetch(decompressor(stream, compression, what))
    reader = TarReader(prefetch, what)
    try:
        count = 0
        while (entry := reader.next()) is not None:
            count += 1
            _apply_entry(writer, entry, reader)
        _apply_entry(writer, None, reader)
        reader.drain()
    finally:
        prefetch.close()
        writer.close()
    return Applied(Digest("sha256", prefetch.hasher.hexdigest()), reader.size, count)


def _apply_entry(writer: _Writer, entry: Entry | None, reader: TarReader) -> None:
    """One entry (None: the closing step), its OS errors named after it."""
    try:
        if entry is None:
            writer.finish()
        else:
            writer.apply(entry, reader)
    except (OSError, ValueError, OverflowError) as exc:
        # OverflowError: ids, times or device numbers too big for the kernel.
        name = "" if entry is None else os.fsdecode(entry.name)
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        if entry is None:
            raise LayerError(f"apply layer '{writer.what}': directory times: "
                             f"{cause}") from exc
        raise LayerError(f"apply layer '{writer.what}': entry '{name}': {cause}",
                         entry=name) from exc


# --- writing entries ---

class _Writer:
    """Writes entries below a pinned root fd; never outside it."""

    def __init__(self, root_fd: int, what: str) -> None:
        self.root_fd = root_fd
        self.what = what
        self.created: set[bytes] = set()
        self.dir_times: dict[bytes, int] = {}
        self._parents: dict[bytes, int] = {}
        self._stale: list[int] = []
        self._ids = (os.geteuid(), os.getegid())

    def close(self) -> None:
        self._forget()
        self._close_stale()
        os.close(self.root_fd)

    def apply(self, entry: Entry, reader: TarReader) -> None:
        if self._stale:
            self._close_stale()
        name = clean_name(entry.name)
        if not name:
            return self._root_entry(entry, reader)
        parent, _, base = name.rpartition(b"/")
        if base.startswith(_WHITEOUT):
            reader.skip_data()
            return self._whiteout(parent, base)
        pfd = self._parent(parent)
        self.created.add(name)
        if entry.kind != b"5":
            self.dir_times.pop(name, None)
        self._dispatch(entry, reader, pfd, base, name)

    def _dispatch(self, entry: Entry, reader: TarReader, pfd: int, base: bytes,
                  name: bytes) -> None:
        kind = entry.kind
        if kind == b"0":
            self._file(entry, reader, pfd, base)
        elif kind == b"5":
            self._dir(entry, pfd, base, name)
        elif kind == b"2":
            self._symlink(entry, pfd, base)
        elif kind == b"1":
            self._hardlink(entry, pfd, base)
        elif kind in (b"3", b"4", b"6"):
            self._node(entry, pfd, base)
        else:
            log.debug("layer %s: skipping entry %r of type %r", self.what, name, kind)
            reader.skip_data()

    def _file(self, entry: Entry, reader: TarReader, pfd: int, base: bytes) -> None:
        try:
            fd = os.open(base, _NEW_FILE, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, base)
            fd = os.open(base, _NEW_FILE, 0o600, dir_fd=pfd)
        try:
            reader.copy_data(fd)
            self._own_fd(fd, entry)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _own_fd(self, fd: int, entry: Entry) -> None:
        # chown first: it clears setuid, setgid and security.capability.
        if (entry.uid, entry.gid) != self._ids:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, entry.mode)
        for key, value in entry.xattrs.items():
            if _xattr_allowed(key, self.what):
                os.setxattr(fd, key, value)

    def _dir(self, entry: Entry, pfd: int, base: bytes, name: bytes) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(base, dir_fd=pfd).st_mode):
                self._remove(pfd, base)
                os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=pfd)
        self._own_fd(fd, entry)
        self._cache(name, fd)
        self.dir_times[name] = entry.mtime_ns

    def _symlink(self, entry: Entry, pfd: int, base: bytes) -> None:
        try:
            os.symlink(entry.linkname, base, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, base)
            os.symlink(entry.linkname, base, dir_fd=pfd)
        self._own_path(pfd, base, entry)

    def _hardlink(self, entry: Entry, pfd: int, base: bytes) -> None:
        source = clean_name(entry.linkname)
        if not source:
            raise OSError(errno.EPERM, "hard link to the root directory")
        source_parent, _, source_base = source.rpartition(b"/")
        source_fd = self._parent(source_parent)
        try:
            os.link(source_base, base, src_dir_fd=source_fd, dst_dir_fd=pfd,
                    follow_symlinks=False)
        except FileExistsError:
            if _same(source_fd, source_base, pfd, base):
                return
            self._remove(pfd, base)
            os.link(source_base, base, src_dir_fd=source_fd, dst_dir_fd=pfd,
                    follow_symlinks=False)

    def _node(self, entry: Entry, pfd: int, base: bytes) -> None:
        kind = {b"3": stat.S_IFCHR, b"4": stat.S_IFBLK, b"6": stat.S_IFIFO}[entry.kind]
        device = os.makedev(entry.devmajor, entry.devminor) if kind != stat.S_IFIFO else 0
        try:
            os.mknod(base, kind | 0o600, device, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, base)
            os.mknod(base, kind | 0o600, device, dir_fd=pfd)
        self._own_path(pfd, base, entry)

    def _own_path(self, pfd: int, base: bytes, entry: Entry) -> None:
        """Owner, mode, xattrs and mtime of a symlink, device or fifo."""
        os.chown(base, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
        wanted = [k for k in entry.xattrs if _xattr_allowed(k, self.what)]
        is_link = entry.kind == b"2"
        if wanted or not is_link:
            # chmod and setxattr have no no-follow form with a dir fd: go
            # through an O_PATH fd of the node itself, via its /proc link.
            fd = os.open(base, _syscalls.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=pfd)
            try:
                proc = f"/proc/self/fd/{fd}"
                if not is_link:
                    os.chmod(proc, entry.mode)
                for key in wanted:
                    os.setxattr(proc, key, entry.xattrs[key])
            finally:
                os.close(fd)
        os.utime(base, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=pfd,
                 follow_symlinks=False)

    def _root_entry(self, entry: Entry, reader: TarReader) -> None:
        reader.skip_data()
        if entry.kind != b"5":
            raise OSError(errno.EISDIR, "the layer root must be a directory")
        self._own_fd(self.root_fd, entry)
        self.dir_times[b""] = entry.mtime_ns

    def _whiteout(self, parent: bytes, base: bytes) -> None:
        try:
            pfd = self._parent(parent, create=False)
        except FileNotFoundError:
            return  # nothing below to hide
        if base == _OPAQUE:
            return self._opaque(parent, pfd)
        if base.startswith(_WHITEOUT + _WHITEOUT):
            log.debug("layer %s: skipping aufs metadata %r", self.what, base)
            return
        hidden = base[len(_WHITEOUT):]
        if hidden in (b"", b".", b".."):
            raise OSError(errno.EINVAL, "whiteout names no entry")
        self.dir_times.pop(parent + b"/" + hidden if parent else hidden, None)
        self._remove(pfd, hidden)

    def _opaque(self, parent: bytes, pfd: int) -> None:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=pfd)
        try:
            children = os.listdir(fd)
        finally:
            os.close(fd)
        prefix = parent + b"/" if parent else b""
        for child in children:
            child = os.fsencode(child)
            if prefix + child not in self.created:
                self._remove(pfd, child)

    def _remove(self, pfd: int, base: bytes) -> None:
        try:
            mode = os.lstat(base, dir_fd=pfd).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            self._forget()
            shutil.rmtree(os.fsdecode(base), dir_fd=pfd)
        else:
            if stat.S_ISLNK(mode):
                self._forget()
            os.unlink(base, dir_fd=pfd)

    def _parent(self, path: bytes, *, create: bool = True) -> int:
        if not path:
            return self.root_fd
        fd = self._parents.get(path)
        if fd is not None:
            return fd
        try:
            fd = _syscalls.openat2(self.root_fd, path, _DIR_FLAGS, _RESOLVE)
        except FileNotFoundError:
            if not create:
                raise
            fd = self._make_parents(path)
        self._cache(path, fd)
        return fd

    def _make_parents(self, path: bytes) -> int:
        # Like tar, make directories the layer uses but does not list; they
        # count as made by this layer.
        parent, _, base = path.rpartition(b"/")
        pfd = self._parent(parent)
        try:
            os.mkdir(base, 0o755, dir_fd=pfd)
        except FileExistsError as exc:
            raise OSError(errno.ENOTDIR, f"parent '{os.fsdecode(path)}' is not "
                          f"a directory inside the layer") from exc
        self.created.add(path)
        return _syscalls.openat2(pfd, base, _DIR_FLAGS, _RESOLVE)

    def _cache(self, path: bytes, fd: int) -> None:
        if len(self._parents) >= _CACHE_LIMIT:
            os.close(self._parents.pop(next(iter(self._parents))))
        old = self._parents.pop(path, None)
        if old is not None:
            os.close(old)
        self._parents[path] = fd

    def _forget(self) -> None:
        """Drop every cached parent fd: a directory or symlink is going away,
        and a cached path may have resolved through it. The fds are closed
        at the next entry, since the current one may still be using them."""
        self._stale.extend(self._parents.values())
        self._parents.clear()

    def _close_stale(self) -> None:
        for fd in self._stale:
            os.close(fd)
        self._stale.clear()

    def finish(self) -> None:
        """Give directories their mtimes, now that no entry will change them."""
        for name, mtime_ns in self.dir_times.items():
            parent, _, base = name.rpartition(b"/")
            try:
                if not base:
                    os.utime(self.root_fd, ns=(mtime_ns, mtime_ns))
                    continue
                os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=self._parent(parent),
                         follow_symlinks=False)
            except FileNotFoundError:
                continue


def _same(fd_a: int, base_a: bytes, fd_b: int, base_b: bytes) -> bool:
    a = os.lstat(base_a, dir_fd=fd_a)
    b = os.lstat(base_b, dir_fd=fd_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# overlayfs keeps its own state in trusted.overlay.*: a layer must not set it.
def _xattr_allowed(key: str, what: str) -> bool:
    if key.startswith("user.") or key == "security.capability":
        return True
    if key.startswith("trusted.") and not key.startswith("trusted.overlay."):
        return True
    log.debug("layer %s: skipping xattr %s", what, key)
    return False


__all__ = ["Applied", "apply_layer", "clean_name"]
