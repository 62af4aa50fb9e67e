"""``docker import``: a root file system tarball becomes a one-layer image.

The tarball may be plain, gzip or zstd (found from its first bytes). It is
read once: the uncompressed tar is hashed (that is the layer's diff ID) and
compressed again with gzip into the content store, so the layer is stored as
a registry would want it. The config gives the host's os and architecture,
the time of the import and one history entry; ``--change`` instructions set
its ``config`` as the same Dockerfile instructions would (Dockerfile
reference: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME,
STOPSIGNAL), in the JSON form or the shell form.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import posixpath
import shlex
import signal
import tarfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .. import layers as unpacking
from .. import manifest as manifests
from .. import mediatypes
from .. import reference as references
from ..digest import Digest
from ..errors import BadContent, InvalidArgument
from ..platform import Platform
from ..store import Image, Store
from .oci_layout import CHUNK, DECOMPRESS_ERRORS, compression_of, decompressed, dumps

# zlib's level 6 is what gzip(1) and Go's default give; level 1 would be
# about twice as fast and a tenth larger on a typical rootfs.
GZIP_LEVEL = 6
_PROTOCOLS = ("tcp", "udp", "sctp")


def import_rootfs(store: Store, source: BinaryIO | Path, *, reference: str | None,
                  changes: Sequence[str] = (), message: str | None = None) -> Image:
    """Make a one-layer image of a rootfs tarball; the image record.

    Args:
        source: the tarball (a path or a binary stream).
        reference: the name to give the image (``busybox:mine``), or None
            for an image known only by its ID.
        changes: Dockerfile instructions applied to the config, such as
            ``CMD ["/bin/sh"]`` or ``ENV PATH=/bin``.
        message: the history entry's comment.

    Raises:
        InvalidArgument: a bad reference or change (before anything is read).
        BadContent: a source that is not a tar, or whose compression is broken.
    """
    ref = _target(reference)
    settings = apply_changes({}, changes)
    label = str(source) if isinstance(source, Path) else getattr(source, "name", "-")
    what = f"import '{label}'"
    with _opened(source, what) as stream, store.lock():
        added: list[Digest] = []
        try:
            layer, diff_id = _store_layer(store, stream, what, added)
            config = _config(diff_id, settings, message or f"Imported from {label}")
            config_digest = _write(store, dumps(config), added)
            manifest = _manifest(layer, config_digest, store.content.size(config_digest))
            manifest_digest = _write(store, manifest, added)
            size = unpacking.unpack(store, [layer], [diff_id],
                                    image=str(ref) if ref else config_digest.short)
        except BaseException:
            for digest in added:
                store.content.delete(digest)
            raise
        image = Image(config_digest, manifest_digest, mediatypes.OCI_MANIFEST, None,
                      str(Platform.host()), config["created"], time.time(), size)
        return store.add(image, [str(ref)] if ref else [])


def _target(reference: str | None) -> references.Reference | None:
    if reference is None:
        return None
    ref = references.parse(reference)
    if ref.digest is not None:
        raise InvalidArgument(f"import as '{reference}': a name to give an image "
                              f"cannot hold a digest")
    return ref


@contextlib.contextmanager
def _opened(source: BinaryIO | Path, what: str) -> Iterator[BinaryIO]:
    if not isinstance(source, Path):
        yield source
        return
    try:
        stream = open(source, "rb")
    except OSError as exc:
        raise InvalidArgument(f"{what}: {exc.strerror}") from exc
    with stream:
        yield stream


def _write(store: Store, data: bytes, added: list[Digest]) -> Digest:
    digest = Digest.of(data)
    if not store.content.has(digest):
        store.content.write(data, digest)
        added.append(digest)
    return digest


class _Prefixed:
    """A stream with its first bytes read already (to find the compression)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._rest.read(size)


def _store_layer(store: Store, stream: BinaryIO, what: str,
                 added: list[Digest]) -> tuple[manifests.Descriptor, Digest]:
    """Recompress the tarball with gzip into the content store, in one pass;
    its descriptor and diff ID."""
    head = stream.read(CHUNK)
    if not head:
        raise BadContent(f"{what}: the tarball is empty")
    partial = store.tmp / f"import-{uuid.uuid4().hex}.partial"
    try:
        with open(partial, "xb") as out:
            digest, size, diff_id = _recompress(_Prefixed(head, stream),
                                                compression_of(head), out, what)
        if store.content.adopt(partial, digest):
            added.append(digest)
    finally:
        partial.unlink(missing_ok=True)
    return manifests.Descriptor(mediatypes.OCI_LAYER_GZIP, digest, size), diff_id


def _recompress(stream, compression: str | None, out: BinaryIO,
                what: str) -> tuple[Digest, int, Digest]:
    tar_hash, blob_hash = hashlib.sha256(), hashlib.sha256()
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    first = b""
    size = 0

    def emit(data: bytes) -> None:
        nonlocal size
        blob_hash.update(data)
        out.write(data)
        size += len(data)

    try:
        for chunk in decompressed(stream, compression):
            if len(first) < tarfile.BLOCKSIZE:
                first += chunk[:tarfile.BLOCKSIZE - len(first)]
            tar_hash.update(chunk)
            emit(deflate.compress(chunk))
    except DECOMPRESS_ERRORS as exc:
        raise BadContent(f"{what}: cannot decompress ({compression}): {exc}") from exc
    emit(deflate.flush())
    _check_tar(first, what)
    return (Digest("sha256", blob_hash.hexdigest()), size,
            Digest("sha256", tar_hash.hexdigest()))


