"""Read-only views of an image's root filesystem (``podman image mount``).

A view is a read-only snapshot on the image's top layer, mounted under
``<root>/mounts/<image id>``. While it exists the image cannot be removed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .errors import Error, NotFound
from .mount import is_mount_point
from .store import Image, Store


def _key(image: Image) -> str:
    return f"view {image.id}"


def mount_path(store: Store, image: Image) -> Path:
    return store.root / "mounts" / image.id.hex


def is_mounted(store: Store, image: Image) -> bool:
    return is_mount_point(mount_path(store, image))


def mount(store: Store, image: Image) -> Path:
    """Mount the image read-only (once) and return where."""
    from .mount import mount_all

    path = mount_path(store, image)
    if is_mount_point(path):
        return path
    with store.lock():
        with contextlib.suppress(NotFound):
            store.snapshots.remove(_key(image))
        mounts = store.snapshots.view(_key(image), store.top_snapshot(image))
        path.mkdir(parents=True, exist_ok=True)
        try:
            mount_all(mounts, path)
        except BaseException:
            with contextlib.suppress(Error):
                store.snapshots.remove(_key(image))
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
    return path


def unmount(store: Store, image: Image) -> bool:
    """Undo ``mount``; False if the image was not mounted."""
    from .mount import unmount as unmount_path

    path = mount_path(store, image)
    mounted = is_mount_point(path)
    if mounted:
        unmount_path(path)
    with contextlib.suppress(NotFound):
        store.snapshots.remove(_key(image))
    with contextlib.suppress(OSError):
        path.rmdir()
    return mounted


def mounted(store: Store) -> list[tuple[Image, Path]]:
    return [(image, mount_path(store, image)) for image in store.list()
            if is_mounted(store, image)]
