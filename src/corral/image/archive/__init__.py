"""Images to and from archives: ``save``, ``load`` and ``import_rootfs``
(``docker save``, ``docker load``, ``docker import``).

Three formats:

- ``docker-archive``: what ``docker save`` writes (docker_archive.py);
- ``oci-archive``: a tar of an OCI image layout (image-layout.md);
- ``oci-dir``: the same layout as a directory.

A load reads the archive once as a stream into a staging directory under
the store's ``tmp``, checking every blob against its digest and size (see
oci_layout.py for how hostile members are handled), then, under the store's
shared lock, moves the blobs into the content store, unpacks every layer and
records the images last. A failure before the record removes the blobs the
load added, so the store is left as it was (committed snapshots, which are
named by content, stay for the next garbage collection).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .. import layers as unpacking
from .. import manifest as manifests
from .. import reference as references
from ..digest import Digest
from ..errors import AlreadyExists, BadContent, InvalidArgument
from ..store import Image, Store
from .docker_archive import (
    MANIFEST_FILE,
    platform_of,
    platform_text,
    read_docker_archive,
    write_docker_archive,
)
from .importer import import_rootfs
from .oci_layout import (
    INDEX_FILE,
    Blob,
    DirSource,
    DirWriter,
    Found,
    SavedImage,
    Source,
    TarSource,
    TarWriter,
    read_layout,
    write_blob,
    write_layout,
)

__all__ = ["FORMATS", "import_rootfs", "load", "save"]

FORMATS = ("docker-archive", "oci-archive", "oci-dir")


def save(store: Store, images: Sequence[str], output: BinaryIO | Path, *,
         format: str = "docker-archive") -> None:
    """Write ``images`` to one archive, blobs shared between them.

    Args:
        images: names or IDs, as ``Store.resolve`` takes them. An image given
            by a name is saved with that name; one given by ID with all its
            tags.
        output: a binary stream, or a path (a file written whole or not at
            all; for ``oci-dir``, a directory that does not exist yet or is
            empty).
        format: ``docker-archive``, ``oci-archive`` or ``oci-dir``.

    Raises:
        InvalidArgument: an unknown format, no images, an ``oci-dir`` output
            that is not a path.
        NotFound: an image that is not in the store.
        BadContent: a stored blob that fails its digest (the store is damaged).
    """
    if format not in FORMATS:
        raise InvalidArgument(f"save format '{format}': must be one of "
                              f"{', '.join(FORMATS)}")
    if not images:
        raise InvalidArgument("save: no image given")
    what = f"save {', '.join(images)}"
    with store.lock():
        selection = _select(store, images)
        if format == "oci-dir":
            if not isinstance(output, Path):
                raise InvalidArgument(f"{what}: an oci-dir output must be a path")
            with _new_directory(output) as root:
                _write(DirWriter(root), store, selection, format, what)
            return
        with _output_stream(output) as stream:
            _write(TarWriter(stream), store, selection, format, what)


def _select(store: Store, texts: Sequence[str]) -> list[tuple[Image, list[str]]]:
    chosen: dict[Digest, tuple[Image, list[str]]] = {}
    for text in texts:
        image = store.resolve(text)
        _, names = chosen.setdefault(image.id, (image, []))
        for name in _names_given(text, image):
            if name not in names:
                names.append(name)
    return list(chosen.values())


def _names_given(text: str, image: Image) -> list[str]:
    """The name ``text`` resolved through, else (an ID) all the image's names."""
    with contextlib.suppress(InvalidArgument):
        name = str(references.parse(text))
        if name in image.names:
            return [name]
    return list(image.names)


def _write(writer, store: Store, selection, format: str, what: str) -> None:
    if format == "docker-archive":
        write_docker_archive(writer, store, selection, what)
    else:
        _write_oci(writer, store, selection, what)
    writer.close()


