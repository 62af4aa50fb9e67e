"""JSON for the runtime's start path, on the C scanner, without ``re``.

The ``json`` package compiles regular expressions when it is imported, and
``re`` brings ``enum`` with it: together about 8 ms on our 2-core machines,
a quarter of what runc takes to run a whole container. The runtime reads
config.json and writes its state on every start, so it uses these two
functions instead, built on ``_json``, the C accelerator that ``json`` itself
uses. They accept and produce standard JSON; errors are ``ValueError``.
Anywhere start latency does not matter, use ``json``.
"""

from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


class _Context:
    """The attributes _json.make_scanner reads from json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo: dict = {}


_scan = _json.make_scanner(_Context())


def loads(text: str | bytes) -> object:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except Exception:  # noqa: BLE001 - the json package explains it below
        end = -1
    if end < 0 or text[end:].strip(_WHITESPACE):
        # Bad input is rare and not on the fast path: let json say what is wrong.
        import json

        return json.loads(text, parse_constant=_constant)
    return value


def dumps(value: object) -> str:
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: object, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(_json.encode_basestring_ascii(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not valid JSON")
        parts.append(float.__repr__(value))
    elif isinstance(value, dict):
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {key!r}")
            if index:
                parts.append(",")
            parts.append(_json.encode_basestring_ascii(key))
            parts.append(":")
            _encode(item, parts)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _encode(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
