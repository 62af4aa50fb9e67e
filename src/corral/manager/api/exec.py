"""Exec endpoints of the Docker Engine API (the reference's "Exec"
section): create, start (hijacked unless detached), resize, inspect.

``docker exec`` is create, a hijacked start, a resize with a TTY, then
inspect for the exit code (../shared/PEERS.md). The engine's ``exec_start``
returns, for an attached start, the socket whose bytes are the process's
output (framed as attach frames it without a TTY) and whose writes are its
stdin, as ``Engine.attach`` does.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .. import errors
from . import hijack
from .app import backend, query_int, read_json, route
from .containers import in_thread, method

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    route(app, "POST", "/containers/{id}/exec", create)
    route(app, "POST", "/exec/{id}/start", start)
    route(app, "POST", "/exec/{id}/resize", resize)
    route(app, "GET", "/exec/{id}/json", inspect)


async def create(request: web.Request) -> web.Response:
    body = await read_json(request, required=True)
    result = await backend(request).call(method(request, "exec_create"),
                                         request.match_info["id"], body)
    return web.json_response(result, status=201)


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise errors.InvalidArgument(f"exec start: '{name}' must be a boolean")
    return value


async def start(request: web.Request) -> web.StreamResponse:
    body = await read_json(request) or {}
    detach, tty = _flag(body, "Detach"), _flag(body, "Tty")
    exec_start = method(request, "exec_start")
    exec_id = request.match_info["id"]
    if detach:
        await backend(request).call(exec_start, exec_id, detach=True, tty=tty)
        return web.Response(status=200)
    # The exec must exist before we answer 101: a 404 is an HTTP answer.
    await backend(request).call(method(request, "exec_inspect"), exec_id)
    response, raw = await hijack.upgrade(request, tty=tty)
    try:
        started = await in_thread(exec_start, exec_id, detach=False, tty=tty)
    except errors.Error as exc:
        # Too late for an HTTP error: the connection is raw now.
        log.warning("exec start %s: %s", exec_id, exc)
        raw.close()
        return response
    peer = getattr(started, "socket", started)
    await hijack.relay(raw, peer)
    return response


async def resize(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "exec_resize"), request.match_info["id"],
                                height=query_int(request, "h", 0),
                                width=query_int(request, "w", 0))
    return web.Response(status=200)


async def inspect(request: web.Request) -> web.Response:
    document = await backend(request).call(method(request, "exec_inspect"),
                                           request.match_info["id"])
    return web.json_response(document)
