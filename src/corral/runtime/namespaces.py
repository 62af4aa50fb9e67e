"""Linux namespaces: which to create, which to join, in what order.

The order matters. A new user namespace comes first, so that every other
namespace the container gets is owned by it (otherwise root in the container
could not, for one, mount a proc for its own pid namespace). Joining by path
opens every path before the first setns(2), because joining a mount
namespace changes what later paths resolve to. A pid or time namespace,
new or joined, applies only to children of the caller: that is why the
runtime forks once more after this step (see init.py).
"""

from __future__ import annotations

import os

from corral import _syscalls as sc

FLAGS = {
    "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET,
    "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC,
    "uts": sc.CLONE_NEWUTS,
    "user": sc.CLONE_NEWUSER,
    "cgroup": sc.CLONE_NEWCGROUP,
    "time": sc.CLONE_NEWTIME,
}

# The names of the namespace files under /proc/PID/ns.
PROC_NAMES = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}

# Joined in this order; user first (see above), mount last.
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def configured(spec: dict) -> dict[str, str | None]:
    """Namespace type -> path to join, or None for a new one."""
    return {
        ns["type"]: ns.get("path") or None
        for ns in spec.get("linux", {}).get("namespaces") or []
    }


def open_paths(paths: dict[str, str]) -> dict[str, int]:
    """Open every namespace to be joined; the error names the path."""
    fds: dict[str, int] = {}
    try:
        for kind in JOIN_ORDER:
            if kind in paths:
                fds[kind] = os.open(paths[kind], os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        for fd in fds.values():
            os.close(fd)
        raise OSError(exc.errno, f"open namespace: {exc.strerror}", exc.filename) from None
    return fds


def join(fds: dict[str, int], paths: dict[str, str], kinds: tuple[str, ...]) -> None:
    for kind in JOIN_ORDER:
        if kind in kinds and kind in fds:
            sc.setns(fds[kind], FLAGS[kind], paths[kind])
            os.close(fds.pop(kind))


def unshare(kinds: list[str]) -> None:
    flags = 0
    for kind in kinds:
        flags |= FLAGS[kind]
    if flags:
        sc.unshare(flags)


def write_id_maps(pid: int, linux: dict) -> None:
    """Write the uid and gid maps of PID's new user namespace."""
    for key, name in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        lines = "".join(
            f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux.get(key) or []
        )
        path = f"/proc/{pid}/{name}"
        try:
            with open(path, "w") as f:
                f.write(lines)
        except OSError as exc:
            raise OSError(
                exc.errno, f"write {key} ({lines.strip()!r}): {exc.strerror}", path
            ) from None


def write_time_offsets(offsets: dict) -> None:
    """Set the clock offsets of a new time namespace, before its first process."""
    lines = "".join(
        f"{clock} {int(value.get('secs', 0))} {int(value.get('nanosecs', 0))}\n"
        for clock, value in offsets.items()
    )
    if lines:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write(lines)
