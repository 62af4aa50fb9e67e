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
refused. The tar headers are parsed here (ustar, GNU long names, PAX) rather
than by ``tarfile``, which is slower, keeps every member in memory and takes
a truncated archive for a complete one.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import shutil
import stat
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from .. import _syscalls
from .digest import Digest
from .errors import Error, LayerError

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
    prefetch = _Prefetch(_decompressor(stream, compression, what))
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


def _decompressor(stream: BinaryIO, compression: str | None, what: str) -> _Source:
    if compression is None:
        return stream
    if compression == "gzip":
        return _Inflate(stream)
    if compression == "zstd":
        return _Unzstd(stream)
    raise LayerError(f"apply layer '{what}': unknown compression '{compression}'")


class _Unzstd:
    # NOTE: zstandard's stream reader returns end of file, with no error,
    # when the input stops inside a frame. A layer cut short still fails:
    # the tar inside lacks its end marker, or, if only padding was lost, the
    # diff_id does not match the image config.
    def __init__(self, stream: BinaryIO) -> None:
        import zstandard

        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            stream, read_size=_CHUNK, read_across_frames=True)

    def read(self, size: int) -> bytes:
        try:
            return self._reader.read(size)
        except self._error as exc:
            raise _BrokenStream(f"broken zstd stream: {exc}") from exc


class _Prefetch:
    """Decompresses and hashes in a thread of its own.

    zlib, zstd and sha256 let go of the GIL while they work, and so does
    os.write: with the stream read ahead by a bounded queue, decompression
    overlaps the writes of the entries on a second core. The queue holds at
    most a few chunks, so memory stays flat whatever the layer's size.
    """

    def __init__(self, source: _Source) -> None:
        self.hasher = hashlib.sha256()
        self._queue: queue.Queue[bytes | Exception] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(source,),
                                        name="layer-read", daemon=True)
        self._thread.start()

    def _run(self, source: _Source) -> None:
        try:
            while True:
                chunk = source.read(_CHUNK)
                self.hasher.update(chunk)
                if not self._put(chunk) or not chunk:
                    return
        except Exception as exc:  # handed over: read() raises it
            self._put(exc)

    def _put(self, item: bytes | Exception) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(self, size: int) -> bytes:
        if self._done:
            return b""
        item = self._queue.get()
        if isinstance(item, Exception):
            self._done = True
            raise item
        self._done = not item
        return item

    def close(self) -> None:
        """Stop the thread (after the read it is in) and wait for it."""
        self._stop.set()
        self._thread.join()


class _Source(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Inflate:
    """gzip (RFC 1952) as a stream, all members, with bounded output per read.

    Our own loop over zlib rather than ``gzip.GzipFile``: it reads the blob in
    large chunks, and it reports a stream that ends inside a member.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._started = False

    def read(self, size: int) -> bytes:
        while True:
            if self._inflater.eof and not self._next_member():
                return b""
            if not self._pending:
                self._pending = self._stream.read(_CHUNK)
                if not self._pending:
                    if not self._started:
                        return b""
                    raise _BrokenStream("broken gzip stream: it ends inside a member")
            self._started = True
            try:
                out = self._inflater.decompress(self._pending, size)
            except zlib.error as exc:
                raise _BrokenStream(f"broken gzip stream: {exc}") from exc
            self._pending = self._inflater.unconsumed_tail or self._inflater.unused_data
            if out:
                return out

    def _next_member(self) -> bool:
        # Concatenated members form one stream; zero padding may follow the
        # last one (gzip(1) accepts both).
        rest = self._pending.lstrip(b"\0")
        while not rest:
            rest = self._stream.read(_CHUNK)
            if not rest:
                return False
            rest = rest.lstrip(b"\0")
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = rest
        return True


# --- the tar stream (POSIX pax, ustar and GNU headers) ---

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
# Extended headers and GNU long names beyond this are refused, so a hostile
# header cannot make us hold an arbitrary amount of memory.
_META_LIMIT = 1 << 20
_REGULAR = frozenset({b"0", b"\0", b"7"})
# Types whose size field does not announce data (as Go's archive/tar reads it).
_HEADER_ONLY = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})
_USTAR = b"ustar\x00"
_XATTR = b"SCHILY.xattr."


class _BrokenStream(Exception):
    """The decompressor's error, already worded."""


class Entry:
    """One tar entry's header, with PAX and GNU extensions applied.

    ``kind`` is the ustar typeflag, with every regular-file flag as b"0".
    """

    __slots__ = ("name", "kind", "mode", "uid", "gid", "size", "mtime_ns",
                 "linkname", "devmajor", "devminor", "xattrs")

    name: bytes
    kind: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]


