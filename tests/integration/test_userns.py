"""User namespaces: root inside is an unprivileged id on the host."""

from __future__ import annotations

import os
import subprocess

HOST_ID = 200000


def userns_bundle(bundle_factory, args, tmp_path):
    bundle = bundle_factory(args)
    # The mapped root must be able to walk down to the rootfs.
    for parent in bundle.path.parents:
        if str(parent) in ("/", "/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o111)
    os.chmod(bundle.path, 0o755)
    # Rootfs ownership is the caller's business, as with runc.
    subprocess.run(["chown", "-R", f"{HOST_ID}:{HOST_ID}", str(bundle.rootfs)], check=True)
    bundle.spec["linux"]["namespaces"].append({"type": "user"})
    bundle.spec["linux"]["uidMappings"] = [
        {"containerID": 0, "hostID": HOST_ID, "size": 65536}]
    bundle.spec["linux"]["gidMappings"] = [
        {"containerID": 0, "hostID": HOST_ID, "size": 65536}]
    return bundle


def test_root_inside_is_unprivileged_outside(any_runtime, bundle_factory, container_id,
                                            tmp_path):
    secret = tmp_path / "host-only"
    secret.mkdir()
    (secret / "file").write_text("host data\n")
    os.chmod(secret / "file", 0o600)
    bundle = userns_bundle(bundle_factory, [
        "sh", "-c",
        "id -u; cat /proc/self/uid_map; cat /host/file 2>&1; echo read=$?;"
        " echo x > /host/new 2>&1; echo write=$?; hostname"], tmp_path)
    bundle.spec["mounts"].append({"destination": "/host", "type": "bind",
                                  "source": str(secret), "options": ["rbind"]})
    bundle.spec["hostname"] = "userns"
    bundle.write()
    result = any_runtime.run("run", "-b", str(bundle.path), container_id)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = out.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(HOST_ID), "65536"]
    assert "host data" not in out
    assert "read=1" in out and "write=1" in out
    assert not (secret / "new").exists()
    assert lines[-1] == "userns"


def test_process_runs_as_the_mapped_host_id(corral, bundle_factory, container_id,
                                           tmp_path):
    bundle = userns_bundle(bundle_factory, ["sleep", "30"], tmp_path)
    bundle.write()
    corral.run("run", "-d", "-b", str(bundle.path), container_id, check=True)
    pid = corral.state(container_id)["pid"]
    with open(f"/proc/{pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert uids == [str(HOST_ID)] * 4
    result = corral.run("exec", container_id, "id", "-u", check=True)
    assert result.stdout.strip() == "0"


def test_overlapping_mappings_are_refused(corral, bundle_factory, container_id,
                                          tmp_path):
    bundle = userns_bundle(bundle_factory, ["true"], tmp_path)
    bundle.spec["linux"]["uidMappings"] = [
        {"containerID": 0, "hostID": HOST_ID, "size": 1000},
        {"containerID": 500, "hostID": HOST_ID + 5000, "size": 1000}]
    bundle.write()
    result = corral.run("create", "-b", str(bundle.path), container_id)
    assert result.returncode != 0
    assert "linux.uidMappings" in result.stderr and "overlap" in result.stderr
    assert not (corral.root / container_id).exists()
