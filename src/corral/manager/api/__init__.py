"""corrald's HTTP side: the Docker Engine API on aiohttp, one module per
resource (system, images, containers, exec, events), over the engine and
the image layer (docs/dev/manager.md). ``create_app`` makes the
application; ``corral.manager.daemon`` serves it on a unix socket."""

from .app import API_VERSION, MIN_API_VERSION, create_app
from .backend import Backend

__all__ = ["API_VERSION", "MIN_API_VERSION", "Backend", "create_app"]
