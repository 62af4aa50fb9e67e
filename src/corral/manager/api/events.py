"""``GET /events`` (the reference's "System" section, "Monitor events"):
the engine's events as a JSON stream, one object per line, past ones from
``since`` and then new ones as they happen, until ``until`` or until the
client goes away."""

from __future__ import annotations

import json

from aiohttp import web

from .. import errors
from .app import filters, route
from .containers import method
from .streams import iterate


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/events", events)


def timestamp(request: web.Request, name: str) -> float | None:
    """``since`` and ``until``: seconds since the epoch, with an optional
    fraction (``1700000000.000000001``), as clients send them."""
    text = request.query.get(name, "")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise errors.InvalidArgument(f"query parameter '{name}': '{text}' is not a "
                                     f"timestamp") from None


async def events(request: web.Request) -> web.StreamResponse:
    read_events = method(request, "events")
    since, until = timestamp(request, "since"), timestamp(request, "until")
    wanted = filters(request)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    async for event in iterate(lambda: read_events(since=since, until=until,
                                                   filters=wanted), name="events"):
        await response.write(json.dumps(event).encode() + b"\n")
    await response.write_eof()
    return response
