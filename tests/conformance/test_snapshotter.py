"""The snapshotter conformance suite, run against overlay and native alike
(containerd's snapshots/testsuite, in our own words).

Snapshots are mounted for real, so the suite needs root.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.image.errors import AlreadyExists, FailedPrecondition, NotFound
from corral.image.mount import mount_all, unmount
from corral.image.snapshots import open_snapshotter
from corral.image.unpack import apply_layer
from tests.layers import Layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="snapshots are mounted: needs root")


class Mounted:
    """Mounts snapshots under one directory and unmounts them all at the end."""

    def __init__(self, snapshotter, base: Path) -> None:
        self.snapshotter = snapshotter
        self.base = base
        self.active: list[Path] = []

    def __call__(self, mounts, name: str) -> Path:
        target = self.base / name
        target.mkdir()
        mount_all(mounts, target)
        self.active.append(target)
        return target

    def release(self, target: Path) -> None:
        unmount(target)
        self.active.remove(target)
        target.rmdir()

    def close(self) -> None:
        for target in reversed(self.active):
            unmount(target)


@pytest.fixture(params=["overlay", "native"])
def kind(request):
    return request.param


@pytest.fixture
def snap(kind, tmp_path):
    snapshotter = open_snapshotter(tmp_path / "root", kind)
    assert snapshotter.name == kind
    return snapshotter


@pytest.fixture
def mount(snap, tmp_path):
    (tmp_path / "mnt").mkdir()
    mounted = Mounted(snap, tmp_path / "mnt")
    yield mounted
    mounted.close()


def _layer(snap, mount, key: str, parent: str | None, name: str, files: dict) -> None:
    target = mount(snap.prepare(key, parent), key)
    for path, data in files.items():
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_bytes(data)
    mount.release(target)
    snap.commit(name, key)


def test_prepare_commit_view_and_stat(snap, mount):
    _layer(snap, mount, "k1", None, "base", {"a": b"1", "dir/b": b"2"})
    _layer(snap, mount, "k2", "base", "top", {"c": b"3", "a": b"changed"})
    assert snap.stat("top").kind == "committed"
    assert snap.stat("top").parent == "base"
    with pytest.raises(NotFound):
        snap.stat("k2")
    view_mounts = snap.view("v", "top")
    assert snap.mounts("v") == view_mounts
    view = mount(view_mounts, "v")
    assert (view / "a").read_bytes() == b"changed"
    assert (view / "dir/b").read_bytes() == b"2"
    assert (view / "c").read_bytes() == b"3"
    assert snap.stat("v").kind == "view"
    with pytest.raises(OSError):
        (view / "new").write_bytes(b"x")


def test_active_snapshot_is_writable_and_isolated(snap, mount):
    _layer(snap, mount, "k1", None, "base", {"a": b"1"})
    one = mount(snap.prepare("one", "base"), "one")
    two = mount(snap.prepare("two", "base"), "two")
    (one / "a").write_bytes(b"changed in one")
    assert (two / "a").read_bytes() == b"1"
    assert snap.stat("one").kind == "active"
    assert snap.mounts("one") == snap.mounts("one")


def test_names_and_keys_are_one_namespace(snap, mount):
    _layer(snap, mount, "k1", None, "base", {})
    with pytest.raises(AlreadyExists):
        snap.prepare("base", None)
    snap.prepare("k2", "base")
    with pytest.raises(AlreadyExists):
        snap.prepare("k2", "base")
    with pytest.raises(AlreadyExists):
        snap.commit("base", "k2")
    assert snap.stat("k2").kind == "active"
    with pytest.raises(NotFound):
        snap.prepare("k3", "missing")
    with pytest.raises(FailedPrecondition):
        snap.prepare("k3", "k2")  # an active parent
    with pytest.raises(FailedPrecondition):
        snap.commit("again", "base")  # already committed


def test_remove_refuses_parents_and_frees_disk(snap, mount, tmp_path):
    _layer(snap, mount, "k1", None, "base", {"big": b"x" * 200000})
    snap.prepare("child", "base")
    with pytest.raises(FailedPrecondition, match="has children"):
        snap.remove("base")
    snap.remove("child")
    assert snap.usage("base") >= 200000
    directories = set(os.listdir(snap.dirs))
    snap.remove("base")
    assert {info.name for info in snap.walk()} == set()
    assert len(os.listdir(snap.dirs)) == len(directories) - 1
    with pytest.raises(NotFound):
        snap.remove("base")


def test_walk_lists_every_snapshot(snap, mount):
    _layer(snap, mount, "k1", None, "base", {})
    snap.prepare("active", "base")
    snap.view("view", "base")
    found = {info.name: (info.kind, info.parent) for info in snap.walk()}
    assert found == {"base": ("committed", None), "active": ("active", "base"),
                     "view": ("view", "base")}


def test_usage_counts_what_the_snapshot_holds(snap, mount):
    _layer(snap, mount, "k1", None, "base", {"f": b"x" * 1_000_000})
    _layer(snap, mount, "k2", "base", "top", {"g": b"y" * 10})
    assert snap.usage("base") >= 1_000_000
    usage = snap.usage("top")
    if snap.name == "overlay":
        assert usage < 100_000  # only the upper layer
    else:
        assert usage >= 1_000_000  # a full copy


def test_layers_with_whiteouts_through_the_snapshots(snap, mount):
    base = mount(snap.prepare("k1", None), "k1")
    apply_layer(base, io.BytesIO(Layer().dir("d").file("d/gone", b"1")
                                 .file("d/kept", b"2").dir("o").file("o/x", b"x").tar()),
                None, what="l1")
    mount.release(base)
    snap.commit("l1", "k1")
    upper = mount(snap.prepare("k2", "l1"), "k2")
    apply_layer(upper, io.BytesIO(Layer().whiteout("d/gone").dir("o").opaque("o")
                                  .file("o/y", b"y").tar()), None, what="l2")
    mount.release(upper)
    snap.commit("l2", "k2")
    view = mount(snap.view("v", "l2"), "v")
    assert os.listdir(view / "d") == ["kept"]
    assert os.listdir(view / "o") == ["y"]
    older = mount(snap.view("v1", "l1"), "v1")
    assert sorted(os.listdir(older / "d")) == ["gone", "kept"]


def test_a_crash_leaves_garbage_that_cleanup_sweeps(snap):
    orphan = snap.dirs / "999"
    (orphan / "fs").mkdir(parents=True)
    staging = snap.dirs / "new-999999999-dead"
    staging.mkdir()
    snap.cleanup()
    assert not orphan.exists() and not staging.exists()


_COMMIT = """
import sys
from pathlib import Path
from corral.image.errors import AlreadyExists
from corral.image.snapshots import open_snapshotter
snap = open_snapshotter(Path(sys.argv[1]), sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
try:
    snap.commit("shared", sys.argv[3])
except AlreadyExists:
    print("lost")
else:
    print("won")
"""


def test_concurrent_commit_of_one_name_has_one_winner(snap, kind, tmp_path):
    keys = [f"racer-{index}" for index in range(4)]
    for key in keys:
        snap.prepare(key, None)
    racers = [subprocess.Popen([sys.executable, "-c", _COMMIT,
                                str(tmp_path / "root"), kind, key],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
              for key in keys]
    # Every process is up and has the database open before any commits.
    assert [racer.stdout.readline().strip() for racer in racers] == ["ready"] * 4
    for racer in racers:
        racer.stdin.write("go\n")
        racer.stdin.flush()
    outcomes = [racer.communicate(timeout=60)[0].strip() for racer in racers]
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    winner = keys[outcomes.index("won")]
    assert snap.stat("shared").kind == "committed"
    with pytest.raises(NotFound):
        snap.stat(winner)
    assert {info.name for info in snap.walk()} == \
        {"shared", *(key for key in keys if key != winner)}


def test_a_child_sees_every_attribute_of_its_parent(snap, mount):
    import stat

    base = mount(snap.prepare("k1", None), "k1")
    apply_layer(base, io.BytesIO(
        Layer().dir("d", mode=0o1777, uid=3, gid=4, mtime=1_000_000)
        .file("d/suid", b"s", mode=0o4755, uid=1000, gid=1000, mtime=2_000_000,
              xattrs={"user.k": b"v", "trusted.t": b"w"})
        .hardlink("d/link", "d/suid").symlink("d/sym", "suid", uid=9)
        .char("d/null", 1, 3, mode=0o666).fifo("d/fifo").tar()), None, what="all")
    mount.release(base)
    snap.commit("all", "k1")
    child = mount(snap.prepare("k2", "all"), "k2")
    d, suid = os.lstat(child / "d"), os.lstat(child / "d/suid")
    assert (stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid, d.st_mtime) == \
        (0o1777, 3, 4, 1_000_000)
    assert (stat.S_IMODE(suid.st_mode), suid.st_uid, suid.st_mtime, suid.st_nlink) == \
        (0o4755, 1000, 2_000_000, 2)
    assert os.lstat(child / "d/link").st_ino == suid.st_ino
    assert os.getxattr(child / "d/suid", "user.k") == b"v"
    assert os.getxattr(child / "d/suid", "trusted.t") == b"w"
    assert (os.readlink(child / "d/sym"), os.lstat(child / "d/sym").st_uid) == ("suid", 9)
    assert os.lstat(child / "d/null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(child / "d/fifo").st_mode)


def test_the_default_kind_is_probed_once_and_remembered(tmp_path):
    root = tmp_path / "probe"
    assert open_snapshotter(root).name == "overlay"  # ext4 or tmpfs: overlay works
    assert (root / "default-kind").read_text() == "overlay\n"
    assert not [name for name in os.listdir(root) if name.startswith("probe-")]
    (root / "default-kind").write_text("native\n")
    assert open_snapshotter(root).name == "native"
