"""Push: an image of the store to a registry (distribution spec, "Push").

Blobs first (config and layers; each skipped when the registry has it, and
mounted from another repository of the same registry when the image came
from there), the manifest last, so the registry never holds a manifest that
points at a missing blob.
"""

from __future__ import annotations

import concurrent.futures
import logging

from . import reference as references
from .errors import Error, NotFound
from .layers import Progress, no_progress
from .manifest import Descriptor
from .reference import Reference
from .store import Image, Store

log = logging.getLogger(__name__)

PARALLEL_UPLOADS = 3


def push(store: Store, client, image: Image, ref: Reference, *,
         chunk_size: int | None = None, progress: Progress = no_progress) -> str:
    """Push ``image`` as ``ref``; the digest the registry now knows it by.

    Args:
        client: a ``corral.image.registry.Client``.
        chunk_size: upload blobs in chunks of this many bytes (one request
            per blob when None).
    """
    manifest = store.manifest(image)
    blobs = [manifest.config, *manifest.layers]
    for desc in blobs:
        if store.content.size(desc.digest) != desc.size:
            raise NotFound(f"push '{ref}': blob '{desc.digest}' of image "
                           f"{image.id.short} is not in the store; pull the image again")
    sources = _mount_sources(image, ref)
    for layer in manifest.layers:
        progress(layer.digest.short, "Preparing", None, None)
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_UPLOADS,
                                               thread_name_prefix="push") as pool:
        # Docker shows the layers only, not the config.
        shown = [no_progress] + [progress] * len(manifest.layers)
        futures = [pool.submit(_push_blob, store, client, ref, desc, sources, chunk_size,
                               report) for desc, report in zip(blobs, shown, strict=True)]
        for future in futures:
            future.result()
    data = store.content.read(image.manifest)
    digest = client.put_manifest(ref, data, image.media_type)
    names = [f"{ref.name}@{digest}"]
    if ref.tag:
        names.append(str(ref.with_digest(None)))
    store.add(image, names)
    log.debug("pushed %s as %s (%s)", image.id, ref, digest)
    return str(digest)


def _mount_sources(image: Image, ref: Reference) -> list[str]:
    """Other repositories of the same registry that this image came from."""
    sources = []
    for name in image.names:
        try:
            other = references.parse(name)
        except Error:
            continue
        if other.domain == ref.domain and other.path != ref.path:
            sources.append(other.path)
    return sorted(set(sources))


def _push_blob(store: Store, client, ref: Reference, desc: Descriptor,
               sources: list[str], chunk_size: int | None, progress: Progress) -> None:
    short = desc.digest.short
    if client.blob_size(ref, desc.digest) == desc.size:
        progress(short, "Layer already exists", None, None)
        return
    for source in sources:
        if client.mount_blob(ref, desc.digest, source):
            progress(short, f"Mounted from {source}", None, None)
            return
    progress(short, "Pushing", 0, desc.size)
    client.push_blob(ref, desc.digest, desc.size, store.content.path(desc.digest),
                     chunk_size=chunk_size,
                     progress=lambda done: progress(short, "Pushing", done, desc.size))
    progress(short, "Pushed", None, None)
