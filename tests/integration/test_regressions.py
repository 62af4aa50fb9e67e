"""Bugs a fresh user found by trying to break corral-runtime, one test each."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest


def run(runtime, bundle, container_id, *flags):
    bundle.write()
    return runtime.run("run", *flags, "-b", str(bundle.path), container_id)


def test_no_capabilities_object_means_no_capabilities(any_runtime, bundle_factory,
                                                      container_id):
    bundle = bundle_factory(["grep", "CapEff", "/proc/self/status"])
    del bundle.spec["process"]["capabilities"]
    result = run(any_runtime, bundle, container_id)
    assert int(result.stdout.split()[1], 16) == 0


def test_no_device_rules_means_only_the_default_devices(any_runtime, bundle_factory,
                                                        container_id):
    bundle = bundle_factory(["sh", "-c", "mknod /km c 1 11; [ -c /km ] && echo made;"
                                         " echo x > /km && echo opened;"
                                         " echo y > /dev/null && echo null-ok"])
    del bundle.spec["linux"]["resources"]
    bundle.spec["process"]["capabilities"]["bounding"].append("CAP_MKNOD")
    result = run(any_runtime, bundle, container_id)
    assert "opened" not in result.stdout
    assert "null-ok" in result.stdout


def test_container_processes_get_default_sigpipe(any_runtime, bundle_factory,
                                                 container_id):
    bundle = bundle_factory(["grep", "SigIgn", "/proc/self/status"])
    assert int(run(any_runtime, bundle, container_id).stdout.split()[1], 16) == 0


@pytest.fixture
def busy_cgroup():
    """A cgroup with a host process in it, in every v1 hierarchy."""
    name = f"decoy-{uuid.uuid4().hex[:8]}"
    victim = subprocess.Popen(["sleep", "60"])
    made = []
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        path = f"/sys/fs/cgroup/{hierarchy}/{name}"
        if not os.path.exists(f"/sys/fs/cgroup/{hierarchy}/cgroup.procs"):
            continue
        os.mkdir(path)
        made.append(path)
        if hierarchy == "cpuset":
            for file in ("cpuset.cpus", "cpuset.mems"):
                with open(f"/sys/fs/cgroup/cpuset/{file}") as src, open(f"{path}/{file}",
                                                                        "w") as dst:
                    dst.write(src.read())
        with open(f"{path}/cgroup.procs", "w") as f:
            f.write(str(victim.pid))
    yield name, victim
    victim.kill()
    victim.wait()
    time.sleep(0.05)
    for path in made:
        os.rmdir(path)


def test_a_cgroup_in_use_is_refused_and_its_processes_live(corral, bundle_factory,
                                                           container_id, busy_cgroup):
    name, victim = busy_cgroup
    bundle = bundle_factory(["true"])
    bundle.spec["linux"]["cgroupsPath"] = f"/{name}"
    result = run(corral, bundle, container_id)
    assert result.returncode != 0
    assert "in use" in result.stderr
    assert victim.poll() is None, "the host process was killed"
    assert os.path.isdir(f"/sys/fs/cgroup/pids/{name}")


@pytest.mark.parametrize("path", ["/", ".", "../../..", "/a/.."])
def test_the_root_cgroup_is_refused(corral, bundle_factory, container_id, path):
    bundle = bundle_factory(["true"])
    bundle.spec["linux"]["cgroupsPath"] = path
    result = run(corral, bundle, container_id)
    assert result.returncode != 0
    assert "root cgroup" in result.stderr


def test_bind_mount_inside_proc_is_refused(corral, bundle_factory, container_id):
    bundle = bundle_factory(["true"])
    bundle.spec["mounts"].append({"destination": "/proc/sys", "type": "bind",
                                  "source": "/proc/sys", "options": ["rbind"]})
    result = run(corral, bundle, container_id)
    assert result.returncode != 0
    assert "inside /proc" in result.stderr


def test_forking_container_without_pid_namespace_is_deleted_whole(corral, bundle_factory,
                                                                  container_id):
    bundle = bundle_factory(["sh", "-c", "for i in 1 2 3; do (while :; do (sleep 300 &);"
                                         " sleep 0.01; done) & done; wait"])
    bundle.spec["linux"]["namespaces"] = [
        ns for ns in bundle.spec["linux"]["namespaces"] if ns["type"] != "pid"]
    bundle.spec["linux"]["resources"]["pids"] = {"limit": 3000}
    run(corral, bundle, container_id, "-d")
    time.sleep(0.5)
    result = corral.run("delete", "--force", container_id, timeout=30)
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(f"/sys/fs/cgroup/pids/corral/{container_id}")
    assert container_id not in corral.ids()


def test_exec_pid_file_failure_kills_the_process(corral, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    run(corral, bundle, container_id, "-d")
    result = corral.run("exec", "-d", "--pid-file", "/no/such/dir/pid", container_id,
                        "sleep", "77")
    assert result.returncode != 0
    time.sleep(0.2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 77" not in ps


def test_corrupt_state_is_an_error_and_force_delete_removes_it(corral, bundle_factory,
                                                               container_id):
    bundle = bundle_factory(["sleep", "30"])
    run(corral, bundle, container_id, "-d")
    pid = corral.state(container_id)["pid"]
    (corral.root / container_id / "state.json").write_text("garbage")
    result = corral.run("delete", container_id)
    assert result.returncode != 0 and "unreadable" in result.stderr
    assert (corral.root / container_id).exists()
    os.kill(pid, 9)
    assert corral.run("delete", "--force", container_id).returncode == 0
    assert not (corral.root / container_id).exists()


def test_list_skips_stray_files(corral, bundle_factory, container_id):
    corral.root.mkdir(parents=True, exist_ok=True)
    (corral.root / "stray").write_text("x")
    result = corral.run("list", check=True)
    assert result.stdout.startswith("ID")


def test_term_ends_a_created_container(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    bundle.write()
    any_runtime.run("create", "-b", str(bundle.path), container_id, check=True)
    any_runtime.run("kill", container_id, "TERM", check=True)
    deadline = time.monotonic() + 5
    while any_runtime.state(container_id)["status"] != "stopped":
        assert time.monotonic() < deadline, "TERM did not end the created container"
        time.sleep(0.05)


def test_unwritable_log_is_an_error(corral, tmp_path):
    result = corral.run("--log", str(tmp_path / "no" / "dir" / "log"), "list")
    assert result.returncode != 0
    assert "--log" in result.stderr


def test_unified_resources_on_a_v1_host_are_refused(corral, bundle_factory, container_id):
    bundle = bundle_factory(["true"])
    bundle.spec["linux"]["resources"]["unified"] = {"memory.high": "1000000"}
    result = run(corral, bundle, container_id)
    assert result.returncode != 0
    assert "linux.resources.unified" in result.stderr


@pytest.mark.parametrize("flag", ["--apparmor=x", "--process-label=x"])
def test_exec_confinement_flags_are_refused(corral, bundle_factory, container_id, flag):
    bundle = bundle_factory(["sleep", "30"])
    run(corral, bundle, container_id, "-d")
    result = corral.run("exec", flag, container_id, "true")
    assert result.returncode != 0
    assert "not supported" in result.stderr


# -- the pid namespace: made by the runtime itself, or by stage 1 ------------------


def test_hooks_start_in_the_host_pid_namespace(any_runtime, bundle_factory, container_id,
                                               tmp_path):
    # corral-runtime makes a container's pid namespace for its own children
    # and then returns to its own: hooks it starts later must not land in it.
    log = tmp_path / "hooks.log"
    bundle = bundle_factory(["readlink", "/proc/self/ns/pid"])
    record = {"path": "/bin/sh", "args": ["sh", "-c", f"readlink /proc/self/ns/pid >> {log}"]}
    bundle.spec["hooks"] = {kind: [record] for kind in ("prestart", "createRuntime",
                                                         "poststart", "poststop")}
    result = run(any_runtime, bundle, container_id)
    assert result.returncode == 0, result.stderr
    host = os.readlink("/proc/self/ns/pid")
    assert log.read_text().split() == [host] * 4
    assert result.stdout.strip() != host


def test_a_container_joins_the_pid_namespace_of_another(any_runtime, bundle_factory,
                                                        container_id):
    first = bundle_factory(["sleep", "30"], name="first")
    run(any_runtime, first, container_id, "-d")
    pid = any_runtime.state(container_id)["pid"]
    second = bundle_factory(["ps", "-o", "pid,args"], name="second")
    for ns in second.spec["linux"]["namespaces"]:
        if ns["type"] == "pid":
            ns["path"] = f"/proc/{pid}/ns/pid"
    result = run(any_runtime, second, f"{container_id}-2")
    assert result.returncode == 0, result.stderr
    processes = [line.split(None, 1) for line in result.stdout.splitlines()[1:]]
    assert ["1", "sleep 30"] in processes
    assert any_runtime.state(container_id)["status"] == "running"
    assert os.readlink("/proc/self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")


def test_without_a_pid_namespace_init_has_its_host_pid(any_runtime, bundle_factory,
                                                       container_id):
    bundle = bundle_factory(["sh", "-c", "echo $$; readlink /proc/self/ns/pid"])
    bundle.spec["linux"]["namespaces"] = [
        ns for ns in bundle.spec["linux"]["namespaces"] if ns["type"] != "pid"]
    result = run(any_runtime, bundle, container_id)
    assert result.returncode == 0, result.stderr
    pid, namespace = result.stdout.split()
    assert int(pid) > 1
    assert namespace == os.readlink("/proc/self/ns/pid")


def test_a_time_namespace_takes_its_offsets(corral, bundle_factory, container_id):
    # A time namespace needs stage 1 (runc 1.1 has no time namespaces).
    bundle = bundle_factory(["cat", "/proc/uptime"])
    bundle.spec["linux"]["namespaces"].append({"type": "time"})
    bundle.spec["linux"]["timeOffsets"] = {"boottime": {"secs": 10_000_000}}
    result = run(corral, bundle, container_id)
    assert result.returncode == 0, result.stderr
    with open("/proc/uptime") as f:
        host = float(f.read().split()[0])
    assert float(result.stdout.split()[0]) - host > 9_999_000
