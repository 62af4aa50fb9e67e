"""The resource writers, pointed at a directory of fake cgroup files."""

import pytest

from corral.runtime.cgroups import Cgroup, device_rule, mounts
from corral.runtime.errors import SetupError

V1_FILES = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
            "memory.soft_limit_in_bytes", "memory.swappiness", "cpu.shares",
            "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpuset.cpus", "cpuset.mems",
            "pids.max", "blkio.weight", "devices.allow", "devices.deny"]


@pytest.fixture
def v1(tmp_path):
    paths = {}
    for controller in ("memory", "cpu", "cpuset", "pids", "blkio", "devices"):
        directory = tmp_path / controller
        directory.mkdir()
        paths[controller] = str(directory)
    for name in V1_FILES:
        (tmp_path / name.split(".")[0] / name).write_text("")
    return Cgroup(paths), tmp_path


def read(tmp_path, name):
    return (tmp_path / name.split(".")[0] / name).read_text()


def test_v1_resources(v1):
    cgroup, root = v1
    cgroup.apply({
        "memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 300},
    })
    assert read(root, "memory.limit_in_bytes") == str(64 << 20)
    assert read(root, "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert read(root, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(root, "cpu.shares") == "512"
    assert read(root, "cpu.cfs_quota_us") == "50000"
    assert read(root, "cpu.cfs_period_us") == "100000"
    assert read(root, "cpuset.cpus") == "0"
    assert read(root, "pids.max") == "100"
    assert read(root, "blkio.weight") == "300"


def test_v1_pids_unlimited(v1):
    cgroup, root = v1
    cgroup.apply({"pids": {"limit": -1}})
    assert read(root, "pids.max") == "max"


def test_v2_resources(tmp_path):
    for name in ("memory.max", "memory.swap.max", "memory.low", "cpu.weight", "cpu.max",
                 "pids.max", "io.weight"):
        (tmp_path / name).write_text("")
    Cgroup({"": str(tmp_path)}).apply({
        "memory": {"limit": 64 << 20, "swap": 96 << 20},
        "cpu": {"shares": 1024, "quota": 20000, "period": 100000},
        "pids": {"limit": 0},
        "unified": {"io.weight": "default 200"},
    }, updating=True)
    assert (tmp_path / "memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "memory.swap.max").read_text() == str(32 << 20)
    assert (tmp_path / "cpu.weight").read_text() == "39"
    assert (tmp_path / "cpu.max").read_text() == "20000 100000"
    assert (tmp_path / "pids.max").read_text() == "max"
    assert (tmp_path / "io.weight").read_text() == "default 200"


def test_v2_unified_key_must_be_a_file_name(tmp_path):
    with pytest.raises(SetupError, match="not a cgroup file"):
        Cgroup({"": str(tmp_path)}).apply({"unified": {"../escape": "1"}}, updating=True)


def test_write_error_names_the_file(tmp_path):
    with pytest.raises(SetupError, match="pids.max"):
        Cgroup({"pids": str(tmp_path / "missing")}).apply({"pids": {"limit": 5}})


@pytest.mark.parametrize(("rule", "text"), [
    ({"allow": False, "access": "rwm"}, "a"),
    ({"type": "c", "major": 1, "minor": 3, "access": "rwm"}, "c 1:3 rwm"),
    ({"type": "b", "major": -1, "access": "r"}, "b *:* r"),
    ({"type": "c", "major": 136}, "c 136:* rwm"),
])
def test_device_rules(rule, text):
    assert device_rule(rule) == text


def test_plan_paths(tmp_path):
    cgroup = Cgroup.plan("/a/b", "id", {"memory": "/m", "": "/u"})
    assert cgroup.paths == {"memory": "/m/a/b", "": "/u/a/b"}
    default = Cgroup.plan(None, "c1", {"pids": "/p"})
    assert default.paths == {"pids": "/p/corral/c1"}
    with pytest.raises(SetupError, match="systemd"):
        Cgroup.plan("system.slice:corral:c1", "c1", {"pids": "/p"})


def test_this_machines_mounts_are_found():
    found = mounts()
    assert found, "no cgroup hierarchy mounted"
    assert all(path.startswith("/") for path in found.values())


def test_blkio_throttles_v1(tmp_path):
    (tmp_path / "blkio").mkdir()
    for name in ("blkio.weight", "blkio.throttle.read_bps_device",
                 "blkio.throttle.write_iops_device", "blkio.weight_device"):
        (tmp_path / "blkio" / name).write_text("")
    Cgroup({"blkio": str(tmp_path / "blkio")}).apply({"blockIO": {
        "weight": 500,
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
    }})
    assert (tmp_path / "blkio" / "blkio.weight").read_text() == "500"
    assert (tmp_path / "blkio" / "blkio.throttle.read_bps_device").read_text() == "8:0 1048576"
    assert (tmp_path / "blkio" / "blkio.throttle.write_iops_device").read_text() == "8:0 100"


def test_io_max_v2(tmp_path):
    for name in ("io.weight", "io.max"):
        (tmp_path / name).write_text("")
    Cgroup({"": str(tmp_path)}).apply({"blockIO": {
        "weight": 1000,
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 10}],
        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 20}],
    }}, updating=True)
    assert (tmp_path / "io.weight").read_text() == "default 10000"
    assert (tmp_path / "io.max").read_text() == "8:0 rbps=10 wbps=20"


def test_hugetlb_on_a_hybrid_host_goes_to_cgroup2(tmp_path):
    (tmp_path / "hugetlb.2MB.max").write_text("")
    (tmp_path / "memory").mkdir()
    Cgroup({"memory": str(tmp_path / "memory"), "": str(tmp_path)}).apply(
        {"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]})
    assert (tmp_path / "hugetlb.2MB.max").read_text() == "4194304"
