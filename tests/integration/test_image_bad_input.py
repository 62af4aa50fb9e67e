"""Pulls that must fail: each with a clear error naming the image and the
blob, and a store that stays consistent: nothing partial visible, nothing
already there lost, and the next pull succeeds.

The registry here is private to this module, because some tests damage
what it stores (its blobs are files under storage/) and repair them after.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import images
from tests.integration.test_image_cli import Corral
from tests.registry import free_port, start_registry


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory):
    registry = start_registry(tmp_path_factory.mktemp("bad-registry"))
    yield registry
    registry.stop()


@pytest.fixture
def corral(tmp_path) -> Corral:
    return Corral(tmp_path / "store")


def blob_file(registry, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    return (registry.workdir / "storage/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_
            / "data")


def assert_consistent(corral: Corral, *, images_expected: int = 0) -> None:
    """No image record beyond those expected, no ingest left, no half
    snapshot, no extraction mount."""
    assert len(corral.run("images", "-q").stdout.split()) == images_expected
    root = corral.root
    assert list((root / "content/ingest").iterdir()) == []
    assert list((root / "tmp").iterdir()) == []
    from corral.image.snapshots import open_snapshotter

    kinds = {info.kind for info in open_snapshotter(root / "snapshots").walk()}
    assert kinds <= {"committed"}
    with open("/proc/self/mountinfo") as mountinfo:
        assert str(root) not in mountinfo.read()


def layout_with(tmp_path, name: str, tars: list[bytes], **options) -> images.Layout:
    return images.build_layout(tmp_path / name, tars, tag="1", cmd=["sh"], **options)


def test_tag_not_found(corral, private_registry, busybox_layout_dir):
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag,
                private_registry.ref("bad/busybox:1"))
    result = corral.run("pull", private_registry.ref("bad/busybox:nope"), check=False)
    assert result.returncode == 1
    assert "bad/busybox:nope" in result.stderr and "not found" in result.stderr
    assert_consistent(corral)


def test_registry_down(corral):
    result = corral.run("pull", f"127.0.0.1:{free_port()}/nobody/home:1", check=False,
                        timeout=60)
    assert result.returncode == 1
    assert "127.0.0.1" in result.stderr
    assert_consistent(corral)


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_damaged_layer_blob(corral, private_registry, busybox_layout_dir, damage):
    reference = private_registry.ref(f"bad/damaged-{damage}:1")
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag, reference)
    layer = busybox_layout_dir.layers[0].digest
    path = blob_file(private_registry, layer)
    saved = path.read_bytes()
    try:
        if damage == "garbage":
            path.write_bytes(bytes(len(saved)))
        else:
            path.write_bytes(saved[: len(saved) // 2])
        result = corral.run("pull", reference, check=False)
        assert result.returncode == 1
        assert reference in result.stderr and layer in result.stderr
        assert "mismatch" in result.stderr or "bytes" in result.stderr
        assert_consistent(corral)
        assert layer.removeprefix("sha256:") not in corral.blobs()
    finally:
        path.write_bytes(saved)
    corral.run("pull", reference)
    assert_consistent(corral, images_expected=1)


def test_diff_id_that_does_not_match(corral, private_registry, tmp_path):
    layer = images.LayerBuilder()
    layer.file("hello", b"hello\n")
    layout = layout_with(tmp_path, "wrong-diff-id", [layer.tar()])
    # Point the config at another diff ID, and the manifest at that config.
    config = json.loads(layout.blob(layout.config.digest))
    config["rootfs"]["diff_ids"] = ["sha256:" + "ab" * 32]
    rewrite_config(layout, config)
    reference = private_registry.ref("bad/diff-id:1")
    images.push(layout.path, layout.tag, reference)
    result = corral.run("pull", reference, check=False)
    assert result.returncode == 1
    assert "the image config says sha256:abab" in result.stderr
    assert_consistent(corral)
    assert corral.snapshot_names() == set()


def rewrite_config(layout: images.Layout, config: dict) -> None:
    """Replace the layout's config blob, and its manifest and index to match."""
    data = json.dumps(config).encode()
    digest = write_blob(layout, data)
    rewrite_manifest(layout, lambda manifest: manifest["config"].update(
        digest=digest, size=len(data)))


def write_blob(layout: images.Layout, data: bytes) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layout.blob_path(digest).write_bytes(data)
    return digest


def rewrite_manifest(layout: images.Layout, change) -> None:
    """Apply ``change`` to the layout's manifest; point the index at the result."""
    manifest = json.loads(layout.blob(layout.manifest.digest))
    change(manifest)
    data = json.dumps(manifest).encode()
    digest = write_blob(layout, data)
    index = json.loads((layout.path / "index.json").read_text())
    index["manifests"][0].update(digest=digest, size=len(data))
    (layout.path / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("name", ["../escape", "a/../../escape"])
def test_layer_with_a_path_escape(corral, private_registry, tmp_path, name):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"bad\n"))
    layout = layout_with(tmp_path, "hostile-layout", [buffer.getvalue()])
    reference = private_registry.ref("bad/escape:1")
    images.push(layout.path, layout.tag, reference)
    result = corral.run("pull", reference, check=False)
    assert result.returncode == 1
    assert reference in result.stderr and layout.layers[0].digest in result.stderr
    assert "escape" in result.stderr
    assert not (corral.root.parent / "escape").exists()
    assert not (corral.root / "snapshots/escape").exists()
    assert_consistent(corral)


