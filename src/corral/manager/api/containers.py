"""Container endpoints of the Docker Engine API (the reference's
"Container" section), each a thin mapping onto one ``Engine`` method: the
engine takes and returns Docker's bodies (docs/dev/manager.md).

Calls that block for a container's lifetime (wait, attach) run on threads
of their own, not in the pool, so that many of them cannot starve the
short calls. Logs are framed here: 8-byte headers without a TTY, raw bytes
with one, as ``attach`` carries them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading

from aiohttp import web

from .. import errors
from ..observe import check_log_time
from . import hijack
from .app import backend, engine, filters, query_bool, query_int, read_json, route
from .streams import iterate

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    route(app, "POST", "/containers/create", create)
    route(app, "GET", "/containers/json", list_containers)
    route(app, "POST", "/containers/prune", prune)
    for verb, handler in (("start", start), ("stop", stop), ("restart", restart),
                          ("kill", kill), ("pause", pause), ("unpause", unpause),
                          ("wait", wait), ("rename", rename), ("resize", resize),
                          ("attach", attach)):
        route(app, "POST", f"/containers/{{id}}/{verb}", handler)
    route(app, "GET", "/containers/{id}/json", inspect)
    route(app, "GET", "/containers/{id}/top", top)
    route(app, "GET", "/containers/{id}/logs", logs)
    route(app, "GET", "/containers/{id}/stats", stats)
    route(app, "DELETE", "/containers/{id}", remove)


def method(request: web.Request, name: str):
    """The engine's method ``name``; 501 if this engine lacks it."""
    found = getattr(engine(request), name, None)
    if found is None:
        missing = errors.Error(f"{request.method} {request.path}: not implemented by "
                               f"the engine ({name})")
        missing.status = 501
        raise missing
    return found


