"""Test archives built member by member: docker-archives in the layouts of
``docker save`` (1.10 to 24: ``<id>/layer.tar``; 25+: ``blobs/sha256``),
skopeo's (``<hex>.tar`` with ``<id>/layer.tar`` links), OCI layouts, and
hostile variants of them (any member list can be edited before writing).

Everything is deterministic (fixed mtimes and owners), so a test can
predict every digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_MTIME = 1_700_000_000


@dataclass
class Member:
    """One tar member: a file (``data``), or a ``symlink``/``hardlink`` to
    ``target``, a ``dir`` or a ``fifo``."""

    name: str
    data: bytes = b""
    kind: str = "file"
    target: str = ""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_TYPES = {"file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
          "dir": tarfile.DIRTYPE, "fifo": tarfile.FIFOTYPE}


def tar_bytes(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = _TYPES[member.kind]
            info.mtime = _MTIME
            info.mode = 0o755 if member.kind == "dir" else 0o644
            info.linkname = member.target
            info.size = len(member.data) if member.kind == "file" else 0
            tar.addfile(info, io.BytesIO(member.data) if member.kind == "file" else None)
    return out.getvalue()


def write_tar(path: Path, members: list[Member]) -> Path:
    path.write_bytes(tar_bytes(members))
    return path


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A layer: regular files (with their parent directories) at fixed times."""
    members, seen = [], set()
    for name, data in files.items():
        parts = name.split("/")
        for i in range(1, len(parts)):
            directory = "/".join(parts[:i])
            if directory not in seen:
                seen.add(directory)
                members.append(Member(directory, kind="dir"))
        members.append(Member(name, data))
    return tar_bytes(members)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def config_json(diff_ids: list[str], *, cmd: list[str] | None = None) -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": cmd or ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True).encode()


@dataclass
class Image:
    """An image to put in an archive: uncompressed layer tars, its tags."""

    layers: list[bytes]
    tags: list[str] = field(default_factory=list)
    compress: bool = False  # gzip the layers as they go into the archive
    cmd: list[str] | None = None

    @property
    def diff_ids(self) -> list[str]:
        return [sha256(layer) for layer in self.layers]

    @property
    def config(self) -> bytes:
        return config_json(self.diff_ids, cmd=self.cmd)

    @property
    def id(self) -> str:
        return sha256(self.config)

    def blobs(self) -> list[bytes]:
        return [gzipped(t) if self.compress else t for t in self.layers]


def docker_archive(images: list[Image], *, style: str = "legacy") -> list[Member]:
    """The members of a docker-archive: ``legacy`` (docker 1.10-24),
    ``skopeo`` (layers as <hex>.tar, linked from <id>/layer.tar) or
    ``blobs`` (docker 25+, without its index.json)."""
    members: list[Member] = []
    names: set[str] = set()
    entries = []
    for image in images:
        layer_names = []
        for blob in image.blobs():
            if style == "blobs":
                name = f"blobs/sha256/{hex_of(blob)}"
            elif style == "skopeo":
                name = f"{hex_of(blob)}.tar"
                link = f"{hex_of(name.encode())}/layer.tar"
                if link not in names:
                    names.add(link)
                    members.append(Member(link, kind="symlink", target=f"../{name}"))
            else:
                name = f"{hex_of(blob + b'v1')}/layer.tar"
            if name not in names:
                names.add(name)
                members.append(Member(name, blob))
            layer_names.append(name)
        config_name = (f"blobs/sha256/{hex_of(image.config)}" if style == "blobs"
                       else f"{hex_of(image.config)}.json")
        if config_name not in names:
            names.add(config_name)
            members.append(Member(config_name, image.config))
        entries.append({"Config": config_name, "RepoTags": image.tags or None,
                        "Layers": layer_names})
    members.append(Member("manifest.json", json.dumps(entries).encode()))
    return members


def manifest_json(image: Image, media_type: str = OCI_LAYER_GZIP) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": image.id, "size": len(image.config)},
        "layers": [{"mediaType": media_type, "digest": sha256(b), "size": len(b)}
                   for b in image.blobs()],
    }).encode()


def oci_layout(images: list[Image], *, names: list[dict] | None = None) -> list[Member]:
    """The members of an OCI layout; ``names[i]`` are the annotations of
    image i's index entry (default: containerd's name from its first tag)."""
    members = [Member("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]
    seen: set[str] = set()
    entries = []
    for i, image in enumerate(images):
        manifest = manifest_json(image, OCI_LAYER_GZIP if image.compress else OCI_LAYER)
        for blob in [*image.blobs(), image.config, manifest]:
            name = f"blobs/sha256/{hex_of(blob)}"
            if name not in seen:
                seen.add(name)
                members.append(Member(name, blob))
        annotations = names[i] if names else (
            {"io.containerd.image.name": image.tags[0]} if image.tags else {})
        entry = {"mediaType": OCI_MANIFEST, "digest": sha256(manifest),
                 "size": len(manifest)}
        if annotations:
            entry["annotations"] = annotations
        entries.append(entry)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    members.append(Member("index.json", json.dumps(index).encode()))
    return members


def replace(members: list[Member], name: str, **changes) -> list[Member]:
    """``members`` with the one named ``name`` changed."""
    out = []
    for member in members:
        if member.name == name:
            member = Member(**{**member.__dict__, **changes})
        out.append(member)
    return out


def manifest_of(members: list[Member]) -> list[dict]:
    return json.loads(next(m.data for m in members if m.name == "manifest.json"))


def with_manifest(members: list[Member], document: object) -> list[Member]:
    return replace(members, "manifest.json", data=json.dumps(document).encode())


def extract_layout(members: list[Member], root: Path) -> Path:
    """Write an OCI layout's members as a directory (test input only)."""
    for member in members:
        path = root / member.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(member.data)
    return root
