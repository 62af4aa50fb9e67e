"""Image endpoints of the Docker Engine API (the reference's "Image"
section), served by ``corral.image`` directly: list, pull and import
(``POST /images/create``), inspect, history, tag, push, remove, prune, and
save and load of docker-archive tarballs.

Pull and push answer with Docker's JSON progress stream, one object per
line, which the docker CLI renders: ``{"status", "progressDetail":
{"current", "total"}, "id"}`` per layer, then the summary lines. The image
layer already reports Docker's statuses ("Pulling fs layer", "Downloading",
"Pull complete" ...); this module only frames them.

Images are named in messages as Docker names them (``No such image:
busybox:latest``), because users compare with dockerd's.
"""

from __future__ import annotations

import asyncio
import datetime
import threading

from aiohttp import web

from corral.image import errors as image_errors

from .. import errors
from .app import backend, filters, query_bool, route
from .backend import registry_auth
from .streams import BodyReader, ChannelWriter, from_thread, json_lines


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/images/json", list_images)
    route(app, "POST", "/images/create", create_image)
    route(app, "GET", "/images/get", save_images)
    route(app, "POST", "/images/load", load_images)
    route(app, "POST", "/images/prune", prune_images)
    route(app, "GET", "/images/{name:.+}/json", inspect_image)
    route(app, "GET", "/images/{name:.+}/history", image_history)
    route(app, "GET", "/images/{name:.+}/get", save_image)
    route(app, "POST", "/images/{name:.+}/tag", tag_image)
    route(app, "POST", "/images/{name:.+}/push", push_image)
    route(app, "DELETE", "/images/{name:.+}", remove_image)


# Names and times -----------------------------------------------------------

def _shown(text: str) -> str:
    """``text`` as Docker shows it in a message: normalized, familiar."""
    from corral.image import reference
    from corral.image.describe import familiar

    hex_ = text.removeprefix("sha256:")
    if len(hex_) >= 4 and all(c in "0123456789abcdef" for c in hex_):
        return text
    try:
        return familiar(str(reference.parse(text)))
    except image_errors.InvalidArgument:
        return text


def resolve(store, text: str):
    """The image ``text`` names; Docker's 404 when there is none."""
    try:
        return store.resolve(text)
    except image_errors.NotFound:
        raise errors.NotFound(f"No such image: {_shown(text)}") from None


def unix_time(text: str | None) -> int:
    """RFC 3339 (nanoseconds allowed) to seconds since the epoch; 0 if unset."""
    if not text:
        return 0
    main, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{main}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())


