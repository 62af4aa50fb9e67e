"""Bad input: a clear message, a non-zero exit, and nothing left behind.

"Nothing left" is checked the same way for every case: no state directory,
no cgroup directory, no process that mentions the container id, and no
mount under the bundle.
"""

from __future__ import annotations

import json
import os
import time

import pytest


def leftovers(runtime, container_id: str, bundle_path) -> list[str]:
    found = []
    if (runtime.root / container_id).exists():
        found.append(f"state dir {runtime.root / container_id}")
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        path = f"/sys/fs/cgroup/{hierarchy}/corral/{container_id}"
        if os.path.exists(path):
            found.append(f"cgroup {path}")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if container_id.encode() in cmdline and not zombie:
            found.append(f"process {pid}: {cmdline!r}")
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if str(bundle_path) in line]
    return found


def check_failure(corral, container_id, bundle_path, args, *expected):
    result = corral.run(*args)
    assert result.returncode != 0, result
    for text in expected:
        assert text in result.stderr, result.stderr
    time.sleep(0.05)
    assert leftovers(corral, container_id, bundle_path) == []
    return result


def test_missing_config(corral, tmp_path, container_id):
    (tmp_path / "rootfs").mkdir()
    check_failure(corral, container_id, tmp_path,
                  ["create", "-b", str(tmp_path), container_id], "config.json", "no such file")


def test_invalid_json(corral, tmp_path, container_id):
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text('{"ociVersion": "1.0.2", ')
    check_failure(corral, container_id, tmp_path,
                  ["create", "-b", str(tmp_path), container_id], "not valid JSON")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(ociVersion="2.0.0"), "ociVersion"),
        (lambda s: s["process"].update(args=[]), "process.args"),
        (lambda s: s["process"].update(args="sh"), "process.args"),
        (lambda s: s["process"].update(cwd="relative"), "process.cwd"),
        (lambda s: s["process"].update(env=["NOEQUALS"]), "process.env[0]"),
        (lambda s: s["mounts"].append({"destination": "rel", "type": "tmpfs"}),
         "mounts[7].destination"),
        (lambda s: s["linux"]["namespaces"].append({"type": "bogus"}),
         "linux.namespaces[6].type"),
        (lambda s: s["linux"]["namespaces"].append({"type": "pid"}),
         "given twice"),
        (lambda s: s["process"].update(rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1,
                                                  "hard": 1}]), "unknown rlimit"),
        (lambda s: s["process"]["capabilities"]["bounding"].append("CAP_BOGUS"),
         "unknown capability"),
        (lambda s: s["hooks"] if False else s.update(hooks={"prestart": [{"path": "x"}]}),
         "hooks.prestart[0].path"),
    ],
)
def test_invalid_field_is_named(corral, bundle_factory, container_id, change, message):
    bundle = bundle_factory(["true"])
    change(bundle.spec)
    bundle.write()
    check_failure(corral, container_id, bundle.path,
                  ["create", "-b", str(bundle.path), container_id], message)


def test_missing_rootfs(corral, bundle_factory, container_id):
    bundle = bundle_factory(["true"])
    bundle.spec["root"]["path"] = "no-such-rootfs"
    bundle.write()
    check_failure(corral, container_id, bundle.path,
                  ["create", "-b", str(bundle.path), container_id], "root.path")


def test_unknown_mount_type(corral, bundle_factory, container_id):
    bundle = bundle_factory(["true"])
    bundle.spec["mounts"].append({"destination": "/x", "type": "nosuchfs", "source": "x"})
    bundle.write()
    check_failure(corral, container_id, bundle.path,
                  ["create", "-b", str(bundle.path), container_id],
                  "mounts[7]", "unknown filesystem type 'nosuchfs'")


