"""save, load and import against a real store and a real peer, skopeo: what
skopeo writes we load and unpack, what we save skopeo reads, round trips
keep IDs, names and digests, and hostile archives leave the store as it was.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import zstandard

from corral.image import archive, mediatypes
from corral.image.errors import BadContent, InvalidArgument, LayerError
from corral.image.mount import mount_all, unmount
from corral.image.store import Store

from .. import archives, images
from ..bundles import build_rootfs

pytestmark = pytest.mark.peers


def _skopeo(*args: str) -> str:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    result = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"skopeo {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store") as opened:
        yield opened


@pytest.fixture(scope="module")
def busybox(tmp_path_factory) -> images.Layout:
    return images.busybox_layout(tmp_path_factory.mktemp("busybox") / "layout")


@contextlib.contextmanager
def tree(store: Store, image):
    """The image's root file system, mounted read-only for a look."""
    key = f"test-view-{uuid.uuid4().hex[:8]}"
    target = store.tmp / key
    mounts = store.snapshots.view(key, store.top_snapshot(image))
    target.mkdir()
    try:
        mount_all(mounts, target)
        try:
            yield target
        finally:
            unmount(target)
    finally:
        target.rmdir()
        store.snapshots.remove(key)


def _state(store: Store) -> tuple:
    """What a failed load must not change."""
    return ([i.id for i in store.list()], sorted(store.content.walk()),
            sorted(p.name for p in store.tmp.iterdir()))


# What skopeo writes, we load ----------------------------------------------------


def test_load_docker_archive_written_by_skopeo(tmp_path, store, busybox):
    target = tmp_path / "skopeo.tar"
    _skopeo("copy", f"oci:{busybox.path}:{busybox.tag}",
            f"docker-archive:{target}:corral.test/busybox:1")
    (image,) = archive.load(store, target)
    assert image.names == ["corral.test/busybox:1"]
    assert [str(d) for d in store.config(image).diff_ids] == busybox.diff_ids
    assert store.resolve("corral.test/busybox:1").id == image.id
    with tree(store, image) as root:
        assert (root / "bin/busybox").stat().st_size == images.BUSYBOX.stat().st_size
        assert (root / "bin/sh").is_symlink()


def test_load_oci_archive_written_by_skopeo(tmp_path, store, busybox):
    target = tmp_path / "skopeo-oci.tar"
    _skopeo("copy", f"oci:{busybox.path}:{busybox.tag}",
            f"oci-archive:{target}:corral.test/busybox:2")
    (image,) = archive.load(store, target)
    assert image.names == ["corral.test/busybox:2"]
    # An OCI archive keeps the blobs as they are: the same manifest and layers.
    assert str(image.manifest) == busybox.manifest.digest
    assert [str(la.digest) for la in store.manifest(image).layers] == [
        layer.digest for layer in busybox.layers]
    with tree(store, image) as root:
        assert (root / "etc/passwd").read_bytes().startswith(b"root:x:0:0")


def test_load_layout_directory(store, busybox):
    (image,) = archive.load(store, busybox.path)
    assert image.names == []  # its ref.name is a bare tag, "1.35"
    assert str(image.id) == busybox.config.digest
    with tree(store, image) as root:
        assert (root / "bin/busybox").exists()


# What we save, skopeo reads ------------------------------------------------------


def test_skopeo_reads_our_docker_archive(tmp_path, store, busybox):
    (image,) = archive.load(store, busybox.path)
    store.tag(image, "corral.test/busybox:1")
    other = archives.Image([archives.layer_tar({"hello": b"hi\n"})])
    archives.write_tar(tmp_path / "other.tar", archives.docker_archive(
        [archives.Image(other.layers, tags=["corral.test/other:1"])]))
    archive.load(store, tmp_path / "other.tar")
    target = tmp_path / "ours.tar"
    archive.save(store, ["corral.test/busybox:1", "corral.test/other:1"], target)
    inspected = json.loads(_skopeo("inspect", f"docker-archive:{target}:corral.test/busybox:1"))
    assert inspected["Layers"] == busybox.diff_ids  # uncompressed in a docker-archive
    assert inspected["Architecture"] == "amd64"
    raw = json.loads(_skopeo("inspect", "--raw", f"docker-archive:{target}:corral.test/other:1"))
    assert raw["config"]["digest"] == other.id  # the image ID survives
    # A copy to an OCI layout converts the config (skopeo rewrites it), but
    # keeps the layer.
    copy = tmp_path / "copy"
    _skopeo("copy", f"docker-archive:{target}:corral.test/other:1", f"oci:{copy}:x")
    config = json.loads(_skopeo("inspect", "--config", f"oci:{copy}:x"))
    assert config["rootfs"]["diff_ids"] == other.diff_ids


