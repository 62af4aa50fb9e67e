"""The OCI image layout (OCI image spec, image-layout.md): ``oci-layout``,
``index.json`` and ``blobs/<alg>/<hex>``, as a directory or as a tar.

This module has the two halves every archive format here shares:

- reading: an archive is hostile. A tar is read once, as a stream, and each
  regular member is copied into a private staging directory under a name of
  ours (a counter, then its digest), hashed as it passes; nothing is ever
  extracted under the names the archive gives. Member names are cleaned
  lexically (no absolute names, no ``..``); a symlink or hard link member is
  kept only as an alias of another member of the archive, resolved by name,
  never on disk (``docker save`` before 25 and skopeo write such links);
  any other member type is refused. A directory source is read with
  ``O_NOFOLLOW`` on every component, so a symlink in it is refused.
- writing: a tar written member by member (or a directory), so that a layer
  can be decompressed on its way out without ever being held whole.

On top of those, ``read_layout`` and ``write_layout`` are the OCI layout
itself; docker_archive.py adds ``manifest.json`` to the same pieces.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from .. import manifest as manifests
from .. import mediatypes
from .. import reference as references
from ..digest import Digest, Verifier
from ..errors import BadContent, InvalidArgument, NotSupported

CHUNK = 1 << 20
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
INDEX_FILE = "index.json"
# Annotations of an index entry naming the image (OCI annotations.md; the
# second is containerd's, which Docker 25+ writes too).
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"
# How many links a name may go through before we call it a loop.
_MAX_LINKS = 16
_SMALL_LIMIT = 16 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What a broken compressed stream raises.
DECOMPRESS_ERRORS = (zlib.error, EOFError, zstandard.ZstdError)


def clean_name(name: str, what: str) -> str:
    """An archive member name made relative and normal, or BadContent when
    it is absolute or climbs out with ``..``."""
    if not name or name.startswith("/") or "\0" in name:
        raise BadContent(f"{what}: member '{name}': not a relative name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadContent(f"{what}: member '{name}': a '..' in the name points "
                         f"outside the archive")
    if not parts:
        raise BadContent(f"{what}: member '{name}': an empty name")
    return "/".join(parts)


def blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def digest_of_name(name: str) -> Digest | None:
    """The digest a ``blobs/<alg>/<hex>`` name promises, if it is one."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return None
    try:
        return Digest.parse(f"{parts[1]}:{parts[2]}")
    except InvalidArgument:
        return None


def compression_of(head: bytes) -> str | None:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return None


def decompressed(stream: BinaryIO, compression: str | None) -> Iterator[bytes]:
    """The uncompressed bytes of ``stream`` in chunks (gzip members and zstd
    frames may follow one another, as with ``cat a.gz b.gz``)."""
    if compression is None:
        while chunk := stream.read(CHUNK):
            yield chunk
    elif compression == "zstd":
        with zstandard.ZstdDecompressor().stream_reader(
                stream, read_across_frames=True, closefd=False) as reader:
            while chunk := reader.read(CHUNK):
                yield chunk
    else:
        yield from _gunzip(stream)


def _gunzip(stream: BinaryIO) -> Iterator[bytes]:
    inflate = zlib.decompressobj(wbits=31)
    pending = False  # input seen since the last member ended
    while data := stream.read(CHUNK):
        while data:
            yield inflate.decompress(data)
            pending = True
            data = b""
            if inflate.eof:
                data = inflate.unused_data
                inflate = zlib.decompressobj(wbits=31)
                pending = False
    if pending:
        raise zlib.error("truncated gzip stream")


@dataclass
class Blob:
    """One regular file of an archive, staged and hashed."""

    name: str
    path: Path
    digest: Digest
    size: int
    compression: str | None
    _diff_id: Digest | None = field(default=None, repr=False)

    def diff_id(self, what: str) -> Digest:
        """The sha256 of the uncompressed content (a layer's diff ID)."""
        if self._diff_id is None:
            if self.compression is None and self.digest.algorithm == "sha256":
                self._diff_id = self.digest
            else:
                self._diff_id = _hash_decompressed(self, what)
        return self._diff_id


