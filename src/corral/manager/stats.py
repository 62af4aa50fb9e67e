"""Container statistics from the cgroup, as ``GET /containers/{id}/stats``
documents (Docker Engine API, ContainerStats; the field names are Docker's
``types.StatsJSON``).

cgroup v1 (and hybrid, whose controllers are v1): ``cpuacct.usage`` and
``usage_percpu`` (ns), ``cpuacct.stat`` (USER_HZ ticks), ``cpu.stat``
(throttling), ``memory.usage_in_bytes``, ``max_usage``, ``limit``,
``failcnt`` and ``memory.stat``, ``pids.current``/``pids.max``,
``blkio.throttle.io_service_bytes``/``io_serviced``.
cgroup v2 (kernel Documentation/admin-guide/cgroup-v2.rst): ``cpu.stat``
(µs), ``memory.current``, ``memory.max``, ``memory.stat``, ``memory.events``
(oom), ``pids.*``, ``io.stat``.

``system_cpu_usage`` is the host's busy-or-idle time from /proc/stat in ns,
which clients divide the container's delta by, times ``online_cpus``.
The cgroup root is a parameter so unit tests can point it at a tmpdir.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .docker_model import format_time

CGROUP_ROOT = Path("/sys/fs/cgroup")
_TICKS = os.sysconf("SC_CLK_TCK")
_NO_LIMIT_V1 = 1 << 62


@dataclass
class Sample:
    """One reading of a cgroup."""

    read: float = 0.0
    cpu_total: int = 0
    cpu_percpu: list[int] = field(default_factory=list)
    cpu_user: int = 0
    cpu_system: int = 0
    system: int = 0
    online_cpus: int = 0
    throttling: dict = field(default_factory=lambda: {"periods": 0, "throttled_periods": 0,
                                                       "throttled_time": 0})
    memory: dict = field(default_factory=dict)
    pids: dict = field(default_factory=dict)
    blkio: dict = field(default_factory=dict)


def empty() -> Sample:
    return Sample()


def unified(root: Path = CGROUP_ROOT) -> bool:
    """Whether ``root`` is a pure cgroup v2 hierarchy."""
    return (root / "cgroup.controllers").exists()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _int(path: Path, default: int = 0) -> int:
    text = _read(path).strip()
    if text == "max":
        return default
    return int(text) if text.lstrip("-").isdigit() else default


def _keyed(text: str) -> dict[str, int]:
    pairs = (line.split() for line in text.splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


class Reader:
    """Reads the cgroup ``path`` (as in the spec's cgroupsPath) under ``root``."""

    def __init__(self, path: str, root: Path = CGROUP_ROOT) -> None:
        self.path = path.strip("/")
        self.root = root
        self.v2 = unified(root)

    def _dir(self, controller: str) -> Path:
        if self.v2:
            return self.root / self.path
        for candidate in (controller, "cpu,cpuacct", "cpuacct,cpu"):
            directory = self.root / candidate
            if controller in candidate.split(",") and directory.is_dir():
                return directory / self.path
        return self.root / controller / self.path

    def read(self) -> Sample:
        sample = Sample(read=time.time(), system=system_cpu_usage(),
                        online_cpus=len(os.sched_getaffinity(0)))
        if self.v2:
            self._read_v2(sample)
        else:
            self._read_v1(sample)
        return sample

    def _read_v1(self, sample: Sample) -> None:
        cpuacct = self._dir("cpuacct")
        sample.cpu_total = _int(cpuacct / "cpuacct.usage")
        sample.cpu_percpu = [int(v) for v in _read(cpuacct / "cpuacct.usage_percpu").split()]
        ticks = _keyed(_read(cpuacct / "cpuacct.stat"))
        sample.cpu_user = ticks.get("user", 0) * 1_000_000_000 // _TICKS
        sample.cpu_system = ticks.get("system", 0) * 1_000_000_000 // _TICKS
        cpu = _keyed(_read(self._dir("cpu") / "cpu.stat"))
        sample.throttling = {"periods": cpu.get("nr_periods", 0),
                             "throttled_periods": cpu.get("nr_throttled", 0),
                             "throttled_time": cpu.get("throttled_time", 0)}
        memory = self._dir("memory")
        limit = _int(memory / "memory.limit_in_bytes")
        sample.memory = {"usage": _int(memory / "memory.usage_in_bytes"),
                         "max_usage": _int(memory / "memory.max_usage_in_bytes"),
                         "stats": _keyed(_read(memory / "memory.stat")),
                         "failcnt": _int(memory / "memory.failcnt"),
                         "limit": _mem_total() if limit >= _NO_LIMIT_V1 or not limit
                         else limit}
        self._pids(sample, self._dir("pids"))
        blkio = self._dir("blkio")
        sample.blkio = {
            "io_service_bytes_recursive":
                _blkio(_read(blkio / "blkio.throttle.io_service_bytes")),
            "io_serviced_recursive": _blkio(_read(blkio / "blkio.throttle.io_serviced")),
        }

    def _read_v2(self, sample: Sample) -> None:
        directory = self._dir("")
        cpu = _keyed(_read(directory / "cpu.stat"))
        sample.cpu_total = cpu.get("usage_usec", 0) * 1000
        sample.cpu_user = cpu.get("user_usec", 0) * 1000
        sample.cpu_system = cpu.get("system_usec", 0) * 1000
        sample.throttling = {"periods": cpu.get("nr_periods", 0),
                             "throttled_periods": cpu.get("nr_throttled", 0),
                             "throttled_time": cpu.get("throttled_usec", 0) * 1000}
        sample.memory = {"usage": _int(directory / "memory.current"),
                         "stats": _keyed(_read(directory / "memory.stat")),
                         "limit": _int(directory / "memory.max", _mem_total())}
        self._pids(sample, directory)
        sample.blkio = {"io_service_bytes_recursive": _io_stat(
            _read(directory / "io.stat"))}

    def _pids(self, sample: Sample, directory: Path) -> None:
        sample.pids = {"current": _int(directory / "pids.current")}
        limit = _int(directory / "pids.max")
        if limit:
            sample.pids["limit"] = limit


def _blkio(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0] and parts[2].isdigit():
            major, minor = parts[0].split(":")
            entries.append({"major": int(major), "minor": int(minor), "op": parts[1],
                            "value": int(parts[2])})
    return entries


def _io_stat(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, minor = (int(n) for n in parts[0].split(":"))
        values = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        for key, op in (("rbytes", "read"), ("wbytes", "write")):
            if values.get(key, "").isdigit():
                entries.append({"major": major, "minor": minor, "op": op,
                                "value": int(values[key])})
    return entries


def system_cpu_usage(stat: Path = Path("/proc/stat")) -> int:
    """The host's total CPU time in ns (the ``cpu`` line of /proc/stat)."""
    for line in _read(stat).splitlines():
        if line.startswith("cpu "):
            ticks = sum(int(v) for v in line.split()[1:8])
            return ticks * 1_000_000_000 // _TICKS
    return 0


def _mem_total() -> int:
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_stats(sample: Sample) -> dict:
    usage = {"total_usage": sample.cpu_total, "usage_in_kernelmode": sample.cpu_system,
             "usage_in_usermode": sample.cpu_user}
    if sample.cpu_percpu:
        usage["percpu_usage"] = sample.cpu_percpu
    result = {"cpu_usage": usage, "throttling_data": sample.throttling}
    if sample.system:
        result["system_cpu_usage"] = sample.system
        result["online_cpus"] = sample.online_cpus
    return result


def document(current: Sample, previous: Sample, *, name: str, container_id: str) -> dict:
    """The stats document of ``current`` after ``previous``."""
    zero = "0001-01-01T00:00:00Z"
    return {
        "read": format_time(current.read) if current.read else zero,
        "preread": format_time(previous.read) if previous.read else zero,
        "pids_stats": current.pids,
        "blkio_stats": {"io_service_bytes_recursive": None, "io_serviced_recursive": None,
                        "io_queue_recursive": None, "io_service_time_recursive": None,
                        "io_wait_time_recursive": None, "io_merged_recursive": None,
                        "io_time_recursive": None, "sectors_recursive": None,
                        **current.blkio},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": _cpu_stats(current), "precpu_stats": _cpu_stats(previous),
        "memory_stats": current.memory,
        "name": name, "id": container_id,
    }
