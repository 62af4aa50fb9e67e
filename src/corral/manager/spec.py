"""The OCI runtime spec of a container: the image layer's config.json (the
process from the image config: Entrypoint/Cmd, Env, WorkingDir, User) with
what the create body asks on top, as Docker's daemon builds it
(moby daemon/oci_linux.go has the effects; the code here is ours):

- Hostname, Tty, Env; /etc/hostname, /etc/hosts and /etc/resolv.conf bound
  from the container's directory;
- resources: Memory, MemorySwap (Docker's: 0 means twice the memory, -1
  unlimited), MemoryReservation, NanoCpus (quota over a 100 ms period),
  CpuShares, CpuQuota/CpuPeriod, CpusetCpus/Mems, PidsLimit; cgroupsPath
  ``/corral/<id>``;
- security: Docker's default capabilities and seccomp profile, CapAdd and
  CapDrop (``ALL`` included), Privileged, SecurityOpt ``seccomp=unconfined``
  or a profile file, ``no-new-privileges``; masked and read-only paths;
- ReadonlyRootfs, Tmpfs, ShmSize, Ulimits, Sysctls,
  GroupAdd, the namespace modes (host pid/uts/ipc/network, cgroupns);
- Init: our static reaping init bound at /sbin/docker-init as PID 1, with
  the command after ``--``, as Docker does with tini.

Binds, Mounts, volumes and VolumesFrom are volumes.py's: the engine adds
their mounts to the spec this module builds.
"""

from __future__ import annotations

import json
import os
import signal as signals
import stat
from pathlib import Path

from ..image import errors as image_errors
from ..image.bundle import resolve_groups
from ..oci import seccomp_profile
from ..oci.spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    RLIMITS,
)
from ..runtime import capabilities
from .docker_model import CreateRequest
from .errors import InvalidArgument

INIT_PATH = "/sbin/docker-init"
CPU_PERIOD = 100_000

# Docker's default device rules: mknod of anything, and the usual nodes.
_DEVICES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1),
                           (136, None), (5, 2), (10, 200))),
]


def parse_signal(text: str | int | None, default: int = signals.SIGTERM) -> int:
    """``SIGTERM``, ``TERM``, ``term`` or ``15`` as a number."""
    if text in (None, ""):
        return default
    if isinstance(text, int) or str(text).isdigit():
        number = int(text)
        if 0 < number < 65:
            return number
    else:
        name = str(text).upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name.startswith("SIGRTMIN+") and name[9:].isdigit():
            return signals.SIGRTMIN + int(name[9:])
        number = getattr(signals.Signals, name, None) if name.isidentifier() else None
        if number is not None:
            return int(number)
    raise InvalidArgument(f"Invalid signal: {text}")


def init_binary() -> Path:
    """Where our ``--init`` lives: next to the venv's interpreter."""
    import sys

    return Path(sys.executable).parent.parent / "libexec" / "corral-init"


def build(spec: dict, request: CreateRequest, *, container_id: str, hostname: str,
          directory: Path) -> dict:
    """Turn the image layer's ``spec`` into the container's, in place."""
    config, host = request.config, request.host_config
    # Docker leaves the hostname alone with the host's UTS namespace.
    spec["hostname"] = hostname
    if host["UTSMode"] == "host":
        del spec["hostname"]
    spec["process"]["terminal"] = bool(config["Tty"])
    spec["process"].pop("rlimits", None)
    spec["process"]["noNewPrivileges"] = False
    spec["root"]["readonly"] = bool(host["ReadonlyRootfs"])
    linux = spec["linux"]
    linux["cgroupsPath"] = f"/corral/{container_id}"
    linux["resources"] = resources(host)
    _namespaces(linux, host)
    _security(spec, host)
    _mounts(spec, host, directory)
    _process_extras(spec["process"], host, directory / "rootfs")
    if host["Sysctls"]:
        linux["sysctl"] = dict(host["Sysctls"])
    if host["Init"]:
        _add_init(spec)
    return spec


