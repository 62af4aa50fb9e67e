"""`corral` image commands end to end: pull from a real registry, list,
inspect, mount, make a bundle and run it with corral-runtime, remove.

Each test has a store root of its own; the registry and the images pushed
to it by skopeo are shared by the session (tests/image_fixtures.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.image.mount import is_mount_point
from tests import images
from tests.conftest import CORRAL_RUNTIME

CORRAL = str(Path(sys.executable).parent / "corral")


class Corral:
    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *args: str, check: bool = True, input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([CORRAL, "--root", str(self.root), *args],
                                capture_output=True, input=input, timeout=timeout)
        result.stdout = result.stdout.decode(errors="replace")
        result.stderr = result.stderr.decode(errors="replace")
        if check and result.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr}")
        return result

    def blobs(self) -> set[str]:
        return {p.name for p in (self.root / "content/blobs/sha256").iterdir()}

    def snapshot_names(self) -> set[str]:
        from corral.image.snapshots import open_snapshotter

        snapshotter = open_snapshotter(self.root / "snapshots")
        return {info.name for info in snapshotter.walk() if info.kind == "committed"}


@pytest.fixture(params=["overlay", "native"])
def corral(request, tmp_path) -> Corral:
    cli = Corral(tmp_path / "store")
    cli.run("--snapshotter", request.param, "images")
    yield cli
    for mounted in cli.run("image", "mount", check=False).stdout.splitlines():
        cli.run("image", "unmount", mounted.split()[0], check=False)


@pytest.fixture(scope="module")
def layered_image(registry, tmp_path_factory) -> tuple[str, images.Layout]:
    """Three layers: a base, a layer that deletes and replaces, one more."""
    base = images.LayerBuilder()
    base.file("etc/os-release", b"NAME=corral-test\n")
    base.file("data/keep", b"keep\n")
    base.file("data/gone", b"gone\n")
    base.file("opaque/old", b"old\n")
    base.file("bin/hello", b"#!/bin/sh\necho hello\n", mode=0o755)
    middle = images.LayerBuilder()
    middle.file("data/.wh.gone", b"")
    middle.file("opaque/.wh..wh..opq", b"")
    middle.file("opaque/new", b"new\n")
    top = images.LayerBuilder()
    top.file("data/added", b"added\n", uid=1000, gid=1000, mode=0o640)
    layout = images.build_layout(tmp_path_factory.mktemp("layered") / "layout",
                                 [base.tar(), middle.tar(), top.tar()], tag="3",
                                 cmd=["/bin/hello"])
    reference = registry.ref("test/layered:3")
    images.push(layout.path, layout.tag, reference)
    return reference, layout


def test_pull_lists_and_inspects(corral, busybox_image, busybox_layout_dir):
    result = corral.run("pull", busybox_image)
    assert "Pull complete" in result.stdout
    assert f"Status: Downloaded newer image for {busybox_image}" in result.stdout
    assert result.stdout.strip().endswith(busybox_image)

    again = corral.run("pull", busybox_image)
    assert "Status: Image is up to date" in again.stdout

    listing = corral.run("images").stdout.splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    repository, tag, image_id = listing[1].split()[:3]
    assert (repository, tag) == (busybox_image.rsplit(":", 1)[0], "1.35")
    assert image_id == busybox_layout_dir.config.digest.removeprefix("sha256:")[:12]

    [document] = json.loads(corral.run("inspect", busybox_image).stdout)
    assert document["Id"] == busybox_layout_dir.config.digest
    assert document["RepoTags"] == [busybox_image]
    assert document["RepoDigests"] == [
        f"{busybox_image.rsplit(':', 1)[0]}@{busybox_layout_dir.manifest.digest}"]
    assert document["Config"]["Cmd"] == ["sh"]
    assert document["RootFS"]["Layers"] == busybox_layout_dir.diff_ids
    assert corral.run("inspect", "-f", "{{.Config.Cmd}}", image_id).stdout == "[sh]\n"


def run_bundle(corral: Corral, image: str, bundle: Path, *command: str,
               flags: tuple[str, ...] = ()) -> str:
    """Make a bundle of ``image`` with ``flags`` and ``command``, run it with
    corral-runtime, remove the bundle; the container's output."""
    corral.run("image", "bundle", *flags, image, str(bundle), *command)
    try:
        run = subprocess.run([CORRAL_RUNTIME, "--root", str(bundle.parent / "state"), "run",
                              "-b", str(bundle), bundle.name], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout
    finally:
        corral.run("image", "bundle", "--rm", str(bundle))
        assert not is_mount_point(bundle / "rootfs")


def test_a_pulled_image_runs_under_corral_runtime(corral, busybox_image, tmp_path):
    corral.run("pull", "-q", busybox_image)
    shown = run_bundle(corral, busybox_image, tmp_path / "as-app", "sh", "-c",
                       "id -u; id -g; pwd", flags=("-u", "app", "-w", "/work/here"))
    assert shown.split() == ["1000", "1000", "/work/here"]
    # As root (the image's default) it may write: to its own snapshot.
    assert run_bundle(corral, busybox_image, tmp_path / "as-root", "sh", "-c",
                      "echo hi > /written; cat /written; id -u") == "hi\n0\n"
    mounted = Path(corral.run("image", "mount", busybox_image).stdout.strip())
    assert (mounted / "bin/busybox").exists()
    assert not (mounted / "written").exists()


def test_layers_whiteouts_and_opaque_dirs(corral, layered_image):
    reference, _ = layered_image
    corral.run("pull", reference)
    mounted = Path(corral.run("image", "mount", reference).stdout.strip())
    assert (mounted / "data/keep").read_text() == "keep\n"
    assert not (mounted / "data/gone").exists()
    assert sorted(os.listdir(mounted / "opaque")) == ["new"]
    added = os.stat(mounted / "data/added")
    assert (added.st_uid, added.st_gid, added.st_mode & 0o777) == (1000, 1000, 0o640)
    with pytest.raises(OSError, match="Read-only file system"):
        (mounted / "data/new").write_text("x")
    assert corral.run("image", "mount").stdout.split()[2] == str(mounted)
    corral.run("image", "unmount", reference)
    assert not is_mount_point(mounted)


def test_shared_layers_are_unpacked_once(corral, busybox_image, registry,
                                         busybox_layout_dir):
    other = registry.ref("test/busybox-copy:1")
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag, other)
    corral.run("pull", busybox_image)
    second = corral.run("pull", other)
    assert "Already exists" in second.stdout
    assert len(corral.snapshot_names()) == 1


