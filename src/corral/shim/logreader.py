"""Reading a json-file log (jsonlog.py writes it): since, until, tail and
follow across rotations, as ``docker logs`` reads it. The engine's side;
no shim loads it."""

from __future__ import annotations

import os
import time
from _collections_abc import Callable, Iterator

from corral import _json as json

from .jsonlog import parse_time_ns

FOLLOW_POLL = 0.1

def rotated_files(path: str) -> list[str]:
    """PATH's rotations that exist, oldest first (``.N`` ... ``.1``)."""
    found = []
    index = 1
    while os.path.exists(f"{path}.{index}"):
        found.append(f"{path}.{index}")
        index += 1
    return found[::-1]


class _Filter:
    def __init__(self, stdout: bool, stderr: bool, since: float | str | None,
                 until: float | str | None, timestamps: bool) -> None:
        self.streams = {"stdout": 1} if stdout else {}
        if stderr:
            self.streams["stderr"] = 2
        self.since = _to_ns(since)
        self.until = _to_ns(until)
        self.timestamps = timestamps

    def accept(self, line: bytes) -> tuple[int, bytes] | None:
        """(stream, bytes to yield) for one json-file LINE, or None if filtered."""
        try:
            record = json.loads(line)
            stream = self.streams.get(record["stream"])
            if stream is None:
                return None
            when = record["time"]
            if self.since is not None or self.until is not None:
                ns = parse_time_ns(when)
                if self.since is not None and ns < self.since:
                    return None
                if self.until is not None and ns > self.until:
                    return None
            text = record["log"].encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # a torn or foreign line, as dockerd skips it
        if self.timestamps:
            text = when.encode() + b" " + text
        return stream, text


def _to_ns(value: float | str | None) -> int | None:
    """Docker's since/until: Unix seconds, as a number or ``"sec.nanos"``."""
    if value is None:
        return None
    if isinstance(value, str):
        whole, _, fraction = value.partition(".")
        return int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9] or 0)
    return round(value * 1_000_000_000)


def read_logs(path: str, *, stdout: bool = True, stderr: bool = True,
              since: float | str | None = None, until: float | str | None = None,
              tail: int | None = None, follow: bool = False, timestamps: bool = False,
              is_running: Callable[[], bool] | None = None,
              ) -> Iterator[tuple[int, bytes]]:
    """Read a json-file log (and its rotations) as ``docker logs`` does.

    Args:
        path: the current log file (``<id>-json.log``); rotations are found beside it.
        stdout, stderr: which streams to yield.
        since, until: Unix times in seconds (a number, or ``"sec.nanos"``); lines
            outside them are skipped (both ends included).
        tail: only the last TAIL lines that pass the filters (None or <0: all).
        follow: after the end, wait for new lines while ``is_running()`` is true.
        timestamps: prefix each line with its time and a space.
        is_running: callable telling whether the container may still write.

    Yields:
        ``(1 or 2, line bytes)`` in the order written.
    """
    selector = _Filter(stdout, stderr, since, until, timestamps)
    fds = [os.open(name, os.O_RDONLY | os.O_CLOEXEC) for name in rotated_files(path)]
    try:
        current = _open_or_none(path)
        if current is not None:
            fds.append(current)
        ends = [_complete_end(fd) for fd in fds]
        if tail is not None and tail >= 0:
            yield from _tail(fds, ends, selector, tail)
        else:
            for fd, end in zip(fds, ends, strict=True):
                yield from _forward(fd, 0, end, selector)
        if follow:
            yield from _follow(path, current, ends[-1] if current is not None else 0,
                               selector, is_running or (lambda: False))
    finally:
        for fd in fds:
            os.close(fd)


def _open_or_none(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _complete_end(fd: int) -> int:
    """The offset just past the last newline of FD (a line may be half written)."""
    end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - 4096)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _forward(fd: int, start: int, end: int, selector: _Filter) -> Iterator[tuple[int, bytes]]:
    rest = b""
    offset = start
    while offset < end:
        block = os.pread(fd, min(1 << 16, end - offset), offset)
        if not block:
            break
        offset += len(block)
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            item = selector.accept(line)
            if item is not None:
                yield item


def _backward(fd: int, end: int) -> Iterator[bytes]:
    """The lines of FD before END, last first."""
    rest = b""
    offset = end
    while offset > 0:
        start = max(0, offset - (1 << 16))
        lines = (os.pread(fd, offset - start, start) + rest).split(b"\n")
        offset = start
        rest = lines[0]
        for line in reversed(lines[1:]):
            if line:
                yield line
    if rest:
        yield rest


def _tail(fds: list[int], ends: list[int], selector: _Filter,
          count: int) -> Iterator[tuple[int, bytes]]:
    picked: list[tuple[int, bytes]] = []
    for fd, end in zip(reversed(fds), reversed(ends), strict=True):
        for line in _backward(fd, end):
            if len(picked) >= count:
                break
            item = selector.accept(line)
            if item is not None:
                picked.append(item)
    yield from reversed(picked)


def _follow(path: str, fd: int | None, offset: int, selector: _Filter,
            is_running: Callable[[], bool]) -> Iterator[tuple[int, bytes]]:
    """Lines appended after OFFSET, across rotations, until the writer is gone."""
    own = []
    rest = b""
    try:
        while True:
            if selector.until is not None and time.time_ns() > selector.until:
                return
            block = os.pread(fd, 1 << 16, offset) if fd is not None else b""
            if block:
                offset += len(block)
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    item = selector.accept(line)
                    if item is not None:
                        yield item
                continue
            replaced = _reopened(path, fd)
            if replaced is not None:
                # What was written to the old file between our last read and
                # the rename is still in it: read it before moving on.
                for line in _rest_of(fd, offset, rest):
                    item = selector.accept(line)
                    if item is not None:
                        yield item
                fd, offset, rest = replaced, 0, b""
                own.append(fd)
                continue
            if fd is not None and os.fstat(fd).st_size < offset:
                offset, rest = 0, b""  # truncated in place (max-file 1)
                continue
            if not is_running():
                if fd is None or os.fstat(fd).st_size <= offset:
                    return
                continue  # written between our read and the check: read it
            time.sleep(FOLLOW_POLL)
    finally:
        for owned in own:
            os.close(owned)


def _rest_of(fd: int | None, offset: int, rest: bytes) -> list[bytes]:
    """The complete lines of FD after OFFSET, REST being a partial line before it."""
    if fd is None:
        return []
    end = _complete_end(fd)
    data = rest + (os.pread(fd, end - offset, offset) if end > offset else b"")
    return data.split(b"\n")[:-1]


def _reopened(path: str, fd: int | None) -> int | None:
    """A new fd on PATH if it now names another file than FD (a rotation)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return None
    if fd is not None:
        was = os.fstat(fd)
        if (was.st_dev, was.st_ino) == (now.st_dev, now.st_ino):
            return None
    return _open_or_none(path)
