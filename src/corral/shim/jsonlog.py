"""Docker's json-file log driver: the writer in the shim, the reader for the engine.

Each line a container writes becomes one JSON object on one line of
``<id>-json.log``::

    {"log":"text\\n","stream":"stdout","time":"2026-01-02T03:04:05.123456789Z"}

as dockerd's json-file driver writes it, so ``docker logs`` semantics carry
over: a line is cut at each newline, or at 16 KiB when none comes (the rest
follows in the next object, with no newline in ``log``), and what is left at
the end of a run is written without one. Bytes that are not UTF-8 become
U+FFFD, as in Go.

Rotation (``--log-max-size``, ``--log-max-file``): once the file reaches
max-size it is renamed ``.1`` (the older ``.1`` to ``.2``, and so on), and a
new file starts; max-file counts every file kept, the current one included,
so max-file 1 truncates in place. The reader reads the rotated files oldest
first, and in follow mode notices when the file it reads is renamed away.
"""

from __future__ import annotations

import _json
import os
import time

PARTIAL_MAX = 16 * 1024
_STREAM_NAMES = {1: '","stream":"stdout","time":"', 2: '","stream":"stderr","time":"'}


def timestamp_ns(ns: int) -> str:
    """NS (nanoseconds since the epoch) in RFC 3339 with nanoseconds, UTC."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def parse_time_ns(text: str) -> int:
    """An RFC 3339 time (``Z`` or ``+hh:mm``, any fraction) as ns since the epoch."""
    try:
        date, _, clock = text.partition("T")
        year, month, day = (int(part) for part in date.split("-"))
        offset = 0
        if clock.endswith(("Z", "z")):
            clock = clock[:-1]
        elif len(clock) > 6 and clock[-6] in "+-":
            sign = 1 if clock[-6] == "+" else -1
            offset = sign * (int(clock[-5:-3]) * 3600 + int(clock[-2:]) * 60)
            clock = clock[:-6]
        whole, _, fraction = clock.partition(".")
        hours, minutes, seconds = (int(part) for part in whole.split(":"))
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
    except ValueError:
        raise ValueError(f"parse time '{text}': not RFC 3339") from None
    days = _days_from_civil(year, month, day)
    epoch = days * 86400 + hours * 3600 + minutes * 60 + seconds - offset
    return epoch * 1_000_000_000 + nanos


def _days_from_civil(year: int, month: int, day: int) -> int:
    # Days since 1970-01-01 in the proleptic Gregorian calendar (Howard
    # Hinnant's public-domain algorithm), without importing datetime.
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


class LogWriter:
    """Appends a container's output to its json-file log, rotating it."""

    def __init__(self, path: str, max_size: int = 0, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._partial = {1: b"", 2: b""}

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                       0o640)

    def write(self, stream: int, data: bytes) -> None:
        """Log DATA read from STREAM (1 stdout, 2 stderr): each complete line."""
        data = self._partial[stream] + data
        lines = data.split(b"\n")
        rest = lines.pop()
        records = []
        for line in lines:
            while len(line) >= PARTIAL_MAX:
                records.append(line[:PARTIAL_MAX])
                line = line[PARTIAL_MAX:]
            records.append(line + b"\n")
        while len(rest) >= PARTIAL_MAX:
            records.append(rest[:PARTIAL_MAX])
            rest = rest[PARTIAL_MAX:]
        self._partial[stream] = rest
        if records:
            self._emit(stream, records)

    def flush(self) -> None:
        """Write out what is left without a newline (at the end of a run)."""
        for stream, rest in self._partial.items():
            if rest:
                self._partial[stream] = b""
                self._emit(stream, [rest])

    def _emit(self, stream: int, records: list[bytes]) -> None:
        tail = _STREAM_NAMES[stream] + timestamp_ns(time.time_ns()) + '"}\n'
        batch: list[bytes] = []
        batch_size = 0
        for record in records:
            encoded = ('{"log":' + _json.encode_basestring(
                record.decode("utf-8", "replace"))[:-1] + tail).encode()
            batch.append(encoded)
            batch_size += len(encoded)
            # One write per batch, but a batch ends where the file reaches
            # max-size: rotation happens between two lines, as in dockerd.
            if self.max_size and self._size + batch_size >= self.max_size:
                self._write(b"".join(batch))
                batch, batch_size = [], 0
        if batch:
            self._write(b"".join(batch))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._size += len(data)
        if self.max_size and self._size >= self.max_size:
            self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.max_file == 1:
            os.truncate(self.path, 0)
        else:
            for index in range(self.max_file - 1, 1, -1):
                older = f"{self.path}.{index - 1}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index}")
            os.replace(self.path, f"{self.path}.1")
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def __getattr__(name: str):
    # The reader is the engine's; loading it lazily keeps it out of every
    # shim's memory (logreader.py).
    if name in ("read_logs", "rotated_files", "FOLLOW_POLL"):
        from . import logreader

        return getattr(logreader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
