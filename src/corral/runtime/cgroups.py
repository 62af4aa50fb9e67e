"""Control groups: where a container's processes are counted and limited.

Three layouts exist, and this machine has the middle one:

- v1: one hierarchy per controller (or group of controllers) under
  /sys/fs/cgroup/<name>;
- hybrid: the v1 hierarchies plus a cgroup2 at /sys/fs/cgroup/unified that
  holds no controller worth limiting (here, only hugetlb);
- v2 (unified): one cgroup2 hierarchy at /sys/fs/cgroup.

A container's cgroup is the same relative path in every hierarchy we find.
``Cgroup`` takes the directory of each hierarchy as data, so the resource
writers can be pointed at a temporary directory in unit tests.
"""

from __future__ import annotations

import errno
import os
import time

from .errors import SetupError

V2 = ""  # the key of the cgroup2 hierarchy in a mounts dict


def mounts() -> dict[str, str]:
    """Controller (or ``name=X``, or "" for cgroup2) -> mount point."""
    found: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        text = f.read()
    for line in text.splitlines():
        # Paths in mountinfo escape their spaces, so " - " is the separator.
        if " - cgroup" not in line:
            continue
        left, _, right = line.partition(" - ")
        fstype, _, super_options = right.split(" ", 2)
        if fstype == "cgroup2":
            found.setdefault(V2, left.split(" ")[4])
        elif fstype == "cgroup":
            mountpoint = left.split(" ")[4]
            names = [
                option
                for option in super_options.strip().split(",")
                if option not in ("rw", "ro") and not option.startswith("release_agent")
                and option not in ("noprefix", "clone_children", "xattr")
                and not option.startswith("cpuset_v2_mode")
            ]
            found.setdefault(",".join(names), mountpoint)
    return found


def warm_up() -> int:
    """Start paying, in a throwaway child, for the first cgroup move.

    Moving a task into another cgroup takes cgroup_threadgroup_rwsem for
    writing, and the first writer after a quiet spell waits for an RCU grace
    period (5 to 20 ms on our machines); writers within the next few tens of
    milliseconds do not (rcu_sync). So as soon as ``create`` starts (first
    thing, in __main__), a child moves itself into the root cgroup of one
    hierarchy and exits; by the time init is moved the wait is paid, in
    parallel with our own start. The child waits holding the kernel's
    cgroup_mutex, so every cgroup change of ours, a mkdir too, waits until
    it is done: create makes none before it has forked init. Returns the
    child's pid (0 if there is no cgroup to move into, or no shell).

    The child is a shell, spawned (vfork and exec), not a fork of ours: while
    a forked child lives, every page we write is copied first, and a Python
    importing modules writes to hundreds of pages (2 to 3 ms here).
    """
    for path in ("/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/cgroup.procs"):
        if os.path.exists(path):
            break
    else:
        return 0
    # "0" names the writer: the shell moves itself, then exits. It says
    # nothing (a refusal is no business of ours) and holds none of our stdio.
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    try:
        return os.posix_spawn("/bin/sh", ["sh", "-c", f"echo 0 >{path}"], {},
                              file_actions=quiet)
    except OSError:
        return 0


def is_unified(cgroup_mounts: dict[str, str]) -> bool:
    return list(cgroup_mounts) == [V2]