def _write_oci(writer, store: Store, selection, what: str) -> None:
    """The blobs as stored (compressed layers stay compressed), so manifest
    digests, and with them ``name@digest`` names, survive the trip."""
    writer.directory("blobs/")
    saved = []
    for image, names in selection:
        image_what = f"{what}: image '{names[0] if names else image.id}'"
        manifest = store.manifest(image)
        for descriptor in (manifest.config, *manifest.layers):
            write_blob(writer, store.content, descriptor,
                       f"{image_what}: blob '{descriptor.digest}'")
        size = store.content.size(image.manifest) or 0
        descriptor = manifests.Descriptor(image.media_type, image.manifest, size)
        write_blob(writer, store.content, descriptor,
                   f"{image_what}: manifest '{image.manifest}'")
        saved.append(SavedImage(descriptor, platform_of(store.config(image)), names))
    write_layout(writer, saved)


@contextlib.contextmanager
def _output_stream(output: BinaryIO | Path) -> Iterator[BinaryIO]:
    if not isinstance(output, Path):
        yield output
        return
    partial = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "xb") as stream:
            yield stream
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _new_directory(output: Path) -> Iterator[Path]:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise AlreadyExists(f"save to '{output}': exists and is not an empty "
                            f"directory")
    partial = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    partial.mkdir()
    try:
        yield partial
        if output.exists():
            output.rmdir()
        os.rename(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# Loading --------------------------------------------------------------------


def load(store: Store, source: BinaryIO | Path, *,
         progress: unpacking.Progress = unpacking.no_progress) -> list[Image]:
    """Load every image of an archive; the image records, in archive order.

    The format is found from the content: ``manifest.json`` makes a
    docker-archive, ``index.json`` an OCI layout; a path may be a tar
    (plain or compressed) or a layout directory. Images are recorded with
    their names and unpacked, ready to run.

    Raises:
        BadContent: an archive that is not one, a member that fails its
            digest or size, a hostile member name or link, a layer whose tar
            is not the config's diff ID; the message names the member.
        NotSupported: a schema 1 manifest, a foreign layer, an older layout.
    """
    label = str(source) if isinstance(source, Path) else getattr(
        source, "name", "<stream>")
    what = f"load archive '{label}'"
    staging = Path(tempfile.mkdtemp(prefix="load-", dir=store.tmp))
    try:
        with _opened(source, what, staging) as archive:
            found = _read(archive)
            with store.lock():
                return _record(store, found, what, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _opened(source: BinaryIO | Path, what: str, staging: Path) -> Iterator[Source]:
    if not isinstance(source, Path):
        yield TarSource(source, what, staging)
    elif source.is_dir():
        yield DirSource(source, what, staging)
    else:
        try:
            stream = open(source, "rb")
        except OSError as exc:
            raise InvalidArgument(f"{what}: {exc.strerror}") from exc
        with stream:
            yield TarSource(stream, what, staging)


def _read(archive: Source) -> list[Found]:
    if archive.has(MANIFEST_FILE):
        return read_docker_archive(archive)
    if archive.has(INDEX_FILE):
        found = read_layout(archive)
        if not found:
            raise BadContent(f"{archive.what}: member '{INDEX_FILE}': lists no image")
        return found
    raise BadContent(f"{archive.what}: neither a docker-archive ({MANIFEST_FILE}) "
                     f"nor an OCI layout ({INDEX_FILE})")


def _record(store: Store, found: list[Found], what: str, progress) -> list[Image]:
    added: list[Digest] = []
    images = []
    try:
        for image in found:
            for blob in image.blobs:
                _commit_blob(store, blob, added)
            if not store.content.has(image.manifest_digest):
                store.content.write(image.manifest_data, image.manifest_digest)
                added.append(image.manifest_digest)
        for image in found:
            label = image.names[0] if image.names else image.manifest.config.digest.short
            size = unpacking.unpack(store, image.manifest.layers, image.config.diff_ids,
                                    image=label, progress=progress)
            images.append(_image(image, size))
    except BaseException:
        for digest in added:
            store.content.delete(digest)
        raise
    return [store.add(record, image.names) for record, image in zip(images, found, strict=True)]


def _commit_blob(store: Store, blob: Blob, added: list[Digest]) -> None:
    """Move a staged, verified blob into the content store (the staging
    directory is on the store's file system, so this is a rename)."""
    if store.content.adopt(blob.path, blob.digest):
        added.append(blob.digest)


def _image(found: Found, size: int) -> Image:
    return Image(found.manifest.config.digest, found.manifest_digest, found.media_type,
                 found.index_digest, platform_text(found.config), found.config.created,
                 time.time(), size)
