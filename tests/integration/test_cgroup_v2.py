"""corral-runtime on a pure cgroup v2 hierarchy, in a qemu guest (tests/guest).

The machines we test on have hybrid cgroups, so the v2 code of cgroups.py
(``_apply_v2``, the freezer through cgroup.freeze, placement with the single
"" hierarchy) only runs in a guest. Code is 20 to 50 times slower there, so
one guest is booted for the whole module: a shell script drives the host's
corral-runtime through the cgroup-dependent steps and prints ``@@name=value``
markers, and each test below asserts what one group of markers shows.

The guest sees the host's / read-only, so the bundles are built here, in a
temporary directory; the runtime's state goes to the guest's tmpfs (--root
/run/cr). The guest's second stage enables every controller in the root's
cgroup.subtree_control, as systemd does on a v2 host.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from ..bundles import build_rootfs, make_spec
from ..conftest import CORRAL_RUNTIME
from ..guest import vm

MiB = 1 << 20

# The container that is limited, paused, updated, killed and deleted. Its
# cgroupsPath sits right under the root, whose children have every
# controller enabled; the default path (/corral/<id>) is checked apart, in
# test_default_cgroups_path_gets_controllers.
LIMITED_PATH = "/corral-v2-limited"
OOM_PATH = "/corral-v2-oom"
LIMITED_RESOURCES = {
    "memory": {"limit": 32 * MiB, "swap": 64 * MiB, "reservation": 16 * MiB},
    "pids": {"limit": 64},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
    "blockIO": {"weight": 500},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 8 * MiB}],
    "unified": {"memory.high": str(48 * MiB)},
}

# What the limited container runs: it tries a device the default rules deny
# (/kmsg, made by the guest script as char 1:11, /dev/kmsg), reads its cgroup
# from inside, and then sleeps until it is killed.
LIMITED_PROCESS = """
if echo corral-device-probe >/kmsg; then devices=opened; else devices=refused; fi
{
  echo "@@inside.devices=$devices"
  echo "@@inside.proc_cgroup=$(cat /proc/self/cgroup)"
  echo "@@inside.memory.max=$(cat /sys/fs/cgroup/memory.max)"
  echo "@@inside.pids.max=$(cat /sys/fs/cgroup/pids.max)"
} >/tmp/inside.partial
mv /tmp/inside.partial /tmp/inside
exec sleep 1000
"""

# The guest's script. mark prints one marker on one line; step runs one
# runtime verb with its output in a file (a created container's init holds
# the runtime's stdio, so $(...) would wait for the container) and marks its
# exit status and output.
GUEST_SCRIPT = """
R="{runtime} --root /run/cr"
CG=/sys/fs/cgroup
mark() {{ printf '@@%s=%s\\n' "$1" "$(printf '%s' "$2" | tr '\\n' ' ')"; }}
step() {{
  name=$1; shift
  "$@" </dev/null >/run/step.$name 2>&1
  mark "$name.rc" "$?"
  mark "$name.out" "$(cat /run/step.$name)"
}}
exists() {{ if [ -e "$1" ]; then echo present; else echo absent; fi; }}
# wait_for TEST...: poll for up to 30 s
wait_for() {{
  i=0
  while ! "$@" && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
}}
empty() {{ [ ! -s "$1" ]; }}

mark guest.mounts "$(grep cgroup /proc/self/mountinfo)"
mark guest.controllers "$(cat $CG/cgroup.controllers)"
mark guest.subtree_control "$(cat $CG/cgroup.subtree_control)"
mknod {rootfs}/kmsg c 1 11

# -- the limited container: placement, limits, update, pause, delete ---------
L=$CG{limited_path}
step create $R create --bundle {limited_bundle} --pid-file /run/limited.pid limited
pid=$(cat /run/limited.pid)
mark limited.pid "$pid"
mark limited.proc_cgroup "$(cat /proc/$pid/cgroup)"
mark limited.cgroup.procs "$(cat $L/cgroup.procs)"
for file in memory.max memory.swap.max memory.low memory.high pids.max cpu.max \\
    cpu.weight cpuset.cpus cpuset.mems io.weight hugetlb.2MB.max; do
  mark "limited.$file" "$(cat $L/$file 2>&1)"
