"""``events``: statistics and OOM notices of a container, from its cgroup.

Output is one JSON object per line, in runc's shape: ``{"type": "stats",
"id": ..., "data": {...}}`` every interval (or once, with ``--stats``), and
``{"type": "oom", "id": ...}`` when the kernel's OOM killer has killed a
process of the container. The stream ends when the container stops.

OOM kills are counted by the kernel: ``oom_kill`` in memory.oom_control
(v1) or memory.events (v2). We poll the counter, which needs no eventfd
plumbing and misses nothing, since a count cannot be lost.
"""

from __future__ import annotations

import os
import time

from .cgroups import V2, Cgroup
from .errors import FailedPrecondition
from .state import State


def _read(directory: str | None, name: str) -> str | None:
    if directory is None:
        return None
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read()
    except OSError:
        return None


def _int(text: str | None) -> int:
    try:
        return int((text or "0").split()[0])
    except ValueError:
        return 0  # "max"


def _keyed(text: str | None) -> dict[str, int]:
    values = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def _limit(text: str | None) -> int:
    text = (text or "").strip()
    return 0 if text in ("", "max") else _int(text)


def stats(cgroup: Cgroup) -> dict:
    """The container's figures, read from its cgroup (v1 or v2)."""
    v2 = cgroup.paths.get(V2) if len(cgroup.paths) == 1 else None
    if v2 is not None:
        return _stats_v2(v2)
    cpu = cgroup.controller_dir("cpuacct")
    memory = cgroup.controller_dir("memory")
    pids = cgroup.controller_dir("pids")
    blkio = cgroup.controller_dir("blkio")
    cpu_stat = _keyed(_read(cgroup.controller_dir("cpu"), "cpu.stat"))
    usage = _keyed(_read(cpu, "cpuacct.stat"))
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "cpu": {
            "usage": {
                "total": _int(_read(cpu, "cpuacct.usage")),
                "percpu": [int(v) for v in (_read(cpu, "cpuacct.usage_percpu") or "").split()],
                "kernel": usage.get("system", 0) * 10**9 // ticks,
                "user": usage.get("user", 0) * 10**9 // ticks,
            },
            "throttling": {
                "periods": cpu_stat.get("nr_periods", 0),
                "throttledPeriods": cpu_stat.get("nr_throttled", 0),
                "throttledTime": cpu_stat.get("throttled_time", 0),
            },
        },
        "memory": {
            "usage": {
                "usage": _int(_read(memory, "memory.usage_in_bytes")),
                "max": _int(_read(memory, "memory.max_usage_in_bytes")),
                "limit": _int(_read(memory, "memory.limit_in_bytes")),
                "failcnt": _int(_read(memory, "memory.failcnt")),
            },
            "swap": {
                "usage": _int(_read(memory, "memory.memsw.usage_in_bytes")),
                "limit": _int(_read(memory, "memory.memsw.limit_in_bytes")),
            },
            "raw": _keyed(_read(memory, "memory.stat")),
        },
        "pids": {
            "current": _int(_read(pids, "pids.current")),
            "limit": _limit(_read(pids, "pids.max")),
        },
        "blkio": {
            "ioServiceBytesRecursive": _blkio(
                _read(blkio, "blkio.throttle.io_service_bytes_recursive")),
            "ioServicedRecursive": _blkio(
                _read(blkio, "blkio.throttle.io_serviced_recursive")),
        },
    }


def _blkio(text: str | None) -> list[dict]:
    entries = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":")
            entries.append({"major": int(major), "minor": int(minor), "op": parts[1],
                            "value": int(parts[2])})
    return entries


def _stats_v2(path: str) -> dict:
    cpu = _keyed(_read(path, "cpu.stat"))
    memory = _keyed(_read(path, "memory.stat"))
    return {
        "cpu": {
            "usage": {
                "total": cpu.get("usage_usec", 0) * 1000,
                "kernel": cpu.get("system_usec", 0) * 1000,
                "user": cpu.get("user_usec", 0) * 1000,
                "percpu": [],
            },
            "throttling": {
                "periods": cpu.get("nr_periods", 0),
                "throttledPeriods": cpu.get("nr_throttled", 0),
                "throttledTime": cpu.get("throttled_usec", 0) * 1000,
            },
        },
        "memory": {
            "usage": {
                "usage": _int(_read(path, "memory.current")),
                "max": _int(_read(path, "memory.peak")),
                "limit": _limit(_read(path, "memory.max")),
                "failcnt": _keyed(_read(path, "memory.events")).get("max", 0),
            },
            "swap": {
                "usage": _int(_read(path, "memory.swap.current")),
                "limit": _limit(_read(path, "memory.swap.max")),
            },
            "raw": memory,
        },
        "pids": {
            "current": _int(_read(path, "pids.current")),
            "limit": _limit(_read(path, "pids.max")),
        },
        "blkio": {"ioServiceBytesRecursive": [], "ioServicedRecursive": []},
    }


def oom_kills(cgroup: Cgroup) -> int:
    """How many processes of the container the OOM killer has killed so far."""
    v2 = cgroup.paths.get(V2) if len(cgroup.paths) == 1 else None
    if v2 is not None:
        return _keyed(_read(v2, "memory.events")).get("oom_kill", 0)
    return _keyed(_read(cgroup.controller_dir("memory"), "memory.oom_control")).get(
        "oom_kill", 0)


def events(root: str, container_id: str, interval: float, once: bool, emit) -> None:
    """Call EMIT with each event until the container stops (or once, with stats)."""
    state = State.load(root, container_id)
    if state.status() == "stopped":
        raise FailedPrecondition("container not running")
    cgroup = Cgroup(state.record.get("cgroups") or {})
    if once:
        emit({"type": "stats", "id": container_id, "data": stats(cgroup)})
        return
    seen = oom_kills(cgroup)
    next_stats = time.monotonic()
    while True:
        kills = oom_kills(cgroup)
        if kills > seen:
            emit({"type": "oom", "id": container_id})
            seen = kills
        if time.monotonic() >= next_stats:
            emit({"type": "stats", "id": container_id, "data": stats(cgroup)})
            next_stats = time.monotonic() + interval
        if not state.init_alive():
            if oom_kills(cgroup) > seen:  # the kill that ended it
                emit({"type": "oom", "id": container_id})
            return
        time.sleep(0.05)
