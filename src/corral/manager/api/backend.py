"""What the API handlers call: the engine, the image store, registry
clients, and the thread pool every blocking call runs in.

The image ``Store`` holds one SQLite connection whose transactions must not
interleave, so each pool thread opens a store of its own (a Store is safe
beside other Stores of the same root, as between processes). The engine is
one object: it is safe to call from several threads (docs/dev/manager.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InvalidArgument

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ROOT = Path("/var/lib/corral")
DEFAULT_RUN = Path("/run/corral")


class Backend:
    """The daemon's state shared by every request.

    Args:
        root: the store's and the engine's root.
        run: the engine's tmpfs directory.
        engine: a ``corral.manager.engine.Engine``; None serves the system
            and image endpoints only (the container ones answer 501).
        insecure_registries: ``host[:port]`` names that may be spoken to
            over plain HTTP (loopback registries always may).
        snapshotter: for a new store, as ``Store`` takes it.
        workers: threads for blocking calls.
    """

    def __init__(self, root: Path = DEFAULT_ROOT, run: Path = DEFAULT_RUN, *,
                 engine: Any = None, insecure_registries: Sequence[str] = (),
                 snapshotter: str | None = None, workers: int = 16) -> None:
        self.root = root
        self.run = run
        self.engine = engine
        self.insecure_registries = tuple(insecure_registries)
        self.snapshotter = snapshotter
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="api")
        self._local = threading.local()
        self._stores: list = []
        self._stores_lock = threading.Lock()

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in the pool, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor,
                                          lambda: function(*args, **kwargs))

    def store(self):
        """This thread's image store (opened on first use)."""
        store = getattr(self._local, "store", None)
        if store is None:
            from corral.image.store import Store

            store = Store(self.root, snapshotter=self.snapshotter)
            self._local.store = store
            with self._stores_lock:
                self._stores.append(store)
        return store

    def in_use(self, image) -> bool:
        """Whether a container uses ``image`` (never, without an engine)."""
        if self.engine is None:
            return False
        return bool(self.engine.image_in_use(str(image.id)))

    @contextlib.contextmanager
    def registry(self, auth: dict | None, domain: str) -> Iterator[Any]:
        """A registry client that knows only the credentials the API client
        sent (``X-Registry-Auth``), never the daemon user's own, as dockerd."""
        from corral.image.registry import Client

        config = {"auths": {}}
        if auth and (auth.get("username") or auth.get("identitytoken")):
            key = auth.get("serveraddress") or domain
            secret = f"{auth.get('username', '')}:{auth.get('password', '')}"
            entry = {"auth": base64.b64encode(secret.encode()).decode()}
            if auth.get("identitytoken"):
                entry["identitytoken"] = auth["identitytoken"]
            config["auths"][key] = entry
        fd, path = tempfile.mkstemp(prefix="auth-", suffix=".json",
                                    dir=self.store().tmp)
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(config, file)
            with Client(insecure=self.insecure_registries,
                        docker_config=Path(path)) as client:
                yield client
        finally:
            os.unlink(path)

    def close(self) -> None:
        """Stop the pool (running calls finish) and close the stores."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        with self._stores_lock:
            for store in self._stores:
                with contextlib.suppress(Exception):
                    store.close()
            self._stores.clear()


def registry_auth(header: str | None) -> dict | None:
    """The credentials of an ``X-Registry-Auth`` header: base64url JSON
    (padded or not, as clients differ)."""
    if not header:
        return None
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        auth = json.loads(decoded or b"{}")
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"X-Registry-Auth header: not base64 JSON: {exc}") from None
    if not isinstance(auth, dict):
        raise InvalidArgument("X-Registry-Auth header: not a JSON object")
    return auth
