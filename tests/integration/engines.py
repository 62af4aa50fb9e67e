"""An engine of a test's own: busybox pulled from the test registry into a
private store, a short run directory (shim sockets live under it and a
unix socket path has at most 107 bytes), and a default bridge of its own:
containers default to the bridge network, as Docker's, and two roots on one
bridge would lease the same addresses (leases are kept per root)."""

from __future__ import annotations

import random
import tempfile
import uuid
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
    engine = Engine(root, run, **private_bridge())
    engine.image = image
    return engine


def private_bridge() -> dict:
    """A default bridge and subnet no other test uses."""
    return {"default_bridge": f"ct{uuid.uuid4().hex[:8]}",
            "default_subnet": f"10.{random.randint(200, 249)}."
                              f"{random.randint(0, 255)}.0/24"}


def set_default_bridge(root: Path, run: Path) -> str:
    """Make the default bridge of a fresh ROOT a private one: the first
    process on a root records it, later ones (corral, corrald) keep it.
    Its name."""
    from corral.network import Networks

    bridge = private_bridge()
    Networks(root, run, **bridge).close()
    return bridge["default_bridge"]


def drop_networks(root: Path, run: Path) -> None:
    """Every bridge network of ROOT off the host: bridges, rules, leases; but
    never the host's default bridge, which a root the tests did not give a
    bridge of its own names, and the host's real containers may be on."""
    from corral.manager.networking import DEFAULT_BRIDGE
    from corral.network import Networks

    if (root / "networks.db").exists():
        networks = Networks(root, run)
        networks.teardown(keep={DEFAULT_BRIDGE})
        networks.close()


def remove_all(engine: Engine) -> None:
    """Every container of the engine gone, then the engine closed."""
    for container in engine.records.all():
        try:
            engine.remove(container.id, force=True)
        except errors.Error:
            engine._destroy(container.id)
    drop_networks(engine.root, engine.run)
    engine.close()
