"""The wire format of the shim's socket protocol: request lines, answer
lines, and the frames of an attach stream (protocol.py has the client, and
the protocol's description). Only C modules: every shim loads this."""

from __future__ import annotations

import _struct

from corral import _json

from .errors import InvalidArgument

MAX_REQUEST = 64 * 1024
OPS = ("state", "wait", "stop", "kill", "resize", "attach")
_HEADER = _struct.Struct(">BxxxI")


def parse_request(line: bytes) -> dict:
    """One request line as a dict with a known ``op``.

    Raises:
        InvalidArgument: not a JSON object, or no known ``op``.
    """
    try:
        message = _json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"request: not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise InvalidArgument("request: not a JSON object")
    if message.get("op") not in OPS:
        raise InvalidArgument(f"request: unknown op '{message.get('op')}'")
    return message


def encode(message: dict) -> bytes:
    """MESSAGE as one answer (or request) line."""
    return (_json.dumps(message) + "\n").encode()


def frame(stream: int, data: bytes) -> bytes:
    """DATA of STREAM (1 stdout, 2 stderr) in Docker's multiplexed framing."""
    return _HEADER.pack(stream, len(data)) + data