async def in_thread(function, *args, **kwargs):
    """Run a call that may block for long on a thread of its own."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def run() -> None:
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:  # raised in the handler
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=run, name="api-long", daemon=True).start()
    return await future


def _settle(future: asyncio.Future, result, exc) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _no_content() -> web.Response:
    return web.Response(status=204)


# Create, list, inspect -------------------------------------------------------------

async def create(request: web.Request) -> web.Response:
    body = await read_json(request, required=True)
    create_container = method(request, "create")
    result = await backend(request).call(create_container, body,
                                         name=request.query.get("name") or None,
                                         platform=request.query.get("platform") or None)
    return web.json_response(result, status=201)


async def list_containers(request: web.Request) -> web.Response:
    rows = await backend(request).call(
        method(request, "list"), all=query_bool(request, "all"), filters=filters(request),
        size=query_bool(request, "size"), limit=query_int(request, "limit", -1))
    return web.json_response(rows)


async def inspect(request: web.Request) -> web.Response:
    document = await backend(request).call(method(request, "inspect"),
                                           request.match_info["id"],
                                           size=query_bool(request, "size"))
    return web.json_response(document)


async def prune(request: web.Request) -> web.Response:
    result = await backend(request).call(method(request, "prune"), filters(request))
    return web.json_response(result)


# Lifecycle ---------------------------------------------------------------------------

async def start(request: web.Request) -> web.Response:
    service = backend(request)
    ref = request.match_info["id"]
    await service.call(method(request, "start"), ref)
    # The record, not the whole inspect document: this is on every start.
    container = await service.call(service.engine.resolve, ref)
    if container.host_config.get("AutoRemove"):
        _remove_after_exit(service.engine, container.id)
    return _no_content()


def _remove_after_exit(engine_, container_id: str) -> None:
    """--rm: the daemon removes the container once it has exited.

    TODO: a container started by another process, or before a restart of
    corrald, is removed only when someone waits on it; the engine's
    reconcile() should take over these.
    """
    def watch() -> None:
        try:
            engine_.wait(container_id, condition="not-running")
            engine_.remove_if_auto(container_id)
        except errors.Error as exc:
            log.warning("auto-remove of %s: %s", container_id, exc)

    threading.Thread(target=watch, name="auto-remove", daemon=True).start()


async def stop(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "stop"), request.match_info["id"],
                                timeout=query_int(request, "t"),
                                signal=request.query.get("signal") or None)
    return _no_content()


async def restart(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "restart"), request.match_info["id"],
                                timeout=query_int(request, "t"))
    return _no_content()


async def kill(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "kill"), request.match_info["id"],
                                request.query.get("signal") or "KILL")
    return _no_content()


async def pause(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "pause"), request.match_info["id"])
    return _no_content()


async def unpause(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "unpause"), request.match_info["id"])
    return _no_content()


async def remove(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "remove"), request.match_info["id"],
                                force=query_bool(request, "force"),
                                volumes=query_bool(request, "v"))
    return _no_content()


async def rename(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    if not name:
        raise errors.InvalidArgument("rename: the query parameter 'name' is needed")
    await backend(request).call(method(request, "rename"), request.match_info["id"], name)
    return _no_content()


async def resize(request: web.Request) -> web.Response:
    await backend(request).call(method(request, "resize"), request.match_info["id"],
                                height=query_int(request, "h", 0),
                                width=query_int(request, "w", 0))
    return web.Response(status=200)


async def wait(request: web.Request) -> web.StreamResponse:
    """Headers go out once the wait is under way: the docker CLI starts the
    container only when it has them, and must not miss a quick exit."""
    wait_for = method(request, "wait")
    ref = request.match_info["id"]
    await backend(request).call(method(request, "resolve"), ref)
    loop = asyncio.get_running_loop()
    begun = asyncio.Event()
    waiting = asyncio.ensure_future(in_thread(
        wait_for, ref, condition=request.query.get("condition") or "not-running",
        begun=lambda: loop.call_soon_threadsafe(begun.set)))
    # The headers once the engine has read the state it waits from: not
    # before (a quick exit would be missed), not later (the CLI waits).
    started = asyncio.ensure_future(begun.wait())
    done, _ = await asyncio.wait([waiting, started], timeout=5,
                                 return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if waiting in done:
        return web.json_response(waiting.result())
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        result = await waiting
    except errors.Error as exc:
        result = {"StatusCode": -1, "Error": {"Message": str(exc)}}
    await response.write(json.dumps(result).encode() + b"\n")
    await response.write_eof()
    return response


# Output ------------------------------------------------------------------------------

async def top(request: web.Request) -> web.Response:
    result = await backend(request).call(method(request, "top"), request.match_info["id"],
                                         request.query.get("ps_args") or "-ef")
    return web.json_response(result)


def _frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


async def logs(request: web.Request) -> web.StreamResponse:
    service = backend(request)
    ref = request.match_info["id"]
    document = await service.call(method(request, "inspect"), ref)
    for key in ("since", "until"):
        check_log_time(request.query.get(key) or None)
    tty = bool(document["Config"].get("Tty"))
    tail_text = request.query.get("tail", "all")
    tail = None if tail_text in ("", "all") else query_int(request, "tail")
    read_logs = method(request, "logs")
    lines = iterate(lambda: read_logs(
        ref, stdout=query_bool(request, "stdout"), stderr=query_bool(request, "stderr"),
        follow=query_bool(request, "follow"), since=request.query.get("since") or None,
        until=request.query.get("until") or None, tail=tail,
        timestamps=query_bool(request, "timestamps")), name="logs")
    response = web.StreamResponse(headers={
        "Content-Type": hijack.RAW_STREAM if tty else hijack.MULTIPLEXED_STREAM})
    await response.prepare(request)
    async for stream, data in lines:
        await response.write(data if tty else _frame(stream, data))
    await response.write_eof()
    return response


async def stats(request: web.Request) -> web.StreamResponse:
    stream = query_bool(request, "stream", True) and not query_bool(request, "one-shot")
    read_stats = method(request, "stats")
    ref = request.match_info["id"]
    await backend(request).call(method(request, "resolve"), ref)
    documents = iterate(lambda: read_stats(ref, stream=stream), name="stats")
    if not stream:
        async for document in documents:
            return web.json_response(document)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    async for document in documents:
        await response.write(json.dumps(document).encode() + b"\n")
    await response.write_eof()
    return response


async def attach(request: web.Request) -> web.StreamResponse:
    """The 101 goes out before the engine's attach, which waits for the
    container to start: the docker CLI starts it only after the 101."""
    service = backend(request)
    ref = request.match_info["id"]
    document = await service.call(method(request, "inspect"), ref)
    attach_to = method(request, "attach")
    response, raw = await hijack.upgrade(request, tty=bool(document["Config"].get("Tty")))
    try:
        peer = await in_thread(
            attach_to, ref, stdin=query_bool(request, "stdin"),
            stdout=query_bool(request, "stdout"), stderr=query_bool(request, "stderr"),
            logs=query_bool(request, "logs"), stream=query_bool(request, "stream"))
    except errors.Error as exc:
        log.warning("attach %s: %s", ref, exc)
        raw.close()
        return response
    await hijack.relay(raw, peer)
    return response