def _hash_decompressed(blob: Blob, what: str) -> Digest:
    hasher = hashlib.sha256()
    try:
        with open(blob.path, "rb") as file:
            for chunk in decompressed(file, blob.compression):
                hasher.update(chunk)
    except DECOMPRESS_ERRORS as exc:
        raise BadContent(f"{what}: member '{blob.name}': cannot decompress "
                         f"({blob.compression}): {exc}") from exc
    return Digest("sha256", hasher.hexdigest())


class Source:
    """What the format readers need of an archive: its member names, small
    members whole, and members staged as blobs."""

    def __init__(self, what: str, staging: Path) -> None:
        self.what = what
        self.staging = staging
        self._parts = 0

    def names(self) -> set[str]:
        raise NotImplementedError

    def blob(self, name: str) -> Blob:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        return name in self.names()

    def read(self, name: str, *, limit: int = _SMALL_LIMIT) -> bytes:
        blob = self.blob(name)
        if blob.size > limit:
            raise BadContent(f"{self.what}: member '{blob.name}': larger than "
                             f"{limit} bytes")
        return blob.path.read_bytes()

    def _stage(self, name: str, stream: BinaryIO, size: int | None) -> Blob:
        """Copy ``stream`` into the staging directory, checking it against the
        digest its name promises, if any; deduplicated by digest."""
        what = f"{self.what}: member '{name}'"
        promised = digest_of_name(name)
        hasher = promised.hasher() if promised else hashlib.sha256()
        self._parts += 1
        temporary = self.staging / f"part-{self._parts}"
        count, head = 0, b""
        with open(temporary, "wb") as out:
            while chunk := stream.read(CHUNK):
                if not head:
                    head = chunk[:4]
                hasher.update(chunk)
                out.write(chunk)
                count += len(chunk)
        if size is not None and count != size:
            raise BadContent(f"{what}: truncated: {count} of {size} bytes")
        digest = Digest(promised.algorithm if promised else "sha256", hasher.hexdigest())
        if promised and digest != promised:
            raise BadContent(f"{what}: digest mismatch: the name says {promised}, "
                             f"the content is {digest}")
        final = self.staging / f"{digest.algorithm}-{digest.hex}"
        os.replace(temporary, final)
        return Blob(name, final, digest, count, compression_of(head))


class TarSource(Source):
    """A tar archive (plain or compressed) read once, as a stream."""

    def __init__(self, stream: BinaryIO, what: str, staging: Path) -> None:
        super().__init__(what, staging)
        self._blobs: dict[str, Blob] = {}
        self._links: dict[str, str] = {}
        member = None
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    self._member(tar, member)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            # A cut inside a member fails while it is read; name that member.
            where = f"at member '{member.name}'" if member else "at its start"
            raise BadContent(f"{what}: not a readable tar archive: {where}: "
                             f"{exc}") from exc

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if member.isdir():
            return  # we make no directories, so their names do not matter
        name = clean_name(member.name, self.what)
        if name in self._blobs or name in self._links:
            raise BadContent(f"{self.what}: member '{name}': appears twice")
        if member.issym():
            target = member.linkname
            if target.startswith("/"):
                raise BadContent(f"{self.what}: member '{name}': a symlink to "
                                 f"'{target}', outside the archive")
            joined = posixpath.join(posixpath.dirname(name), target)
            self._links[name] = _inside(joined, name, target, self.what)
        elif member.islnk():
            self._links[name] = _inside(member.linkname, name, member.linkname,
                                        self.what)
        elif member.isreg():
            stream = tar.extractfile(member)
            assert stream is not None
            self._blobs[name] = self._stage(name, stream, member.size)
        else:
            raise BadContent(f"{self.what}: member '{name}': a device, fifo or "
                             f"other special file, not a regular file")

    def names(self) -> set[str]:
        return set(self._blobs) | set(self._links)

    def blob(self, name: str) -> Blob:
        current = clean_name(name, self.what)
        for _ in range(_MAX_LINKS):
            if current not in self._links:
                break
            current = self._links[current]
        else:
            raise BadContent(f"{self.what}: member '{name}': too many links")
        try:
            return self._blobs[current]
        except KeyError:
            raise BadContent(f"{self.what}: member '{name}': not in the archive") from None