def test_broken_gzip_stream(corral, private_registry, tmp_path):
    layer = images.LayerBuilder()
    layer.file("data", os.urandom(200_000))
    layout = layout_with(tmp_path, "broken-gzip", [layer.tar()])
    blob = layout.blob_path(layout.layers[0].digest)
    compressed = bytearray(blob.read_bytes())
    compressed[len(compressed) // 2] ^= 0xFF
    rewrite_layer(layout, bytes(compressed))
    reference = private_registry.ref("bad/gzip:1")
    images.push(layout.path, layout.tag, reference)
    result = corral.run("pull", reference, check=False)
    assert result.returncode == 1
    assert reference in result.stderr
    assert_consistent(corral)


def rewrite_layer(layout: images.Layout, compressed: bytes) -> None:
    """Swap the layout's only layer blob for ``compressed`` (same diff ID)."""
    digest = write_blob(layout, compressed)
    rewrite_manifest(layout, lambda manifest: manifest["layers"][0].update(
        digest=digest, size=len(compressed)))
    layout.layers[0].digest = digest


def test_a_failed_pull_keeps_what_was_there(corral, private_registry, busybox_layout_dir,
                                            tmp_path):
    good = private_registry.ref("bad/keep:1")
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag, good)
    corral.run("pull", good)
    before = corral.blobs(), corral.snapshot_names()
    layer = images.LayerBuilder()
    layer.file("x", b"x")
    layout = layout_with(tmp_path, "gone", [layer.tar()])
    broken = private_registry.ref("bad/keep-broken:1")
    images.push(layout.path, layout.tag, broken)
    shutil.rmtree(blob_file(private_registry, layout.layers[0].digest).parent)
    assert corral.run("pull", broken, check=False).returncode == 1
    assert corral.snapshot_names() == before[1]
    assert before[0] <= corral.blobs()
    assert_consistent(corral, images_expected=1)
    bundle = tmp_path / "bundle"
    corral.run("image", "bundle", good, str(bundle))
    corral.run("image", "bundle", "--rm", str(bundle))


def test_wrong_password(corral, auth_registry, busybox_layout_dir, tmp_path):
    reference = auth_registry.ref("auth/busybox:1")
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag, reference,
                creds=auth_registry.creds, cert_dir=auth_registry.certs_dir / auth_registry.host)
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {
        "auth": base64.b64encode(b"corral:wrong").decode()}}}))
    args = ["pull", "--cert-dir", str(auth_registry.certs_dir), reference]
    refused = corral.run(*args, "--authfile", str(config / "config.json"), check=False)
    assert refused.returncode == 1
    assert auth_registry.host in refused.stderr
    assert_consistent(corral)
    corral.run(*args, "--authfile", str(auth_registry.docker_config))
    assert_consistent(corral, images_expected=1)


def test_a_pull_killed_midway_is_completed_by_the_next(corral, private_registry, tmp_path):
    import signal
    import time

    from tests.integration.test_image_cli import CORRAL

    reference = private_registry.ref("bad/killed:1")
    layout = images.layered_layout(tmp_path / "layout", layers=3, total_mb=40)
    images.push(layout.path, layout.tag, reference)
    corral.run("images")
    pull = subprocess.Popen([CORRAL, "--root", str(corral.root), "pull", reference],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill it while a layer is being extracted: its mount is up.
    deadline = time.monotonic() + 30
    while pull.poll() is None and time.monotonic() < deadline:
        with open("/proc/self/mountinfo") as mountinfo:
            if f"{corral.root}/tmp/extract-" in mountinfo.read():
                break
    pull.send_signal(signal.SIGKILL)
    assert pull.wait() == -signal.SIGKILL, "the pull ended before it could be killed"
    corral.run("pull", reference)
    assert_consistent(corral, images_expected=1)
    assert len(corral.snapshot_names()) == 3


def test_a_whole_ingest_left_uncommitted_is_committed(corral, private_registry, tmp_path):
    # A pull killed after a blob's last byte and before its commit left the
    # whole blob in its ingest: the next pull asked for a Range from its end
    # and failed on the registry's 416 ("offset ... is past the end").
    from corral.image.digest import Digest
    from corral.image.store import Store

    reference = private_registry.ref("bad/whole:1")
    layout = images.layered_layout(tmp_path / "layout", layers=2, total_mb=2)
    images.push(layout.path, layout.tag, reference)
    corral.run("images")
    layer = layout.layers[0]
    with Store(corral.root) as store:
        with store.content.ingest(Digest.parse(layer.digest), layer.size) as writer:
            writer.write(layout.blob(layer.digest))
    corral.run("pull", reference)
    assert_consistent(corral, images_expected=1)