def test_rmi_untags_then_deletes_and_collects(corral, busybox_image, layered_image):
    corral.run("pull", "-q", busybox_image)
    corral.run("pull", "-q", layered_image[0])
    corral.run("tag", busybox_image, "mine:1")
    assert corral.run("rmi", "mine:1").stdout == "Untagged: mine:1\n"
    before = corral.blobs()
    removed = corral.run("rmi", layered_image[0]).stdout.splitlines()
    assert removed[0] == f"Untagged: {layered_image[0]}"
    assert removed[-1].startswith("Deleted: sha256:")
    left = corral.blobs()
    assert left < before and len(left) == 3   # busybox: manifest, config, layer
    assert len(corral.snapshot_names()) == 1
    failed = corral.run("rmi", "nothing:here", check=False)
    assert failed.returncode == 1
    assert "image 'nothing:here': no such image" in failed.stderr


def test_rmi_of_a_mounted_image_is_refused(corral, busybox_image):
    corral.run("pull", "-q", busybox_image)
    corral.run("image", "mount", busybox_image)
    refused = corral.run("rmi", busybox_image, check=False)
    assert refused.returncode == 1
    assert "is mounted" in refused.stderr
    corral.run("image", "unmount", busybox_image)
    corral.run("rmi", busybox_image)
    assert corral.run("images", "-q").stdout == ""


