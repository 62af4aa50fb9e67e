"""Volume endpoints of the Docker Engine API (the reference's "Volume"
section), each a thin mapping onto one ``Engine.volume_*`` method
(manager/volumes.py): list, create, inspect, remove, prune.

Prune takes only anonymous volumes from API 1.42 on unless ``all=true`` is
among its filters; clients of older versions get every unused volume
pruned, as dockerd of their time did.
"""

from __future__ import annotations

from aiohttp import web

from .app import backend, engine, filters, query_bool, read_json, route


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/volumes", list_volumes)
    route(app, "POST", "/volumes/create", create)
    route(app, "POST", "/volumes/prune", prune)
    route(app, "GET", "/volumes/{name}", inspect)
    route(app, "DELETE", "/volumes/{name}", remove)


async def list_volumes(request: web.Request) -> web.Response:
    result = await backend(request).call(engine(request).volume_list, filters(request))
    return web.json_response(result)


async def create(request: web.Request) -> web.Response:
    body = await read_json(request) or {}
    result = await backend(request).call(engine(request).volume_create, body)
    return web.json_response(result, status=201)


async def inspect(request: web.Request) -> web.Response:
    result = await backend(request).call(engine(request).volume_inspect,
                                         request.match_info["name"])
    return web.json_response(result)


async def remove(request: web.Request) -> web.Response:
    await backend(request).call(engine(request).volume_remove, request.match_info["name"],
                                force=query_bool(request, "force"))
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    old_client = request["api_version"] < (1, 42)
    result = await backend(request).call(engine(request).volume_prune, filters(request),
                                         all_by_default=old_client)
    return web.json_response(result)