def test_missing_bind_source(corral, bundle_factory, container_id):
    bundle = bundle_factory(["true"])
    bundle.spec["mounts"].append({"destination": "/x", "type": "bind",
                                  "source": "/no/such/dir", "options": ["rbind"]})
    bundle.write()
    check_failure(corral, container_id, bundle.path,
                  ["create", "-b", str(bundle.path), container_id],
                  "mounts[7].source", "does not exist")


def test_args0_not_found(corral, bundle_factory, container_id):
    bundle = bundle_factory(["no-such-program"])
    check_failure(corral, container_id, bundle.path,
                  ["create", "-b", str(bundle.path), container_id],
                  'exec: "no-such-program": executable file not found in $PATH')


def test_args0_path_not_found(corral, bundle_factory, container_id):
    bundle = bundle_factory(["/bin/missing"])
    check_failure(corral, container_id, bundle.path,
                  ["run", "-b", str(bundle.path), container_id], "/bin/missing")


def test_id_already_in_use(corral, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    corral.run("create", "-b", str(bundle.path), container_id, check=True)
    result = corral.run("create", "-b", str(bundle.path), container_id)
    assert result.returncode != 0
    assert "already exists" in result.stderr
    assert corral.state(container_id)["status"] == "created"


@pytest.mark.parametrize("bad_id", ["a/b", "..", ""])
def test_bad_id(corral, bundle_factory, bad_id):
    bundle = bundle_factory(["true"])
    result = corral.run("create", "-b", str(bundle.path), bad_id)
    assert result.returncode != 0
    assert "not a valid id" in result.stderr
    assert not corral.root.exists() or os.listdir(corral.root) == []


def test_start_of_a_running_container(corral, bundle_factory, container_id):
    bundle = bundle_factory(["sleep", "30"])
    corral.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    result = corral.run("start", container_id)
    assert result.returncode != 0
    assert "cannot start an already running container" in result.stderr


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook(corral, bundle_factory, container_id, kind):
    bundle = bundle_factory(["true"])
    bundle.spec["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}]}
    bundle.write()
    check_failure(corral, container_id, bundle.path,
                  ["create", "-b", str(bundle.path), container_id],
                  f"hook {kind}[0]", "exit status 3", "boom")


def test_hook_timeout(corral, bundle_factory, container_id):
    bundle = bundle_factory(["true"])
    bundle.spec["hooks"] = {"createRuntime": [
        {"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}]}
    bundle.write()
    started = time.monotonic()
    check_failure(corral, container_id, bundle.path,
                  ["create", "-b", str(bundle.path), container_id], "timed out after 1s")
    assert time.monotonic() - started < 5


def test_failing_start_container_hook_fails_start(corral, bundle_factory, container_id):
    bundle = bundle_factory(["touch", "/ran"])
    bundle.spec["hooks"] = {"startContainer": [{"path": "/bin/false"}]}
    bundle.write()
    corral.run("create", "-b", str(bundle.path), container_id, check=True)
    result = corral.run("start", container_id)
    assert result.returncode != 0
    assert "startContainer[0]" in result.stderr
    assert not (bundle.rootfs / "ran").exists()
    assert corral.state(container_id)["status"] == "stopped"


def test_json_log_has_the_error(corral, bundle_factory, container_id, tmp_path):
    bundle = bundle_factory(["no-such-program"])
    log = tmp_path / "log.json"
    result = corral.run("--log", str(log), "--log-format", "json", "create", "-b",
                        str(bundle.path), container_id)
    assert result.returncode != 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    assert "executable file not found" in errors[-1]["msg"]
    assert errors[-1]["time"].endswith("Z")


def test_systemd_cgroup_is_refused_clearly(corral, bundle_factory, container_id):
    bundle = bundle_factory(["true"])
    check_failure(corral, container_id, bundle.path,
                  ["--systemd-cgroup", "create", "-b", str(bundle.path), container_id],
                  "systemd")


def test_unknown_flag(corral):
    result = corral.run("create", "--no-such-flag", "x")
    assert result.returncode != 0
    assert "flag provided but not defined: -no-such-flag" in result.stderr
