"""Output as Docker prints it: tables, sizes, ages, JSON."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime


def human_size(size: float) -> str:
    """Docker's sizes: decimal units, three significant digits ("4.26MB")."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}"
        size /= 1000
    raise AssertionError("unreachable")


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        # Python 3.11 reads RFC 3339 with a Z, but not nanoseconds.
        head, dot, tail = text.partition(".")
        if dot:
            digits = "".join(c for c in tail if c.isdigit())
            zone = tail[len(digits):]
            text = f"{head}.{digits[:6]}{zone}"
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def ago(timestamp: float | None, now: float | None = None) -> str:
    """"2 hours ago", as Docker's go-units HumanDuration words it."""
    if timestamp is None:
        return "N/A"
    seconds = max(0.0, (now or time.time()) - timestamp)
    if seconds < 1:
        return "Less than a second ago"
    if seconds < 2:
        return "1 second ago"
    if seconds < 60:
        return f"{int(seconds)} seconds ago"
    minutes = seconds / 60
    if minutes < 60:
        return "About a minute ago" if int(minutes) == 1 else f"{int(minutes)} minutes ago"
    hours = minutes / 60
    if hours < 48:
        return "About an hour ago" if int(hours) == 1 else f"{int(hours)} hours ago"
    days = hours / 24
    if days < 14:
        return f"{int(days)} days ago"
    if days < 60:
        return f"{int(days / 7)} weeks ago"
    if days < 730:
        return f"{int(days / 30)} months ago"
    return f"{int(days / 365)} years ago"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out=None,
          min_width: int = 0) -> None:
    """Columns padded to their widest cell plus three spaces, and to at least
    ``min_width``, as Docker's tabwriter does; the last column is not padded."""
    out = out or sys.stdout
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = [cell.ljust(max(widths[i] + 3, min_width))
                 for i, cell in enumerate(line[:-1])]
        out.write("".join(cells) + line[-1] + "\n")


def print_json(document: object, out=None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(document, indent=4) + "\n")



def render_template(template: str, document: object) -> str:
    """``--format TEMPLATE`` applied to one document (cli/template.py)."""
    from .template import TemplateError, render

    try:
        return render(template, document)
    except TemplateError as exc:
        raise SystemExit(f"corral: {exc}") from None


def inspected(documents: list[dict], template: str | None) -> None:
    """What ``inspect`` prints: a JSON array, or the template once per document."""
    if template and template != "json":
        for document in documents:
            print(render_template(template, document))
    else:
        print_json(documents)


def formatted(template: str, rows: list[dict], headers: dict[str, str]) -> None:
    """Print ``rows`` through a --format template, as docker does: ``json``
    is one JSON object per line; a template that starts with ``table`` gets
    a header line (``headers`` maps a field to its column title)."""
    if template == "json":
        for row in rows:
            print(json_line(row))
        return
    if template.startswith("table"):
        # Columns split on tabs and aligned, as Docker's tabwriter does.
        template = template[len("table"):].lstrip()
        lines = [render_template(template, row).split("\t") for row in rows]
        title = _header(template, headers).split("\t")
        width = max([len(title)] + [len(line) for line in lines])
        table([*title, *[""] * (width - len(title))],
              [[*line, *[""] * (width - len(line))] for line in lines])
        return
    for row in rows:
        print(render_template(template, row))


def _header(template: str, headers: dict[str, str]) -> str:
    out, rest = [], template.replace("\\t", "\t")
    while "{{" in rest:
        head, _, rest = rest.partition("{{")
        action, _, rest = rest.partition("}}")
        field = action.strip().lstrip(".").split(".")[0]
        out.append(head + headers.get(field, field.upper()))
    out.append(rest)
    return "".join(out)


def json_line(document: object) -> str:
    return json.dumps(document, separators=(",", ":"))


def since_time(text: str | None, flag: str | None = None) -> float | None:
    """--since/--until as Docker takes them: an RFC 3339 time, a UNIX time,
    or a duration before now ("10m", "1h30m", "45s"); as UNIX seconds. A bad
    one exits with the docker CLI's words (``flag`` named as docker logs does)."""
    if not text:
        return None
    if text.replace(".", "", 1).isdigit():
        return float(text)
    seconds, number = 0.0, ""
    units = {"s": 1, "m": 60, "h": 3600}
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            seconds += float(number) * units[char]
            number = ""
        else:
            seconds = -1
            break
    if seconds >= 0 and not number:
        return time.time() - seconds
    parsed = parse_time(text)
    if parsed is None:
        named = f'invalid value for "{flag}": ' if flag else ""
        raise SystemExit(f'corral: {named}failed to parse value as time or duration: '
                         f'"{text}"')
    return parsed


def version_text(client_version: str, client_api: str, server: dict) -> str:
    """``docker version``'s text for our client and a ``/version`` document:
    the docker CLI's layout, keys in cells of 20 at least (its tabwriter)."""
    import platform

    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                          platform.machine())
    lines = ["Client:", (" Version:", client_version), (" API version:", client_api),
             (" OS/Arch:", f"linux/{machine}"), ""]
    name = (server.get("Platform") or {}).get("Name")
    lines.append(f"Server: {name}" if name else "Server:")
    for component in server.get("Components") or []:
        details = component.get("Details") or {}
        lines.append(f" {component.get('Name')}:")
        lines.append(("  Version:", component.get("Version", "")))
        if component.get("Name") == "Engine":
            lines += [("  API version:", f"{details.get('ApiVersion', '')} (minimum "
                                         f"version {details.get('MinAPIVersion', '')})"),
                      ("  Go version:", details.get("GoVersion", "")),
                      ("  Git commit:", details.get("GitCommit", "")),
                      ("  Built:", details.get("BuildTime", "")),
                      ("  OS/Arch:", f"{details.get('Os', '')}/{details.get('Arch', '')}"),
                      ("  Experimental:", details.get("Experimental", ""))]
        else:
            lines.append(("  GitCommit:", details.get("GitCommit", "")))
    return "".join(f"{line}\n" if isinstance(line, str)
                   else f"{line[0].ljust(max(20, len(line[0]) + 1))}{line[1]}\n"
                   for line in lines)


def event_time(nanoseconds: int) -> str:
    """The timestamp ``docker events`` prints, local time with nanoseconds
    (Go's ``Z07:00``: ``Z`` where the local zone is UTC, else ``+01:00``)."""
    seconds, nanos = divmod(int(nanoseconds), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds).astimezone()
    offset = stamp.strftime("%z")
    zone = "Z" if offset in ("+0000", "-0000") else f"{offset[:3]}:{offset[3:]}"
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}" + zone