class TarReader:
    """Reads tar headers and data from a stream.

    ``next`` returns entries until the end-of-archive block; a stream that
    ends before it is a truncated layer. The data of the entry last returned
    is copied with ``copy_data`` or skipped (``next`` skips what is left).
    """

    def __init__(self, source: _Source, what: str) -> None:
        self.what = what
        self.size = 0
        self._source = source
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._remaining = 0
        self._padding = 0
        self._global: dict[bytes, bytes] = {}

    def next(self) -> Entry | None:
        """The next entry, or None at the end-of-archive marker."""
        self.skip_data()
        try:
            return self._next()
        except ValueError as exc:
            raise self._malformed(str(exc)) from exc

    def _next(self) -> Entry | None:
        local: dict[bytes, bytes] = {}
        long_name = long_link = None
        while True:
            block = self._take(_BLOCK)
            if block == _ZERO_BLOCK:
                if local or long_name is not None or long_link is not None:
                    raise self._malformed("an extended header with no entry")
                return None
            self._check_sum(block)
            kind = block[156:157]
            size = _number(block[124:136])
            if kind not in (b"x", b"g", b"L", b"K"):
                pax = {**self._global, **local} if self._global else local
                return self._entry(block, kind, size, pax, long_name, long_link)
            if not 0 <= size <= _META_LIMIT:
                raise self._malformed(f"extended header of {size} bytes")
            data = self._take(size + (-size % _BLOCK))[:size]
            if kind == b"x":
                local.update(_parse_pax(data))
            elif kind == b"g":
                self._global.update(_parse_pax(data))
            elif kind == b"L":
                long_name = data.split(b"\0", 1)[0]
            else:
                long_link = data.split(b"\0", 1)[0]

    def _entry(self, block: bytes, kind: bytes, size: int, pax: dict[bytes, bytes],
               long_name: bytes | None, long_link: bytes | None) -> Entry:
        entry = Entry()
        name = pax.get(b"path") or long_name or _ustar_name(block)
        if kind in _REGULAR:
            kind = b"5" if name.endswith(b"/") and kind == b"\0" else b"0"
        if kind == b"S" or any(key.startswith(b"GNU.sparse.") for key in pax):
            raise self._malformed(f"sparse entry '{os.fsdecode(name)}' is not supported")
        entry.name = name
        entry.kind = kind
        entry.mode = _number(block[100:108]) & 0o7777
        entry.uid = _pax_int(pax, b"uid") if b"uid" in pax else _number(block[108:116])
        entry.gid = _pax_int(pax, b"gid") if b"gid" in pax else _number(block[116:124])
        entry.size = _pax_int(pax, b"size") if b"size" in pax else size
        if b"mtime" in pax:
            entry.mtime_ns = _pax_time(pax[b"mtime"])
        else:
            entry.mtime_ns = _number(block[136:148]) * 1_000_000_000
        entry.linkname = pax.get(b"linkpath") or long_link or _cstring(block[157:257])
        if kind in (b"3", b"4"):
            entry.devmajor = _number(block[329:337])
            entry.devminor = _number(block[337:345])
        entry.xattrs = _xattrs(pax) if pax else {}
        if entry.size < 0 or entry.uid < 0 or entry.gid < 0:
            raise self._malformed(f"entry '{os.fsdecode(name)}': negative size or id")
        data = 0 if kind in _HEADER_ONLY else entry.size
        self._remaining = data
        self._padding = -data % _BLOCK
        return entry

    def copy_data(self, fd: int) -> None:
        """Write the current entry's data to ``fd``."""
        left = self._remaining
        while left:
            if self._pos == len(self._buf):
                self._refill(1)
            count = min(left, len(self._buf) - self._pos)
            view = self._view[self._pos:self._pos + count]
            while view:
                view = view[os.write(fd, view):]
            self._pos += count
            left -= count
        self._remaining = 0

    def skip_data(self) -> None:
        """Skip what is left of the current entry's data and its padding."""
        left = self._remaining + self._padding
        self._remaining = self._padding = 0
        while left:
            if self._pos == len(self._buf):
                self._refill(1)
            count = min(left, len(self._buf) - self._pos)
            self._pos += count
            left -= count

    def drain(self) -> None:
        """Read (and hash) the stream to its very end, past the end marker."""
        self._pos = len(self._buf)
        while self._read():
            pass

    def _take(self, count: int) -> bytes:
        if len(self._buf) - self._pos < count:
            self._refill(count)
        block = self._buf[self._pos:self._pos + count]
        self._pos += count
        return block

    def _refill(self, count: int) -> None:
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        while have < count:
            chunk = self._read()
            if not chunk:
                raise LayerError(f"apply layer '{self.what}': truncated tar stream")
            parts.append(chunk)
            have += len(chunk)
        self._buf = b"".join(parts) if len(parts) > 2 or parts[0] else parts[1]
        self._view = memoryview(self._buf)
        self._pos = 0

    def _read(self) -> bytes:
        try:
            chunk = self._source.read(_CHUNK)
        except _BrokenStream as exc:
            raise LayerError(f"apply layer '{self.what}': {exc}") from exc
        except Error:
            raise  # the caller's stream checks the blob (a Verifier, say)
        except OSError as exc:
            raise LayerError(f"apply layer '{self.what}': read: "
                             f"{exc.strerror or exc}") from exc
        except Exception as exc:
            # Whatever else the caller's file object raises: our callers
            # expect only our own errors.
            raise LayerError(f"apply layer '{self.what}': read: {exc}") from exc
        self.size += len(chunk)
        return chunk

    def _check_sum(self, block: bytes) -> None:
        stored = _number(block[148:156])
        # The sum is taken with the checksum field read as eight spaces;
        # some old writers summed signed chars.
        unsigned = sum(block) - sum(block[148:156]) + 8 * 32
        if stored == unsigned:
            return
        signed = unsigned - 256 * sum(1 for byte in block if byte > 127)
        signed += 256 * sum(1 for byte in block[148:156] if byte > 127)
        if stored != signed:
            raise self._malformed("header checksum mismatch")

    def _malformed(self, cause: str) -> LayerError:
        return LayerError(f"apply layer '{self.what}': malformed tar at byte "
                          f"{self.size - len(self._buf) + self._pos}: {cause}")


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (high bit set)."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError(f"numeric field {text!r}") from None