def _inside(joined: str, name: str, target: str, what: str) -> str:
    normal = posixpath.normpath(joined)
    if normal == ".." or normal.startswith("../") or normal.startswith("/"):
        raise BadContent(f"{what}: member '{name}': a link to '{target}', "
                         f"outside the archive")
    return normal


class DirSource(Source):
    """An OCI layout (or an unpacked docker-archive) as a directory."""

    def __init__(self, root: Path, what: str, staging: Path) -> None:
        super().__init__(what, staging)
        self.root = root
        self._staged: dict[str, Blob] = {}

    def names(self) -> set[str]:
        found = set()
        for directory, _, files in os.walk(self.root):
            relative = os.path.relpath(directory, self.root)
            found.update(clean_name(posixpath.join(relative, f), self.what)
                         for f in files)
        return found

    def has(self, name: str) -> bool:
        with contextlib.suppress(BadContent):
            os.close(self._open(clean_name(name, self.what)))
            return True
        return False

    def blob(self, name: str) -> Blob:
        name = clean_name(name, self.what)
        if name not in self._staged:
            fd = self._open(name)
            with os.fdopen(fd, "rb") as file:
                self._staged[name] = self._stage(name, file, None)
        return self._staged[name]

    def _open(self, name: str) -> int:
        """Open ``name`` under the root without following any symlink."""
        parts = name.split("/")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                following = os.open(part, flags | (0 if last else os.O_DIRECTORY),
                                    dir_fd=fd)
                os.close(fd)
                fd = following
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BadContent(f"{self.what}: '{name}': not a regular file")
        except OSError as exc:
            os.close(fd)
            raise BadContent(f"{self.what}: '{name}': {exc.strerror} "
                             f"(symlinks are refused)") from exc
        except BaseException:
            os.close(fd)
            raise
        return fd


# Writing --------------------------------------------------------------------

Chunks = Callable[[], Iterable[bytes]]


class TarWriter:
    """Members written one after another to a binary stream, as ustar/GNU
    headers that tarfile, Go's archive/tar and GNU tar all read."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.written: set[str] = set()
        try:
            self._seekable = stream.seekable() and stream.tell() >= 0
        except (OSError, AttributeError, ValueError):
            self._seekable = False

    def directory(self, name: str) -> None:
        info = _info(name, 0, tarfile.DIRTYPE)
        self.stream.write(info.tobuf(tarfile.GNU_FORMAT))

    def add(self, name: str, data: bytes) -> None:
        self.stream.write(_info(name, len(data)).tobuf(tarfile.GNU_FORMAT))
        self.stream.write(data)
        self._pad(len(data))
        self.written.add(name)

    def add_chunks(self, name: str, chunks: Chunks) -> int:
        """A member of unknown size: on a seekable stream its header is
        written again once the size is known; otherwise ``chunks`` runs twice,
        once only to count."""
        if self._seekable:
            start = self.stream.tell()
            self.stream.write(_info(name, 0).tobuf(tarfile.GNU_FORMAT))
            size = sum(self.stream.write(chunk) or 0 for chunk in chunks())
            end = self.stream.tell()
            self.stream.seek(start)
            self.stream.write(_info(name, size).tobuf(tarfile.GNU_FORMAT))
            self.stream.seek(end)
        else:
            size = sum(len(chunk) for chunk in chunks())
            self.stream.write(_info(name, size).tobuf(tarfile.GNU_FORMAT))
            written = sum(self.stream.write(chunk) or 0 for chunk in chunks())
            if written != size:
                raise BadContent(f"member '{name}': changed while being written")
        self._pad(size)
        self.written.add(name)
        return size

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self.stream.write(b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        self.stream.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        self.stream.flush()


def _info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 0  # reproducible archives, as docker save writes them
    return info


class DirWriter:
    """The same members as files under a directory (an ``oci-dir`` layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[str] = set()

    def directory(self, name: str) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)

    def add(self, name: str, data: bytes) -> None:
        self.add_chunks(name, lambda: [data])

    def add_chunks(self, name: str, chunks: Chunks) -> int:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            size = sum(out.write(chunk) for chunk in chunks())
        self.written.add(name)
        return size

    def close(self) -> None:
        pass


