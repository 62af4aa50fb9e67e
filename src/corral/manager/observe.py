"""What the engine shows of running containers: logs (the shim's json-file,
read through ``corral.shim.jsonlog``), top (``corral-runtime ps`` and the
host's ``ps``), stats (the cgroup, stats.py), events (the table the shim and
the engine write, ``corral.shim.events``), and the daemon's info and version.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

from ..shim import events as shim_events
from ..shim import jsonlog
from . import stats as cgroup_stats
from .errors import Error, InvalidArgument
from .filters import normalize

API_VERSION = "1.47"  # what corrald serves (api/app.py takes it from here)
MIN_API_VERSION = "1.24"
_EVENT_POLL = 0.1


def check_log_time(value: float | str | None) -> float | str | None:
    """A logs since/until as dockerd's timetypes.ParseTimestamps reads it
    (``SECONDS[.NANOS]``, Go's ParseInt on each part), with its error."""
    if isinstance(value, str):
        for part in value.split(".", 1):
            digits = part[1:] if part[:1] in ("+", "-") else part
            if not digits.isascii() or not digits.isdigit():
                raise InvalidArgument(f'strconv.ParseInt: parsing "{part}": invalid '
                                      f'syntax')
    return value


class Observing:
    """Mixin of Engine: the read-only views of containers."""

    def logs(self, ref: str, *, stdout: bool = True, stderr: bool = True,
             follow: bool = False, since: float | str | None = None,
             until: float | str | None = None, tail: int | None = None,
             timestamps: bool = False) -> Iterator[tuple[int, bytes]]:
        """``GET /containers/{id}/logs``: ``(stream, line)`` pairs."""
        container = self.resolve(ref)
        since, until = check_log_time(since), check_log_time(until)
        path = self.directory(container.id) / f"{container.id}-json.log"

        def running() -> bool:
            try:
                return self.state(self.records.get(container.id)).running
            except Error:
                return False

        return jsonlog.read_logs(str(path), stdout=stdout, stderr=stderr, since=since,
                                 until=until, tail=tail, follow=follow,
                                 timestamps=timestamps, is_running=running)

    def top(self, ref: str, ps_args: str = "-ef") -> dict:
        """``GET /containers/{id}/top``: the host's ``ps`` rows of the
        container's processes, as Docker does it."""
        container, _ = self._running(ref)
        from . import shims

        listed = shims.runtime(self.runtime_root, "ps", "--format", "json", container.id)
        import json

        pids = {int(pid) for pid in json.loads(listed.stdout or "[]")}
        try:
            output = subprocess.run(["ps", *ps_args.split()], capture_output=True,
                                    text=True, check=True).stdout
        except subprocess.CalledProcessError as exc:
            # dockerd's words and status (500): the first line ps wrote.
            first = (exc.stderr.strip().splitlines() or [str(exc)])[0]
            raise Error(f"ps: {first}") from exc
        return parse_ps(output, pids)

    def stats(self, ref: str, *, stream: bool = True) -> Iterator[dict]:
        """``GET /containers/{id}/stats``: one document a second (or one)."""
        container = self.resolve(ref)
        reader = cgroup_stats.Reader(f"/corral/{container.id}")
        previous = cgroup_stats.empty()
        while True:
            state = self.state(self.records.get(container.id))
            current = reader.read() if state.running else cgroup_stats.empty()
            document = cgroup_stats.document(current, previous, name=f"/{container.name}",
                                             container_id=container.id)
            yield document
            if not stream or not state.running:
                return
            previous = current
            time.sleep(1)

    def events(self, *, since: float | None = None, until: float | None = None,
               filters: dict | None = None) -> Iterator[dict]:
        """``GET /events``: past events from ``since``, then new ones as they
        come, until ``until`` (for ever without it). With neither, as Docker,
        only the events from now on: no history."""
        wanted = normalize_event_filters(filters)
        after = 0
        if since is None and until is None:
            since = time.time()
        since_nano = None if since is None else int(since * 1e9)
        until_nano = None if until is None else int(until * 1e9)
        while True:
            for event in shim_events.read(str(self.events_db), after_id=after,
                                          since_nano=since_nano, until_nano=until_nano):
                after = event.pop("_id")
                if _event_matches(event, wanted):
                    yield event
            if until is not None and time.time() >= until:
                return
            time.sleep(_EVENT_POLL)

    def info(self) -> dict:
        """``GET /info``: the counts and host facts clients show."""
        states = [self.state(c).status for c in self.records.all()
                  if c.mark == "created"]
        return {
            "ID": "", "Containers": len(states),
            "ContainersRunning": sum(s in ("running", "restarting") for s in states),
            "ContainersPaused": states.count("paused"),
            "ContainersStopped": sum(s in ("created", "exited", "dead") for s in states),
            "Images": len(self.store.list()), "Driver": self.store.snapshots.name,
            "DockerRootDir": str(self.root), "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if cgroup_stats.unified() else "1",
            "KernelVersion": os.uname().release, "OperatingSystem": _os_name(),
            "OSType": "linux", "Architecture": os.uname().machine,
            "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(),
            "Name": os.uname().nodename, "ServerVersion": _version(),
            "DefaultRuntime": "corral", "Runtimes": {"corral": {"path": "corral-runtime"}},
            "LoggingDriver": "json-file", "SecurityOptions": ["name=seccomp,profile=default"],
            "InitBinary": "corral-init", "Warnings": [],
        }

    def version(self) -> dict:
        """``GET /version``."""
        import platform

        machine = os.uname().machine
        common = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                  "Os": "linux", "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                      machine, machine),
                  "KernelVersion": os.uname().release,
                  "GoVersion": f"python{platform.python_version()}"}
        return {"Platform": {"Name": "Corral"}, "Version": _version(), **common,
                "GitCommit": "", "BuildTime": "",
                "Components": [{"Name": "Engine", "Version": _version(),
                                "Details": {**common, "GitCommit": "", "BuildTime": "",
                                            "Experimental": "false"}}]}


def parse_ps(output: str, pids: set[int]) -> dict:
    """``{"Titles", "Processes"}`` of the rows of ``output`` whose PID is in ``pids``."""
    lines = output.splitlines()
    if not lines:
        raise Error("ps: no output")
    titles = lines[0].split()
    if "PID" not in titles:
        raise Error("Couldn't find PID field in ps output")
    column = titles.index("PID")
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in pids:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}


def normalize_event_filters(filters: dict | None) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, values in (filters or {}).items():
        if isinstance(values, dict):
            values = [value for value, on in values.items() if on]
        result[key] = list(values)
    return result


def _event_matches(event: dict, wanted: dict[str, list[str]]) -> bool:
    attributes = event["Actor"]["Attributes"]
    checks = {
        "type": lambda v: event["Type"] == v,
        "event": lambda v: event["Action"].split(":")[0] == v,
        "container": lambda v: event["Type"] == "container"
        and (event["Actor"]["ID"].startswith(v) or attributes.get("name") == v),
        "image": lambda v: attributes.get("image") == v,
        "label": lambda v: attributes.get(v.partition("=")[0]) == v.partition("=")[2]
        if "=" in v else v in attributes,
    }
    return all(not wanted.get(key) or any(check(v) for v in wanted[key])
               for key, check in checks.items())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("corral")
    except PackageNotFoundError:
        return "0.0.0"


def _os_name() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _mem_total() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


__all__ = ["Observing", "normalize", "parse_ps"]
