"""Volumes and mounts at the engine: named and anonymous volumes, first-use
copy of the image's content, binds (ro, propagation, a missing source),
tmpfs, --volumes-from, volume rm and prune, and a hostile image whose
volume path is a symlink to the host's /etc (manager/volumes.py)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from corral.manager import errors
from tests import images
from tests.integration.engines import make_engine, remove_all
from tests.integration.peers import unmount_under

IMAGE_PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"


def volume_image_tar() -> bytes:
    """The layer over busybox: content at /data, a seed at /anon (an image
    volume), and /hostile, a symlink to /etc."""
    layer = images.LayerBuilder()
    layer.directory("data", mode=0o750, uid=1000, gid=1000)
    layer.file("data/hello", b"from the image\n", mode=0o640, uid=1000, gid=1000)
    layer.directory("data/sub")
    layer.file("data/sub/deep", b"deep\n", mode=0o600)
    layer.symlink("data/link", "/etc/passwd")
    layer.directory("anon")
    layer.file("anon/seed", b"seed\n")
    layer.symlink("hostile", "/etc")
    return layer.tar()


def push_volume_image(registry, directory: Path) -> str:
    layout = images.build_layout(directory, [images.busybox_tar(), volume_image_tar()],
                                 tag="1", cmd=["sh"], volumes=["/anon"])
    reference = registry.ref(f"test/volumes-{uuid.uuid4().hex[:8]}:1")
    images.push(layout.path, layout.tag, reference)
    return reference


@pytest.fixture(scope="module")
def volume_image(registry, busybox_image, tmp_path_factory) -> str:
    return push_volume_image(registry, tmp_path_factory.mktemp("volimg") / "layout")


@pytest.fixture
def engine(tmp_path, volume_image, make_client):
    engine = make_engine(tmp_path, volume_image, make_client(), "v-")
    yield engine
    remove_all(engine)
    unmount_under(engine.run)  # the network layer's netns mount, if it made one
    shutil.rmtree(engine.run)


def body(engine, *cmd, **host) -> dict:
    document = {"Image": engine.image, "Cmd": list(cmd) or None}
    volumes = host.pop("Volumes", None)
    if volumes:
        document["Volumes"] = volumes
    # No network: these tests are about mounts, and need no bridge.
    document["HostConfig"] = {"NetworkMode": "none", **host}
    return document


def run(engine, *cmd, **host) -> tuple[int, str, str]:
    """Run to its end; exit code, output, container ID (kept)."""
    container_id = engine.create(body(engine, *cmd, **host))["Id"]
    engine.start(container_id)
    code = engine.wait(container_id)["StatusCode"]
    output = b"".join(line for _, line in engine.logs(container_id)).decode()
    return code, output, container_id


def mounts_of(engine, container_id: str) -> dict[str, dict]:
    return {m["Destination"]: m for m in engine.inspect(container_id)["Mounts"]}


# Named volumes ---------------------------------------------------------------------

def test_named_volume_outlives_its_container(engine):
    code, _, first = run(engine, "sh", "-c", "echo kept > /store/f",
                         Binds=["keep:/store"])
    assert code == 0
    mount = mounts_of(engine, first)["/store"]
    data = engine.root / "volumes" / "keep" / "_data"
    assert mount == {"Type": "volume", "Name": "keep", "Source": str(data),
                     "Destination": "/store", "Driver": "local", "Mode": "z",
                     "RW": True, "Propagation": ""}
    engine.remove(first, volumes=True)
    assert (data / "f").read_text() == "kept\n"

    code, output, _ = run(engine, "cat", "/store/f",
                          Mounts=[{"Type": "volume", "Source": "keep", "Target": "/store"}])
    assert (code, output) == (0, "kept\n")
    volume = engine.volume_inspect("keep")
    assert volume["Mountpoint"] == str(data) and volume["Driver"] == "local"
    assert volume["Scope"] == "local" and volume["Labels"] is None


def test_first_use_copies_the_image_content(engine):
    code, output, _ = run(engine, "sh", "-c", "cat /data/hello; ls /data",
                          Binds=["filled:/data"])
    assert code == 0
    assert output == "from the image\nhello\nlink\nsub\n"
    data = engine.root / "volumes" / "filled" / "_data"
    hello = data.joinpath("hello").stat()
    assert (hello.st_uid, hello.st_gid, stat.S_IMODE(hello.st_mode)) == (1000, 1000, 0o640)
    top = data.stat()
    assert (top.st_uid, stat.S_IMODE(top.st_mode)) == (1000, 0o750)
    assert os.readlink(data / "link") == "/etc/passwd"
    assert (data / "sub" / "deep").read_bytes() == b"deep\n"

    # A volume with content is not filled again; nocopy leaves one empty.
    (data / "hello").write_text("changed\n")
    code, output, _ = run(engine, "cat", "/data/hello", Binds=["filled:/data"])
    assert output == "changed\n"
    code, output, _ = run(engine, "ls", "-A", "/data", Binds=["empty:/data:nocopy"])
    assert (code, output) == (0, "")
    code, output, _ = run(engine, "ls", "-A", "/data",
                          Mounts=[{"Type": "volume", "Source": "empty2", "Target": "/data",
                                   "VolumeOptions": {"NoCopy": True}}])
    assert (code, output) == (0, "")


def test_anonymous_volumes_go_with_rm_v_only(engine):
    code, output, first = run(engine, "cat", "/anon/seed", Binds=["named:/named", "/extra"])
    assert (code, output) == (0, "seed\n")
    mounts = mounts_of(engine, first)
    anonymous = [mounts["/anon"]["Name"], mounts["/extra"]["Name"]]
    assert all(len(name) == 64 for name in anonymous)
    assert mounts["/anon"]["Mode"] == ""
    labels = engine.volume_inspect(anonymous[0])["Labels"]
    assert labels == {"com.docker.volume.anonymous": ""}

    _, _, second = run(engine, "true")
    engine.remove(second)  # without -v: its anonymous volume stays
    engine.remove(first, volumes=True)
    names = {v["Name"] for v in engine.volume_list()["Volumes"]}
    assert "named" in names and not names & set(anonymous)
    assert len(names) == 2  # named, and the second container's /anon

    pruned = engine.volume_prune()
    assert len(pruned["VolumesDeleted"]) == 1 and pruned["SpaceReclaimed"] > 0
    assert [v["Name"] for v in engine.volume_list()["Volumes"]] == ["named"]
    assert engine.volume_prune({"all": ["true"]})["VolumesDeleted"] == ["named"]
    assert list((engine.root / "volumes").iterdir()) == []


def test_volume_in_use_is_not_removed(engine):
    created = engine.create(body(engine, "true", Binds=["busy:/b"]))["Id"]
    with pytest.raises(errors.Conflict) as caught:
        engine.volume_remove("busy")
    assert str(caught.value) == f"remove busy: volume is in use - [{created}]"
    assert engine.volume_prune({"all": ["1"]})["VolumesDeleted"] is None
    listed = engine.volume_list({"dangling": ["true"]})["Volumes"]
    assert listed == []
    engine.remove(created)
    dangling = {v["Name"] for v in engine.volume_list({"dangling": ["1"]})["Volumes"]}
    assert "busy" in dangling and len(dangling) == 2  # and the image's /anon
    engine.volume_remove("busy")
    with pytest.raises(errors.NotFound, match="^get busy: no such volume$"):
        engine.volume_inspect("busy")
    engine.volume_remove("busy", force=True)


def test_volume_create_list_filters(engine):
    made = engine.volume_create({"Name": "lab", "Labels": {"tier": "db"}})
    assert made["Labels"] == {"tier": "db"} and made["Options"] is None
    assert engine.volume_create({"Name": "lab"})["CreatedAt"] == made["CreatedAt"]
    engine.volume_create({"Name": "other"})
    assert [v["Name"] for v in engine.volume_list({"label": ["tier=db"]})["Volumes"]] \
        == ["lab"]
    assert [v["Name"] for v in engine.volume_list({"name": ["oth"]})["Volumes"]] \
        == ["other"]
    assert len(engine.volume_list({"driver": ["local"]})["Volumes"]) == 2
    with pytest.raises(errors.InvalidArgument, match="invalid filter 'size'"):
        engine.volume_list({"size": ["1"]})
    with pytest.raises(errors.NotFound, match='plugin "nfs" not found'):
        engine.volume_create({"Name": "x1", "Driver": "nfs"})
    with pytest.raises(errors.InvalidArgument, match="too short"):
        engine.volume_create({"Name": "x"})


# Binds and tmpfs -------------------------------------------------------------------

def test_ro_bind_cannot_be_written(engine, tmp_path):
    source = tmp_path / "ro-src"
    source.mkdir()
    (source / "f").write_text("there\n")
    code, output, container_id = run(engine, "sh", "-c", "cat /ro/f; touch /ro/new",
                                     Binds=[f"{source}:/ro:ro"])
    assert code == 1
    assert output.startswith("there\n")
    assert "touch: /ro/new: Read-only file system" in output
    assert not (source / "new").exists()
    mount = mounts_of(engine, container_id)["/ro"]
    assert mount == {"Type": "bind", "Source": str(source), "Destination": "/ro",
                     "Mode": "ro", "RW": False, "Propagation": "rprivate"}


@pytest.fixture
def shared_dir(tmp_path):
    """A directory that is a shared mount of its own (the host's / here is
    private, and a slave of a private mount has no master)."""
    path = tmp_path / "shared"
    path.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "--make-shared", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


def test_slave_bind_of_a_private_source_is_refused(engine, tmp_path):
    with pytest.raises(errors.InvalidArgument, match="but it is not a shared or slave "
                                                     "mount$"):
        engine.create(body(engine, "true", Binds=[f"{tmp_path}:/b:rslave"]))
    assert engine.records.all() == []


def test_bind_propagation_and_tmpfs_mount(engine, shared_dir):
    tmp_path = shared_dir
    code, output, container_id = run(
        engine, "sh", "-c", "grep ' /b ' /proc/self/mountinfo; stat -c %a /t; "
                            "grep ' /t ' /proc/mounts",
        Mounts=[{"Type": "bind", "Source": str(tmp_path), "Target": "/b",
                 "ReadOnly": True, "BindOptions": {"Propagation": "rslave"}},
                {"Type": "tmpfs", "Target": "/t",
                 "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1770}}])
    assert code == 0, output
    lines = output.splitlines()
    assert " ro," in lines[0] and "master:" in lines[0]
    assert lines[1] == "1770"
    assert "size=1024k" in lines[2] and "noexec" in lines[2]
    mounts = mounts_of(engine, container_id)
    assert mounts["/b"]["Propagation"] == "rslave" and mounts["/b"]["RW"] is False
    assert mounts["/t"] == {"Type": "tmpfs", "Source": "", "Destination": "/t",
                            "Mode": "", "RW": True, "Propagation": ""}


def test_missing_bind_source(engine, tmp_path):
    made = tmp_path / "made" / "by-v"
    code, _, _ = run(engine, "true", Binds=[f"{made}:/x"])
    assert code == 0 and made.is_dir()

    missing = tmp_path / "missing"
    with pytest.raises(errors.InvalidArgument) as caught:
        engine.create(body(engine, "true", Mounts=[{"Type": "bind", "Source": str(missing),
                                                    "Target": "/x"}]))
    assert str(caught.value) == (f'invalid mount config for type "bind": bind source '
                                 f'path does not exist: {missing}')
    assert not missing.exists()


@pytest.mark.parametrize("host, message", [
    ({"Binds": ["bad!:/x"]}, '"bad!" includes invalid characters for a local volume'),
    ({"Binds": ["/tmp:/x:bogus"]}, "^invalid mode: bogus$"),
    ({"Binds": ["/tmp:rel"]}, "invalid mount path: 'rel' mount path must be absolute"),
    ({"Binds": ["/tmp:/"]}, "destination can't be '/'"),
    ({"Binds": ["v1:/x", "v2:/x"]}, "^Duplicate mount point: /x$"),
    ({"Binds": ["v1:/x"], "Tmpfs": {"/x": ""}}, "^Duplicate mount point: /x$"),
    ({"Mounts": [{"Type": "bogus", "Target": "/x"}]}, "mount type unknown"),
    ({"Mounts": [{"Type": "tmpfs", "Source": "a", "Target": "/x"}]},
     "field Source must not be specified"),
    ({"VolumesFrom": ["nosuch"]}, "^No such container: nosuch$"),
])
def test_bad_mounts_leave_nothing(engine, host, message):
    with pytest.raises(errors.Error, match=message):
        engine.create(body(engine, "true", **{"Binds": ["early:/early"], **host}))
    assert engine.records.all() == []
    assert engine.volume_list()["Volumes"] == []
    assert not list((engine.root / "containers").iterdir())
    assert not list((engine.root / "volumes").iterdir())


def test_volumes_from(engine, tmp_path):
    _, _, source = run(engine, "sh", "-c", "echo shared > /v/f",
                       Binds=["vf:/v", f"{tmp_path}:/b"])
    code, output, reader = run(engine, "sh", "-c", "cat /v/f; ls /anon; touch /v/g",
                               VolumesFrom=[f"{source}:ro"])
    assert code == 1 and output.startswith("shared\nseed\n")
    assert "Read-only file system" in output
    mounts = mounts_of(engine, reader)
    assert set(mounts) == {"/v", "/b", "/anon"}
    assert mounts["/v"]["RW"] is False and mounts["/v"]["Mode"] == ""
    with pytest.raises(errors.Conflict, match=reader):
        engine.volume_remove("vf")
    engine.remove(source, volumes=True)
    # The source's anonymous /anon is the reader's too: kept while it is used.
    assert mounts["/anon"]["Name"] in {v["Name"] for v in engine.volume_list()["Volumes"]}
    engine.remove(reader, volumes=True)
    assert [v["Name"] for v in engine.volume_list()["Volumes"]] == ["vf"]


# Hostile images ----------------------------------------------------------------------

def test_symlink_at_a_volume_path_stays_in_the_rootfs(engine, tmp_path):
    marker = f"corral-hostile-{uuid.uuid4().hex[:8]}"
    code, output, _ = run(engine, "sh", "-c",
                          f"echo pwned > /hostile/{marker}; cat /hostile/passwd",
                          Binds=["hv:/hostile"])
    assert code == 0, output
    assert not Path("/etc", marker).exists()
    data = engine.root / "volumes" / "hv" / "_data"
    # The image's /etc was copied, not the host's.
    assert (data / "passwd").read_bytes() == IMAGE_PASSWD
    assert not (data / "os-release").exists()
    assert (data / marker).read_text() == "pwned\n"

    bound = tmp_path / "bound"
    bound.mkdir()
    code, _, _ = run(engine, "sh", "-c", f"echo pwned > /hostile/{marker}",
                     Binds=[f"{bound}:/hostile"])
    assert code == 0 and (bound / marker).exists()
    assert not Path("/etc", marker).exists()
