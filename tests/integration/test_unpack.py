"""Layers applied through real snapshots (overlay and native), hostile
layers refused without a byte written outside, and the same tree as
``umoci unpack`` gives for a multi-layer image with whiteouts."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from corral.image.errors import LayerError
from corral.image.mount import mount_all, unmount
from corral.image.snapshots import open_snapshotter
from corral.image.unpack import apply_layer
from tests.layers import MTIME, Layer, blob_path, compress, write_layout


class Chain:
    """Applies layers one snapshot each, as a puller would, and mounts a view."""

    def __init__(self, root: Path, kind: str) -> None:
        self.snapshotter = open_snapshotter(root / "snapshots", kind)
        self.mnt = root / "mnt"
        self.mnt.mkdir()
        self.mounted: list[Path] = []
        self.parent: str | None = None

    def apply(self, tar: bytes, compression: str | None = "gzip") -> None:
        index = len(list(self.snapshotter.walk()))
        key = f"extract-{index}"
        target = self._mount(self.snapshotter.prepare(key, self.parent), key)
        try:
            applied = apply_layer(target, io.BytesIO(compress(tar, compression)),
                                  compression, what=f"layer-{index}")
        finally:
            self._unmount(target)
        assert applied.diff_id.hex == hashlib.sha256(tar).hexdigest()
        assert applied.size == len(tar)
        self.snapshotter.commit(f"layer-{index}", key)
        self.parent = f"layer-{index}"

    def view(self) -> Path:
        return self._mount(self.snapshotter.view("view", self.parent), "view")

    def _mount(self, mounts, name: str) -> Path:
        target = self.mnt / name
        target.mkdir()
        mount_all(mounts, target)
        self.mounted.append(target)
        return target

    def _unmount(self, target: Path) -> None:
        unmount(target)
        self.mounted.remove(target)

    def close(self) -> None:
        for target in reversed(self.mounted):
            unmount(target)


@pytest.fixture(params=["overlay", "native"])
def chain(request, tmp_path):
    chain = Chain(tmp_path, request.param)
    yield chain
    chain.close()


def test_whiteouts_and_opaque_dirs_across_layers(chain):
    chain.apply(Layer().dir("a").file("a/x", b"x").file("a/y", b"y").dir("b")
                .file("b/old", b"old").dir("b/sub").file("b/sub/deep", b"d")
                .file("c", b"c").dir("t").file("t/u", b"u").tar())
    chain.apply(Layer().whiteout("a/x").dir("b").file("b/before", b"1").opaque("b")
                .file("b/after", b"2").whiteout("c").whiteout("t")
                .whiteout("never-there").tar())
    view = chain.view()
    assert sorted(os.listdir(view)) == ["a", "b"]
    assert os.listdir(view / "a") == ["y"]
    assert sorted(os.listdir(view / "b")) == ["after", "before"]
    assert (view / "b" / "before").read_bytes() == b"1"


def test_a_layer_recreates_what_a_whiteout_removed(chain):
    chain.apply(Layer().dir("d").file("d/f", b"lower").tar())
    chain.apply(Layer().whiteout("d").dir("d").file("d/g", b"new").tar())
    view = chain.view()
    assert os.listdir(view / "d") == ["g"]


def test_hardlink_to_a_lower_layers_file(chain):
    chain.apply(Layer().dir("bin").file("bin/busybox", b"\x7fELF", mode=0o755).tar())
    chain.apply(Layer().hardlink("bin/sh", "bin/busybox").tar())
    view = chain.view()
    busybox, sh = os.lstat(view / "bin/busybox"), os.lstat(view / "bin/sh")
    assert (sh.st_ino, sh.st_nlink) == (busybox.st_ino, 2)
    assert (view / "bin/sh").read_bytes() == b"\x7fELF"


def test_every_kind_with_owners_modes_times_and_xattrs(chain):
    chain.apply(
        Layer().dir("d", mode=0o1777, uid=11, gid=12, mtime=MTIME - 100)
        .file("d/suid", b"s", mode=0o4755, uid=1000, gid=1000)
        .file("d/sgid", b"g", mode=0o2711, uid=0, gid=50)
        .symlink("d/link", "../etc/none", uid=7, gid=8)
        .char("d/null", 1, 3, mode=0o666).block("d/loop", 7, 0, mode=0o660)
        .fifo("d/fifo", mode=0o620, uid=5, gid=6)
        .file("d/cap", b"c", mode=0o755, xattrs={
            "security.capability": b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12),
            "user.note": b"\xffbinary", "trusted.overlay.opaque": b"y",
            "security.selinux": b"system_u:object_r:bin_t"})
        .tar())
    view = chain.view()
    d = os.lstat(view / "d")
    assert (stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid) == (0o1777, 11, 12)
    assert d.st_mtime == MTIME - 100
    suid = os.lstat(view / "d/suid")
    assert (stat.S_IMODE(suid.st_mode), suid.st_uid, suid.st_mtime) == \
        (0o4755, 1000, MTIME)
    assert stat.S_IMODE(os.lstat(view / "d/sgid").st_mode) == 0o2711
    link = os.lstat(view / "d/link")
    assert (os.readlink(view / "d/link"), link.st_uid, link.st_gid) == \
        ("../etc/none", 7, 8)
    null, loop = os.lstat(view / "d/null"), os.lstat(view / "d/loop")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0)
    fifo = os.lstat(view / "d/fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and (fifo.st_uid, stat.S_IMODE(fifo.st_mode)) \
        == (5, 0o620)
    cap = view / "d/cap"
    assert os.getxattr(cap, "security.capability")[:4] == b"\x01\x00\x00\x02"
    assert os.getxattr(cap, "user.note") == b"\xffbinary"
    names = os.listxattr(cap)
    assert "trusted.overlay.opaque" not in names and "security.selinux" not in names


def test_zstd_and_uncompressed_layers(chain):
    chain.apply(Layer().file("z", b"zstd" * 100000).tar(), "zstd")
    chain.apply(Layer().file("p", b"plain").tar(), None)
    view = chain.view()
    assert (view / "z").read_bytes() == b"zstd" * 100000
    assert (view / "p").read_bytes() == b"plain"


# --- hostile layers, applied to a plain directory next to a canary ---

@pytest.fixture
def arena(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_bytes(b"safe")
    target = tmp_path / "root"
    target.mkdir()
    yield target, outside
    assert (outside / "canary").read_bytes() == b"safe"
    assert os.listdir(outside) == ["canary"]
    assert sorted(os.listdir(tmp_path)) == ["outside", "root"]


def _refused(target: Path, tar: bytes, entry: str) -> LayerError:
    with pytest.raises(LayerError) as info:
        apply_layer(target, io.BytesIO(tar), None, what="hostile")
    assert f"entry '{entry}'" in str(info.value)
    assert info.value.entry == entry
    assert str(info.value).startswith("apply layer 'hostile': ")
    return info.value


@pytest.mark.parametrize("name", ["../x", "a/../../x", "../outside/canary"])
def test_dotdot_names_are_refused(arena, name):
    target, _ = arena
    error = _refused(target, Layer().dir("a").file(name, b"evil").tar(), name)
    assert "'..' component" in str(error)


def test_absolute_names_stay_inside(arena):
    target, outside = arena
    apply_layer(target, io.BytesIO(Layer().file(f"{outside}/canary", b"evil").tar()),
                None, what="absolute")
    assert (target / str(outside).lstrip("/") / "canary").read_bytes() == b"evil"


@pytest.mark.parametrize("link", ["abs", "rel"])
def test_symlink_then_file_through_it_in_one_layer(arena, link):
    target, outside = arena
    pointer = str(outside) if link == "abs" else "../" * 12 + str(outside).lstrip("/")
    tar = Layer().symlink("evil", pointer).file("evil/canary", b"evil").tar()
    _refused(target, tar, "evil/canary")


def test_symlink_to_root_resolves_inside(arena):
    target, _ = arena
    tar = Layer().symlink("up", "../../../../").file("up/inside", b"ok").tar()
    apply_layer(target, io.BytesIO(tar), None, what="up")
    assert (target / "inside").read_bytes() == b"ok"


def test_a_file_replaces_a_symlink_instead_of_following_it(arena):
    target, outside = arena
    tar = Layer().symlink("evil", f"{outside}/canary").file("evil", b"evil").tar()
    apply_layer(target, io.BytesIO(tar), None, what="replace")
    assert (target / "evil").read_bytes() == b"evil"
    assert not (target / "evil").is_symlink()


def test_symlink_in_one_layer_then_write_through_it_in_the_next(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_bytes(b"safe")
    chain = Chain(tmp_path, "overlay")
    try:
        chain.apply(Layer().symlink("evil", str(outside)).tar())
        with pytest.raises(LayerError, match="entry 'evil/canary'"):
            chain.apply(Layer().file("evil/canary", b"evil").tar())
    finally:
        chain.close()
    assert (outside / "canary").read_bytes() == b"safe"
    assert os.listdir(outside) == ["canary"]


def test_hardlinks_to_the_hosts_files_are_refused(arena):
    target, _ = arena
    links = os.lstat("/etc/shadow").st_nlink
    _refused(target, Layer().hardlink("shadow", "/etc/shadow").tar(), "shadow")
    tar = Layer().symlink("etc", "/etc").hardlink("s", "etc/shadow").tar()
    _refused(target, tar, "s")
    tar = Layer().hardlink("s", "../../../../etc/shadow").tar()
    _refused(target, tar, "s")
    assert os.lstat("/etc/shadow").st_nlink == links


def test_broken_and_truncated_streams_name_the_layer(arena):
    target, _ = arena
    blob = compress(Layer().file("f", os.urandom(50000)).tar(), "gzip")
    broken = bytearray(blob)
    broken[200:300] = bytes(100)
    for data, cause in ((bytes(broken), "broken gzip stream"),
                        (blob[: len(blob) // 2], "broken gzip stream"),
                        (b"not gzip at all", "broken gzip stream")):
        with pytest.raises(LayerError, match=f"apply layer 'sha256:abc': {cause}"):
            apply_layer(target, io.BytesIO(data), "gzip", what="sha256:abc")
    zstd = compress(Layer().file("f", os.urandom(50000)).tar(), "zstd")
    with pytest.raises(LayerError, match="apply layer 'z': (broken zstd|truncated)"):
        apply_layer(target, io.BytesIO(zstd[: len(zstd) // 2]), "zstd", what="z")
    with pytest.raises(LayerError, match="apply layer 'z': broken zstd stream"):
        apply_layer(target, io.BytesIO(b"\x28\xb5\x2f\xfd\x08" + bytes(64)), "zstd",
                    what="z")


# --- interop: umoci unpack of the same layout gives the same tree ---

def _tree(root: Path) -> dict[str, tuple]:
    tree = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            detail: object = None
            if stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            tree[os.path.relpath(path, root)] = (kind, stat.S_IMODE(st.st_mode),
                                                 st.st_uid, st.st_gid, detail)
    return tree


def _image_layers() -> list[bytes]:
    return [
        Layer().dir("etc").file("etc/passwd", b"root:x:0:0\n").dir("bin")
        .file("bin/busybox", b"\x7fELF" * 1000, mode=0o755)
        .hardlink("bin/sh", "bin/busybox").dir("dev").char("dev/null", 1, 3, mode=0o666)
        .dir("var").dir("var/cache").file("var/cache/a", b"a").file("var/cache/b", b"b")
        .dir("home", uid=1000, gid=1000).file("home/x", b"x", uid=1000, gid=1000)
        .file("bin/su", b"su", mode=0o4755).symlink("bin/ls", "busybox").tar(),
        Layer().whiteout("etc/passwd").file("etc/hostname", b"c1\n")
        .dir("var/cache").opaque("var/cache").file("var/cache/new", b"n")
        .fifo("run.fifo").tar(),
        Layer().whiteout("home").file("etc/passwd", b"root:x:0:0:again\n")
        .hardlink("bin/busybox2", "bin/busybox").symlink("lib", "/usr/lib").tar(),
    ]


def test_same_tree_as_umoci_unpack(tmp_path):
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed (apt-get install umoci)")
    tars = _image_layers()
    layers = write_layout(tmp_path / "layout", "t", tars)
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:t",
                    str(tmp_path / "bundle")], check=True, capture_output=True)
    chain = Chain(tmp_path, "overlay")
    try:
        for index, descriptor in enumerate(layers):
            chain.apply(tars[index])
            with open(blob_path(tmp_path / "layout", descriptor), "rb") as blob:
                assert blob.read(2) == b"\x1f\x8b"
        ours = _tree(chain.view())
    finally:
        chain.close()
    theirs = _tree(tmp_path / "bundle" / "rootfs")
    assert ours == theirs
    assert "var/cache/new" in ours and "var/cache/a" not in ours
    assert ours["bin/su"][1] == 0o4755


def test_numbers_too_big_for_the_kernel_are_refused(arena):
    target, _ = arena
    _refused(target, Layer().file("big-uid", b"x", uid=2**40).tar(), "big-uid")
    # GNU headers carry device numbers in base-256, so they can be huge.
    tar = Layer(tarfile.GNU_FORMAT).char("big-dev", 2**40, 1).tar()
    _refused(target, tar, "big-dev")


def test_errors_of_the_callers_stream_become_layer_errors(arena):
    target, _ = arena
    stream = io.BytesIO(Layer().file("f", b"x").tar())
    stream.close()
    with pytest.raises(LayerError, match="apply layer 'closed': read: "):
        apply_layer(target, stream, None, what="closed")
