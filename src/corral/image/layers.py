"""From layer blobs to committed snapshots: each layer unpacked once, into a
snapshot named by its chain ID and shared by every image that has it.

This is containerd's unpack: prepare an active snapshot on the parent chain,
mount it, apply the layer tar there, check the diff ID the tar hashed to
against the image config, and commit the snapshot under the chain ID. A
failure at any step removes the active snapshot, so nothing half-unpacked
is ever visible under a chain ID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence

from . import mediatypes
from .digest import Digest
from .errors import (
    AlreadyExists,
    BadContent,
    Error,
    LayerError,
    NotFound,
    is_no_space,
    no_space,
)
from .manifest import Descriptor, chain_ids

log = logging.getLogger(__name__)

# (layer short id, status, current bytes, total bytes): the statuses are
# Docker's ("Extracting", "Pull complete", "Already exists"), so the manager
# can forward them to the docker CLI as they are.
Progress = Callable[[str, str, int | None, int | None], None]


def no_progress(layer: str, status: str, current: int | None = None,
                total: int | None = None) -> None:
    pass


def unpack(store, layers: Sequence[Descriptor], diff_ids: Sequence[Digest], *,
           image: str, progress: Progress = no_progress,
           wait_for_blob: Callable[[int], None] | None = None) -> int:
    """Make sure every layer's snapshot is committed; return the unpacked size.

    ``wait_for_blob(i)`` blocks until layer ``i``'s blob is in the content
    store (the pull downloads in parallel while this unpacks in order).
    """
    if len(layers) != len(diff_ids):
        raise BadContent(f"image '{image}': the manifest has {len(layers)} layers but "
                         f"the config lists {len(diff_ids)} diff IDs")
    chain = chain_ids(tuple(diff_ids))
    size = 0
    for i, layer in enumerate(layers):
        if wait_for_blob is not None:
            wait_for_blob(i)
        name = str(chain[i])
        if _committed(store, name):
            size += _size(store, name)
            continue
        parent = str(chain[i - 1]) if i else None
        size += apply(store, layer, diff_ids[i], name, parent, image=image,
                      progress=progress)
    return size


# Extraction keys are "extract-<pid>-<start time>-<random> <chain ID>": the
# process that owns one is known, so a later process can tell an
# extraction in progress from one whose process was killed.
_EXTRACT = "extract-"


def _owner(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{pid}-{_start_time(pid)}"


def _start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat: when the process started (PIDs are reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "gone"


def recover(store) -> int:
    """Undo the extractions of processes that died mid-way (a killed pull):
    unmount their mount under tmp/ and remove their active snapshot. The
    number undone."""
    from .mount import unmount

    undone = 0
    for info in list(store.snapshots.walk()):
        if info.kind != "active" or not info.name.startswith(_EXTRACT):
            continue
        tag = info.name.split()[0]
        pid, _, rest = tag[len(_EXTRACT):].partition("-")
        started = rest.rsplit("-", 1)[0]
        if pid.isdigit() and _start_time(int(pid)) == started:
            continue
        unmount(store.tmp / tag)
        with contextlib.suppress(OSError):
            os.rmdir(store.tmp / tag)
        with contextlib.suppress(Error):
            store.snapshots.remove(info.name)
            undone += 1
    return undone


def _committed(store, name: str) -> bool:
    try:
        return store.snapshots.stat(name).kind == "committed"
    except NotFound:
        return False


def _size(store, name: str) -> int:
    try:
        return store.snapshots.usage(name)
    except Error:
        return 0


def apply(store, layer: Descriptor, diff_id: Digest, name: str, parent: str | None,
          *, image: str, progress: Progress = no_progress) -> int:
    """Unpack one layer blob into a new snapshot committed as ``name``."""
    try:
        return _apply(store, layer, diff_id, name, parent, image=image,
                      progress=progress)
    except Exception as exc:
        # A full disk shows up as ENOSPC from a write (inside a LayerError
        # naming the entry) or as SQLite's "database or disk full".
        if not _full_disk(exc):
            raise
        raise no_space(f"image '{image}': layer '{layer.digest}'",
                       store.root / "snapshots") from exc


def _apply(store, layer: Descriptor, diff_id: Digest, name: str, parent: str | None,
           *, image: str, progress: Progress) -> int:
    from .mount import mount_all, unmount
    from .unpack import apply_layer

    short = layer.digest.short
    what = f"image '{image}'"
    compression = mediatypes.LAYER_COMPRESSION.get(layer.media_type, "gzip")
    key = f"{_EXTRACT}{_owner()}-{uuid.uuid4().hex[:12]} {name}"
    target = store.tmp / key.split()[0]
    progress(short, "Extracting", 0, layer.size)
    mounted, mounts, full = False, [], False
    try:
        mounts = store.snapshots.prepare(key, parent)
        target.mkdir()
        mount_all(mounts, target)
        mounted = True
        with store.content.open(layer.digest) as blob:
            try:
                applied = apply_layer(target, blob, compression, what=str(layer.digest))
            except LayerError as exc:
                raise LayerError(f"{what}: {exc}", entry=exc.entry) from exc
        unmount(target)
        mounted = False
        if applied.diff_id != diff_id:
            raise LayerError(f"{what}: layer '{layer.digest}' unpacked to "
                             f"{applied.diff_id}, but the image config says {diff_id}")
        try:
            store.snapshots.commit(name, key)
        except AlreadyExists:
            # Another process unpacked the same layer first: use theirs.
            store.snapshots.remove(key)
        key = ""
    except BaseException as exc:
        full = _full_disk(exc)
        raise
    finally:
        if mounted:
            unmount(target)
        with contextlib.suppress(OSError):
            os.rmdir(target)
        if key and full:
            # Removing the record needs room in the snapshots' database:
            # free what the layer wrote first.
            _empty(_writable_dir(mounts))
        if key:
            with contextlib.suppress(Error):
                store.snapshots.remove(key)
    progress(short, "Pull complete", None, None)
    log.debug("unpacked %s into snapshot %s", layer.digest, name)
    return applied.size


def _full_disk(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an error it was raised from is a full disk."""
    while exc is not None:
        if is_no_space(exc):
            return True
        exc = exc.__cause__
    return False


def _writable_dir(mounts) -> str | None:
    """Where the writes to an active snapshot's mounts land."""
    for mount in mounts:
        for option in mount.options:
            if option.startswith("upperdir="):
                return option.removeprefix("upperdir=")
        if mount.type == "bind" and "rw" in mount.options:
            return mount.source
    return None


def _empty(directory: str | None) -> None:
    if directory is None:
        return
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in list(entries):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