def _cstring(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _ustar_name(block: bytes) -> bytes:
    name = _cstring(block[0:100])
    # Only POSIX ustar has a prefix field; GNU headers keep times there.
    if block[257:263] == _USTAR:
        prefix = _cstring(block[345:500])
        if prefix:
            return prefix + b"/" + name
    return name


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """PAX records, "LENGTH KEY=VALUE\\n"; an empty value unsets the key."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 24)
        digits = data[pos:space]
        if space < 0 or not digits.isdigit():
            raise ValueError("bad pax record length")
        end = pos + int(digits)
        if end > len(data) or end <= space or data[end - 1] != 0x0A:
            raise ValueError("bad pax record")
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq:
            raise ValueError("pax record without '='")
        if value:
            records[key] = value
        else:
            records.pop(key, None)
        pos = end
    return records


def _pax_int(pax: dict[bytes, bytes], key: bytes) -> int:
    value = pax[key]
    if not value.isdigit():
        raise ValueError(f"pax {key.decode()} {value!r}")
    return int(value)


def _pax_time(value: bytes) -> int:
    """A PAX time, decimal seconds with an optional fraction, in nanoseconds."""
    sign = -1 if value.startswith(b"-") else 1
    seconds, _, fraction = value.lstrip(b"-").partition(b".")
    if not seconds.isdigit() or (fraction and not fraction.isdigit()):
        raise ValueError(f"pax time {value!r}")
    nanos = int(fraction[:9].ljust(9, b"0")) if fraction else 0
    return sign * (int(seconds) * 1_000_000_000 + nanos)


def _xattrs(pax: dict[bytes, bytes]) -> dict[str, bytes]:
    return {os.fsdecode(key[len(_XATTR):]): value for key, value in pax.items()
            if key.startswith(_XATTR)}


def clean_name(name: bytes) -> bytes:
    """An entry's name as a path relative to the layer root.

    A leading "/" is stripped as tar does, "." and empty components are
    dropped; b"" is the root itself.

    Raises:
        ValueError: the name has a ".." component or a NUL byte.
    """
    parts = [part for part in name.split(b"/") if part and part != b"."]
    if b".." in parts:
        raise ValueError("the name has a '..' component")
    if b"\0" in name:
        raise ValueError("the name has a NUL byte")
    return b"/".join(parts)


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
