"""Manifests, indexes and image configs, parsed and checked (OCI image spec:
manifest.md, image-index.md, config.md; Docker's schema 2 has the same shape).

Everything here comes from a registry or an archive, so it is hostile until
checked: every field we use is checked for type and range, and a descriptor's
digest is parsed into a ``Digest`` before anything uses it in a path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import mediatypes
from .digest import Digest
from .errors import BadContent, InvalidArgument, NotSupported


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: dict | None = None
    annotations: dict = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": str(self.digest),
                     "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = self.annotations
        if self.urls:
            out["urls"] = list(self.urls)
        return out


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict


def loads(data: bytes, what: str) -> dict:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadContent(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadContent(f"{what}: must be a JSON object")
    return document


# Content types that say nothing about which kind of manifest a body is.
_UNDECLARED = frozenset({"", "application/json", "text/plain", "application/octet-stream",
                         "binary/octet-stream"})


def media_type_of(data: bytes, declared: str | None, what: str) -> str:
    """The media type of a manifest document: the one the server declared,
    else its ``mediaType`` field, else guessed from its shape as the spec
    allows for documents without one."""
    document = loads(data, what)
    inner = document.get("mediaType")
    declared = (declared or "").split(";")[0].strip().lower()
    if declared not in _UNDECLARED:
        media_type = declared
    elif isinstance(inner, str):
        media_type = inner
    elif "manifests" in document:
        media_type = mediatypes.OCI_INDEX
    elif "layers" in document and "config" in document:
        media_type = mediatypes.OCI_MANIFEST
    elif document.get("schemaVersion") == 1:
        media_type = mediatypes.DOCKER_SCHEMA1
    else:
        raise BadContent(f"{what}: not a manifest or index (no mediaType, "
                         f"no layers, no manifests)")
    check_media_type(media_type, what)
    if isinstance(inner, str) and inner != media_type:
        raise BadContent(f"{what}: mediaType '{inner}' differs from the "
                         f"'{media_type}' it was served as")
    return media_type


def check_media_type(media_type: str, what: str) -> None:
    if media_type in mediatypes.SCHEMA1:
        raise NotSupported(f"{what}: it is a schema 1 manifest, which corral does "
                           f"not support; push it again with a current docker, "
                           f"skopeo or buildah")
    if media_type not in mediatypes.INDEXES and media_type not in mediatypes.MANIFESTS:
        raise BadContent(f"{what}: unknown manifest media type '{media_type}'")


def descriptor(value: object, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise BadContent(f"{what}: a descriptor must be a JSON object")
    media_type = value.get("mediaType")
    size = value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise BadContent(f"{what}.mediaType: must be a non-empty string")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadContent(f"{what}.size: must be a non-negative integer")
    try:
        digest = Digest.parse(value.get("digest"))
    except InvalidArgument as exc:
        raise BadContent(f"{what}.digest: {exc}") from None
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise BadContent(f"{what}.platform: must be a JSON object")
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BadContent(f"{what}.annotations: must be a JSON object")
    urls = value.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise BadContent(f"{what}.urls: must be a list of strings")
    return Descriptor(media_type, digest, size, platform, annotations, tuple(urls))


def parse_manifest(data: bytes, media_type: str, what: str) -> ImageManifest:
    document = loads(data, what)
    config = descriptor(document.get("config"), f"{what}: config")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise BadContent(f"{what}: layers must be a list")
    parsed = tuple(descriptor(layer, f"{what}: layers[{i}]")
                   for i, layer in enumerate(layers))
    for i, layer in enumerate(parsed):
        if layer.media_type not in mediatypes.LAYER_COMPRESSION:
            raise NotSupported(f"{what}: layers[{i}]: unknown layer media type "
                               f"'{layer.media_type}'")
    return ImageManifest(media_type, config, parsed, _annotations(document, what))


def parse_index(data: bytes, media_type: str, what: str) -> Index:
    document = loads(data, what)
    manifests = document.get("manifests")
    if not isinstance(manifests, list):
        raise BadContent(f"{what}: manifests must be a list")
    parsed = tuple(descriptor(entry, f"{what}: manifests[{i}]")
                   for i, entry in enumerate(manifests))
    return Index(media_type, parsed, _annotations(document, what))


def _annotations(document: dict, what: str) -> dict:
    annotations = document.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BadContent(f"{what}: annotations must be a JSON object")
    return annotations


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config (config.md) that Corral uses, checked."""

    raw: dict
    diff_ids: tuple[Digest, ...]
    os: str
    architecture: str
    created: str | None

    @property
    def config(self) -> dict:
        """The ``config`` object: Entrypoint, Cmd, Env, User and the rest."""
        return self.raw.get("config") or {}


def parse_config(data: bytes, what: str) -> ImageConfig:
    document = loads(data, what)
    rootfs = document.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise BadContent(f"{what}: rootfs.type must be 'layers'")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise BadContent(f"{what}: rootfs.diff_ids must be a list")
    try:
        parsed = tuple(Digest.parse(d) for d in diff_ids)
    except InvalidArgument as exc:
        raise BadContent(f"{what}: rootfs.diff_ids: {exc}") from None
    inner = document.get("config")
    if inner is not None and not isinstance(inner, dict):
        raise BadContent(f"{what}: config must be a JSON object")
    _check_config_fields(inner or {}, what)
    created = document.get("created")
    return ImageConfig(document, parsed, _str(document, "os", what),
                       _str(document, "architecture", what),
                       created if isinstance(created, str) else None)


def _str(document: dict, key: str, what: str) -> str:
    value = document.get(key, "")
    if not isinstance(value, str):
        raise BadContent(f"{what}: {key} must be a string")
    return value


_LIST_FIELDS = ("Entrypoint", "Cmd", "Env")
_STR_FIELDS = ("User", "WorkingDir", "StopSignal")
_MAP_FIELDS = ("Labels", "ExposedPorts", "Volumes")


def _check_config_fields(config: dict, what: str) -> None:
    for key in _LIST_FIELDS:
        value = config.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, str) for v in value)):
            raise BadContent(f"{what}: config.{key} must be a list of strings")
    for key in _STR_FIELDS:
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise BadContent(f"{what}: config.{key} must be a string")
    for key in _MAP_FIELDS:
        value = config.get(key)
        if value is not None and not isinstance(value, dict):
            raise BadContent(f"{what}: config.{key} must be a JSON object")
    labels = config.get("Labels") or {}
    if not all(isinstance(v, str) for v in labels.values()):
        raise BadContent(f"{what}: config.Labels values must be strings")


def chain_ids(diff_ids: tuple[Digest, ...]) -> list[Digest]:
    """The chain ID of each layer (config.md, "Layer ChainID"): the first is
    its diff ID, each next one the sha256 of "<previous chain ID> <diff ID>"."""
    chain: list[Digest] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append(Digest.of(f"{chain[-1]} {diff_id}".encode()))
    return chain
