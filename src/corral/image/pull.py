"""Pull: from an image reference to an image that is ready to run.

As with podman and ``ctr pull``, a pull ends with every layer unpacked.
Layers download in parallel threads (the GIL is released while hashing and
on sockets); the calling thread unpacks them in order as each one arrives,
so unpacking the first overlaps with downloading the rest.

Nothing is recorded until everything is in place: blobs enter the content
store only verified (content.py), snapshots are committed only complete
(layers.py), and the image record and its names come last, in one
transaction.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
import time

from . import layers as unpacking
from . import manifest as manifests
from . import mediatypes
from .errors import BadContent, Error, NoSpace, NotFound
from .manifest import Descriptor, chain_ids
from .platform import Platform
from .reference import Reference
from .store import Image, Store

log = logging.getLogger(__name__)

PARALLEL_DOWNLOADS = 4


def pull(store: Store, client, ref: Reference, *, platform: Platform | None = None,
         progress: unpacking.Progress = unpacking.no_progress) -> Image:
    """Pull ``ref`` from its registry into ``store``; the image record.

    Args:
        client: a ``corral.image.registry.Client``.
        platform: which manifest of an index to take (the host's by default).
    """
    platform = platform or Platform.host()
    added = Added(store)
    try:
        with store.lock():
            return _pull(store, client, ref, platform, progress, added)
    except NoSpace:
        # The user must free space: do not keep what this pull wrote.
        added.undo()
        raise


def _pull(store: Store, client, ref: Reference, platform: Platform, progress,
          added: Added) -> Image:
    top = client.get_manifest(ref)
    added.blob(top.digest)
    store.content.write(top.data, top.digest,
                        what=f"image '{ref}': manifest '{top.digest}'")
    index_digest = None
    chosen = top
    if top.media_type in mediatypes.INDEXES:
        index_digest = top.digest
        entry = select(manifests.parse_index(top.data, top.media_type,
                                             f"image '{ref}': index"),
                       platform, str(ref))
        chosen = client.get_manifest(ref.with_digest(entry.digest))
        if len(chosen.data) != entry.size:
            raise BadContent(f"image '{ref}': manifest '{entry.digest}' is "
                             f"{len(chosen.data)} bytes, the index says {entry.size}")
        added.blob(chosen.digest)
        store.content.write(chosen.data, chosen.digest,
                            what=f"image '{ref}': manifest '{chosen.digest}'")
    return _pull_manifest(store, client, ref, chosen, index_digest, platform,
                          progress, added)


def select(index: manifests.Index, platform: Platform, image: str) -> Descriptor:
    """The index entry for ``platform``; NotFound listing what there is."""
    for entry in index.manifests:
        if entry.media_type in mediatypes.MANIFESTS and platform.matches(entry.platform or {}):
            return entry
    available = sorted({_platform_text(e.platform) for e in index.manifests if e.platform})
    raise NotFound(f"image '{image}': no manifest for platform {platform} "
                   f"(the index has: {', '.join(available) or 'no platforms'})")


def _platform_text(platform: dict) -> str:
    return "/".join(str(platform.get(k)) for k in ("os", "architecture", "variant")
                    if platform.get(k))


def _pull_manifest(store: Store, client, ref: Reference, chosen, index_digest,
                   platform: Platform, progress, added: Added) -> Image:
    what = f"image '{ref}'"
    manifest = manifests.parse_manifest(chosen.data, chosen.media_type,
                                        f"{what}: manifest '{chosen.digest}'")
    added.blob(manifest.config.digest)
    config_data = _fetch_small(store, client, ref, manifest.config, what)
    config = manifests.parse_config(config_data, f"{what}: config '{manifest.config.digest}'")
    if config.os and config.os != platform.os:
        log.warning("%s is for %s/%s, not %s", ref, config.os, config.architecture, platform)
    for layer in manifest.layers:
        progress(layer.digest.short, "Pulling fs layer", None, None)
    for layer in manifest.layers:
        added.blob(layer.digest)
    added.chain(chain_ids(tuple(config.diff_ids)))
    size = _fetch_and_unpack(store, client, ref, manifest, config, progress)
    image = Image(manifest.config.digest, chosen.digest, chosen.media_type, index_digest,
                  str(platform), config.created, time.time(), size)
    # Docker's RepoDigests: the digest the image was pulled by (the index's,
    # when there was one); and the tag, if one was asked for.
    names = [f"{ref.name}@{index_digest or chosen.digest}"]
    if ref.tag is not None:
        names.insert(0, str(ref.with_digest(None)))
    return store.add(image, names)


def _fetch_small(store: Store, client, ref: Reference, desc: Descriptor, what: str) -> bytes:
    if not store.content.has(desc.digest):
        fetch_blob(store, client, ref, desc, what=what)
    return store.content.read(desc.digest)


def _fetch_and_unpack(store: Store, client, ref: Reference, manifest, config,
                      progress) -> int:
    what = f"image '{ref}'"
    # Set when the pull fails or is interrupted (Ctrl-C): the downloads stop
    # at their next chunk, rather than the pool waiting for them to finish.
    cancelled = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_DOWNLOADS,
                                               thread_name_prefix="pull") as pool:
        futures = [pool.submit(_ensure_blob, store, client, ref, layer, what, progress,
                               cancelled) for layer in manifest.layers]
        try:
            return unpacking.unpack(store, manifest.layers, config.diff_ids, image=str(ref),
                                    progress=progress,
                                    wait_for_blob=lambda i: futures[i].result())
        except BaseException:
            cancelled.set()
            for future in futures:
                future.cancel()
            raise


def _ensure_blob(store: Store, client, ref: Reference, layer: Descriptor, what: str,
                 progress, cancelled: threading.Event) -> None:
    short = layer.digest.short
    if store.content.size(layer.digest) == layer.size:
        progress(short, "Already exists", None, None)
        return
    fetch_blob(store, client, ref, layer, what=what, progress=progress, cancelled=cancelled)
    progress(short, "Download complete", None, None)


def fetch_blob(store: Store, client, ref: Reference, desc: Descriptor, *, what: str,
               progress=unpacking.no_progress,
               cancelled: threading.Event | None = None) -> None:
    """Download one blob into the content store, resuming an earlier ingest."""
    short = desc.digest.short
    blob_what = f"{what}: blob '{desc.digest}'"
    with store.content.ingest(desc.digest, desc.size, what=blob_what) as writer:
        if writer.done or _whole(writer, desc.size):
            return
        with client.fetch_blob(ref, desc.digest, offset=writer.offset) as stream:
            if stream.offset != writer.offset:
                writer.restart()
            last = 0.0
            for chunk in stream:
                if cancelled is not None and cancelled.is_set():
                    raise Error(f"{blob_what}: download stopped")
                writer.write(chunk)
                now = time.monotonic()
                if now - last > 0.1:
                    progress(short, "Downloading", writer.written, desc.size)
                    last = now
        progress(short, "Verifying Checksum", writer.written, desc.size)
        writer.commit()


def _whole(writer, size: int) -> bool:
    """Whether an earlier pull, stopped before its commit, got every byte:
    then they are committed here (a Range from the end would be refused
    with a 416). Bytes that do not check out are thrown away, for a fetch
    from the start."""
    if writer.offset != size or not size:
        return False
    try:
        writer.commit()
    except BadContent:
        writer.restart()
        return False
    return True


class Added:
    """What one pull adds to the store, for a pull that a full disk stops to
    take out again: blobs and snapshots that it found missing and that no
    image needs (under the exclusive lock, so no other pull is half-way)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.blobs: list = []
        self.snapshots: list[str] = []

    def blob(self, digest) -> None:
        if not self.store.content.has(digest):
            self.blobs.append(digest)

    def chain(self, chain) -> None:
        self.snapshots += [str(name) for name in chain
                           if not unpacking._committed(self.store, str(name))]

    def undo(self) -> None:
        store = self.store
        with store.lock(exclusive=True):
            images = store.list()
            blobs = set().union(*(store._blobs_of(image) for image in images))
            chains = {str(name) for image in images for name in store.chain(image)}
            for digest in self.blobs:
                if digest not in blobs:
                    store.content.delete(digest)
            # The ingests that the other downloads left when they stopped.
            store.content.sweep_ingests()
            # The top first: a snapshot goes only after its children.
            for name in reversed(self.snapshots):
                if name not in chains:
                    with contextlib.suppress(Error, sqlite3.Error):
                        store.snapshots.remove(name)

