"""The docker-archive format: what ``docker save`` writes and ``docker load``
reads (moby's image/tarexport; there is no spec beyond its code).

``manifest.json`` is a list with one object per image::

    [{"Config": "<member>", "RepoTags": ["busybox:latest"], "Layers": ["<member>", ...]}]

where the members are, from Docker 1.10 to 24, ``<hex>.json`` and
``<v1 id>/layer.tar`` (skopeo writes ``<diff id hex>.tar`` and links the old
names to it), and from Docker 25 ``blobs/sha256/<hex>``: the archive is then
also an OCI layout, with ``index.json`` and ``oci-layout``. ``repositories``
(``{"busybox": {"latest": "<hex>"}}``) is the pre-1.10 way to name images;
loaders since then ignore it and so do we, but we write it as Docker does.

Layers in the archive are uncompressed tars, so a layer's digest is its diff
ID; a loader still accepts compressed ones and checks their uncompressed
content against the config's ``rootfs.diff_ids``. We write the Docker 25
form, which docker load (any version since 1.10) and skopeo's
``docker-archive:`` transport read.
"""

from __future__ import annotations

import json

from .. import manifest as manifests
from .. import mediatypes
from .. import reference as references
from ..digest import Digest, Verifier
from ..errors import BadContent, InvalidArgument
from .oci_layout import (
    DECOMPRESS_ERRORS,
    INDEX_FILE,
    LAYOUT_FILE,
    Blob,
    Chunks,
    Found,
    SavedImage,
    Source,
    blob_name,
    decompressed,
    dumps,
    read_layout,
    stored_chunks,
    write_layout,
)

MANIFEST_FILE = "manifest.json"
REPOSITORIES_FILE = "repositories"

_LAYER_TYPES = {None: mediatypes.OCI_LAYER, "gzip": mediatypes.OCI_LAYER_GZIP,
                "zstd": mediatypes.OCI_LAYER_ZSTD}


# Reading --------------------------------------------------------------------


def read_docker_archive(source: Source) -> list[Found]:
    """Every image ``manifest.json`` lists, checked against its config."""
    where = f"{source.what}: member '{MANIFEST_FILE}'"
    try:
        document = json.loads(source.read(MANIFEST_FILE))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadContent(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(document, list) or not document:
        raise BadContent(f"{where}: must be a non-empty JSON list")
    known = _oci_manifests(source)
    return [_read_entry(source, entry, f"{where}: [{i}]", known)
            for i, entry in enumerate(document)]


def _oci_manifests(source: Source) -> dict[Digest, Found]:
    """The images of the OCI layout a Docker 25+ archive also is, by config
    digest, so that loading keeps the manifest Docker wrote."""
    if not (source.has(INDEX_FILE) and source.has(LAYOUT_FILE)):
        return {}
    return {found.manifest.config.digest: found for found in read_layout(source)}


def _read_entry(source: Source, entry: object, where: str,
                known: dict[Digest, Found]) -> Found:
    if not isinstance(entry, dict):
        raise BadContent(f"{where}: must be a JSON object")
    config_name = entry.get("Config")
    layer_names = entry.get("Layers")
    tags = entry.get("RepoTags") or []
    if not isinstance(config_name, str):
        raise BadContent(f"{where}.Config: must be a member name")
    if not _strings(layer_names):
        raise BadContent(f"{where}.Layers: must be a list of member names")
    if not _strings(tags):
        raise BadContent(f"{where}.RepoTags: must be a list of strings")
    config_blob = source.blob(config_name)
    config = manifests.parse_config(
        source.read(config_name), f"{source.what}: member '{config_name}'")
    if len(layer_names) != len(config.diff_ids):
        raise BadContent(f"{where}: {len(layer_names)} layers, but its config lists "
                         f"{len(config.diff_ids)} diff IDs")
    layers = [_layer(source, name, diff_id, i)
              for i, (name, diff_id) in enumerate(zip(layer_names, config.diff_ids, strict=True))]
    names = [_tag_name(tag, f"{where}.RepoTags") for tag in tags]
    oci = known.get(config_blob.digest)
    if oci is not None and [b.digest for b in oci.blobs[1:]] == [b.digest for b in layers]:
        oci.names = names
        return oci
    data = dumps(_manifest(config_blob, layers))
    digest = Digest.of(data)
    manifest = manifests.parse_manifest(data, mediatypes.OCI_MANIFEST,
                                        f"{where}: manifest")
    return Found(data, digest, mediatypes.OCI_MANIFEST, manifest, config,
                 [config_blob, *layers], names)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _layer(source: Source, name: str, diff_id: Digest, i: int) -> Blob:
    blob = source.blob(name)
    actual = blob.diff_id(source.what)
    if actual != diff_id:
        raise BadContent(f"{source.what}: member '{name}': its tar hashes to {actual}, "
                         f"but the config's rootfs.diff_ids[{i}] is {diff_id}")
    return blob


def _tag_name(text: str, where: str) -> str:
    try:
        ref = references.parse(text)
    except InvalidArgument as exc:
        raise BadContent(f"{where}: {exc}") from None
    if ref.digest is not None or ref.tag is None:
        raise BadContent(f"{where}: '{text}' is not a tag")
    return str(ref)


def _manifest(config: Blob, layers: list[Blob]) -> dict:
    """The OCI manifest of an image that came without one: the blobs as they
    are in the archive (compressed or not)."""
    return {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": str(config.digest),
                   "size": config.size},
        "layers": [{"mediaType": _LAYER_TYPES[layer.compression],
                    "digest": str(layer.digest), "size": layer.size}
                   for layer in layers],
    }


