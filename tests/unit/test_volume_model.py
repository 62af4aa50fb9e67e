"""Mount points parsed from -v, --mount, Volumes and VolumesFrom
(manager/volumes_model.py), and the --mount flag of the CLI."""

from __future__ import annotations

import pytest

from corral.cli.volume import mount_flag
from corral.manager import volumes_model as model
from corral.manager.errors import InvalidArgument


def test_bind_items():
    point = model.parse_bind("/host/dir/:/ctr:ro,Z,rslave")
    assert (point.type, point.source, point.destination) == ("bind", "/host/dir", "/ctr")
    assert (point.rw, point.mode, point.propagation) == (False, "ro,Z,rslave", "rslave")
    assert point.create_source
    assert model.spec_mount(point) == {"destination": "/ctr", "type": "bind",
                                       "source": "/host/dir",
                                       "options": ["rbind", "rslave", "ro"]}
    assert model.parse_bind("/h:/c").propagation == "rprivate"


def test_volume_items():
    named = model.parse_bind("data:/var/lib/x/:nocopy")
    assert (named.type, named.name, named.destination) == ("volume", "data", "/var/lib/x")
    assert named.copy is False and named.mode == "nocopy"
    assert model.parse_bind("data:/x").mode == "z"
    anonymous = model.parse_bind("/only")
    assert anonymous.anonymous and anonymous.name == ""


@pytest.mark.parametrize("text, message", [
    ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
    ("/a::ro", "invalid volume specification: '/a::ro'"),
    ("/a:/b:ro,rw", "invalid mode: ro,rw"),
    ("/a:/b:fast", "invalid mode: fast"),
    ("/a:/b:nocopy", "field VolumeOptions must not be specified"),
    ("/a:/", "destination can't be '/'"),
    ("x:/b", "volume name is too short"),
    ("a b:/b", "includes invalid characters"),
])
def test_bad_bind_items(text, message):
    with pytest.raises(InvalidArgument, match=message):
        model.parse_bind(text)


def test_mounts(tmp_path):
    bind = model.parse_mount({"Type": "bind", "Source": str(tmp_path), "Target": "/b",
                              "ReadOnly": True, "BindOptions": {"Propagation": "shared"}})
    assert (bind.rw, bind.propagation, bind.create_source) == (False, "shared", False)
    volume = model.parse_mount({"Type": "volume", "Target": "/v",
                                "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}}})
    assert volume.anonymous and not volume.copy and volume.labels == {"a": "b"}
    tmpfs = model.parse_mount({"Type": "tmpfs", "Target": "/t",
                               "TmpfsOptions": {"SizeBytes": 4096, "Mode": 0o700}})
    assert model.spec_mount(tmpfs)["options"] == ["noexec", "nosuid", "nodev",
                                                  "size=4096", "mode=700", "rw"]
    assert model.inspect_mount(tmpfs)["Type"] == "tmpfs"


@pytest.mark.parametrize("mount, message", [
    ({"Type": "bind", "Source": "/no/such/dir", "Target": "/x"},
     'invalid mount config for type "bind": bind source path does not exist: '
     '/no/such/dir'),
    ({"Type": "bind", "Target": "/x"}, "field Source must not be empty"),
    ({"Type": "bind", "Source": "/", "Target": "x"}, "invalid mount path: 'x'"),
    ({"Type": "volume", "Target": "/x", "BindOptions": {"Propagation": "shared"}},
     'type "volume": field BindOptions must not be specified'),
    ({"Type": "volume", "Source": "/tmp", "Target": "/x"}, "invalid characters"),
    ({"Type": "tmpfs"}, "field Target must not be empty"),
    ({"Type": "nfs", "Target": "/x"}, 'type "nfs": mount type unknown'),
    ({"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig":
                                                          {"Name": "nfs"}}},
     'plugin "nfs" not found'),
])
def test_bad_mounts(mount, message):
    with pytest.raises(InvalidArgument, match=message):
        model.parse_mount(mount)


def test_requested_fills_gaps_and_refuses_duplicates():
    host = {"Binds": ["/h:/a", "named:/b"], "Mounts": None, "Tmpfs": None}
    inherited = [model.MountPoint("volume", "/b", name="other"),
                 model.MountPoint("volume", "/c", name="from")]
    points = model.requested(host, {"/d": {}}, {"/a": {}, "/e/": {}}, inherited)
    assert [(p.destination, p.name) for p in points] == [
        ("/a", ""), ("/b", "named"), ("/c", "from"), ("/d", ""), ("/e", "")]
    with pytest.raises(InvalidArgument, match="^Duplicate mount point: /a$"):
        model.requested({"Binds": ["/h:/a", "v1:/a/"]}, None, None)
    with pytest.raises(InvalidArgument, match="^Duplicate mount point: /t$"):
        model.requested({"Binds": ["v1:/t"], "Tmpfs": {"/t": ""}}, None, None)


def test_volumes_from_modes():
    assert model.parse_volumes_from("c1") == ("c1", None)
    assert model.parse_volumes_from("c1:ro") == ("c1", False)
    with pytest.raises(InvalidArgument, match="invalid mode: z"):
        model.parse_volumes_from("c1:z")
    source = [model.MountPoint("volume", "/v", name="n", mode="z"),
              model.MountPoint("tmpfs", "/t")]
    copied = model.inherited(source, False)
    assert [(p.destination, p.rw, p.mode) for p in copied] == [("/v", False, "")]
    assert source[0].rw is True


def test_by_depth():
    mounts = [{"destination": "/a/b/c"}, {"destination": "/a"}, {"destination": "/a/b"}]
    assert [m["destination"] for m in model.by_depth(mounts)] == ["/a", "/a/b", "/a/b/c"]


def test_mount_flag():
    assert mount_flag("type=bind,src=/h,dst=/c,readonly,bind-propagation=rslave") == {
        "Type": "bind", "Source": "/h", "Target": "/c", "ReadOnly": True,
        "BindOptions": {"Propagation": "rslave"}}
    assert mount_flag("target=/v,volume-nocopy,volume-label=a=b") == {
        "Type": "volume", "Target": "/v",
        "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}}}
    assert mount_flag("type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770") == {
        "Type": "tmpfs", "Target": "/t",
        "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1770}}
    with pytest.raises(ValueError, match="unexpected key 'colour'"):
        mount_flag("type=bind,colour=red")