def _check_tar(first: bytes, what: str) -> None:
    """Refuse what is plainly not a tar (its first header must check out);
    the unpack checks every entry after it."""
    try:
        tarfile.TarInfo.frombuf(first, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise BadContent(f"{what}: not a tar archive: {exc}") from None


def _config(diff_id: Digest, settings: dict, comment: str) -> dict:
    platform = Platform.host()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    config: dict = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        config["variant"] = platform.variant
    config.update({
        "created": now,
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
        "history": [{"created": now, "created_by": "corral import", "comment": comment}],
    })
    return config


def _manifest(layer: manifests.Descriptor, config: Digest, config_size: int | None) -> bytes:
    return dumps({
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": str(config),
                   "size": config_size},
        "layers": [layer.to_json()],
    })


# --change -------------------------------------------------------------------


def apply_changes(config: dict, changes: Sequence[str]) -> dict:
    """``config`` (an image config's ``config`` object) with Dockerfile
    instructions applied in order; InvalidArgument naming a bad one."""
    config = json.loads(json.dumps(config))
    for change in changes:
        what = f"change '{change}'"
        words = change.strip().split(None, 1)
        if not words:
            raise InvalidArgument(f"{what}: empty instruction")
        handler = _HANDLERS.get(words[0].upper())
        if handler is None:
            raise InvalidArgument(f"{what}: unknown instruction '{words[0]}' "
                                  f"(one of {', '.join(_HANDLERS)})")
        if len(words) < 2:
            raise InvalidArgument(f"{what}: {words[0].upper()} needs an argument")
        handler(config, words[1].strip(), what)
    return config


def _json_list(rest: str) -> list[str] | None:
    """``rest`` as a JSON list of strings, or None: Docker takes anything
    else (a malformed list too) as the shell form."""
    if rest.startswith("["):
        with contextlib.suppress(ValueError):
            value = json.loads(rest)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
    return None


def _command(rest: str, what: str) -> list[str]:
    value = _json_list(rest)
    return value if value is not None else ["/bin/sh", "-c", rest]


def _words(rest: str, what: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None


def _pairs(rest: str, what: str) -> list[tuple[str, str]]:
    """``k=v k2="v 2"`` pairs, or the old ``KEY value`` form of one pair."""
    first = rest.split(None, 1)
    if "=" not in first[0]:
        if len(first) < 2:
            raise InvalidArgument(f"{what}: '{rest}' must be KEY=VALUE or KEY VALUE")
        return [(first[0], first[1].strip())]
    pairs = []
    for word in _words(rest, what):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{what}: '{word}' must be KEY=VALUE")
        pairs.append((key, value))
    return pairs


def _cmd(config: dict, rest: str, what: str) -> None:
    config["Cmd"] = _command(rest, what)


def _entrypoint(config: dict, rest: str, what: str) -> None:
    config["Entrypoint"] = _command(rest, what)


def _env(config: dict, rest: str, what: str) -> None:
    env = config.setdefault("Env", [])
    for key, value in _pairs(rest, what):
        env[:] = [e for e in env if e.partition("=")[0] != key]
        env.append(f"{key}={value}")


def _workdir(config: dict, rest: str, what: str) -> None:
    path = posixpath.join(config.get("WorkingDir") or "/", rest)
    config["WorkingDir"] = posixpath.normpath(path)


def _user(config: dict, rest: str, what: str) -> None:
    if len(rest.split()) != 1:
        raise InvalidArgument(f"{what}: USER takes one user[:group]")
    config["User"] = rest


def _label(config: dict, rest: str, what: str) -> None:
    config.setdefault("Labels", {}).update(_pairs(rest, what))


def _expose(config: dict, rest: str, what: str) -> None:
    ports = config.setdefault("ExposedPorts", {})
    for word in rest.split():
        numbers, _, protocol = word.partition("/")
        protocol = protocol.lower() or "tcp"
        low, _, high = numbers.partition("-")
        if protocol not in _PROTOCOLS or not _port(low) or high and not _port(high):
            raise InvalidArgument(f"{what}: '{word}' is not PORT[-PORT][/tcp|udp|sctp]")
        for port in range(int(low), int(high or low) + 1):
            ports[f"{port}/{protocol}"] = {}


def _port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def _volume(config: dict, rest: str, what: str) -> None:
    paths = _json_list(rest)
    if paths is None:
        paths = rest.split()
    volumes = config.setdefault("Volumes", {})
    for path in paths:
        if not path:
            raise InvalidArgument(f"{what}: an empty volume path")
        volumes[path] = {}


def _stopsignal(config: dict, rest: str, what: str) -> None:
    name = rest.upper()
    if rest.isdigit():
        valid = 0 < int(rest) <= signal.SIGRTMAX
    else:
        name = name if name.startswith("SIG") else f"SIG{name}"
        valid = name in signal.Signals.__members__
    if not valid:
        raise InvalidArgument(f"{what}: unknown signal '{rest}'")
    config["StopSignal"] = rest


_HANDLERS: dict[str, Callable[[dict, str, str], None]] = {
    "CMD": _cmd, "ENTRYPOINT": _entrypoint, "ENV": _env, "WORKDIR": _workdir,
    "USER": _user, "LABEL": _label, "EXPOSE": _expose, "VOLUME": _volume,
    "STOPSIGNAL": _stopsignal,
}
