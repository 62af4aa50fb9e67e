"""The create body's checks and Docker's documents (corral.manager.docker_model),
the container spec built from them (corral.manager.spec), names and filters."""

from __future__ import annotations

import random
import re

import pytest

from corral.manager import docker_model as model
from corral.manager import names, spec
from corral.manager.errors import InvalidArgument
from corral.manager.filters import normalize


def test_defaults_fill_what_the_client_left_out():
    request = model.check_create({"Image": "busybox", "Cmd": "true"})
    assert request.config["Cmd"] == ["true"]      # a StrSlice may be one string
    assert request.config["Tty"] is False and request.config["Env"] is None
    host = request.host_config
    assert set(host) == set(model.HOST_CONFIG_FIELDS)
    assert host["NetworkMode"] == "default"
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert host["ShmSize"] == 64 << 20 and host["PidsLimit"] is None


@pytest.mark.parametrize("body, message", [
    ({"HostConfig": {"Memory": "1g"}},
     "json: cannot unmarshal string into Go struct field HostConfig.Memory of type int64"),
    ({"HostConfig": {"Memory": 1.5}}, "cannot unmarshal number 1.5"),
    ({"HostConfig": {"Privileged": 1}}, "HostConfig.Privileged of type bool"),
    ({"HostConfig": {"PidsLimit": True}}, "HostConfig.PidsLimit of type int64"),
    ({"Env": "A=1"}, "Config.Env of type []string"),
    ({"Labels": {"a": 1}}, "Config.Labels of type map[string]string"),
    ({"HostConfig": {"Bogus": 1}}, "HostConfig.Bogus: unknown option"),
    ({"HostConfig": {"Links": ["a:b"]}}, "HostConfig.Links: not supported"),
    ({"HostConfig": {"Memory": 1024}}, "Minimum memory limit allowed is 6MB"),
    ({"HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}, "invalid restart policy"),
    ({"HostConfig": {"AutoRemove": True, "RestartPolicy": {"Name": "always"}}},
     "AutoRemove"),
    ({"HostConfig": {"LogConfig": {"Type": "syslog"}}}, "log driver 'syslog'"),
    ({"HostConfig": {"LogConfig": {"Config": {"max-size": "lots"}}}}, "invalid size"),
    ({"HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]}},
     "soft limit must be less than or equal to hard limit"),
    ([], "cannot unmarshal array into Go value"),
])
def test_bad_bodies_name_the_field(body, message):
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        model.check_create(body)


def test_unset_unsupported_options_pass():
    # The docker CLI sends every HostConfig field, mostly as zero values.
    host = {key: None for key in model.HOST_CONFIG_FIELDS}
    host.update(Devices=[], PortBindings={}, CpuCount=0, Links=None)
    model.check_create({"Image": "x", "HostConfig": host})


def test_human_durations_and_status():
    assert model.human_duration(0.3) == "Less than a second"
    assert model.human_duration(1) == "1 second"
    assert model.human_duration(59) == "59 seconds"
    assert model.human_duration(90) == "About a minute"
    assert model.human_duration(600) == "10 minutes"
    assert model.human_duration(3600) == "About an hour"
    assert model.human_duration(5 * 3600) == "5 hours"
    assert model.human_duration(3 * 86400) == "3 days"
    assert model.human_duration(20 * 86400) == "2 weeks"
    assert model.human_duration(100 * 86400) == "3 months"
    assert model.human_duration(800 * 86400) == "2 years"
    started = model.format_time(1000.0)
    state = model.State(status="running", started_at=started)
    assert model.status_text(state, now=1005.2) == "Up 5 seconds"
    state.status = "paused"
    assert model.status_text(state, now=1005.2) == "Up 5 seconds (Paused)"
    exited = model.State(status="exited", exit_code=3, finished_at=started)
    assert model.status_text(exited, now=1120) == "Exited (3) 2 minutes ago"
    assert model.status_text(model.State()) == "Created"


def test_times_round_trip():
    stamp = model.format_time(1700000000.123456789)
    assert stamp.startswith("2023-11-14T22:13:20.123456") and stamp.endswith("Z")
    assert abs(model.parse_time(stamp) - 1700000000.123456789) < 1e-6
    assert model.parse_time("0001-01-01T00:00:00Z") == 0.0
    assert model.parse_time("2023-11-14T22:13:20+01:00") == 1699996400.0


def test_state_document():
    document = model.State(status="paused", pid=7).document()
    assert document["Running"] is True and document["Paused"] is True
    assert document["Pid"] == 7
    assert model.State(status="exited", pid=7).document()["Pid"] == 0


def test_sizes():
    assert model.parse_size("10m") == 10 << 20
    assert model.parse_size("1.5k") == 1536
    assert model.parse_size("100") == 100
    with pytest.raises(InvalidArgument):
        model.parse_size("-1k")


def _spec_of(host: dict) -> dict:
    base = {"process": {"args": ["sh"], "env": [], "user": {"uid": 0, "gid": 0},
                        "capabilities": {}},
            "root": {"path": "rootfs"}, "mounts": [],
            "linux": {"namespaces": [{"type": t} for t in
                                     ("pid", "network", "ipc", "uts", "mount", "cgroup")]}}
    request = model.check_create({"Image": "x", "HostConfig": host})
    return spec.build(base, request, container_id="a" * 64, hostname="h",
                      directory=__import__("pathlib").Path("/c"))


def test_resources_as_docker_computes_them():
    built = _spec_of({"Memory": 64 << 20, "NanoCpus": 1_500_000_000, "CpuShares": 512,
                      "PidsLimit": 10})
    resources = built["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert resources["cpu"] == {"period": 100_000, "quota": 150_000, "shares": 512}
    assert resources["pids"] == {"limit": 10}
    assert built["linux"]["cgroupsPath"] == f"/corral/{'a' * 64}"
    assert _spec_of({"Memory": 64 << 20, "MemorySwap": -1})["linux"]["resources"][
        "memory"]["swap"] == -1


def test_capabilities_seccomp_and_privileged():
    built = _spec_of({"CapDrop": ["ALL"], "CapAdd": ["net_admin", "CAP_CHOWN"]})
    assert built["process"]["capabilities"]["bounding"] == ["CAP_NET_ADMIN",
                                                            "CAP_CHOWN"]
    assert built["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "/proc/kcore" in built["linux"]["maskedPaths"]
    assert "cgroup" not in [ns["type"] for ns in built["linux"]["namespaces"]]
    unconfined = _spec_of({"SecurityOpt": ["seccomp=unconfined"]})
    assert "seccomp" not in unconfined["linux"]
    privileged = _spec_of({"Privileged": True})
    assert "CAP_SYS_ADMIN" in privileged["process"]["capabilities"]["bounding"]
    assert privileged["linux"]["maskedPaths"] == []
    with pytest.raises(InvalidArgument, match="unknown capability"):
        _spec_of({"CapAdd": ["FLY"]})
    with pytest.raises(InvalidArgument, match="SecurityOpt"):
        _spec_of({"SecurityOpt": ["apparmor=x"]})


def test_mounts_ulimits_tmpfs():
    built = _spec_of({"Tmpfs": {"/run": "size=1m"}, "ReadonlyRootfs": True,
                      "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}]})
    by_destination = {m["destination"]: m for m in built["mounts"]}
    assert by_destination["/run"]["options"] == ["noexec", "nosuid", "nodev", "size=1m"]
    assert by_destination["/etc/hosts"]["source"] == "/c/hosts"
    assert built["root"]["readonly"] is True
    assert built["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 100,
                                            "hard": 200}]


def test_signals():
    assert spec.parse_signal("SIGTERM") == 15
    assert spec.parse_signal("kill") == 9
    assert spec.parse_signal("10") == 10
    assert spec.parse_signal(None) == 15
    with pytest.raises(InvalidArgument, match="Invalid signal: SIGNOPE"):
        spec.parse_signal("SIGNOPE")


def test_names():
    rng = random.Random(1)
    name = names.random_name(rng)
    adjective, _, surname = name.partition("_")
    assert adjective and surname
    assert names.check_name("/web.1") == "web.1"
    for bad in ("a", "-x", "a b", "x/y"):
        with pytest.raises(InvalidArgument, match="Invalid container name"):
            names.check_name(bad)
    taken = {names.random_name(random.Random(2))}
    assert names.unused_name(taken.__contains__, random.Random(2)) not in taken


def test_filters_both_forms():
    assert normalize({"status": ["running"]}) == {"status": ["running"]}
    assert normalize({"status": {"exited": True}}) == {"status": ["exited"]}
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        normalize({"colour": ["red"]})
    with pytest.raises(InvalidArgument):
        normalize({"status": ["sleepy"]})
