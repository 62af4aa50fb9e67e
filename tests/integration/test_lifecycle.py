"""The lifecycle as runtime-spec runtime.md defines it, under corral and runc.

Every test with ``any_runtime`` runs twice, once per runtime, and asserts the
same observed result for both: that is the scenario table of the drop-in
proof.
"""

from __future__ import annotations

import json
import os
import time

import pytest


def wait_status(runtime, container_id, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    status = "missing"
    while time.monotonic() < deadline:
        result = runtime.run("state", container_id)
        if result.returncode == 0:
            status = json.loads(result.stdout)["status"]
            if status == want:
                return
        time.sleep(0.02)
    raise AssertionError(f"{container_id} did not become {want}, is {status}")


@pytest.mark.parametrize(
    ("script", "code"),
    # pid 1 ignores signals from inside its namespace: "kill -9 $$" is a no-op.
    [("exit 0", 0), ("exit 3", 3), ("kill -9 $$; exit 4", 4), ("sh -c 'kill -9 $$'; exit $?", 137)],
)
def test_run_returns_exit_status(any_runtime, bundle_factory, container_id, script, code):
    bundle = bundle_factory(["sh", "-c", script])
    result = any_runtime.run("run", "--bundle", str(bundle.path), container_id)
    assert result.returncode == code, result.stderr


def test_run_returns_128_plus_signal(any_runtime, bundle_factory, container_id):
    import subprocess

    bundle = bundle_factory(["sleep", "30"])
    run = subprocess.Popen(any_runtime.cmd("run", "-b", str(bundle.path), container_id))
    try:
        wait_status(any_runtime, container_id, "running")
        any_runtime.run("kill", container_id, "KILL", check=True)
        assert run.wait(timeout=10) == 137
    finally:
        run.kill()
        run.wait()


def test_run_shows_output_and_container_view(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "echo pid=$$; hostname; id -u; cat /etc/hostname 2>&1; ls /"])
    bundle.spec["hostname"] = "box1"
    bundle.write()
    result = any_runtime.run("run", "-b", str(bundle.path), container_id, check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "pid=1"
    assert lines[1] == "box1"
    assert lines[2] == "0"
    assert "bin" in lines and "proc" in lines


def test_create_does_not_run_the_process_until_start(any_runtime, bundle_factory,
                                                     container_id):
    bundle = bundle_factory(["sh", "-c", "touch /ran; sleep 30"])
    marker = bundle.rootfs / "ran"
    any_runtime.run("create", "--bundle", str(bundle.path), container_id, check=True)
    state = any_runtime.state(container_id)
    assert state["status"] == "created"
    assert state["pid"] > 0
    time.sleep(0.3)
    assert not marker.exists(), "the user process ran before start"
    any_runtime.run("start", container_id, check=True)
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists()
    assert any_runtime.state(container_id)["status"] == "running"
    any_runtime.run("kill", container_id, "KILL", check=True)
    wait_status(any_runtime, container_id, "stopped")
    any_runtime.run("delete", container_id, check=True)
    assert container_id not in any_runtime.ids()


def test_state_has_the_spec_fields_and_runcs(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    bundle.spec["annotations"] = {"org.example.key": "value"}
    bundle.write()
    any_runtime.run("create", "-b", str(bundle.path), container_id, check=True)
    state = any_runtime.state(container_id)
    assert state["ociVersion"].startswith("1.")
    assert state["id"] == container_id
    assert state["status"] == "created"
    assert state["bundle"] == str(bundle.path)
    assert state["rootfs"] == str(bundle.rootfs)
    assert state["annotations"] == {"org.example.key": "value"}
    assert "created" in state and "owner" in state
    assert os.path.exists(f"/proc/{state['pid']}")


def test_pid_file_names_the_init(any_runtime, bundle_factory, container_id, tmp_path):
    bundle = bundle_factory(["sleep", "30"])
    pid_file = tmp_path / "init.pid"
    any_runtime.run("create", "-b", str(bundle.path), "--pid-file", str(pid_file),
                    container_id, check=True)
    assert int(pid_file.read_text()) == any_runtime.state(container_id)["pid"]


@pytest.mark.parametrize("signal_text", ["KILL", "SIGKILL", "9"])
def test_kill_takes_names_and_numbers(any_runtime, bundle_factory, container_id,
                                      signal_text):
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    any_runtime.run("kill", container_id, signal_text, check=True)
    wait_status(any_runtime, container_id, "stopped")


def test_kill_all_reaches_every_process(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    time.sleep(0.3)
    pids = json.loads(any_runtime.run("ps", "--format", "json", container_id,
                                      check=True).stdout)
    assert len(pids) == 3
    any_runtime.run("kill", "--all", container_id, "KILL", check=True)
    wait_status(any_runtime, container_id, "stopped")
    for pid in pids:
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.02)


def test_kill_of_a_stopped_container_says_not_running(any_runtime, bundle_factory,
                                                      container_id):
    bundle = bundle_factory(["true"])
    any_runtime.run("run", "--keep", "-b", str(bundle.path), container_id, check=True)
    result = any_runtime.run("kill", container_id, "KILL")
    assert result.returncode != 0
    assert "not running" in result.stderr


def test_delete_of_a_running_container_needs_force(any_runtime, bundle_factory,
                                                   container_id):
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    result = any_runtime.run("delete", container_id)
    assert result.returncode != 0
    assert container_id in any_runtime.ids()
    any_runtime.run("delete", "--force", container_id, check=True)
    assert container_id not in any_runtime.ids()


def test_delete_of_a_created_container(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("create", "-b", str(bundle.path), container_id, check=True)
    pid = any_runtime.state(container_id)["pid"]
    any_runtime.run("delete", container_id, check=True)
    assert container_id not in any_runtime.ids()
    time.sleep(0.1)
    assert not _alive(pid)


def test_start_twice_fails(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("create", "-b", str(bundle.path), container_id, check=True)
    any_runtime.run("start", container_id, check=True)
    result = any_runtime.run("start", container_id)
    assert result.returncode != 0


def test_missing_container_does_not_exist(any_runtime):
    for verb in (["state"], ["start"], ["kill"], ["delete"]):
        result = any_runtime.run(*verb, "no-such-container")
        assert result.returncode != 0
        assert "does not exist" in result.stderr


def test_list_shows_containers(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("create", "-b", str(bundle.path), container_id, check=True)
    table = any_runtime.run("list", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert any(line.split()[0] == container_id and "created" in line for line in table[1:])
    listing = json.loads(any_runtime.run("list", "--format", "json", check=True).stdout)
    assert [entry["status"] for entry in listing if entry["id"] == container_id] == [
        "created"
    ]


def test_exec_runs_in_the_container(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    bundle.spec["hostname"] = "inside"
    bundle.write()
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    result = any_runtime.run("exec", container_id, "sh", "-c", "hostname; echo $$; exit 7")
    assert result.returncode == 7, result.stderr
    name, pid = result.stdout.split()
    assert name == "inside"
    assert int(pid) > 1


def test_exec_flags(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    result = any_runtime.run("exec", "--cwd", "/tmp", "--env", "GREETING=hi",
                             "--user", "1000:1000", container_id,
                             "sh", "-c", "pwd; echo $GREETING; id -u; id -g", check=True)
    assert result.stdout.split() == ["/tmp", "hi", "1000", "1000"]


def test_exec_process_file(any_runtime, bundle_factory, container_id, tmp_path):
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    process = {"args": ["sh", "-c", "echo from-file $X"], "env": ["X=1", "PATH=/bin"],
               "cwd": "/", "user": {"uid": 0, "gid": 0}}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    result = any_runtime.run("exec", "--process", str(path), container_id, check=True)
    assert result.stdout.strip() == "from-file 1"


def test_exec_detach_with_pid_file(any_runtime, bundle_factory, container_id, tmp_path):
    bundle = bundle_factory(["sleep", "30"])
    any_runtime.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    pid_file = tmp_path / "exec.pid"
    any_runtime.run("exec", "--detach", "--pid-file", str(pid_file), container_id,
                    "sleep", "20", check=True)
    pid = int(pid_file.read_text())
    assert _alive(pid)
    pids = json.loads(any_runtime.run("ps", "--format", "json", container_id).stdout)
    assert pid in pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_force_delete_of_a_missing_container_succeeds(any_runtime):
    """containerd's shim cleans up with delete --force (a regression test)."""
    result = any_runtime.run("delete", "--force", "no-such-container")
    assert result.returncode == 0, result.stderr
