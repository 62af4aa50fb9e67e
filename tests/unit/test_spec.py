"""Checking config.json: each wrong field is named."""

import copy

import pytest

from corral.oci.spec import default_spec
from corral.runtime.errors import InvalidSpec, NotSupported
from corral.runtime.spec import validate


def spec():
    return copy.deepcopy(default_spec(["sh"]))


def test_default_spec_is_valid():
    validate(spec())


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s.pop("root"), "root"),
    (lambda s: s["root"].update(path=3), "root.path"),
    (lambda s: s.update(ociVersion=1), "ociVersion"),
    (lambda s: s["process"].update(terminal="yes"), "process.terminal"),
    (lambda s: s["process"]["user"].update(uid=-1), "process.user.uid"),
    (lambda s: s["process"]["user"].update(uid=True), "process.user.uid"),
    (lambda s: s["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 9,
                                            "hard": 1}]), "process.rlimits[0]"),
    (lambda s: s["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
                                            {"type": "RLIMIT_NOFILE", "soft": 1,
                                             "hard": 1}]), "process.rlimits[1].type"),
    (lambda s: s["mounts"][0].update(options="ro"), "mounts[0].options"),
    (lambda s: s["linux"]["namespaces"][0].update(path="relative"),
     "linux.namespaces[0].path"),
    (lambda s: s["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "linux.uidMappings"),
    (lambda s: s["linux"]["namespaces"].append({"type": "user"}), "linux.uidMappings"),
    (lambda s: s["linux"].update(sysctl={"net.ipv4/../x": "1"}), "linux.sysctl"),
    (lambda s: s["linux"].update(devices=[{"path": "/etc/x", "type": "c", "major": 1,
                                           "minor": 1}]), "linux.devices[0].path"),
    (lambda s: s["linux"].update(devices=[{"path": "/dev/x", "type": "q"}]),
     "linux.devices[0].type"),
    (lambda s: s["linux"].update(rootfsPropagation="sideways"), "linux.rootfsPropagation"),
    (lambda s: s["linux"].update(maskedPaths=["proc/kcore"]), "linux.maskedPaths[0]"),
    (lambda s: s.update(hooks={"preStart": []}), "hooks.preStart"),
    (lambda s: s.update(hooks={"poststop": [{"path": "/bin/x", "timeout": 0}]}),
     "hooks.poststop[0].timeout"),
    (lambda s: s.update(annotations={"k": 1}), "annotations.k"),
    (lambda s: [ns for ns in s["linux"]["namespaces"] if ns["type"] == "uts"]
     and s["linux"].update(namespaces=[n for n in s["linux"]["namespaces"]
                                       if n["type"] != "uts"]), "hostname"),
])
def test_field_is_named(change, field):
    value = spec()
    change(value)
    with pytest.raises(InvalidSpec) as info:
        validate(value)
    assert info.value.field.startswith(field), str(info.value)


def test_overlapping_host_ranges():
    value = spec()
    value["linux"]["namespaces"].append({"type": "user"})
    value["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 10},
                                     {"containerID": 100, "hostID": 1005, "size": 10}]
    value["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 10}]
    with pytest.raises(InvalidSpec, match="hostID"):
        validate(value)


@pytest.mark.parametrize("change", [
    lambda s: s["process"].update(apparmorProfile="x"),
    lambda s: s["linux"].update(intelRdt={"closID": "x"}),
    lambda s: s["mounts"][0].update(uidMappings=[{"containerID": 0, "hostID": 0,
                                                  "size": 1}]),
])
def test_not_supported_is_said(change):
    value = spec()
    change(value)
    with pytest.raises(NotSupported):
        validate(value)


@pytest.mark.parametrize(("key", "drop", "message"), [
    ("net.ipv4.ip_forward", "network", "network namespace"),
    ("kernel.shmmax", "ipc", "ipc namespace"),
    ("fs.mqueue.queues_max", "ipc", "ipc namespace"),
    ("kernel.domainname", "uts", "uts namespace"),
    ("vm.swappiness", None, "not namespaced"),
    ("kernel.panic", None, "not namespaced"),
])
def test_sysctl_needs_its_namespace(key, drop, message):
    value = spec()
    value.pop("hostname")
    value["linux"]["namespaces"] = [ns for ns in value["linux"]["namespaces"]
                                    if ns["type"] != drop]
    value["linux"]["sysctl"] = {key: "1"}
    with pytest.raises(InvalidSpec, match=message):
        validate(value)


def test_namespaced_sysctls_pass():
    value = spec()
    value["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1",
                                "kernel.domainname": "x"}
    validate(value)


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s["process"]["user"].update(uid=1 << 40), "process.user.uid"),
    (lambda s: s["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1 << 70,
                                            "hard": 1 << 70}]), "process.rlimits[0].soft"),
    (lambda s: s["process"].update(env=["A=\0"]), "process.env[0]"),
    (lambda s: s["process"]["user"].update(additionalGids=[-1]),
     "process.user.additionalGids[0]"),
    (lambda s: s["linux"]["resources"].update(pids={"limit": "10"}),
     "linux.resources.pids.limit"),
    (lambda s: s["linux"]["resources"].update(cpu={"cpus": 5}), "linux.resources.cpu.cpus"),
    (lambda s: s["linux"]["resources"].update(devices="all"), "linux.resources.devices"),
    (lambda s: s["linux"]["resources"]["devices"][0].update(access="rwx"),
     "linux.resources.devices[0].access"),
    (lambda s: s["linux"].update(devices=[{"path": "/dev/x", "type": "c", "major": -1,
                                           "minor": 1}]), "linux.devices[0].major"),
    (lambda s: s["linux"].update(devices=[{"path": "/dev/x", "type": "c", "major": 1,
                                           "minor": 1, "fileMode": "rw"}]),
     "linux.devices[0].fileMode"),
    (lambda s: s["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW",
                                          "syscalls": "x"}), "linux.seccomp.syscalls"),
    (lambda s: s["linux"].update(timeOffsets={"monotonic": {"secs": "x"}}),
     "linux.timeOffsets.monotonic.secs"),
    (lambda s: s.update(hooks={"prestart": [{"path": "/x", "env": ["NOEQ"]}]}),
     "hooks.prestart[0].env[0]"),
    (lambda s: s["mounts"].append({"destination": "/proc/sys", "type": "bind",
                                   "source": "/proc/sys"}), "mounts[7].destination"),
])
def test_more_fields_are_named(change, field):
    value = spec()
    change(value)
    with pytest.raises(InvalidSpec) as info:
        validate(value)
    assert info.value.field.startswith(field), str(info.value)


def test_nan_and_deep_nesting_are_invalid_json(tmp_path):
    from corral.runtime.spec import load_bundle

    (tmp_path / "rootfs").mkdir()
    for text in ('{"ociVersion": NaN}', "[" * 100000):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(InvalidSpec, match="config.json"):
            load_bundle(str(tmp_path))