def resources(host: dict) -> dict:
    """linux.resources from the HostConfig limits."""
    result: dict = {"devices": [dict(rule) for rule in _DEVICES]}
    if host["Privileged"]:
        result["devices"] = [{"allow": True, "access": "rwm"}]
    memory: dict = {}
    if host["Memory"]:
        memory["limit"] = host["Memory"]
        swap = host["MemorySwap"]
        memory["swap"] = 2 * host["Memory"] if swap == 0 else swap
    if host["MemoryReservation"]:
        memory["reservation"] = host["MemoryReservation"]
    if host["MemorySwappiness"] is not None and host["MemorySwappiness"] >= 0:
        memory["swappiness"] = host["MemorySwappiness"]
    if host["OomKillDisable"]:
        memory["disableOOMKiller"] = True
    if memory:
        result["memory"] = memory
    cpu = _cpu(host)
    if cpu:
        result["cpu"] = cpu
    if host["PidsLimit"] is not None and host["PidsLimit"] > 0:
        result["pids"] = {"limit": host["PidsLimit"]}
    return result


def _cpu(host: dict) -> dict:
    cpu: dict = {}
    if host["NanoCpus"]:
        cpu["period"] = CPU_PERIOD
        cpu["quota"] = host["NanoCpus"] * CPU_PERIOD // 1_000_000_000
    if host["CpuQuota"]:
        cpu["quota"] = host["CpuQuota"]
    if host["CpuPeriod"]:
        cpu["period"] = host["CpuPeriod"]
    if host["CpuShares"]:
        cpu["shares"] = host["CpuShares"]
    if host["CpusetCpus"]:
        cpu["cpus"] = host["CpusetCpus"]
    if host["CpusetMems"]:
        cpu["mems"] = host["CpusetMems"]
    return cpu


def _namespaces(linux: dict, host: dict) -> None:
    dropped = set()
    if host["PidMode"] == "host":
        dropped.add("pid")
    if host["UTSMode"] == "host":
        dropped.add("uts")
    if host["IpcMode"] == "host":
        dropped.add("ipc")
    if host["NetworkMode"] == "host":
        dropped.add("network")
    if host["CgroupnsMode"] != "private":
        dropped.add("cgroup")
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] not in dropped]
    if host["Privileged"]:
        linux["devices"] = host_devices()


def held_capabilities() -> list[str]:
    """The capabilities in our own bounding set: all a container can get.

    NOTE: root may lack some (CAP_SYS_RESOURCE on our VMs); asking for one
    fails the start with EPERM from capset, as dockerd 20.10's every-known
    set does there. containerd's privileged set is its own, as ours."""
    known = capabilities.NAMES[: capabilities.last_cap() + 1]
    with open("/proc/self/status") as status:
        line = next(row for row in status if row.startswith("CapBnd:"))
    mask = int(line.split()[1], 16)
    return [name for number, name in enumerate(known) if mask >> number & 1]


# Directories of /dev that hold no device of the host's own (runc's list).
_SKIPPED_DEV = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")


