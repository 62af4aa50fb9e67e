"""Reading a layer blob as a stream: decompression (gzip, zstd) in a
thread that also hashes the uncompressed bytes into the diff ID, and the
tar headers (POSIX pax, ustar and GNU long names) parsed as they arrive.

We parse tar ourselves rather than with ``tarfile``: in streaming mode it
keeps every member in memory, copies its buffer on each header, and takes a
truncated archive for a complete one. Sizes of extended headers are bounded
so a hostile header cannot make us hold an arbitrary amount of memory.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import zlib
from typing import BinaryIO, Protocol

from .errors import Error, LayerError

_CHUNK = 1 << 20

def decompressor(stream: BinaryIO, compression: str | None, what: str) -> _Source:
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


class Prefetch:
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