# Writing --------------------------------------------------------------------


def write_docker_archive(writer, store, selection: list, what: str) -> None:
    """Write ``selection`` (pairs of an image and its names) as Docker 25+
    does: an OCI layout of uncompressed layers, plus manifest.json and
    repositories."""
    writer.directory("blobs/")
    writer.directory("blobs/sha256/")
    entries: list[dict] = []
    saved: list[SavedImage] = []
    repositories: dict[str, dict[str, str]] = {}
    sizes: dict[Digest, int] = {}
    for image, names in selection:
        image_what = f"{what}: image '{names[0] if names else image.id}'"
        layers = _write_image(writer, store, image, image_what, sizes)
        tags = [references.parse(n) for n in names if "@" not in n]
        entries.append({"Config": blob_name(image.id),
                        "RepoTags": [ref.familiar() for ref in tags],
                        "Layers": [blob_name(d.digest) for d in layers]})
        for ref in tags:
            top = layers[-1].digest.hex if layers else image.id.hex
            repositories.setdefault(ref.repository().familiar(), {})[ref.tag] = top
        saved.append(SavedImage(_write_manifest(writer, store, image, layers),
                                platform_of(store.config(image)), [str(t) for t in tags]))
    write_layout(writer, saved)
    writer.add(MANIFEST_FILE, dumps(entries))
    if repositories:
        writer.add(REPOSITORIES_FILE, dumps(repositories))


def _write_image(writer, store, image, what: str,
                 sizes: dict[Digest, int]) -> list[manifests.Descriptor]:
    """The config and every layer, uncompressed; their descriptors."""
    config = store.config(image)
    manifest = store.manifest(image)
    config_name = blob_name(image.id)
    if config_name not in writer.written:
        writer.add_chunks(config_name, stored_chunks(store.content, image.id, None,
                                                     f"{what}: config '{image.id}'"))
    if len(manifest.layers) != len(config.diff_ids):
        raise BadContent(f"{what}: the manifest has {len(manifest.layers)} layers, the "
                         f"config {len(config.diff_ids)} diff IDs")
    layers = []
    for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        if diff_id not in sizes:
            sizes[diff_id] = writer.add_chunks(
                blob_name(diff_id), uncompressed_chunks(store.content, layer, diff_id,
                                                        what))
        layers.append(manifests.Descriptor(mediatypes.OCI_LAYER, diff_id,
                                           sizes[diff_id]))
    return layers


def _write_manifest(writer, store, image, layers) -> manifests.Descriptor:
    config_size = store.content.size(image.id) or 0
    document = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": str(image.id),
                   "size": config_size},
        "layers": [layer.to_json() for layer in layers],
    }
    data = dumps(document)
    digest = Digest.of(data)
    if blob_name(digest) not in writer.written:
        writer.add(blob_name(digest), data)
    return manifests.Descriptor(mediatypes.OCI_MANIFEST, digest, len(data))


def uncompressed_chunks(content, layer: manifests.Descriptor, diff_id: Digest,
                        what: str) -> Chunks:
    """A stored layer blob decompressed as it is read, checked against its
    diff ID, so a damaged store never yields a wrong archive."""
    compression = mediatypes.LAYER_COMPRESSION.get(layer.media_type)
    layer_what = f"{what}: layer '{layer.digest}'"

    def chunks():
        verifier = Verifier(diff_id, None, what=f"{layer_what}: uncompressed")
        try:
            with content.open(layer.digest) as blob:
                for chunk in decompressed(blob, compression):
                    verifier.update(chunk)
                    yield chunk
        except DECOMPRESS_ERRORS as exc:
            raise BadContent(f"{layer_what}: cannot decompress: {exc}") from exc
        verifier.check()
    return chunks


def platform_of(config: manifests.ImageConfig) -> dict:
    platform = {"architecture": config.architecture, "os": config.os}
    variant = config.raw.get("variant")
    if isinstance(variant, str) and variant:
        platform["variant"] = variant
    return platform


def platform_text(config: manifests.ImageConfig) -> str:
    """``os/architecture[/variant]``, as an image record keeps it."""
    platform = platform_of(config)
    return "/".join(platform[k] for k in ("os", "architecture", "variant")
                    if k in platform)
