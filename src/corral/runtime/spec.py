"""Loading and checking a bundle's config.json.

config.json comes from the caller, and the caller may be wrong: every field
the runtime reads is checked here, before anything is built, so that a bad
spec fails with the field's name and leaves nothing behind. After
``load_bundle`` the rest of the runtime may index the dict without checks.
"""

from __future__ import annotations

import os

from corral import _json as json
from corral.oci.spec import HOOK_KINDS, NAMESPACES, RLIMITS

from . import capabilities
from .errors import InvalidSpec, NotSupported

Spec = dict

_MOUNT_TYPES_UNCHECKED = "any filesystem the kernel knows"


def load_bundle(bundle: str) -> Spec:
    """Read and check ``bundle/config.json``; the rootfs must exist."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InvalidSpec("config.json", f"no such file '{path}'") from None
    except OSError as exc:
        raise InvalidSpec("config.json", f"read '{path}': {exc.strerror}") from exc
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise InvalidSpec("config.json", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidSpec("config.json", "nested too deeply to be a runtime spec") from None
    validate(spec)
    rootfs = rootfs_path(bundle, spec)
    if not os.path.isdir(rootfs):
        raise InvalidSpec("root.path", f"rootfs '{rootfs}' is not a directory")
    return spec


def rootfs_path(bundle: str, spec: Spec) -> str:
    return os.path.normpath(os.path.join(bundle, spec["root"]["path"]))


def _type(value: object, kind: type | tuple[type, ...], field: str) -> object:
    # bool is an int in Python; a JSON true where a number belongs is an error.
    if isinstance(value, bool) and kind in (int, (int, float)):
        raise InvalidSpec(field, "must be a number, not a boolean")
    if not isinstance(value, kind):
        names = {dict: "an object", list: "an array", str: "a string", int: "an integer",
                 bool: "a boolean"}
        want = names.get(kind, "a number") if isinstance(kind, type) else "a number"
        raise InvalidSpec(field, f"must be {want}, got {json.dumps(value)[:40]}")
    return value


def _opt(obj: dict[str, object], key: str, kind: type, field: str) -> object:
    if key not in obj or obj[key] is None:
        return None
    return _type(obj[key], kind, f"{field}.{key}" if field else key)


def _strings(value: object, field: str) -> list[str]:
    _type(value, list, field)
    for index, item in enumerate(value):
        if "\0" in _type(item, str, f"{field}[{index}]"):
            raise InvalidSpec(f"{field}[{index}]", "contains a NUL byte")
    return value


_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


def _int_in(value: object, low: int, high: int, field: str) -> int:
    _type(value, int, field)
    if not low <= value <= high:
        raise InvalidSpec(field, f"{value} is out of range ({low} to {high})")
    return value


def _opt_int(obj: dict, key: str, low: int, high: int, field: str) -> None:
    if obj.get(key) is not None:
        _int_in(obj[key], low, high, f"{field}.{key}")


def validate(spec: object) -> None:
    """Raise InvalidSpec naming the first field that is wrong."""
    _type(spec, dict, "config.json")
    version = spec.get("ociVersion")
    _type(version, str, "ociVersion")
    if version.split(".")[0] != "1":
        raise InvalidSpec("ociVersion", f"version {version!r} is not supported (want 1.x)")

    root = spec.get("root")
    if root is None:
        raise InvalidSpec("root", "missing")
    _type(root, dict, "root")
    _type(root.get("path"), str, "root.path")
    _opt(root, "readonly", bool, "root")

    if spec.get("process") is not None:
        _validate_process(spec["process"], "process")
    _opt(spec, "hostname", str, "")
    _opt(spec, "domainname", str, "")
    _opt(spec, "annotations", dict, "")
    for key, value in (spec.get("annotations") or {}).items():
        _type(value, str, f"annotations.{key}")

    mounts = _opt(spec, "mounts", list, "") or []
    for index, mount in enumerate(mounts):
        _validate_mount(mount, f"mounts[{index}]")

    hooks = _opt(spec, "hooks", dict, "") or {}
    for kind, entries in hooks.items():
        if kind not in HOOK_KINDS:
            raise InvalidSpec(f"hooks.{kind}", "unknown hook kind")
        _type(entries, list, f"hooks.{kind}")
        for index, hook in enumerate(entries):
            _validate_hook(hook, f"hooks.{kind}[{index}]")

    linux = _opt(spec, "linux", dict, "")
    if linux is not None:
        _validate_linux(linux, spec)


def _validate_process(process: object, field: str) -> None:
    _type(process, dict, field)
    args = process.get("args")
    if not args:
        raise InvalidSpec(f"{field}.args", "must name the program to run")
    _strings(args, f"{field}.args")
    if _opt(process, "env", list, field) is not None:
        for index, item in enumerate(_strings(process["env"], f"{field}.env")):
            if "=" not in item:
                raise InvalidSpec(f"{field}.env[{index}]", f"{item!r} is not KEY=VALUE")
    cwd = process.get("cwd", "/")
    _type(cwd, str, f"{field}.cwd")
    if not cwd.startswith("/"):
        raise InvalidSpec(f"{field}.cwd", f"{cwd!r} must be an absolute path")
    _opt(process, "terminal", bool, field)
    size = _opt(process, "consoleSize", dict, field)
    if size is not None:
        _type(size.get("height", 0), int, f"{field}.consoleSize.height")
        _type(size.get("width", 0), int, f"{field}.consoleSize.width")
    user = _opt(process, "user", dict, field) or {}
    for key in ("uid", "gid"):
        _opt_int(user, key, 0, _U32 - 1, f"{field}.user")
    _opt_int(user, "umask", 0, 0o777, f"{field}.user")
    if _opt(user, "additionalGids", list, f"{field}.user") is not None:
        for index, gid in enumerate(user["additionalGids"]):
            _int_in(gid, 0, _U32 - 1, f"{field}.user.additionalGids[{index}]")
    _opt(process, "noNewPrivileges", bool, field)
    _opt(process, "oomScoreAdj", int, field)
    rlimits = _opt(process, "rlimits", list, field) or []
    seen = set()
    for index, rlimit in enumerate(rlimits):
        where = f"{field}.rlimits[{index}]"
        _type(rlimit, dict, where)
        kind = _type(rlimit.get("type"), str, f"{where}.type")
        if kind not in RLIMITS:
            raise InvalidSpec(f"{where}.type", f"unknown rlimit {kind!r}")
        if kind in seen:
            raise InvalidSpec(f"{where}.type", f"{kind} is given twice")
        seen.add(kind)
        soft = _int_in(rlimit.get("soft"), 0, _U64, f"{where}.soft")
        hard = _int_in(rlimit.get("hard"), 0, _U64, f"{where}.hard")
        if soft > hard:
            raise InvalidSpec(where, f"soft limit {soft} is above hard limit {hard}")
    caps = _opt(process, "capabilities", dict, field) or {}
    for key, value in caps.items():
        if key not in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            raise InvalidSpec(f"{field}.capabilities.{key}", "unknown capability set")
        _strings(value or [], f"{field}.capabilities.{key}")
    capabilities.check(caps, f"{field}.capabilities")
    if process.get("apparmorProfile"):
        raise NotSupported(f"{field}.apparmorProfile", "AppArmor is not supported")
    if process.get("selinuxLabel"):
        raise NotSupported(f"{field}.selinuxLabel", "SELinux is not supported")


# Files under /proc that may be bind-mounted over (as lxcfs does); nothing
# else under /proc may be covered, or the masks there could be undone.
_PROC_BINDABLE = {"/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat",
                  "/proc/swaps", "/proc/uptime", "/proc/loadavg", "/proc/slabinfo",
                  "/proc/net/dev", "/proc/sys/kernel/ns_last_pid"}


def _validate_mount(mount: object, field: str) -> None:
    _type(mount, dict, field)
    dest = _type(mount.get("destination"), str, f"{field}.destination")
    if not dest.startswith("/"):
        raise InvalidSpec(f"{field}.destination", f"{dest!r} must be an absolute path")
    clean = os.path.normpath(dest)
    if clean == "/":
        raise InvalidSpec(f"{field}.destination", "cannot mount over the root")
    if clean == "/proc" and mount.get("type") != "proc":
        raise InvalidSpec(f"{field}.destination", "/proc must be a proc mount")
    if clean.startswith("/proc/") and clean not in _PROC_BINDABLE:
        raise InvalidSpec(f"{field}.destination",
                          f"{dest!r} is inside /proc, where only a few files may be covered")
    _opt(mount, "type", str, field)
    _opt(mount, "source", str, field)
    if _opt(mount, "options", list, field) is not None:
        _strings(mount["options"], f"{field}.options")
    if mount.get("uidMappings") or mount.get("gidMappings"):
        raise NotSupported(f"{field}.uidMappings", "idmapped mounts are not supported")


def _validate_hook(hook: object, field: str) -> None:
    _type(hook, dict, field)
    path = _type(hook.get("path"), str, f"{field}.path")
    if not path.startswith("/"):
        raise InvalidSpec(f"{field}.path", f"{path!r} must be an absolute path")
    if _opt(hook, "args", list, field) is not None:
        _strings(hook["args"], f"{field}.args")
    if _opt(hook, "env", list, field) is not None:
        for index, item in enumerate(_strings(hook["env"], f"{field}.env")):
            if "=" not in item:
                raise InvalidSpec(f"{field}.env[{index}]", f"{item!r} is not KEY=VALUE")
    timeout = _opt(hook, "timeout", int, field)
    if timeout is not None and timeout <= 0:
        raise InvalidSpec(f"{field}.timeout", "must be a positive number of seconds")


def _validate_linux(linux: dict[str, object], spec: Spec) -> None:
    namespaces = _opt(linux, "namespaces", list, "linux") or []
    seen = set()
    for index, ns in enumerate(namespaces):
        where = f"linux.namespaces[{index}]"
        _type(ns, dict, where)
        kind = _type(ns.get("type"), str, f"{where}.type")
        if kind not in NAMESPACES:
            raise InvalidSpec(f"{where}.type", f"unknown namespace type {kind!r}")
        if kind in seen:
            raise InvalidSpec(f"{where}.type", f"namespace {kind!r} is given twice")
        seen.add(kind)
        path = _opt(ns, "path", str, where)
        if path is not None and not path.startswith("/"):
            raise InvalidSpec(f"{where}.path", f"{path!r} must be an absolute path")
    for key in ("uidMappings", "gidMappings"):
        entries = _opt(linux, key, list, "linux") or []
        for index, entry in enumerate(entries):
            where = f"linux.{key}[{index}]"
            _type(entry, dict, where)
            for part in ("containerID", "hostID", "size"):
                if _type(entry.get(part), int, f"{where}.{part}") < 0:
                    raise InvalidSpec(f"{where}.{part}", "must not be negative")
        _check_overlaps(entries, f"linux.{key}")
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in seen:
        raise InvalidSpec("linux.uidMappings", "mappings need a user namespace")
    if "user" in seen and not any(
        ns.get("path") for ns in namespaces if ns.get("type") == "user"
    ):
        if not linux.get("uidMappings") or not linux.get("gidMappings"):
            raise InvalidSpec(
                "linux.uidMappings", "a new user namespace needs uidMappings and gidMappings"
            )
    if spec.get("hostname") and "uts" not in seen:
        raise InvalidSpec("hostname", "setting a hostname needs a uts namespace")
    sysctl = _opt(linux, "sysctl", dict, "linux") or {}
    for key, value in sysctl.items():
        _type(value, str, f"linux.sysctl.{key}")
        if "/" in key or ".." in key:
            raise InvalidSpec(f"linux.sysctl.{key}", "not a sysctl name")
        _check_sysctl_namespace(key, seen)
    for key in ("maskedPaths", "readonlyPaths"):
        if _opt(linux, key, list, "linux") is not None:
            for index, path in enumerate(_strings(linux[key], f"linux.{key}")):
                if not path.startswith("/"):
                    raise InvalidSpec(f"linux.{key}[{index}]", "must be an absolute path")
    for index, device in enumerate(_opt(linux, "devices", list, "linux") or []):
        where = f"linux.devices[{index}]"
        _type(device, dict, where)
        path = _type(device.get("path"), str, f"{where}.path")
        if not path.startswith("/dev/"):
            raise InvalidSpec(f"{where}.path", f"{path!r} must be under /dev")
        kind = _type(device.get("type"), str, f"{where}.type")
        if kind not in ("c", "u", "b", "p"):
            raise InvalidSpec(f"{where}.type", f"unknown device type {kind!r}")
        if kind != "p":
            _int_in(device.get("major"), 0, _U32, f"{where}.major")
            _int_in(device.get("minor"), 0, _U32, f"{where}.minor")
        _opt_int(device, "fileMode", 0, 0o7777, where)
        _opt_int(device, "uid", 0, _U32 - 1, where)
        _opt_int(device, "gid", 0, _U32 - 1, where)
    _opt(linux, "cgroupsPath", str, "linux")
    if _opt(linux, "resources", dict, "linux") is not None:
        validate_resources(linux["resources"], "linux.resources")
    propagation = _opt(linux, "rootfsPropagation", str, "linux")
    if propagation is not None and propagation not in _PROPAGATIONS:
        raise InvalidSpec("linux.rootfsPropagation", f"unknown propagation {propagation!r}")
    if linux.get("seccomp") is not None:
        _validate_seccomp(linux["seccomp"])
    if linux.get("intelRdt"):
        raise NotSupported("linux.intelRdt")
    if linux.get("mountLabel"):
        raise NotSupported("linux.mountLabel", "SELinux is not supported")
    offsets = _opt(linux, "timeOffsets", dict, "linux") or {}
    for clock, offset in offsets.items():
        if clock not in ("monotonic", "boottime"):
            raise InvalidSpec(f"linux.timeOffsets.{clock}", "unknown clock")
        _type(offset, dict, f"linux.timeOffsets.{clock}")
        _opt_int(offset, "secs", -(1 << 40), 1 << 40, f"linux.timeOffsets.{clock}")
        _opt_int(offset, "nanosecs", 0, 999_999_999, f"linux.timeOffsets.{clock}")


_RESOURCE_INTS = {
    "memory": ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness"),
    "cpu": ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod"),
    "pids": ("limit",),
    "blockIO": ("weight", "leafWeight"),
}
_THROTTLE_KEYS = ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                  "throttleReadIOPSDevice", "throttleWriteIOPSDevice", "weightDevice")


def validate_resources(resources: object, field: str) -> None:
    """linux.resources, also as `update` takes it: every field it writes is checked."""
    _type(resources, dict, field)
    for section, keys in _RESOURCE_INTS.items():
        block = _opt(resources, section, dict, field) or {}
        for key in keys:
            if block.get(key) is not None:
                _int_in(block[key], -1, _U64, f"{field}.{section}.{key}")
    cpu = resources.get("cpu") or {}
    for key in ("cpus", "mems"):
        _opt(cpu, key, str, f"{field}.cpu")
    for index, rule in enumerate(_opt(resources, "devices", list, field) or []):
        where = f"{field}.devices[{index}]"
        _type(rule, dict, where)
        _type(rule.get("allow"), bool, f"{where}.allow")
        if (rule.get("type") or "a") not in ("a", "c", "b"):
            raise InvalidSpec(f"{where}.type", f"unknown device type {rule['type']!r}")
        for key in ("major", "minor"):
            if rule.get(key) is not None:
                _int_in(rule[key], -1, _U32, f"{where}.{key}")
        access = _opt(rule, "access", str, where) or ""
        if set(access) - set("rwm"):
            raise InvalidSpec(f"{where}.access", f"{access!r} is not made of r, w and m")
    block_io = resources.get("blockIO") or {}
    for key in _THROTTLE_KEYS:
        for index, device in enumerate(_opt(block_io, key, list, f"{field}.blockIO") or []):
            where = f"{field}.blockIO.{key}[{index}]"
            _type(device, dict, where)
            for part in ("major", "minor", "rate" if key != "weightDevice" else "weight"):
                _int_in(device.get(part), 0, _U64, f"{where}.{part}")
    for index, limit in enumerate(_opt(resources, "hugepageLimits", list, field) or []):
        where = f"{field}.hugepageLimits[{index}]"
        _type(limit, dict, where)
        size = _type(limit.get("pageSize"), str, f"{where}.pageSize")
        if "/" in size or not size:
            raise InvalidSpec(f"{where}.pageSize", f"{size!r} is not a page size")
        _int_in(limit.get("limit"), 0, _U64, f"{where}.limit")
    for key, value in (_opt(resources, "unified", dict, field) or {}).items():
        _type(value, str, f"{field}.unified.{key}")


def _validate_seccomp(seccomp: object) -> None:
    field = "linux.seccomp"
    _type(seccomp, dict, field)
    _opt(seccomp, "defaultAction", str, field)
    for key in ("architectures", "flags"):
        if _opt(seccomp, key, list, field) is not None:
            _strings(seccomp[key], f"{field}.{key}")
    for index, rule in enumerate(_opt(seccomp, "syscalls", list, field) or []):
        where = f"{field}.syscalls[{index}]"
        _type(rule, dict, where)
        _strings(rule.get("names") or [], f"{where}.names")
        _type(rule.get("action"), str, f"{where}.action")
        _opt_int(rule, "errnoRet", 0, 4095, where)
        for arg_index, arg in enumerate(_opt(rule, "args", list, where) or []):
            arg_field = f"{where}.args[{arg_index}]"
            _type(arg, dict, arg_field)
            _int_in(arg.get("index", 0), 0, 5, f"{arg_field}.index")
            _opt_int(arg, "value", 0, _U64, arg_field)
            _opt_int(arg, "valueTwo", 0, _U64, arg_field)
            _type(arg.get("op"), str, f"{arg_field}.op")


# Sysctls that a namespace makes the container's own (the rest are the host's).
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}
_UTS_SYSCTLS = {"kernel.hostname", "kernel.domainname"}


def _check_sysctl_namespace(key: str, namespaces: set[str]) -> None:
    field = f"linux.sysctl.{key}"
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if "ipc" not in namespaces:
            raise InvalidSpec(field, "needs an ipc namespace for the container")
    elif key in _UTS_SYSCTLS:
        if "uts" not in namespaces:
            raise InvalidSpec(field, "needs a uts namespace for the container")
    elif key.startswith("net."):
        if "network" not in namespaces:
            raise InvalidSpec(field, "needs a network namespace for the container")
    else:
        raise InvalidSpec(field, "is not namespaced: it would change the host")


def _check_overlaps(entries: list, field: str) -> None:
    """No two ranges of an id map may overlap, inside or on the host (user_namespaces(7))."""
    for side in ("containerID", "hostID"):
        ranges = sorted((e[side], e[side] + e["size"], i) for i, e in enumerate(entries))
        for (_, end, first), (start, _, second) in zip(ranges, ranges[1:], strict=False):
            if start < end:
                raise InvalidSpec(
                    field, f"entries {first} and {second} overlap in their {side} ranges"
                )


_PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared",
                 "unbindable", "runbindable", "")
