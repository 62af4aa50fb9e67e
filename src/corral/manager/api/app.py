"""The aiohttp application of the Docker Engine API, and what every
endpoint shares: the ``/v1.NN`` prefix, the version check, error bodies
and the parsing of queries and JSON bodies.

Versions: we serve API 1.24 to 1.47. Clients send the version they use as a
path prefix; the docker CLI takes the lesser of its own newest (1.50 for CLI
28) and our ``Api-Version`` header, and docker-py reads ``ApiVersion`` from
``/version``. We advertise 1.47 (Docker 27) rather than 1.50 because the
bodies our engine and ``corral.image.describe`` produce are those of the
1.4x documents, and 1.48 changed image documents (manifests, platform and
descriptor details of the containerd store) that we do not produce. A
request without a prefix is served as the newest version, as dockerd does.

Errors: a handler raises the error of its layer; the middleware maps the
class to a status (``corral.manager.errors`` carry theirs, the image layer's
are mapped here, at the edge) and answers ``{"message": ...}``, which the
clients show. Unknown endpoints are 404 ``page not found``.
"""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web

import corral

from .. import errors, observe
from .backend import Backend

log = logging.getLogger(__name__)

MIN_API_VERSION = (1, 24)
API_VERSION = tuple(int(part) for part in observe.API_VERSION.split("."))
BACKEND = web.AppKey("backend", Backend)

_VERSION_PREFIX = r"/{version:(?:v[0-9]+\.[0-9]+/)?}"
_VERSION_TEXT = re.compile(r"/v([0-9]+)\.([0-9]+)/")


def version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def route(app: web.Application, method: str, path: str, handler) -> None:
    """Serve ``path`` with and without a ``/vX.Y`` prefix."""
    app.router.add_route(method, _VERSION_PREFIX + path.lstrip("/"), handler)


def backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


def engine(request: web.Request):
    """The engine, or 501 when the daemon runs without one."""
    found = request.app[BACKEND].engine
    if found is None:
        raise web.HTTPNotImplemented(
            text=json.dumps({"message": "this corrald serves images only: no engine"}),
            content_type="application/json")
    return found


def create_app(backend: Backend) -> web.Application:
    """The Docker Engine API over ``backend``."""
    from . import containers, events, exec, images, networks, system, volumes

    app = web.Application(middlewares=[_errors, _versions], client_max_size=1 << 20)
    app[BACKEND] = backend
    app.on_response_prepare.append(_common_headers)
    for module in (system, images, containers, exec, events, networks, volumes):
        module.add_routes(app)
    return app


# Middleware ---------------------------------------------------------------

@web.middleware
async def _versions(request: web.Request, handler):
    """Check the version of the path's prefix; request["api_version"]."""
    version = API_VERSION
    prefix = request.match_info.get("version") or ""
    if prefix:
        version = tuple(int(part) for part in prefix[1:-1].split("."))
        if version > API_VERSION:
            raise errors.InvalidArgument(
                f"client version {version_text(version)} is too new. Maximum supported "
                f"API version is {version_text(API_VERSION)}")
        if version < MIN_API_VERSION:
            raise errors.InvalidArgument(
                f"client version {version_text(version)} is too old. Minimum supported "
                f"API version is {version_text(MIN_API_VERSION)}, please upgrade your "
                f"client to a newer version")
    request["api_version"] = version
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        message = "page not found" if exc.status == 404 else exc.reason.lower()
        return _error_response(exc.status, message)
    except errors.NotModified:
        return web.Response(status=304)
    except Exception as exc:
        status = status_of(exc)
        if status is None:
            raise
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc)
        return _error_response(status, str(exc), getattr(exc, "exit_status", None))


def _error_response(status: int, message: str,
                    exit_status: int | None = None) -> web.Response:
    # ExitStatus: a failed start's 125/126/127 for our own CLI, which need
    # not guess it from the message as the docker CLI does.
    body: dict = {"message": message}
    if exit_status is not None:
        body["ExitStatus"] = exit_status
    return web.json_response(body, status=status)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of one of our errors; None for anything else (a bug,
    which aiohttp answers with a bare 500 and logs with its traceback)."""
    from corral.image import errors as image_errors

    if isinstance(exc, errors.Error):
        return exc.status
    table = ((image_errors.NotFound, 404), (image_errors.InvalidArgument, 400),
             (image_errors.AlreadyExists, 409), (image_errors.FailedPrecondition, 409),
             (image_errors.Unauthorized, 401), (image_errors.Unavailable, 503),
             (image_errors.NotSupported, 501), (image_errors.Error, 500))
    for cls, status in table:
        if isinstance(exc, cls):
            return status
    if isinstance(exc, OSError):
        return 500
    return None


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    # The Go client reads an error's "message" only when the type is exactly
    # application/json (no charset); else it shows the raw body.
    if response.headers.get("Content-Type", "").startswith("application/json;"):
        response.headers["Content-Type"] = "application/json"
    response.headers["Api-Version"] = version_text(API_VERSION)
    response.headers["Docker-Experimental"] = "false"
    response.headers["Ostype"] = "linux"
    response.headers["Server"] = f"Corral/{corral.__version__} (linux)"


# Requests -----------------------------------------------------------------

_FALSE = frozenset({"", "0", "no", "false", "none"})


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter as Docker reads one (``1``, ``true``...)."""
    if name not in request.query:
        return default
    return request.query[name].strip().lower() not in _FALSE


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    text = request.query.get(name, "")
    if text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise errors.InvalidArgument(f"query parameter '{name}': '{text}' is not an "
                                     f"integer") from None


def filters(request: web.Request) -> dict[str, list[str]]:
    """The ``filters`` query: ``{"key": ["value"]}``, also read from the older
    ``{"key": {"value": true}}`` form that the docker CLI still sends."""
    text = request.query.get("filters", "")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise errors.InvalidArgument(f"query parameter 'filters': malformed JSON: "
                                     f"{exc}") from None
    if not isinstance(raw, dict):
        raise errors.InvalidArgument("query parameter 'filters': not a JSON object")
    result = {}
    for key, values in raw.items():
        if isinstance(values, dict):
            values = [value for value, on in values.items() if on]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise errors.InvalidArgument(f"filter '{key}': values must be strings")
        result[key] = values
    return result


async def read_json(request: web.Request, *, required: bool = False) -> dict | None:
    """The request's JSON object body; None when empty and not ``required``."""
    data = await request.read()
    if not data.strip():
        if required:
            raise errors.InvalidArgument("request body: empty, a JSON object is needed")
        return None
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise errors.InvalidArgument(f"request body: malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.InvalidArgument(f"request body: a JSON object is needed, not "
                                     f"{type(body).__name__}")
    return body