def test_prune_removes_dangling_images(corral, busybox_image, layered_image):
    corral.run("pull", "-q", busybox_image)
    corral.run("pull", "-q", layered_image[0])
    corral.run("tag", layered_image[0], "keep:1")
    corral.run("rmi", layered_image[0])
    corral.run("rmi", "keep:1")
    assert len(corral.run("images", "-q").stdout.split()) == 1
    corral.run("tag", busybox_image, "dangling:soon")
    pruned = corral.run("image", "prune", "-f", "-a").stdout
    assert "deleted: sha256:" in pruned and "Total reclaimed space" in pruned
    assert corral.run("images", "-q").stdout == ""
    assert corral.blobs() == set()
    assert corral.snapshot_names() == set()


def test_two_pulls_at_once_share_one_store(corral, layered_image, busybox_image):
    args = [CORRAL, "--root", str(corral.root), "pull", "-q"]
    pulls = [subprocess.Popen([*args, image], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for image in (layered_image[0], layered_image[0], busybox_image)]
    for pull in pulls:
        _, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err
    assert len(corral.run("images", "-q").stdout.split()) == 2
    assert len(corral.snapshot_names()) == 4     # three layers + busybox's one
    assert list((corral.root / "content/ingest").iterdir()) == []


def test_progress_on_a_terminal(corral, layered_image):
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(CORRAL, [CORRAL, "--root", str(corral.root), "pull", layered_image[0]])
    shown = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, shown
    text = shown.decode(errors="replace")
    # rich draws a bar per layer with a byte count.
    assert "Pull complete" in text and "━" in text and "kB" in text
    assert f"Status: Downloaded newer image for {layered_image[0]}" in text


def test_push_then_skopeo_and_umoci_read_it(corral, busybox_image, registry, tmp_path):
    corral.run("pull", "-q", busybox_image)
    target = registry.ref(f"pushed/{corral.root.parent.name[-8:].lower()}:2")
    corral.run("tag", busybox_image, target)
    pushed = corral.run("push", target).stdout
    # Same registry, another repository: the layer is mounted, not uploaded.
    assert "Mounted from test/busybox" in pushed or "Layer already exists" in pushed
    digest = pushed.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    seen = images.inspect(target)
    assert seen["Digest"] == digest
    [document] = json.loads(corral.run("inspect", target).stdout)
    assert f"{target.rsplit(':', 1)[0]}@{digest}" in document["RepoDigests"]
    assert "Layer already exists" in corral.run("push", target).stdout
    # umoci unpacks what skopeo copies of our push to the same tree we run.
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{target}", f"oci:{layout}:x"], check=True, timeout=60)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:x", str(tmp_path / "b")],
                   check=True, capture_output=True, timeout=60)
    mounted = Path(corral.run("image", "mount", target).stdout.strip())
    assert sorted(os.listdir(tmp_path / "b/rootfs/bin")) == sorted(os.listdir(mounted / "bin"))


def test_push_of_an_image_not_in_the_store(corral, registry):
    result = corral.run("push", registry.ref("nothing/here:1"), check=False)
    assert result.returncode == 1
    assert "no such image" in result.stderr


# Regressions from a fresh user's report ------------------------------------------------

def test_bundling_twice_into_one_dir_keeps_the_first(corral, busybox_image, tmp_path):
    corral.run("pull", "-q", busybox_image)
    bundle = tmp_path / "twice"
    corral.run("image", "bundle", busybox_image, str(bundle))
    (bundle / "rootfs/precious").write_text("data\n")
    again = corral.run("image", "bundle", busybox_image, str(bundle), check=False)
    assert again.returncode == 1 and "already made" in again.stderr
    assert (bundle / "rootfs/precious").read_text() == "data\n"
    assert is_mount_point(bundle / "rootfs")
    corral.run("image", "bundle", "--rm", str(bundle))


