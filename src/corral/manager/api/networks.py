"""Network endpoints of the Docker Engine API (the reference's "Network"
section): list, inspect, create, remove, connect, disconnect and prune, each
a thin mapping onto one ``Engine.network_*`` method, which takes and
returns Docker's bodies.

Statuses are the errors' own (corral.manager.errors through the app's
middleware): 404 for a network or container that is not there, 409 for a
name taken, an overlapping subnet or a network in use, 403 for the
predefined networks and for connecting twice, 400 for bad bodies, and 500
for a published port already allocated, as dockerd answers it.
"""

from __future__ import annotations

from aiohttp import web

from .app import backend, filters, read_json, route
from .containers import method


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/networks", list_networks)
    route(app, "POST", "/networks/create", create)
    route(app, "POST", "/networks/prune", prune)
    route(app, "GET", "/networks/{id}", inspect)
    route(app, "DELETE", "/networks/{id}", remove)
    route(app, "POST", "/networks/{id}/connect", connect)
    route(app, "POST", "/networks/{id}/disconnect", disconnect)


async def list_networks(request: web.Request) -> web.Response:
    rows = await backend(request).call(method(request, "network_list"),
                                       filters=filters(request))
    return web.json_response(rows)


async def inspect(request: web.Request) -> web.Response:
    document = await backend(request).call(method(request, "network_inspect"),
                                           request.match_info["id"])
    return web.json_response(document)


async def create(request: web.Request) -> web.Response:
    body = await read_json(request, required=True)
    result = await backend(request).call(method(request, "network_create"), body)
    return web.json_response(result, status=201)


async def remove(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "network_remove"),
                                request.match_info["id"])
    return web.Response(status=204)


async def connect(request: web.Request) -> web.Response:
    body = await read_json(request, required=True)
    await backend(request).call(method(request, "network_connect"),
                                request.match_info["id"], body)
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.Response:
    body = await read_json(request, required=True)
    await backend(request).call(method(request, "network_disconnect"),
                                request.match_info["id"], body)
    return web.Response(status=200)


async def prune(request: web.Request) -> web.Response:
    result = await backend(request).call(method(request, "network_prune"),
                                         filters(request))
    return web.json_response(result)