done
step start $R start limited
wait_for test -e {rootfs}/tmp/inside
cat {rootfs}/tmp/inside
mark inside.kmsg "$(dmesg | grep -c corral-device-probe)"
step stats $R events --stats limited
step update $R update --memory 40m --pids-limit 100 limited
mark updated.memory.max "$(cat $L/memory.max)"
mark updated.pids.max "$(cat $L/pids.max)"

step pause $R pause limited
mark paused.cgroup.freeze "$(cat $L/cgroup.freeze)"
mark paused.cgroup.events "$(cat $L/cgroup.events)"
step paused_state $R state limited
step resume $R resume limited
mark resumed.cgroup.events "$(cat $L/cgroup.events)"
step resumed_state $R state limited
# Thaw whatever resume did, so that kill and delete are tested on their own.
echo 0 >$L/cgroup.freeze

step kill $R kill limited KILL
wait_for empty $L/cgroup.procs
mark killed.cgroup.procs "$(cat $L/cgroup.procs 2>&1)"
step delete $R delete limited
mark deleted.cgroup "$(exists $L)"

# -- out of memory: 100 MB read into one buffer under memory.max=32M ----------
step oom $R run --bundle {oom_bundle} oom
mark oom.kernel "$(dmesg | grep -E 'oom-kill:|Memory cgroup out of memory' | tail -n 2)"
mark oom.cgroup "$(exists $CG{oom_path})"