def _own_cgroup() -> dict[str, str]:
    """The runtime's own cgroup path in each hierarchy (from /proc/self/cgroup)."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[controllers] = path
    return own


class Cgroup:
    """The cgroup of one container: a directory in each hierarchy."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths
        # Set by create once the directories are known to be this
        # container's: only then may a failed create kill and remove them.
        self.claimed = False

    @classmethod
    def plan(cls, cgroups_path: str | None, container_id: str,
             cgroup_mounts: dict[str, str] | None = None) -> Cgroup:
        """Work out the directories; absolute paths are from each root."""
        cgroup_mounts = mounts() if cgroup_mounts is None else cgroup_mounts
        if not cgroups_path:
            cgroups_path = f"/corral/{container_id}"
        if ":" in cgroups_path and not cgroups_path.startswith("/"):
            raise SetupError(
                f"cgroupsPath '{cgroups_path}' is in systemd form (slice:prefix:name), "
                "but the systemd cgroup driver is not supported"
            )
        own = _own_cgroup() if not cgroups_path.startswith("/") else {}
        paths = {}
        for controller, mountpoint in cgroup_mounts.items():
            relative = cgroups_path
            if not relative.startswith("/"):
                relative = os.path.join(own.get(controller, "/"), relative)
            relative = os.path.normpath("/" + relative.lstrip("/"))
            if relative == "/":
                raise SetupError(f"linux.cgroupsPath {cgroups_path!r} names the root cgroup, "
                                 "which holds the host's processes")
            paths[controller] = mountpoint + relative
        return cls(paths)

    def controller_dir(self, name: str) -> str | None:
        for controllers, path in self.paths.items():
            if name in controllers.split(","):
                return path
        return None

    def create(self, mounts_by_controller: dict[str, str] | None = None) -> None:
        """Make the directories; refuse a cgroup that processes already use."""
        for path in self.paths.values():
            busy = _procs(path)
            if busy:
                raise SetupError(f"linux.cgroupsPath: cgroup '{path}' is in use by "
                                 f"{len(busy)} process(es); give the container its own")
        self.claimed = True
        for controllers, path in self.paths.items():
            os.makedirs(path, exist_ok=True)
            if "cpuset" in controllers.split(","):
                _inherit_cpuset(path)
        if V2 in self.paths and len(self.paths) == 1 and mounts_by_controller:
            enable_controllers(mounts_by_controller[V2], self.paths[V2])

    def join(self, pid: int) -> None:
        for path in self.paths.values():
            _write(path, "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        for controllers in ("pids", "freezer", "memory", V2, "name=systemd"):
            path = self.paths.get(controllers) or self.controller_dir(controllers)
            if path:
                try:
                    text = _read(os.path.join(path, "cgroup.procs"))
                    return [int(pid) for pid in text.split()]
                except FileNotFoundError:
                    continue
        return []

    def signal_all(self, signum: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        """Remove every directory; a cgroup still busy is retried briefly."""
        for path in self.paths.values():
            for attempt in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or attempt == 49:
                        raise SetupError(f"remove cgroup '{path}': {exc.strerror}") from exc
                    time.sleep(0.01)

    # -- freezer ---------------------------------------------------------------

    def freeze(self, frozen: bool) -> None:
        path = self.controller_dir("freezer")
        if path is not None:
            _write(path, "freezer.state", "FROZEN" if frozen else "THAWED")
            want = "FROZEN" if frozen else "THAWED"
            for _ in range(1000):
                with open(os.path.join(path, "freezer.state")) as f:
                    if f.read().strip() == want:
                        return
                time.sleep(0.001)
            raise SetupError(f"freezer '{path}' did not reach {want}")
        v2 = self.paths.get(V2)
        if v2 is not None and os.path.exists(os.path.join(v2, "cgroup.freeze")):
            _write(v2, "cgroup.freeze", "1" if frozen else "0")
            want = "frozen 1" if frozen else "frozen 0"
            for _ in range(1000):
                with open(os.path.join(v2, "cgroup.events")) as f:
                    if want in f.read().splitlines():
                        return
                time.sleep(0.001)
            raise SetupError(f"cgroup '{v2}' did not reach '{want}'")
        raise SetupError("pause needs the freezer cgroup controller, and it is not mounted")

    # -- resources ---------------------------------------------------------------

    def apply(self, resources: dict, updating: bool = False) -> None:
        """Write linux.resources into the cgroup (v1 files, or v2 where unified).

        At create the device rules are always written (deny all but the
        defaults, when the spec has none); an update leaves them alone unless
        it has some.
        """
        devices = not updating or resources.get("devices") is not None
        if resources.get("unified") and not (V2 in self.paths and len(self.paths) == 1):
            raise SetupError("linux.resources.unified: needs a cgroup v2 host; this one "
                             "has cgroup v1 controllers")
        if V2 in self.paths and len(self.paths) == 1:
            _apply_v2(self.paths[V2], resources, devices)
            _apply_hugetlb(self, resources.get("hugepageLimits") or [])
            return
        _apply_v1(self, resources, devices)


def enable_controllers(mountpoint: str, path: str, only: set[str] | None = None) -> None:
    """Enable the available controllers for PATH in cgroup2 (cgroups(7), v2).

    A cgroup2 directory has a controller's files only if its parent lists
    the controller in cgroup.subtree_control, and so on up to the root.
    """
    try:
        with open(os.path.join(mountpoint, "cgroup.controllers")) as f:
            available = set(f.read().split())
    except OSError:
        return
    wanted = available & (only or available)
    if not wanted:
        return
    relative = os.path.relpath(os.path.dirname(path), mountpoint)
    parts = [] if relative == "." else relative.split("/")
    directory = mountpoint
    for part in [None, *parts]:
        if part is not None:
            directory = os.path.join(directory, part)
        try:
            with open(os.path.join(directory, "cgroup.subtree_control")) as f:
                enabled = set(f.read().split())
        except OSError:
            return
        missing = wanted - enabled
        if missing:
            _write(directory, "cgroup.subtree_control",
                   " ".join(f"+{name}" for name in sorted(missing)))


# Cgroup files are small and read or written whole, in one system call: we
# use os.open/read/write on them, not open(), whose buffered text file costs
# an fstat, an ioctl and an lseek more each time (create writes some forty).


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def _procs(path: str) -> list[int]:
    try:
        return [int(line) for line in _read(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return []


def _write(directory: str, name: str, value: str) -> None:
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise SetupError(f"write {value!r} to '{path}': {exc.strerror}") from exc


def _inherit_cpuset(path: str) -> None:
    """A new v1 cpuset starts empty and takes no task until cpus and mems are set."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        _inherit_cpuset_file(path, name)


def _inherit_cpuset_file(path: str, name: str) -> None:
    """Copy NAME down from the nearest ancestor that has it set."""
    try:
        if _read(os.path.join(path, name)).strip():
            return
    except FileNotFoundError:
        return
    parent = os.path.dirname(path)
    _inherit_cpuset_file(parent, name)
    _write(path, name, _read(os.path.join(parent, name)).strip())


# Devices every container needs, allowed whatever the device rules say (the
# same list runc adds): null, zero, full, random, urandom, tty, console,
# ptmx, and the pty slaves; and mknod of any node, which grants no access.
DEFAULT_DEVICE_RULES = [
    {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2),
                         (136, -1))
] + [{"allow": True, "type": kind, "access": "m"} for kind in ("c", "b")]


def device_rules(resources: dict) -> list[dict]:
    """The rules to apply: deny all, the spec's, then the devices every container needs.

    A spec without device rules gets no device but the defaults, as with runc.
    """
    return [{"allow": False, "access": "rwm"}, *(resources.get("devices") or []),
            *DEFAULT_DEVICE_RULES]


def device_rule(rule: dict) -> str:
    kind = rule.get("type") or "a"
    major = rule.get("major")
    minor = rule.get("minor")
    if kind == "a":
        return "a"
    major_text = "*" if major is None or major == -1 else str(major)
    minor_text = "*" if minor is None or minor == -1 else str(minor)
    return f"{kind} {major_text}:{minor_text} {rule.get('access') or 'rwm'}"


def _apply_v1(cgroup: Cgroup, resources: dict, devices: bool) -> None:
    memory = resources.get("memory") or {}
    mem_dir = cgroup.controller_dir("memory")
    if memory and mem_dir:
        if memory.get("limit") is not None:
            _write(mem_dir, "memory.limit_in_bytes", str(memory["limit"]))
        if memory.get("swap") is not None and os.path.exists(
            os.path.join(mem_dir, "memory.memsw.limit_in_bytes")
        ):
            _write(mem_dir, "memory.memsw.limit_in_bytes", str(memory["swap"]))
        if memory.get("reservation") is not None:
            _write(mem_dir, "memory.soft_limit_in_bytes", str(memory["reservation"]))
        if memory.get("swappiness") is not None and 0 <= memory["swappiness"] <= 100:
            _write(mem_dir, "memory.swappiness", str(memory["swappiness"]))
    cpu = resources.get("cpu") or {}
    cpu_dir = cgroup.controller_dir("cpu")
    if cpu and cpu_dir:
        if cpu.get("shares"):
            _write(cpu_dir, "cpu.shares", str(cpu["shares"]))
        if cpu.get("period"):
            _write(cpu_dir, "cpu.cfs_period_us", str(cpu["period"]))
        if cpu.get("quota"):
            _write(cpu_dir, "cpu.cfs_quota_us", str(cpu["quota"]))
    cpuset_dir = cgroup.controller_dir("cpuset")
    if cpu and cpuset_dir:
        if cpu.get("cpus"):
            _write(cpuset_dir, "cpuset.cpus", cpu["cpus"])
        if cpu.get("mems"):
            _write(cpuset_dir, "cpuset.mems", cpu["mems"])
    pids = resources.get("pids") or {}
    pids_dir = cgroup.controller_dir("pids")
    if pids.get("limit") is not None and pids_dir:
        limit = pids["limit"]
        _write(pids_dir, "pids.max", "max" if limit <= 0 else str(limit))
    blkio = resources.get("blockIO") or {}
    blkio_dir = cgroup.controller_dir("blkio")
    if blkio and blkio_dir:
        _apply_blkio_v1(blkio_dir, blkio)
    _apply_hugetlb(cgroup, resources.get("hugepageLimits") or [])
    devices_dir = cgroup.controller_dir("devices")
    if devices_dir and devices:
        for rule in device_rules(resources):
            name = "devices.allow" if rule.get("allow") else "devices.deny"
            _write(devices_dir, name, device_rule(rule))


_THROTTLES = (
    ("throttleReadBpsDevice", "blkio.throttle.read_bps_device", "rbps"),
    ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", "wbps"),
    ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", "riops"),
    ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", "wiops"),
)


def _apply_blkio_v1(directory: str, blkio: dict) -> None:
    if blkio.get("weight"):
        for name in ("blkio.weight", "blkio.bfq.weight"):
            if os.path.exists(os.path.join(directory, name)):
                _write(directory, name, str(blkio["weight"]))
                break
    for device in blkio.get("weightDevice") or []:
        if device.get("weight"):
            _write(directory, "blkio.weight_device",
                   f"{device['major']}:{device['minor']} {device['weight']}")
    for key, name, _ in _THROTTLES:
        for device in blkio.get(key) or []:
            _write(directory, name, f"{device['major']}:{device['minor']} {device['rate']}")


def _apply_io_v2(path: str, blkio: dict) -> None:
    if blkio.get("weight"):
        # blkio weights run 10-1000, io.weight 1-10000 (as runc converts them).
        weight = 1 + (blkio["weight"] - 10) * 9999 // 990
        _write(path, "io.weight", f"default {weight}")
    limits: dict[str, list[str]] = {}
    for key, _, name in _THROTTLES:
        for device in blkio.get(key) or []:
            limits.setdefault(f"{device['major']}:{device['minor']}", []).append(
                f"{name}={device['rate']}")
    for device, values in limits.items():
        _write(path, "io.max", f"{device} {' '.join(values)}")


def _apply_hugetlb(cgroup: Cgroup, limits: list) -> None:
    """Hugepage limits; on a hybrid host the hugetlb controller is in cgroup2."""
    if not limits:
        return
    v1 = cgroup.controller_dir("hugetlb")
    v2 = cgroup.paths.get(V2)
    if v1 is None and v2 is not None:
        mountpoint = mounts().get(V2)
        if mountpoint:
            enable_controllers(mountpoint, v2, {"hugetlb"})
    for limit in limits:
        size = limit["pageSize"]
        if v1 is not None:
            _write(v1, f"hugetlb.{size}.limit_in_bytes", str(limit["limit"]))
        elif v2 is not None:
            _write(v2, f"hugetlb.{size}.max", str(limit["limit"]))
        else:
            raise SetupError("linux.resources.hugepageLimits: no hugetlb controller")


def _apply_v2(path: str, resources: dict, devices: bool) -> None:
    memory = resources.get("memory") or {}
    if memory.get("limit") is not None:
        _write(path, "memory.max", "max" if memory["limit"] < 0 else str(memory["limit"]))
    if memory.get("swap") is not None and memory.get("limit") is not None:
        swap = memory["swap"]
        value = "max" if swap < 0 else str(max(swap - memory["limit"], 0))
        _write(path, "memory.swap.max", value)
    if memory.get("reservation") is not None:
        _write(path, "memory.low", str(memory["reservation"]))
    cpu = resources.get("cpu") or {}
    if cpu.get("shares"):
        weight = 1 + ((cpu["shares"] - 2) * 9999) // 262142
        _write(path, "cpu.weight", str(weight))
    if cpu.get("quota") or cpu.get("period"):
        quota = cpu.get("quota")
        quota_text = "max" if not quota or quota < 0 else str(quota)
        _write(path, "cpu.max", f"{quota_text} {cpu.get('period') or 100000}")
    if cpu.get("cpus"):
        _write(path, "cpuset.cpus", cpu["cpus"])
    if cpu.get("mems"):
        _write(path, "cpuset.mems", cpu["mems"])
    pids = resources.get("pids") or {}
    if pids.get("limit") is not None:
        limit = pids["limit"]
        _write(path, "pids.max", "max" if limit <= 0 else str(limit))
    if resources.get("blockIO"):
        _apply_io_v2(path, resources["blockIO"])
    if devices:
        from . import devices_bpf

        devices_bpf.attach(path, device_rules(resources))
    for key, value in (resources.get("unified") or {}).items():
        if "/" in key or key.startswith("."):
            raise SetupError(f"linux.resources.unified: {key!r} is not a cgroup file")
        _write(path, key, value)
