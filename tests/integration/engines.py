"""An engine of a test's own: busybox pulled from the test registry into a
private store, and a short run directory (shim sockets live under it and a
unix socket path has at most 107 bytes)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from corral.manager import errors
from corral.manager.engine import Engine


def make_engine(tmp_path: Path, image: str, client, prefix: str) -> Engine:
    from corral.image import reference
    from corral.image.pull import pull
    from corral.image.store import Store

    root, run = tmp_path / "root", Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    with Store(root) as store:
        pull(store, client, reference.parse(image))
    engine = Engine(root, run)
    engine.image = image
    return engine


def remove_all(engine: Engine) -> None:
    """Every container of the engine gone, then the engine closed."""
    for container in engine.records.all():
        try:
            engine.remove(container.id, force=True)
        except errors.Error:
            engine._destroy(container.id)
    engine.close()
