"""Whether the kernel's OOM killer struck inside a container's memory cgroup.

The shim asks at each exit, before the runtime's ``delete`` removes the
cgroup: the counter is per cgroup, so a run that starts in a fresh cgroup
starts at zero. Cgroup v1 keeps it as ``oom_kill`` in
``memory.oom_control``; v2 as ``oom_kill`` in ``memory.events`` (kernel
4.13 and later, in both). Docker reports the same fact as ``OOMKilled``
and an ``oom`` event.
"""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def counter_file(pid: int) -> str:
    """The file holding the oom_kill count of ``pid``'s memory cgroup, or ""
    when it has none (no memory controller, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    unified = ""
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return os.path.join(CGROUP_ROOT, "memory", path.lstrip("/"),
                                "memory.oom_control")
        if controllers == "":
            unified = path
    if unified and os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return os.path.join(CGROUP_ROOT, unified.lstrip("/"), "memory.events")
    return ""


def killed(path: str) -> bool:
    """Whether the counter in ``path`` is above zero."""
    if not path:
        return False
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
    except (OSError, ValueError):
        pass
    return False
