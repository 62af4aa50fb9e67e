"""The pure pieces of issue 5's leftovers, without root: the since/until
check, the CPU range, --group-add through /etc/group, the event time zone,
docker version's layout, and a failed start's exit status from the
runtime's words."""

from __future__ import annotations

import os
import time

import pytest

from corral.cli import output
from corral.image.bundle import resolve_groups
from corral.image.errors import NotFound
from corral.manager import docker_model
from corral.manager.errors import InvalidArgument, StartFailed
from corral.manager.observe import check_log_time


@pytest.mark.parametrize("value", [None, 12, 1.5, "1700000000", "1700000000.000000001",
                                   "-5", "+3.1"])
def test_log_times_dockerd_takes(value):
    assert check_log_time(value) == value


@pytest.mark.parametrize("value, part", [("abc", "abc"), ("1.5x", "5x"), ("1.", ""),
                                         ("١٢", "١٢"), ("1h", "1h")])
def test_log_times_dockerd_refuses_with_its_words(value, part):
    with pytest.raises(InvalidArgument) as caught:
        check_log_time(value)
    assert str(caught.value) == f'strconv.ParseInt: parsing "{part}": invalid syntax'


def test_nano_cpus_range_counts_the_cpus_we_may_use():
    count = len(os.sched_getaffinity(0))
    docker_model.check_create({"Image": "x", "HostConfig": {"NanoCpus": count * 10**9}})
    docker_model.check_create({"Image": "x", "HostConfig": {"NanoCpus": 1}})
    with pytest.raises(InvalidArgument, match=rf"^Range of CPUs is from 0.01 to "
                                              rf"{count}.00, as there are only {count} "
                                              rf"CPUs available$"):
        docker_model.check_create({"Image": "x",
                                   "HostConfig": {"NanoCpus": count * 10**9 + 1}})


def test_uts_host_and_a_hostname_conflict():
    with pytest.raises(InvalidArgument, match="^conflicting options: hostname and the "
                                              "UTS mode$"):
        docker_model.check_create({"Image": "x", "Hostname": "h",
                                   "HostConfig": {"UTSMode": "host"}})


def test_group_add_by_name_gid_or_bare_number(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/group").write_text("audio:x:29:user\nvideo:x:44:\n")
    assert resolve_groups(tmp_path, ["video", "29", "777"]) == [44, 29, 777]
    with pytest.raises(NotFound, match="^Unable to find group nosuch: no matching "
                                       "entries in group file$"):
        resolve_groups(tmp_path, ["nosuch"])


@pytest.mark.parametrize("zone, expected", [
    ("UTC", "2023-11-14T22:13:20.000000005Z"),
    ("Europe/Paris", "2023-11-14T23:13:20.000000005+01:00"),
    ("America/St_Johns", "2023-11-14T18:43:20.000000005-03:30"),
])
def test_event_time_in_the_local_zone_as_go_prints_it(monkeypatch, zone, expected):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert output.event_time(1_700_000_000_000_000_005) == expected
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_version_text_is_docker_versions_layout():
    server = {"Platform": {"Name": "Corral"}, "Components": [
        {"Name": "Engine", "Version": "0.1.0",
         "Details": {"ApiVersion": "1.47", "MinAPIVersion": "1.24", "GoVersion": "py",
                     "GitCommit": "", "BuildTime": "", "Os": "linux", "Arch": "amd64",
                     "Experimental": "false"}}]}
    text = output.version_text("0.1.0", "1.43", server)
    assert text.splitlines()[1:3] == [" Version:           0.1.0",
                                      " API version:       1.43"]
    assert text[text.index("Server:"):] == (
        "Server: Corral\n Engine:\n  Version:          0.1.0\n"
        "  API version:      1.47 (minimum version 1.24)\n  Go version:       py\n"
        "  Git commit:       \n  Built:            \n  OS/Arch:          linux/amd64\n"
        "  Experimental:     false\n")


@pytest.mark.parametrize("message, status, shown", [
    ('exec: "x": executable file not found in $PATH', 127, None),
    ('exec: "/x": no such file or directory in the rootfs', 127, None),
    ('exec: "/etc": is a directory', 126, None),
    ("Permission denied '/etc/passwd'", 126, "permission denied '/etc/passwd'"),
    ("Exec format error '/bin/x'", 126, "exec format error '/bin/x'"),
    ("mount destination '/etc/passwd' is not a directory in the rootfs", 125, None),
])
def test_a_failed_start_gets_its_status_and_gos_words(message, status, shown):
    error = StartFailed.from_runtime("c1", message)
    assert error.exit_status == status
    assert str(error) == f"start container 'c1': {shown or message}"