def human_size(size: float) -> str:
    """Docker's decimal sizes in progress bars: ``1.2MB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"


def progress_message(layer: str, status: str, current: int | None,
                     total: int | None) -> dict:
    """One line of the pull and push stream."""
    message: dict = {"status": status, "progressDetail": {}, "id": layer}
    if current is not None:
        message["progressDetail"] = {"current": current, "total": total or 0}
        if total:
            filled = min(50, 50 * current // total)
            arrow = "=" * max(filled - 1, 0) + (">" if filled < 50 else "=")
            message["progress"] = (f"[{arrow:<50}] {human_size(current):>8}/"
                                   f"{human_size(total)}")
    return message


# List, inspect, history -------------------------------------------------------

def _summary(store, image, api_version: tuple[int, int]) -> dict:
    from corral.image.describe import familiar

    labels = (store.config(image).raw.get("config") or {}).get("Labels") or {}
    summary = {"Id": str(image.id), "ParentId": "",
               "RepoTags": [familiar(n) for n in image.tags],
               "RepoDigests": [familiar(n) for n in image.digests],
               "Created": unix_time(image.created), "Size": image.size,
               "SharedSize": -1, "Labels": labels, "Containers": -1}
    if api_version < (1, 44):
        summary["VirtualSize"] = image.size
    return summary


def _matches(image, wanted: dict[str, list[str]]) -> bool:
    import fnmatch

    from corral.image.describe import familiar, repository_and_tag

    dangling = wanted.get("dangling")
    if dangling and (not image.tags) != (dangling[0].lower() in ("1", "true")):
        return False
    patterns = wanted.get("reference")
    if patterns:
        shown = [familiar(n) for n in image.tags]
        shown += [repository_and_tag(n)[0] for n in image.tags]
        if not any(fnmatch.fnmatchcase(name, pattern)
                   for name in shown for pattern in patterns):
            return False
    return True


def _list(service, wanted: dict, api_version) -> list[dict]:
    store = service.store()
    return [_summary(store, image, api_version) for image in store.list()
            if _matches(image, wanted)]


async def list_images(request: web.Request) -> web.Response:
    service = backend(request)
    wanted = filters(request)
    return web.json_response(await service.call(_list, service, wanted,
                                                request["api_version"]))


def _inspect(service, name: str) -> dict:
    from corral.image.describe import inspect

    store = service.store()
    return inspect(store, resolve(store, name))


async def inspect_image(request: web.Request) -> web.Response:
    service = backend(request)
    return web.json_response(await service.call(_inspect, service,
                                                request.match_info["name"]))


def _history(service, name: str) -> list[dict]:
    from corral.image.describe import familiar, history

    store = service.store()
    image = resolve(store, name)
    rows = []
    for row in history(store, image):
        tags = [familiar(n) for n in image.tags] if row.id == str(image.id) else None
        rows.append({"Id": row.id, "Created": unix_time(row.created),
                     "CreatedBy": row.created_by, "Tags": tags, "Size": row.size,
                     "Comment": row.comment})
    return rows


async def image_history(request: web.Request) -> web.Response:
    service = backend(request)
    return web.json_response(await service.call(_history, service,
                                                request.match_info["name"]))


# Tag, remove, prune -------------------------------------------------------------

def _tag(service, name: str, repo: str, tag: str) -> None:
    store = service.store()
    image = resolve(store, name)
    if not repo:
        raise errors.InvalidArgument(f"tag image '{name}': no repository given")
    store.tag(image, f"{repo}:{tag}" if tag else repo)


async def tag_image(request: web.Request) -> web.Response:
    service = backend(request)
    await service.call(_tag, service, request.match_info["name"],
                       request.query.get("repo", ""), request.query.get("tag", ""))
    return web.Response(status=201)


def _remove(service, name: str, force: bool) -> list[dict]:
    from corral.image.removal import remove

    store = service.store()
    resolve(store, name)
    removed = remove(store, name, force=force, in_use=service.in_use)
    return ([{"Untagged": name} for name in removed.untagged]
            + [{"Deleted": image_id} for image_id in removed.deleted])


async def remove_image(request: web.Request) -> web.Response:
    service = backend(request)
    return web.json_response(await service.call(
        _remove, service, request.match_info["name"], query_bool(request, "force")))


def _prune(service, all_images: bool) -> dict:
    from corral.image.removal import prune

    removed = prune(service.store(), all_images=all_images, in_use=service.in_use)
    deleted = ([{"Untagged": name} for name in removed.untagged]
               + [{"Deleted": image_id} for image_id in removed.deleted])
    return {"ImagesDeleted": deleted or None, "SpaceReclaimed": removed.reclaimed}


async def prune_images(request: web.Request) -> web.Response:
    service = backend(request)
    dangling = filters(request).get("dangling", ["true"])
    all_images = dangling[0].lower() in ("0", "false")
    return web.json_response(await service.call(_prune, service, all_images))


# Pull and import ------------------------------------------------------------------

def _pull(service, text: str, platform: str | None, auth, send) -> None:
    from corral.image import reference
    from corral.image.describe import familiar
    from corral.image.platform import Platform
    from corral.image.pull import pull

    ref = reference.parse(text)
    store = service.store()
    try:
        before = store.resolve(str(ref)).id
    except image_errors.NotFound:
        before = None
    lock, started = threading.Lock(), []

    def begin() -> None:
        with lock:
            if not started:
                started.append(True)
                send({"status": f"Pulling from {ref.path}",
                      "id": ref.tag or str(ref.digest)})

    def progress(layer: str, status: str, current=None, total=None) -> None:
        begin()
        send(progress_message(layer, status, current, total))

    with service.registry(auth, ref.domain) as client:
        image = pull(store, client, ref, platform=Platform.parse(platform)
                     if platform else None, progress=progress)
    begin()
    send({"status": f"Digest: {image.index_digest or image.manifest}"})
    fresh = "Image is up to date" if before == image.id else "Downloaded newer image"
    send({"status": f"Status: {fresh} for {familiar(str(ref))}"})


def _import(service, source, repo: str, tag: str, changes: list[str],
            message: str | None, send) -> None:
    from corral.image import archive

    name = (f"{repo}:{tag}" if tag else repo) or None
    image = archive.import_rootfs(service.store(), source, reference=name,
                                  changes=changes, message=message)
    send({"status": str(image.id)})


async def create_image(request: web.Request) -> web.StreamResponse:
    service = backend(request)
    query = request.query
    auth = registry_auth(request.headers.get("X-Registry-Auth"))
    if query.get("fromSrc"):
        return await _create_by_import(request, service)
    text = query.get("fromImage", "")
    if not text:
        raise errors.InvalidArgument("pull: fromImage or fromSrc is needed")
    tag = query.get("tag", "")
    if tag:
        text += f"@{tag}" if ":" in tag else f":{tag}"
    platform = query.get("platform") or None
    return await json_lines(request, from_thread(
        lambda send: _pull(service, text, platform, auth, send), name="pull"))


async def _create_by_import(request: web.Request, service) -> web.StreamResponse:
    query = request.query
    if query["fromSrc"] != "-":
        raise errors.InvalidArgument(f"import from '{query['fromSrc']}': only '-' (the "
                                     f"request body) is supported")
    reader = BodyReader(request, asyncio.get_running_loop())
    changes = query.getall("changes", [])
    return await json_lines(request, from_thread(
        lambda send: _import(service, reader, query.get("repo", ""),
                             query.get("tag", ""), changes, query.get("message"), send),
        name="import"))


# Push -------------------------------------------------------------------------------

def _push(service, name: str, tag: str, auth, send) -> None:
    from corral.image import reference
    from corral.image.push import push

    ref = reference.parse(f"{name}:{tag}" if tag else name)
    store = service.store()
    image = resolve(store, str(ref))
    send({"status": f"The push refers to repository [{ref.name}]"})
    with service.registry(auth, ref.domain) as client:
        digest = push(store, client, image, ref,
                      progress=lambda layer, status, current=None, total=None:
                      send(progress_message(layer, status, current, total)))
    size = store.content.size(image.manifest) or 0
    shown_tag = ref.tag or "latest"
    send({"status": f"{shown_tag}: digest: {digest} size: {size}",
          "progressDetail": {}})
    send({"progressDetail": {}, "aux": {"Tag": shown_tag, "Digest": digest,
                                        "Size": size}})


async def push_image(request: web.Request) -> web.StreamResponse:
    service = backend(request)
    auth = registry_auth(request.headers.get("X-Registry-Auth"))
    name, tag = request.match_info["name"], request.query.get("tag", "")
    return await json_lines(request, from_thread(
        lambda send: _push(service, name, tag, auth, send), name="push"))


# Save and load ------------------------------------------------------------------------

def _save(service, names: list[str], send) -> None:
    from corral.image import archive

    store = service.store()
    for name in names:
        resolve(store, name)
    writer = ChannelWriter(send)
    archive.save(store, names, writer, format="docker-archive")
    writer.flush()


async def _tarball(request: web.Request, names: list[str]) -> web.StreamResponse:
    service = backend(request)
    if not names:
        raise errors.InvalidArgument("save: no image given (names=...)")
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    chunks = from_thread(lambda send: _save(service, names, send), name="save")
    started = False
    async for chunk in chunks:
        if not started:
            await response.prepare(request)
            started = True
        await response.write(chunk)
    if not started:
        await response.prepare(request)
    await response.write_eof()
    return response


async def save_images(request: web.Request) -> web.StreamResponse:
    return await _tarball(request, request.query.getall("names", []))


async def save_image(request: web.Request) -> web.StreamResponse:
    return await _tarball(request, [request.match_info["name"]])


def _load(service, source) -> list[dict]:
    from corral.image import archive
    from corral.image.describe import familiar

    store = service.store()
    before = {image.id: set(image.tags) for image in store.list()}
    lines = []
    for image in archive.load(store, source):
        # The names the archive gave: those new to the image (all of them
        # when it is loaded again as it was).
        # TODO: archive.load could return the names it recorded; a name the
        # image had already is not reported when the archive adds others.
        tags = [n for n in image.tags if n not in before.get(image.id, ())]
        for name in tags or image.tags:
            lines.append({"stream": f"Loaded image: {familiar(name)}\n"})
        if not image.tags:
            lines.append({"stream": f"Loaded image ID: {image.id}\n"})
    return lines


async def load_images(request: web.Request) -> web.StreamResponse:
    service = backend(request)
    reader = BodyReader(request, asyncio.get_running_loop())
    lines = await service.call(_load, service, reader)

    async def items():
        for line in lines:
            yield line

    return await json_lines(request, items())