def test_skopeo_reads_our_oci_archive_and_dir(tmp_path, store, busybox):
    (image,) = archive.load(store, busybox.path)
    store.tag(image, "corral.test/busybox:3")
    archive.save(store, [str(image.id)], tmp_path / "ours-oci.tar", format="oci-archive")
    archive.save(store, [str(image.id)], tmp_path / "ours-dir", format="oci-dir")
    # ref.name is the tag alone, as docker 25+ and containerd write it; the
    # full name is in io.containerd.image.name.
    for transport in (f"oci-archive:{tmp_path / 'ours-oci.tar'}:3",
                      f"oci:{tmp_path / 'ours-dir'}:3"):
        inspected = json.loads(_skopeo("inspect", transport))
        assert inspected["Digest"] == busybox.manifest.digest
        assert inspected["Layers"] == [layer.digest for layer in busybox.layers]
    _skopeo("copy", f"oci-archive:{tmp_path / 'ours-oci.tar'}:3",
            f"docker-archive:{tmp_path / 'copied.tar'}:corral.test/copied:1")
    with Store(tmp_path / "second") as second:
        (copied,) = archive.load(second, tmp_path / "copied.tar")
        assert copied.names == ["corral.test/copied:1"]


# Round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("format", archive.FORMATS)
def test_round_trip_keeps_id_names_and_layers(tmp_path, store, busybox, format):
    (image,) = archive.load(store, busybox.path)
    store.tag(image, "corral.test/busybox:a")
    store.tag(image, "corral.test/busybox:b")
    pinned = f"corral.test/busybox@{image.manifest}"
    image = store.add(image, [pinned])
    output = tmp_path / ("out" if format == "oci-dir" else "out.tar")
    archive.save(store, [str(image.id)], output, format=format)
    with Store(tmp_path / "second") as second:
        (loaded,) = archive.load(second, output)
        assert loaded.id == image.id
        # A docker-archive names images by tag only (RepoTags), as Docker does.
        assert loaded.names == ["corral.test/busybox:a", "corral.test/busybox:b"] + (
            [] if format == "docker-archive" else [pinned])
        assert second.config(loaded).diff_ids == store.config(image).diff_ids
        if format != "docker-archive":  # a docker-archive holds layers uncompressed
            assert loaded.manifest == image.manifest
            assert second.manifest(loaded).layers == store.manifest(image).layers
        with tree(second, loaded) as root:
            assert (root / "bin/busybox").exists()


def test_save_to_a_stream_and_load_from_one(tmp_path, store, busybox):
    (image,) = archive.load(store, busybox.path)
    store.tag(image, "corral.test/busybox:s")
    with open(tmp_path / "stream.tar", "wb") as out:
        archive.save(store, ["corral.test/busybox:s"], out)
    data = (tmp_path / "stream.tar").read_bytes()
    with Store(tmp_path / "second") as second:
        (loaded,) = archive.load(second, io.BytesIO(gzip.compress(data, 1)))
        assert loaded.id == image.id and loaded.names == ["corral.test/busybox:s"]


def test_save_refuses_bad_requests_and_leaves_no_file(tmp_path, store):
    with pytest.raises(InvalidArgument):
        archive.save(store, ["x"], tmp_path / "a.tar", format="zip")
    with pytest.raises(Exception, match="no such image"):
        archive.save(store, ["corral.test/missing:1"], tmp_path / "a.tar")
    assert list(tmp_path.glob("*.tar*")) == [] and list(tmp_path.glob(".a.tar*")) == []


# Hostile archives ------------------------------------------------------------------


def _bad_layer_archive(tmp_path: Path) -> Path:
    """Everything checks out except that the layer's tar climbs out."""
    evil = archives.tar_bytes([archives.Member("ok", b"fine"),
                               archives.Member("../../escaped", b"evil")])
    return archives.write_tar(tmp_path / "evil.tar", archives.docker_archive(
        [archives.Image([evil], tags=["corral.test/evil:1"])]))


def test_hostile_layer_leaves_the_store_unchanged(tmp_path, store):
    before = _state(store)
    with pytest.raises(LayerError, match=r"\.\./\.\./escaped"):
        archive.load(store, _bad_layer_archive(tmp_path))
    assert _state(store) == before
    assert not (tmp_path / "escaped").exists() and not (store.root / "escaped").exists()


