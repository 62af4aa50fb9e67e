"""A full disk during pull (issue 5, "Bad input and faults"): the pull fails
with a clear message that says the disk is full (Docker's "no space left on
device"), names the image and the blob, leaves nothing half-made behind (no
ingest, blob, snapshot, mount or record), and the same pull succeeds once
there is room.

The disk is a small tmpfs mounted over the store's content directory (the
download fills it) or over its snapshots directory (the unpacking does),
then remounted bigger. Through the engine's CLI (``corral pull``) and
through corrald (``docker pull``).
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests import images
from tests.integration import peers

CORRAL = str(Path(sys.executable).parent / "corral")
SMALL, LARGE = "3m", "64m"


def _push(registry, directory: Path, tag: str, data: bytes) -> tuple[str, images.Layout]:
    """busybox and two layers holding DATA in four files: the two download
    side by side, so both are cut short when the disk fills."""
    layers = [images.LayerBuilder(), images.LayerBuilder()]
    quarter = len(data) // 4
    for index in range(4):
        layers[index // 2].file(f"data/part{index}",
                                data[index * quarter:(index + 1) * quarter])
    layout = images.build_layout(directory / "layout",
                                 [images.busybox_tar(), *(x.tar() for x in layers)],
                                 tag=tag, cmd=["sh"])
    reference = registry.ref(f"test/full-disk:{tag}")
    images.push(layout.path, layout.tag, reference)
    return reference, layout


@pytest.fixture(scope="module")
def big_download(registry, tmp_path_factory) -> tuple[str, images.Layout]:
    """Random data: 6 MB to download into a 3 MB disk."""
    data = random.Random(5).randbytes(6 << 20)
    return _push(registry, tmp_path_factory.mktemp("download"), "random", data)


@pytest.fixture(scope="module")
def big_unpack(registry, tmp_path_factory) -> tuple[str, images.Layout]:
    """Text: a small download that unpacks to 8 MB."""
    data = b"a full disk during unpack\n" * 320_000
    return _push(registry, tmp_path_factory.mktemp("unpack"), "text", data)


class SmallDisk:
    """A tmpfs of SMALL bytes over one directory, made LARGE by ``grow``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL},mode=0700",
                        "tmpfs", str(path)], check=True)

    def grow(self) -> None:
        subprocess.run(["mount", "-o", f"remount,size={LARGE}", str(self.path)],
                       check=True)

    def release(self) -> None:
        peers.unmount_under(self.path)


@pytest.fixture
def store_root(tmp_path) -> Path:
    root = tmp_path / "root"
    yield root
    peers.unmount_under(root)


def corral(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CORRAL, "--root", str(root), *args], capture_output=True,
                          text=True, timeout=120)


def image_blobs(layout: images.Layout) -> set[str]:
    return {blob.digest.removeprefix("sha256:") for blob in
            [layout.manifest, layout.config, *layout.layers]}


def leftovers(root: Path, layout: images.Layout) -> list[str]:
    """What a failed pull left in ROOT's store: it should be nothing."""
    from corral.image.snapshots import open_snapshotter

    found = [f"ingest {p.name}" for p in (root / "content/ingest").iterdir()]
    blobs = {p.name for p in (root / "content/blobs/sha256").iterdir()}
    found += [f"blob {name}" for name in sorted(blobs & image_blobs(layout))]
    snapshotter = open_snapshotter(root / "snapshots")
    found += [f"snapshot {i.kind} {i.name}" for i in snapshotter.walk()]
    found += [f"tmp {p.name}" for p in (root / "tmp").iterdir()]
    found += [f"mount {m}" for m in peers._mount_points_under(root)
              if m not in (str(root / "content"), str(root / "snapshots"))]
    return found


def check_message(message: str, reference: str) -> None:
    assert "no space left on device" in message, message
    assert f"image '{reference}'" in message, message
    assert "blob 'sha256:" in message or "layer 'sha256:" in message, message
    assert "free some space" in message, message


@pytest.mark.parametrize(("where", "snapshotter"), [
    ("content", "overlay"), ("snapshots", "overlay"), ("snapshots", "native")])
def test_corral_pull_on_a_full_disk(store_root, where, snapshotter, big_download,
                                    big_unpack):
    reference, layout = big_download if where == "content" else big_unpack
    disk = SmallDisk(store_root / where)
    try:
        corral(store_root, "--snapshotter", snapshotter, "images")
        failed = corral(store_root, "pull", reference)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        [line] = [x for x in failed.stderr.splitlines() if "no space" in x]
        check_message(line, reference)
        assert leftovers(store_root, layout) == []
        assert reference not in corral(store_root, "images").stdout

        disk.grow()
        pulled = corral(store_root, "pull", reference)
        assert pulled.returncode == 0, pulled.stderr
        assert f"Downloaded newer image for {reference}" in pulled.stdout
        mounted = corral(store_root, "image", "mount", reference).stdout.strip()
        assert (Path(mounted) / "data").is_dir()
        corral(store_root, "image", "unmount", reference)
    finally:
        disk.release()


@pytest.fixture
def corrald():
    if subprocess.run(["sh", "-c", "command -v docker"], capture_output=True).returncode:
        pytest.skip("the docker CLI is not on PATH (scripts/setup installs it)")
    daemon = peers.Corrald(peers.make_workdir("full"))
    disk = SmallDisk(daemon.root / "content")
    try:
        daemon.disk = disk
        yield daemon.start()
    finally:
        daemon.cleanup()


def test_docker_pull_against_corrald_on_a_full_disk(corrald, big_download):
    reference, layout = big_download
    failed = corrald.docker("pull", reference)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    check_message(failed.stderr, reference)
    assert leftovers(corrald.root, layout) == []
    assert corrald.ok("images", "-q", reference).strip() == ""

    corrald.disk.grow()
    pulled = corrald.docker("pull", reference)
    assert pulled.returncode == 0, pulled.stderr
    assert f"Downloaded newer image for {reference}" in pulled.stdout
    assert corrald.ok("run", "--rm", "--network", "none", reference,
                      "ls", "/data").split() == [f"part{i}" for i in range(4)]
