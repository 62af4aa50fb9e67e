"""linux.resources on this machine's cgroup v1: limits, OOM, update, events, pause."""

from __future__ import annotations

import json
import subprocess
import time

import pytest


def cgroup_file(controller: str, container_id: str, name: str) -> str:
    with open(f"/sys/fs/cgroup/{controller}/corral/{container_id}/{name}") as f:
        return f.read().strip()


def test_limits_are_written(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    bundle.spec["linux"]["cgroupsPath"] = f"/corral/{container_id}"
    bundle.spec["linux"]["resources"].update({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20},
        "cpu": {"shares": 256, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 42},
    })
    bundle.write()
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    assert cgroup_file("memory", container_id, "memory.limit_in_bytes") == str(64 << 20)
    assert cgroup_file("memory", container_id, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert cgroup_file("cpu", container_id, "cpu.shares") == "256"
    assert cgroup_file("cpu", container_id, "cpu.cfs_quota_us") == "50000"
    assert cgroup_file("cpuset", container_id, "cpuset.cpus") == "0"
    assert cgroup_file("pids", container_id, "pids.max") == "42"


def test_pids_limit_holds(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done;"
                                         " wait; echo done"])
    bundle.spec["linux"]["resources"]["pids"] = {"limit": 4}
    bundle.write()
    result = any_runtime.run("run", "-b", str(bundle.path), container_id)
    assert "can't fork" in result.stderr or "Resource temporarily unavailable" in result.stderr


def test_over_the_memory_limit_is_oom_killed_and_reported(corral, bundle_factory,
                                                          container_id):
    bundle = bundle_factory(["sh", "-c", "sleep 0.5; head -c 200m /dev/zero | tail > /dev/null"])
    bundle.spec["linux"]["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}
    bundle.write()
    corral.run("create", "-b", str(bundle.path), container_id, check=True)
    events = subprocess.Popen(corral.cmd("events", "--interval", "10s", container_id),
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        corral.run("start", container_id, check=True)
        out, _ = events.communicate(timeout=20)
    finally:
        events.kill()
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    assert "oom" in kinds, out
    deadline = time.monotonic() + 10
    while corral.state(container_id)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_oom_exit_status_is_137(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "head -c 200m /dev/zero | tail > /dev/null"])
    bundle.spec["linux"]["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}
    bundle.write()
    result = any_runtime.run("run", "-b", str(bundle.path), container_id)
    assert result.returncode == 137 or "Killed" in result.stderr, result


def test_events_stats(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "sleep 30"])
    bundle.spec["linux"]["resources"]["memory"] = {"limit": 64 << 20}
    bundle.spec["linux"]["resources"]["pids"] = {"limit": 50}
    bundle.write()
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    event = json.loads(any_runtime.run("events", "--stats", container_id, check=True).stdout)
    assert event["type"] == "stats" and event["id"] == container_id
    data = event["data"]
    assert data["pids"]["current"] == 2 or data["pids"]["current"] == 1
    assert data["pids"]["limit"] == 50
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert data["memory"]["usage"]["usage"] > 0
    assert data["cpu"]["usage"]["total"] > 0


def test_update_from_flags_and_file(any_runtime, bundle_factory, container_id, tmp_path):
    bundle = bundle_factory(["sleep", "30"])
    bundle.spec["linux"]["cgroupsPath"] = f"/corral/{container_id}"
    bundle.write()
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    any_runtime.run("update", "--pids-limit", "77", "--memory", "100m", container_id,
                    check=True)
    assert cgroup_file("pids", container_id, "pids.max") == "77"
    assert cgroup_file("memory", container_id, "memory.limit_in_bytes") == str(100 << 20)
    resources = tmp_path / "r.json"
    resources.write_text(json.dumps({"pids": {"limit": 33}, "cpu": {"shares": 300}}))
    any_runtime.run("update", "-r", str(resources), container_id, check=True)
    assert cgroup_file("pids", container_id, "pids.max") == "33"
    assert cgroup_file("cpu", container_id, "cpu.shares") == "300"
    any_runtime.run("update", "-r", "-", container_id, check=True,
                    input=json.dumps({"pids": {"limit": 44}}))
    assert cgroup_file("pids", container_id, "pids.max") == "44"


def test_pause_and_resume(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "i=0; while true; do i=$((i+1));"
                                         " echo $i > /tmp/tick; sleep 0.05; done"])
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    time.sleep(0.3)
    any_runtime.run("pause", container_id, check=True)
    assert any_runtime.state(container_id)["status"] == "paused"
    tick = (bundle.rootfs / "tmp" / "tick").read_text()
    time.sleep(0.4)
    assert (bundle.rootfs / "tmp" / "tick").read_text() == tick
    any_runtime.run("resume", container_id, check=True)
    assert any_runtime.state(container_id)["status"] == "running"
    time.sleep(0.4)
    assert (bundle.rootfs / "tmp" / "tick").read_text() != tick
    any_runtime.run("pause", container_id, check=True)
    any_runtime.run("delete", "--force", container_id, check=True)
    assert container_id not in any_runtime.ids()


def test_a_cpuset_the_host_lacks_is_refused(corral, bundle_factory, container_id):
    bundle = bundle_factory(["true"])
    bundle.spec["linux"]["resources"]["cpu"] = {"cpus": "63"}
    bundle.write()
    result = corral.run("create", "-b", str(bundle.path), container_id)
    assert result.returncode != 0
    assert "cpuset.cpus" in result.stderr
    assert not (corral.root / container_id).exists()
    import os

    assert not os.path.exists(f"/sys/fs/cgroup/cpuset/corral/{container_id}")


def test_update_below_usage_is_refused(corral, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "head -c 20m /dev/zero > /dev/shm/fill; sleep 30"])
    bundle.spec["linux"]["resources"]["memory"] = {"limit": 100 << 20}
    bundle.write()
    corral.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    time.sleep(1)
    result = corral.run("update", "--memory", "1m", container_id)
    assert result.returncode != 0
    assert "memory.limit_in_bytes" in result.stderr
    assert cgroup_file("memory", container_id, "memory.limit_in_bytes") == str(100 << 20)


@pytest.mark.parametrize("bad", ["--memory=lots", "--pids-limit=x"])
def test_update_bad_flag(corral, bundle_factory, container_id, bad):
    bundle = bundle_factory(["sleep", "30"])
    corral.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    result = corral.run("update", bad, container_id)
    assert result.returncode != 0
    assert "not a number" in result.stderr


def test_hugetlb_limit_on_the_hybrid_cgroup2(corral, bundle_factory, container_id):
    import os

    bundle = bundle_factory(["sleep", "30"])
    bundle.spec["linux"]["cgroupsPath"] = f"/corral/{container_id}"
    bundle.spec["linux"]["resources"]["hugepageLimits"] = [
        {"pageSize": "2MB", "limit": 8 << 20}]
    bundle.write()
    corral.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    unified = "/sys/fs/cgroup/unified"
    if not os.path.isdir(unified):
        pytest.skip("this host has no hybrid cgroup2 with hugetlb")
    with open(f"{unified}/corral/{container_id}/hugetlb.2MB.max") as f:
        assert f.read().strip() == str(8 << 20)