@pytest.mark.parametrize("damage", ["diff_id", "truncated", "missing", "link"])
def test_hostile_archives_leave_the_store_unchanged(tmp_path, store, damage):
    image = archives.Image([archives.layer_tar({"a": b"a"})], tags=["corral.test/x:1"])
    members = archives.docker_archive([image])
    layer = archives.manifest_of(members)[0]["Layers"][0]
    if damage == "diff_id":
        members = archives.replace(members, layer, data=archives.layer_tar({"b": b"b"}))
    elif damage == "missing":
        members = [m for m in members if m.name != layer]
    elif damage == "link":
        members = archives.replace(members, layer, kind="symlink", target="/etc/passwd")
    data = archives.tar_bytes(members)
    if damage == "truncated":
        data = data[:data.index(b"manifest.json") + 300]
    before = _state(store)
    with pytest.raises(BadContent) as caught:
        archive.load(store, io.BytesIO(data))
    assert "load archive" in str(caught.value)
    if damage != "truncated":
        assert layer in str(caught.value)
    assert _state(store) == before


# Import ------------------------------------------------------------------------------


def _rootfs_tarball(tmp_path: Path, compression: str | None) -> Path:
    rootfs = build_rootfs(tmp_path / "rootfs")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    data = buffer.getvalue()
    if compression == "gzip":
        data = gzip.compress(data, 1)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / "rootfs.tar"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_import_busybox_rootfs(tmp_path, store, compression):
    tarball = _rootfs_tarball(tmp_path, compression)
    started = time.monotonic()
    image = archive.import_rootfs(store, tarball, reference="corral.test/imported:1",
                                  changes=['CMD ["/bin/sh", "-c", "echo hi"]',
                                           "ENV A=1", "WORKDIR /tmp", "EXPOSE 80"],
                                  message="from a test")
    elapsed = time.monotonic() - started
    assert image.names == ["corral.test/imported:1"]
    config = store.config(image)
    assert config.os == "linux" and config.architecture
    assert config.config["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert config.config["Env"] == ["A=1"] and config.config["WorkingDir"] == "/tmp"
    assert config.raw["history"][0]["comment"] == "from a test"
    (layer,) = store.manifest(image).layers
    assert layer.media_type == mediatypes.OCI_LAYER_GZIP
    with store.content.open(layer.digest) as blob:
        assert blob.read(2) == b"\x1f\x8b"
    with tree(store, image) as root:
        assert (root / "bin/busybox").stat().st_size == Path("/bin/busybox").stat().st_size
    print(f"import of a {tarball.stat().st_size}-byte {compression} rootfs: {elapsed:.2f}s")


def test_import_from_a_stream_without_a_name(tmp_path, store):
    tarball = _rootfs_tarball(tmp_path, None)
    with open(tarball, "rb") as stream:
        image = archive.import_rootfs(store, stream, reference=None)
    assert image.names == [] and store.resolve(image.id.hex).id == image.id


def test_import_of_garbage_leaves_the_store_unchanged(tmp_path, store):
    before = _state(store)
    (tmp_path / "junk").write_bytes(b"this is not a tar archive at all\n" * 100)
    with pytest.raises(BadContent, match="not a tar"):
        archive.import_rootfs(store, tmp_path / "junk", reference="corral.test/junk:1")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(os.urandom(100000))[:5000])
    with pytest.raises(BadContent, match="decompress"):
        archive.import_rootfs(store, tmp_path / "cut.gz", reference=None)
    with pytest.raises(InvalidArgument, match="RUN"):
        archive.import_rootfs(store, tmp_path / "junk", reference=None, changes=["RUN x"])
    assert _state(store) == before


# docker itself ------------------------------------------------------------------------


def test_docker_loads_what_we_save_and_we_load_what_it_saves(tmp_path, store, busybox):
    """docker 20.10's load reads our Docker 25 form; its save (the 1.10-24
    form, <id>/layer.tar) loads here with the same image ID."""
    from .peers import Dockerd, make_workdir

    for program in ("dockerd", "docker", "containerd"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install docker.io)")
    (image,) = archive.load(store, busybox.path)
    store.tag(image, "corral.test/busybox:docker")
    archive.save(store, ["corral.test/busybox:docker"], tmp_path / "ours.tar")
    daemon = Dockerd(make_workdir("arc"), {})
    try:
        daemon.start()
        daemon.load_image(tmp_path / "ours.tar")
        inspected = json.loads(daemon.docker("image", "inspect",
                                             "corral.test/busybox:docker").stdout)
        assert inspected[0]["Id"] == str(image.id)
        assert inspected[0]["RootFS"]["Layers"] == busybox.diff_ids
        daemon.docker("tag", "corral.test/busybox:docker", "corral.test/again:1")
        saved = daemon.docker("save", "--output", str(tmp_path / "theirs.tar"),
                              "corral.test/again:1")
        assert saved.returncode == 0, saved.stderr
    finally:
        left = daemon.cleanup()
        assert not left, f"dockerd left behind: {left}"
    with Store(tmp_path / "second") as second:
        (loaded,) = archive.load(second, tmp_path / "theirs.tar")
        assert loaded.id == image.id and loaded.names == ["corral.test/again:1"]
        with tree(second, loaded) as root:
            assert (root / "bin/busybox").exists()