def host_devices(top: str = "/dev") -> list[dict]:
    """linux.devices for every device node under ``top``, as ``--privileged``
    gives them; /dev/console is the container's own."""
    found = []
    for entry in sorted(os.scandir(top), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIPPED_DEV:
                found += host_devices(entry.path)
            continue
        info = entry.stat(follow_symlinks=False)
        kind = "c" if stat.S_ISCHR(info.st_mode) else "b" if stat.S_ISBLK(
            info.st_mode) else None
        if kind is None or entry.path == "/dev/console":
            continue
        found.append({"path": entry.path, "type": kind,
                      "major": os.major(info.st_rdev), "minor": os.minor(info.st_rdev),
                      "fileMode": stat.S_IMODE(info.st_mode), "uid": info.st_uid,
                      "gid": info.st_gid})
    return found


# Security ---------------------------------------------------------------------

def capability_set(host: dict) -> list[str]:
    """Docker's default set with CapAdd and CapDrop applied (``ALL`` works
    in both; names with or without ``CAP_``, any case)."""
    known = capabilities.NAMES[: capabilities.last_cap() + 1]
    if host["Privileged"]:
        return held_capabilities()
    result = list(DEFAULT_CAPABILITIES)
    adds = [_capability(name, known) for name in host["CapAdd"] or []]
    drops = [_capability(name, known) for name in host["CapDrop"] or []]
    if "ALL" in drops:
        result = []
    result = [cap for cap in result if cap not in drops]
    if "ALL" in adds:
        result = held_capabilities()
    result += [cap for cap in adds if cap != "ALL" and cap not in result]
    return result


def _capability(name: str, known: list[str]) -> str:
    upper = name.upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in capabilities.NAMES:
        raise InvalidArgument(f"unknown capability: \"{name}\"")
    return full


def _security(spec: dict, host: dict) -> None:
    caps = capability_set(host)
    spec["process"]["capabilities"] = {"bounding": caps, "effective": caps,
                                       "permitted": caps}
    linux = spec["linux"]
    seccomp = "default"
    for option in host["SecurityOpt"] or []:
        key, sep, value = option.partition("=" if "=" in option else ":")
        if key == "no-new-privileges" and value in ("", "true"):
            spec["process"]["noNewPrivileges"] = True
        elif key == "no-new-privileges" and value == "false":
            spec["process"]["noNewPrivileges"] = False
        elif key == "seccomp" and sep:
            seccomp = value
        else:
            raise InvalidArgument(f"HostConfig.SecurityOpt: unsupported option "
                                  f"'{option}' (seccomp=, no-new-privileges)")
    if host["Privileged"]:
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
    else:
        linux["maskedPaths"] = list(host["MaskedPaths"] if host["MaskedPaths"] is not None
                                    else DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(host["ReadonlyPaths"]
                                      if host["ReadonlyPaths"] is not None
                                      else DEFAULT_READONLY_PATHS)
    if host["Privileged"] or seccomp == "unconfined":
        linux.pop("seccomp", None)
    elif seccomp == "default":
        linux["seccomp"] = seccomp_profile.default_profile(caps)
    else:
        linux["seccomp"] = _seccomp_file(seccomp)


def _seccomp_file(path: str) -> dict:
    try:
        profile = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"opening seccomp profile ({path}) failed: {exc}") from None
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise InvalidArgument(f"seccomp profile '{path}': not a profile "
                              f"(no defaultAction)")
    # Docker's profile files name their rules "syscalls" as OCI does; the
    # Docker-only keys are dropped.
    return {key: profile[key] for key in ("defaultAction", "defaultErrnoRet",
                                          "architectures", "syscalls", "flags")
            if key in profile}


# Mounts -----------------------------------------------------------------------

def _mounts(spec: dict, host: dict, directory: Path) -> None:
    mounts = [m for m in spec["mounts"] if m["destination"] != "/dev/shm"]
    if host["Privileged"]:
        for mount in mounts:
            if mount["destination"] in ("/sys", "/sys/fs/cgroup"):
                mount["options"] = [o for o in mount["options"] if o != "ro"] + ["rw"]
    if host["IpcMode"] == "host":
        # The host's IPC namespace comes with its POSIX shared memory.
        mounts.append({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                       "options": ["rbind", "rprivate"]})
    else:
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777",
                                   f"size={host['ShmSize']}"]})
    for name in ("resolv.conf", "hostname", "hosts"):
        mounts.append({"destination": f"/etc/{name}", "type": "bind",
                       "source": str(directory / name), "options": ["rbind", "rprivate"]})
    for destination, options in sorted((host["Tmpfs"] or {}).items()):
        mounts.append(_tmpfs(destination, options))
    spec["mounts"] = mounts


def _tmpfs(destination: str, options: str) -> dict:
    if not destination.startswith("/"):
        raise InvalidArgument(f"invalid mount path: '{destination}' mount path must be "
                              f"absolute")
    given = [o for o in options.split(",") if o]
    base = [o for o in ("noexec", "nosuid", "nodev")
            if o not in given and o.removeprefix("no") not in given]
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
            "options": base + given}


def _process_extras(process: dict, host: dict, rootfs: Path) -> None:
    limits = []
    for limit in host["Ulimits"] or []:
        name = f"RLIMIT_{limit['Name'].upper()}"
        if name not in RLIMITS:
            raise InvalidArgument(f"invalid ulimit type: {limit['Name']}")
        limits.append({"type": name, "soft": limit["Soft"], "hard": limit["Hard"]})
    if limits:
        process["rlimits"] = limits
    try:
        groups = resolve_groups(rootfs, host["GroupAdd"] or [])
    except (image_errors.NotFound, image_errors.InvalidArgument) as exc:
        raise InvalidArgument(str(exc)) from exc
    if groups:
        user = process["user"]
        user["additionalGids"] = sorted(set(user.get("additionalGids", []) + groups))


def _add_init(spec: dict) -> None:
    binary = init_binary()
    if not os.access(binary, os.X_OK):
        raise InvalidArgument(f"init '{binary}': not installed (scripts/setup builds it "
                              f"from src/corral/manager/init/corral-init.c)")
    spec["process"]["args"] = [INIT_PATH, "--", *spec["process"]["args"]]
    spec["mounts"].append({"destination": INIT_PATH, "type": "bind",
                           "source": str(binary), "options": ["bind", "ro"]})
