"""Helpers that write layer tars and tiny OCI image layouts for the unpack and
snapshot tests (OCI image spec: layer.md, image-layout.md, config.md).

``Layer`` builds a tar with Python's tarfile, so the bytes are those of a
real writer; hostile names go in as they are, since tarfile writes any name
it is given.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from pathlib import Path

import zstandard

MTIME = 1_600_000_000


class Layer:
    """A layer tar under construction; ``tar()`` gives its bytes."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=fmt)

    def _add(self, name: str, kind: bytes, data: bytes = b"", *, mode: int = 0o644,
             uid: int = 0, gid: int = 0, mtime: float = MTIME, linkname: str = "",
             major: int = 0, minor: int = 0, xattrs: dict[str, bytes] | None = None,
             ) -> Layer:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(data)
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = mtime
        info.linkname = linkname
        info.devmajor, info.devminor = major, minor
        if xattrs:
            # tarfile writes PAX values as UTF-8 text; surrogateescape carries
            # binary values through unchanged.
            info.pax_headers = {f"SCHILY.xattr.{key}": value.decode("utf-8",
                                "surrogateescape") for key, value in xattrs.items()}
        self._tar.addfile(info, io.BytesIO(data) if data else None)
        return self

    def file(self, name: str, data: bytes = b"", **kw) -> Layer:
        return self._add(name, tarfile.REGTYPE, data, **kw)

    def dir(self, name: str, *, mode: int = 0o755, **kw) -> Layer:
        return self._add(name, tarfile.DIRTYPE, mode=mode, **kw)

    def symlink(self, name: str, target: str, **kw) -> Layer:
        return self._add(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw)

    def hardlink(self, name: str, target: str, **kw) -> Layer:
        return self._add(name, tarfile.LNKTYPE, linkname=target, **kw)

    def char(self, name: str, major: int, minor: int, **kw) -> Layer:
        return self._add(name, tarfile.CHRTYPE, major=major, minor=minor, **kw)

    def block(self, name: str, major: int, minor: int, **kw) -> Layer:
        return self._add(name, tarfile.BLKTYPE, major=major, minor=minor, **kw)

    def fifo(self, name: str, **kw) -> Layer:
        return self._add(name, tarfile.FIFOTYPE, **kw)

    def whiteout(self, path: str) -> Layer:
        parent, _, base = path.rpartition("/")
        return self.file(f"{parent}/.wh.{base}" if parent else f".wh.{base}")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory}/.wh..wh..opq")

    def tar(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def compress(data: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


_MEDIA = {None: "application/vnd.oci.image.layer.v1.tar",
          "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
          "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def _blob(layout: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def write_layout(layout: Path, tag: str, tars: list[bytes],
                 compression: str | None = "gzip") -> list[dict]:
    """An OCI image layout with one image of these layers; returns the layer
    descriptors (blobs are under ``layout/blobs/sha256``)."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layers = [_blob(layout, compress(tar, compression), _MEDIA[compression])
              for tar in tars]
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [
                  f"sha256:{hashlib.sha256(tar).hexdigest()}" for tar in tars]}}
    config_desc = _blob(layout, json.dumps(config).encode(),
                        "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType":
                "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": layers}
    manifest_desc = _blob(layout, json.dumps(manifest).encode(), manifest["mediaType"])
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    (layout / "index.json").write_text(json.dumps(index))
    return layers


def blob_path(layout: Path, descriptor: dict) -> Path:
    return layout / "blobs" / "sha256" / descriptor["digest"].split(":", 1)[1]


# File sizes and how often they occur: a mean near 28 kB, as in a Debian
# image's /usr.
_SIZES = (200, 1500, 4000, 12000, 30000, 90000, 1_000_000)
_WEIGHTS = (20, 25, 20, 15, 10, 7, 1.5)


def bench_layer(total_mb: int = 100, seed: int = 7) -> bytes:
    """A layer shaped like a distribution's: a few thousand small files in
    nested directories, some large ones, symlinks; about total_mb of data
    that compresses roughly 3:1 like binaries do."""
    rng = random.Random(seed)
    words = [os.urandom(6).hex().encode() for _ in range(2000)]
    budget = total_mb << 20
    layer = Layer()
    for top in range(20):
        layer.dir(f"usr{top}")
        for sub in range(10):
            layer.dir(f"usr{top}/lib{sub}")
    index = 0
    while budget > 0:
        size = min(budget, rng.choices(_SIZES, _WEIGHTS)[0])
        chunk = b" ".join(rng.choices(words, k=size // 12 + 1))[:size]
        name = f"usr{index % 20}/lib{index // 20 % 10}/f{index}"
        layer.file(name, chunk, mode=0o755 if index % 5 == 0 else 0o644)
        if index % 50 == 0:
            layer.symlink(f"{name}.link", f"f{index}")
        budget -= size
        index += 1
    return layer.tar()
