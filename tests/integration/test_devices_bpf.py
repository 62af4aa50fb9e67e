"""The cgroup v2 eBPF device program, tried on this host's cgroup2.

The hybrid cgroup2 here has no controllers, but cgroup-bpf programs work on
any cgroup2 directory, so the program can be checked on the host; the guest
test (test_cgroup_v2.py) checks it inside a real container.
"""

from __future__ import annotations

import os
import uuid

import pytest

from corral.runtime import devices_bpf
from corral.runtime.cgroups import DEFAULT_DEVICE_RULES, mounts

UNIFIED = mounts().get("")


def opens(cgroup_dir: str, path: str, flags: int) -> bool:
    """Whether a child moved into CGROUP_DIR can open PATH."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write("0")
        try:
            os.close(os.open(path, flags))
            os.write(write_end, b"1")
        except OSError:
            os.write(write_end, b"0")
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.close(read_end)
    os.waitpid(pid, 0)
    return answer == b"1"


@pytest.fixture
def cgroup2():
    if UNIFIED is None:
        pytest.skip("no cgroup2 mounted on this host")
    path = os.path.join(UNIFIED, f"corral-bpf-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    yield path
    os.rmdir(path)


def test_deny_all_but_the_defaults(cgroup2):
    devices_bpf.attach(cgroup2, [{"allow": False, "access": "rwm"}, *DEFAULT_DEVICE_RULES])
    assert opens(cgroup2, "/dev/null", os.O_RDWR)
    assert opens(cgroup2, "/dev/zero", os.O_RDONLY)
    assert not opens(cgroup2, "/dev/kmsg", os.O_RDONLY)
    assert not opens(cgroup2, "/dev/mem", os.O_RDONLY)


def test_access_letters_and_last_rule_wins(cgroup2):
    devices_bpf.attach(cgroup2, [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "rwm"},
        {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"},
    ])
    assert not opens(cgroup2, "/dev/kmsg", os.O_RDONLY)
    assert opens(cgroup2, "/dev/null", os.O_RDONLY)
    assert not opens(cgroup2, "/dev/null", os.O_WRONLY)


def test_no_rules_allows_as_v1_does(cgroup2):
    devices_bpf.attach(cgroup2, [])
    assert opens(cgroup2, "/dev/kmsg", os.O_RDONLY)