# -- no cgroupsPath: the default /corral/<id>, two levels under the root -----
step nested $R create --bundle {nested_bundle} nested
mark nested.memory.max "$(cat $CG/corral/nested/memory.max 2>&1)"
mark nested.pids.max "$(cat $CG/corral/nested/pids.max 2>&1)"
mark nested.subtree_control "$(cat $CG/corral/cgroup.subtree_control 2>&1)"
step nested_delete $R delete --force nested
mark nested.cgroup "$(exists $CG/corral/nested)"
"""


def _markers(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        if line.startswith("@@") and "=" in line:
            name, _, value = line[2:].partition("=")
            found[name] = value.strip()
    return found


class Guest:
    def __init__(self, run: vm.Run) -> None:
        self.run = run
        self.markers = _markers(run.output)

    def __getitem__(self, name: str) -> str:
        if name not in self.markers:
            raise AssertionError(f"the guest printed no marker {name!r}; its output "
                                 f"(status {self.run.status}):\n{self.run.output}")
        return self.markers[name]

    def step(self, name: str) -> str:
        """The output of step NAME, after asserting that it exited 0."""
        assert self[f"{name}.rc"] == "0", f"{name} failed: {self[f'{name}.out']}"
        return self[f"{name}.out"]


def _bundle(directory: Path, rootfs: Path, args: list[str], cgroups_path: str | None,
            resources: dict) -> Path:
    directory.mkdir()
    spec = make_spec(args)
    spec["root"]["path"] = str(rootfs)
    linux = spec["linux"]
    linux["resources"] = {**linux.get("resources", {}), **resources}
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    (directory / "config.json").write_text(json.dumps(spec, indent=1))
    return directory


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> Guest:
    if os.geteuid() != 0:
        pytest.skip("the cgroup v2 guest runs containers and needs root")
    # Under /tmp, on the host's /: the guest sees it through its 9p share.
    work = tmp_path_factory.mktemp("cgroup-v2")
    rootfs = build_rootfs(work / "rootfs")
    script = GUEST_SCRIPT.format(
        runtime=shlex.quote(CORRAL_RUNTIME),
        rootfs=rootfs,
        limited_path=LIMITED_PATH,
        oom_path=OOM_PATH,
        limited_bundle=_bundle(work / "limited", rootfs, ["sh", "-c", LIMITED_PROCESS],
                               LIMITED_PATH, LIMITED_RESOURCES),
        oom_bundle=_bundle(work / "oom", rootfs,
                           ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"],
                           OOM_PATH, {"memory": {"limit": 32 * MiB}}),
        nested_bundle=_bundle(work / "nested", rootfs, ["sleep", "1000"], None,
                              {"memory": {"limit": 32 * MiB}, "pids": {"limit": 64}}),
    )
    try:
        run = vm.run(script, timeout=150)
    except vm.GuestUnavailable as exc:
        pytest.skip(f"no cgroup v2 guest on this machine: {exc}")
    return Guest(run)


def test_guest_has_only_cgroup2_with_its_controllers(guest):
    mounts = guest["guest.mounts"]
    assert " - cgroup2 " in mounts and " - cgroup " not in mounts
    for controller in ("cpuset", "cpu", "memory", "pids"):
        assert controller in guest["guest.subtree_control"].split()


def test_create_places_init_in_its_cgroup(guest):
    guest.step("create")
    pid = guest["limited.pid"]
    assert guest["limited.proc_cgroup"] == f"0::{LIMITED_PATH}"
    assert guest["limited.cgroup.procs"].split() == [pid]


def test_memory_limits(guest):
    guest.step("create")
    assert guest["limited.memory.max"] == str(32 * MiB)
    # OCI's swap is memory plus swap; v2's memory.swap.max is the swap alone.
    assert guest["limited.memory.swap.max"] == str(32 * MiB)
    assert guest["limited.memory.low"] == str(16 * MiB)


def test_pids_limit(guest):
    assert guest["limited.pids.max"] == "64"


def test_cpu_limits(guest):
    assert guest["limited.cpu.max"] == "50000 100000"
    # runc 1.1's conversion: weight = 1 + (shares - 2) * 9999 / 262142.
    assert guest["limited.cpu.weight"] == "20"
    assert guest["limited.cpuset.cpus"] == "0"
    assert guest["limited.cpuset.mems"] == "0"


def test_io_weight_and_hugetlb_limits(guest):
    # runc's conversion of a blkio weight (10-1000) to io.weight (1-10000).
    assert guest["limited.io.weight"] == "default 4950"
    assert guest["limited.hugetlb.2MB.max"] == str(8 * MiB)


def test_unified_key_is_written(guest):
    assert guest["limited.memory.high"] == str(48 * MiB)


def test_container_sees_its_own_cgroup(guest):
    guest.step("start")
    # The cgroup namespace's root is the container's cgroup, mounted at
    # /sys/fs/cgroup inside.
    assert guest["inside.proc_cgroup"] == "0::/"
    assert guest["inside.memory.max"] == str(32 * MiB)
    assert guest["inside.pids.max"] == "64"


def test_device_rules_are_enforced(guest):
    # The default spec denies every device but the standard few; /kmsg is
    # char 1:11, which runc refuses on v2 too, and corral on v1.
    assert guest["inside.devices"] == "refused"
    assert guest["inside.kmsg"] == "0"


def test_events_stats_reads_v2_files(guest):
    stats = json.loads(guest.step("stats"))
    assert stats["type"] == "stats" and stats["id"] == "limited"
    assert stats["data"]["memory"]["usage"]["limit"] == 32 * MiB
    assert stats["data"]["memory"]["usage"]["usage"] > 0
    assert stats["data"]["pids"] == {"current": 1, "limit": 64}


def test_update_writes_v2_files(guest):
    guest.step("update")
    assert guest["updated.memory.max"] == str(40 * MiB)
    assert guest["updated.pids.max"] == "100"


def test_pause_freezes_the_cgroup(guest):
    guest.step("pause")
    assert guest["paused.cgroup.freeze"] == "1"
    assert "frozen 1" in guest["paused.cgroup.events"]


def test_paused_state_is_paused(guest):
    assert json.loads(guest.step("paused_state"))["status"] == "paused"


def test_resume_thaws_the_cgroup(guest):
    guest.step("resume")
    assert "frozen 0" in guest["resumed.cgroup.events"]
    assert json.loads(guest.step("resumed_state"))["status"] == "running"


def test_delete_removes_the_cgroup(guest):
    guest.step("kill")
    assert guest["killed.cgroup.procs"] == ""
    guest.step("delete")
    assert guest["deleted.cgroup"] == "absent"


def test_over_the_memory_limit_is_oom_killed(guest):
    assert guest["oom.rc"] == "137", guest["oom.out"]
    kernel = guest["oom.kernel"]
    assert "Memory cgroup out of memory" in kernel
    assert f"oom_memcg={OOM_PATH}" in kernel
    assert guest["oom.cgroup"] == "absent"


def test_default_cgroups_path_gets_controllers(guest):
    # /corral is made by the runtime: it has to enable the controllers in its
    # cgroup.subtree_control for /corral/<id> to have their files.
    guest.step("nested")
    for controller in ("memory", "pids"):
        assert controller in guest["nested.subtree_control"].split()
    assert guest["nested.memory.max"] == str(32 * MiB)
    assert guest["nested.pids.max"] == "64"


def test_default_cgroups_path_is_removed(guest):
    guest.step("nested_delete")
    assert guest["nested.cgroup"] == "absent"
