"""Manifests, indexes and configs: what is accepted, and how refusals read."""

from __future__ import annotations

import json

import pytest

from corral.image import mediatypes
from corral.image.digest import Digest
from corral.image.errors import BadContent, NotSupported
from corral.image.manifest import (
    chain_ids,
    media_type_of,
    parse_config,
    parse_index,
    parse_manifest,
)
from corral.image.platform import Platform

D1 = Digest.of(b"1")
D2 = Digest.of(b"2")


def manifest(**overrides) -> bytes:
    document = {
        "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": str(D1), "size": 1},
        "layers": [{"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": str(D2), "size": 1}],
    }
    document.update(overrides)
    return json.dumps(document).encode()


def test_a_good_manifest():
    parsed = parse_manifest(manifest(), mediatypes.OCI_MANIFEST, "m")
    assert parsed.config.digest == D1
    assert [layer.digest for layer in parsed.layers] == [D2]


@pytest.mark.parametrize("layers, message", [
    ("nope", "layers must be a list"),
    ([{"mediaType": "x", "digest": str(D2), "size": -1}], r"layers\[0\].size"),
    ([{"mediaType": "x", "digest": "sha256:../x", "size": 1}], r"layers\[0\].digest"),
    ([{"mediaType": mediatypes.OCI_LAYER, "digest": str(D2), "size": True}], "size"),
])
def test_bad_layers(layers, message):
    with pytest.raises(BadContent, match=message):
        parse_manifest(manifest(layers=layers), mediatypes.OCI_MANIFEST, "m")


def test_unknown_layer_media_type():
    layers = [{"mediaType": "application/x-wasm", "digest": str(D2), "size": 1}]
    with pytest.raises(NotSupported, match="unknown layer media type 'application/x-wasm'"):
        parse_manifest(manifest(layers=layers), mediatypes.OCI_MANIFEST, "m")


def test_not_json():
    with pytest.raises(BadContent, match="m: not valid JSON"):
        parse_manifest(b"{nope", mediatypes.OCI_MANIFEST, "m")


def test_schema1_is_refused_clearly():
    data = json.dumps({"schemaVersion": 1, "fsLayers": []}).encode()
    with pytest.raises(NotSupported, match="schema 1"):
        media_type_of(data, mediatypes.DOCKER_SCHEMA1_SIGNED, "m")
    with pytest.raises(NotSupported, match="schema 1"):
        media_type_of(data, None, "m")


def test_unknown_media_type():
    with pytest.raises(BadContent, match="unknown manifest media type 'text/html'"):
        media_type_of(manifest(mediaType="text/html"), None, "m")


def test_media_type_disagreement():
    with pytest.raises(BadContent, match="differs"):
        media_type_of(manifest(), mediatypes.DOCKER_MANIFEST, "m")


def test_index_and_platforms():
    entries = [
        {"mediaType": mediatypes.OCI_MANIFEST, "digest": str(D1), "size": 1,
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": mediatypes.OCI_MANIFEST, "digest": str(D2), "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]
    index = parse_index(json.dumps({"manifests": entries}).encode(), mediatypes.OCI_INDEX, "i")
    from corral.image.pull import select

    assert select(index, Platform.parse("linux/amd64"), "x").digest == D2
    assert select(index, Platform.parse("linux/arm64/v8"), "x").digest == D1
    with pytest.raises(Exception, match="no manifest for platform linux/s390x.*linux/amd64"):
        select(index, Platform.parse("linux/s390x"), "x")


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d"])
def test_bad_platforms(text):
    with pytest.raises(Exception, match="must be os/arch"):
        Platform.parse(text)


def config(**inner) -> bytes:
    return json.dumps({"os": "linux", "architecture": "amd64",
                       "rootfs": {"type": "layers", "diff_ids": [str(D1), str(D2)]},
                       "config": inner}).encode()


def test_config_fields_are_checked():
    assert parse_config(config(Cmd=["sh"]), "c").config["Cmd"] == ["sh"]
    with pytest.raises(BadContent, match="config.Cmd must be a list of strings"):
        parse_config(config(Cmd="sh"), "c")
    with pytest.raises(BadContent, match="config.Labels values must be strings"):
        parse_config(config(Labels={"a": 1}), "c")
    with pytest.raises(BadContent, match="rootfs.type"):
        parse_config(b'{"rootfs": {}}', "c")


def test_chain_ids_follow_the_spec():
    # config.md: ChainID(L0|L1) = Digest(ChainID(L0) + " " + DiffID(L1)).
    chain = chain_ids((D1, D2))
    assert chain[0] == D1
    assert chain[1] == Digest.of(f"{D1} {D2}".encode())