def stored_chunks(content, digest: Digest, size: int | None, what: str) -> Chunks:
    """A blob of the content store as chunks, checked as they pass."""
    def chunks() -> Iterator[bytes]:
        verifier = Verifier(digest, size, what=what)
        with content.open(digest) as blob:
            while chunk := blob.read(CHUNK):
                verifier.update(chunk)
                yield chunk
        verifier.check()
    return chunks


def write_blob(writer, content, descriptor: manifests.Descriptor, what: str) -> None:
    name = blob_name(descriptor.digest)
    if name not in writer.written:
        writer.add_chunks(name, stored_chunks(content, descriptor.digest,
                                              descriptor.size, what))


def dumps(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass
class SavedImage:
    """One image as an archive holds it: its manifest, the descriptor that
    points at it, and the names (full references) it goes by."""

    manifest: manifests.Descriptor
    platform: dict | None
    names: list[str]


def index_entries(saved: SavedImage) -> list[dict]:
    """The index.json entries of one image: one per tag, as Docker 25+ and
    containerd write them, or one with no name for an untagged image."""
    base = dict(saved.manifest.to_json())
    if saved.platform:
        base["platform"] = saved.platform
    entries = []
    for name in saved.names:
        ref = references.parse(name)
        if ref.digest is None and ref.tag is not None:
            entries.append({**base, "annotations": {IMAGE_NAME: str(ref),
                                                    REF_NAME: ref.tag}})
        elif ref.digest == saved.manifest.digest:
            # A digest name is true of this manifest, so a loader can check it
            # (one by an index digest cannot be: the index is not saved).
            entries.append({**base, "annotations": {IMAGE_NAME: name}})
    return entries or [base]


def write_layout(writer, images: list[SavedImage]) -> None:
    """``index.json`` and ``oci-layout`` for images whose blobs are written."""
    entries = [entry for saved in images for entry in index_entries(saved)]
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": entries}
    writer.add(INDEX_FILE, dumps(index))
    writer.add(LAYOUT_FILE, dumps({"imageLayoutVersion": LAYOUT_VERSION}))


# Reading a layout -----------------------------------------------------------


@dataclass
class Found:
    """One image found in an archive, checked, ready to be recorded."""

    manifest_data: bytes
    manifest_digest: Digest
    media_type: str
    manifest: manifests.ImageManifest
    config: manifests.ImageConfig
    blobs: list[Blob]             # config first, then the layers
    names: list[str]
    index_digest: Digest | None = None


def read_layout(source: Source) -> list[Found]:
    """Every image the layout's index.json lists, with its names."""
    what = source.what
    layout = manifests.loads(source.read(LAYOUT_FILE), f"{what}: member '{LAYOUT_FILE}'")
    if layout.get("imageLayoutVersion") != LAYOUT_VERSION:
        raise NotSupported(f"{what}: member '{LAYOUT_FILE}': imageLayoutVersion "
                           f"{layout.get('imageLayoutVersion')!r}, not '{LAYOUT_VERSION}'")
    index = manifests.parse_index(source.read(INDEX_FILE), mediatypes.OCI_INDEX,
                                  f"{what}: member '{INDEX_FILE}'")
    found: dict[Digest, Found] = {}
    for i, entry in enumerate(index.manifests):
        where = f"{what}: member '{INDEX_FILE}': manifests[{i}]"
        image = _entry_image(source, entry, where)
        known = found.setdefault(image.manifest_digest, image)
        for name in _names(entry, image, where):
            if name not in known.names:
                known.names.append(name)
    return list(found.values())


def _entry_image(source: Source, entry: manifests.Descriptor, where: str) -> Found:
    if entry.media_type not in mediatypes.INDEXES:
        return read_image(source, entry, where)
    from ..platform import Platform
    from ..pull import select

    data = described(source, entry, where)
    nested = manifests.parse_index(data, entry.media_type, f"{where}: index")
    chosen = select(nested, Platform.host(), where)
    image = read_image(source, chosen, f"{where}: manifest '{chosen.digest}'")
    image.index_digest = entry.digest
    return image


def described(source: Source, descriptor: manifests.Descriptor, where: str) -> bytes:
    """The small blob a descriptor points at, checked against its size."""
    return source.read(described_blob(source, descriptor, where).name)


def described_blob(source: Source, descriptor: manifests.Descriptor,
                   where: str) -> Blob:
    name = blob_name(descriptor.digest)
    if not source.has(name):
        raise BadContent(f"{where}: blob '{descriptor.digest}' is missing "
                         f"(no member '{name}')")
    blob = source.blob(name)
    if blob.size != descriptor.size:
        raise BadContent(f"{source.what}: member '{name}': size mismatch: "
                         f"{blob.size} bytes, the descriptor says {descriptor.size}")
    return blob


def read_image(source: Source, entry: manifests.Descriptor, where: str) -> Found:
    """One image manifest of a layout, its config and layers all checked."""
    data = described(source, entry, where)
    media_type = manifests.media_type_of(data, entry.media_type, where)
    if media_type not in mediatypes.MANIFESTS:
        raise BadContent(f"{where}: '{media_type}' where an image manifest belongs")
    what = f"{where}: manifest '{entry.digest}'"
    manifest = manifests.parse_manifest(data, media_type, what)
    config_blob = described_blob(source, manifest.config, f"{what}: config")
    config = manifests.parse_config(source.read(config_blob.name),
                                    f"{what}: config '{manifest.config.digest}'")
    blobs = [config_blob]
    for i, layer in enumerate(manifest.layers):
        if layer.urls and not source.has(blob_name(layer.digest)):
            raise NotSupported(f"{what}: layers[{i}]: a foreign layer, to be fetched "
                               f"from {layer.urls[0]}, which corral does not do")
        blobs.append(described_blob(source, layer, f"{what}: layers[{i}]"))
    return Found(data, entry.digest, media_type, manifest, config, blobs, [])


def _names(entry: manifests.Descriptor, image: Found, where: str) -> list[str]:
    """The names an index entry gives: containerd's full name, else the
    OCI ref name when it is a whole reference (a bare tag such as ``latest``
    names no repository, so it names nothing here)."""
    text = entry.annotations.get(IMAGE_NAME) or entry.annotations.get(REF_NAME)
    if not text:
        return []
    if not isinstance(text, str):
        raise BadContent(f"{where}: annotations: names must be strings")
    if IMAGE_NAME not in entry.annotations and not any(c in text for c in "/:@"):
        return []
    try:
        ref = references.parse(text)
    except InvalidArgument as exc:
        raise BadContent(f"{where}: annotations: {exc}") from None
    if ref.digest is None:
        return [str(ref)]
    # A digest name is kept only when it is true of what we load.
    if ref.digest in (image.manifest_digest, image.index_digest):
        return [f"{ref.name}@{ref.digest}"]
    return []