def test_bundle_rm_leaves_what_corral_did_not_make(corral, tmp_path):
    other = tmp_path / "other"
    (other / "rootfs").mkdir(parents=True)
    (other / "config.json").write_text("{}")
    refused = corral.run("image", "bundle", "--rm", str(other), check=False)
    assert refused.returncode == 1 and "not made by 'corral image bundle'" in refused.stderr
    assert (other / "config.json").exists() and (other / "rootfs").is_dir()


def test_an_image_in_use_by_a_bundle_is_kept(corral, busybox_image, tmp_path):
    corral.run("pull", "-q", busybox_image)
    bundle = tmp_path / "in-use"
    corral.run("image", "bundle", busybox_image, str(bundle))
    refused = corral.run("rmi", busybox_image, check=False)
    assert refused.returncode == 1 and "being used" in refused.stderr
    corral.run("image", "prune", "-a", "-f")
    assert corral.run("images", "-q").stdout.strip()
    corral.run("image", "bundle", "--rm", str(bundle))
    pruned = corral.run("image", "prune", "-a", "-f").stdout
    assert "Total reclaimed space: 0B" not in pruned
    assert corral.blobs() == set() and corral.snapshot_names() == set()


def test_prune_reclaims_what_no_image_references(corral, busybox_image, registry):
    corral.run("pull", "-q", busybox_image)
    # A blob left by an interrupted pull: in the store, named by no image.
    from corral.image.store import Store

    with Store(corral.root) as store:
        store.delete(store.resolve(busybox_image))
    assert corral.blobs()
    pruned = corral.run("image", "prune", "-f").stdout
    assert "Total reclaimed space: 0B" not in pruned
    assert corral.blobs() == set() and corral.snapshot_names() == set()


def test_images_and_history_formats(corral, busybox_image):
    corral.run("pull", "-q", busybox_image)
    repository, tag = busybox_image.rsplit(":", 1)
    shown = corral.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    assert shown == f"{busybox_image}\n"
    [line] = corral.run("images", "--format", "json").stdout.splitlines()
    assert json.loads(line)["Tag"] == tag
    table = corral.run("images", "--format", "table {{.ID}}\\t{{.Tag}}").stdout.splitlines()
    assert table[0].split() == ["IMAGE", "ID", "TAG"] and table[1].split()[1] == tag
    assert corral.run("history", "--format", "{{.CreatedBy}}", busybox_image).stdout.strip()
    bad = corral.run("images", "--format", "{{.ID", check=False)
    assert bad.returncode != 0 and "unclosed action" in bad.stderr


def test_push_to_a_digest_and_save_to_a_directory_are_refused(corral, busybox_image,
                                                              registry, tmp_path):
    corral.run("pull", "-q", busybox_image)
    digest = "sha256:" + "a" * 64
    refused = corral.run("push", busybox_image, registry.ref(f"x/y@{digest}"), check=False)
    assert refused.returncode == 1 and "cannot push to a digest" in refused.stderr
    saved = corral.run("save", "-o", str(tmp_path), busybox_image, check=False)
    assert saved.returncode == 1 and "is a directory" in saved.stderr
    assert not list(tmp_path.glob(".*partial"))


def test_ctrl_c_stops_a_pull_at_once(corral, registry, tmp_path):
    import signal
    import time

    layout = images.layered_layout(tmp_path / "layout", layers=2, total_mb=60)
    reference = registry.ref("test/interrupted:1")
    images.push(layout.path, layout.tag, reference)
    throttled = subprocess.Popen(
        [CORRAL, "--root", str(corral.root), "pull", reference],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # A new session, so SIGINT is not ignored as for a background job.
        start_new_session=True)
    deadline = time.monotonic() + 30
    while not list((corral.root / "content/ingest").glob("*")) and throttled.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    throttled.send_signal(signal.SIGINT)
    started = time.monotonic()
    code = throttled.wait(timeout=30)
    if code == 0:
        pytest.skip("the pull finished before the interrupt reached it")
    assert code == 130 and time.monotonic() - started < 3
    assert corral.run("images", "-q").stdout == ""
