"""The runtime's log: text or JSON lines, to a file or stderr.

containerd and dockerd read the runtime's ``--log`` file in JSON (one object
per line with ``level``, ``msg`` and ``time``) and show the last error line to
their user. We do not use the stdlib ``logging`` package here: importing it
costs about as much as the rest of a container start on a small machine (see
docs/dev/rules.md), and the runtime needs only this.
"""

from __future__ import annotations

import os
import sys
import time

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class _Log:
    path: str | None = None
    json_format = False
    level = 20


_log = _Log()


def configure(path: str | None, log_format: str, debug: bool) -> None:
    _log.path = path or None
    _log.json_format = log_format == "json"
    _log.level = 10 if debug else 20


def timestamp() -> str:
    """Now in RFC 3339 with nanoseconds, as Go writes it (the log, state's created)."""
    now = time.time()
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{seconds}.{int(now % 1 * 1e9):09d}Z"


def _encode(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def write(level: str, msg: str) -> None:
    if _LEVELS[level] < _log.level:
        return
    if _log.json_format:
        line = (
            f'{{"level":"{level}","msg":{_encode(msg)},"time":"{timestamp()}"}}\n'
        )
    else:
        line = f"time=\"{timestamp()}\" level={level} msg={_encode(msg)}\n"
    if _log.path is None:
        if level != "error":  # errors are printed to stderr by the CLI itself
            sys.stderr.write(line)
        return
    try:
        fd = os.open(_log.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def debug(msg: str) -> None:
    write("debug", msg)


def warning(msg: str) -> None:
    write("warning", msg)


def error(msg: str) -> None:
    write("error", msg)
