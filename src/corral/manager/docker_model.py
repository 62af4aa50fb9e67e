"""Docker Engine API models: the body of ``POST /containers/create`` parsed
and checked, and the documents of ``GET /containers/{id}/json`` (inspect)
and ``GET /containers/json`` (ps) shaped as Docker 20.10 to 25 shape them,
with every field the docker CLI and docker-py read.

Docker decodes the create body with Go's encoding/json into its
``container.Config`` and ``container.HostConfig`` structs; a field of the
wrong type fails with Go's message, which clients show, so we give the same
one. Unlike Docker we refuse a HostConfig key we do not know (a typo would
otherwise be silently ignored), and a known option we do not implement when
it is set to anything but its zero value.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field

from .errors import InvalidArgument
from .volumes_model import inspect_mounts

# Kinds of field: Go type as Docker declares it, and what JSON it takes.
S, B, N, NI, NB = "string", "bool", "int64", "*int64", "*bool"
LS, SS, M, LD, OB, LI = "[]string", "strslice.StrSlice", "map", "[]object", "object", "[]int"

_GO_TYPES = {S: "string", B: "bool", N: "int64", NI: "int64", NB: "bool", LS: "[]string",
             SS: "strslice.StrSlice", M: "map[string]string", LD: "[]struct",
             OB: "struct", LI: "[]uint"}

CONFIG_FIELDS = {
    "Hostname": S, "Domainname": S, "User": S, "AttachStdin": B, "AttachStdout": B,
    "AttachStderr": B, "ExposedPorts": OB, "Tty": B, "OpenStdin": B, "StdinOnce": B,
    "Env": LS, "Cmd": SS, "Healthcheck": OB, "ArgsEscaped": B, "Image": S,
    "Volumes": OB, "WorkingDir": S, "Entrypoint": SS, "NetworkDisabled": B,
    "MacAddress": S, "OnBuild": LS, "Labels": M, "StopSignal": S, "StopTimeout": NI,
    "Shell": SS,
}

HOST_CONFIG_FIELDS = {
    "Binds": LS, "ContainerIDFile": S, "LogConfig": OB, "NetworkMode": S,
    "PortBindings": OB, "RestartPolicy": OB, "AutoRemove": B, "VolumeDriver": S,
    "VolumesFrom": LS, "ConsoleSize": LI, "Annotations": M, "CapAdd": LS,
    "CapDrop": LS, "CgroupnsMode": S, "Dns": LS, "DnsOptions": LS, "DnsSearch": LS,
    "ExtraHosts": LS, "GroupAdd": LS, "IpcMode": S, "Cgroup": S, "Links": LS,
    "OomScoreAdj": N, "PidMode": S, "Privileged": B, "PublishAllPorts": B,
    "ReadonlyRootfs": B, "SecurityOpt": LS, "StorageOpt": M, "Tmpfs": M,
    "UTSMode": S, "UsernsMode": S, "ShmSize": N, "Sysctls": M, "Runtime": S,
    "Isolation": S, "CpuShares": N, "Memory": N, "NanoCpus": N, "CgroupParent": S,
    "BlkioWeight": N, "BlkioWeightDevice": LD, "BlkioDeviceReadBps": LD,
    "BlkioDeviceWriteBps": LD, "BlkioDeviceReadIOps": LD, "BlkioDeviceWriteIOps": LD,
    "CpuPeriod": N, "CpuQuota": N, "CpuRealtimePeriod": N, "CpuRealtimeRuntime": N,
    "CpusetCpus": S, "CpusetMems": S, "Devices": LD, "DeviceCgroupRules": LS,
    "DeviceRequests": LD, "KernelMemory": N, "KernelMemoryTCP": N,
    "MemoryReservation": N, "MemorySwap": N, "MemorySwappiness": NI,
    "OomKillDisable": NB, "PidsLimit": NI, "Ulimits": LD, "CpuCount": N,
    "CpuPercent": N, "IOMaximumIOps": N, "IOMaximumBandwidth": N, "Mounts": LD,
    "MaskedPaths": LS, "ReadonlyPaths": LS, "Init": NB,
}

# Known options the engine does not implement yet: refused unless zero.
# TODO: links and devices come later; until then `docker run --link/--device`
# fails with 400 (VolumeDriver: only the local driver exists).
UNSUPPORTED = (
    "ContainerIDFile", "VolumeDriver", "Links", "StorageOpt", "UsernsMode", "CgroupParent", "BlkioWeight",
    "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CpuRealtimePeriod",
    "CpuRealtimeRuntime", "Devices", "DeviceCgroupRules", "DeviceRequests",
    "KernelMemory", "KernelMemoryTCP", "CpuCount", "CpuPercent", "IOMaximumIOps",
    "IOMaximumBandwidth", "Cgroup",
)

_CHOICES = {
    "IpcMode": ("", "private", "shareable", "host"),
    "PidMode": ("", "host"),
    "UTSMode": ("", "host"),
    "CgroupnsMode": ("", "private", "host"),
    "Isolation": ("", "default"),
    "Runtime": ("", "corral", "runc"),
}
RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")
LOG_OPTIONS = ("max-size", "max-file")


@dataclass
class CreateRequest:
    """A checked create body: ``config`` has every Config field (zero values
    filled), ``host_config`` every HostConfig field, as inspect shows them."""

    config: dict
    host_config: dict
    networking_config: dict = field(default_factory=dict)


def check_create(body: object) -> CreateRequest:
    """Parse the create body; InvalidArgument naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"json: cannot unmarshal {_json_type(body)} into Go value "
                              f"of type container.CreateRequest")
    config = {}
    for key, kind in CONFIG_FIELDS.items():
        config[key] = _check(body.get(key), kind, f"Config.{key}")
    host = body.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise InvalidArgument(f"json: cannot unmarshal {_json_type(host)} into Go struct "
                              f"field CreateRequest.HostConfig of type container.HostConfig")
    for key in host:
        if key not in HOST_CONFIG_FIELDS:
            raise InvalidArgument(f"HostConfig.{key}: unknown option")
    host_config = {key: _check(host.get(key), kind, f"HostConfig.{key}")
                   for key, kind in HOST_CONFIG_FIELDS.items()}
    _check_host_values(host_config)
    if host_config["UTSMode"] == "host" and config["Hostname"]:
        raise InvalidArgument("conflicting options: hostname and the UTS mode")
    networking = body.get("NetworkingConfig") or {}
    if not isinstance(networking, dict):
        raise InvalidArgument("NetworkingConfig: must be an object")
    _fill_host_defaults(host_config)
    return CreateRequest(config, host_config, networking)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _bad(value: object, kind: str, where: str) -> InvalidArgument:
    shown = _json_type(value)
    if shown == "number" and kind in (N, NI):
        shown = f"number {value}"
    return InvalidArgument(f"json: cannot unmarshal {shown} into Go struct field "
                           f"{where} of type {_GO_TYPES[kind]}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(value: object, kind: str, where: str) -> object:
    """``value`` checked as Go would decode it into ``kind``; its zero value if absent."""
    if value is None:
        return {S: "", B: False, N: 0}.get(kind)
    ok = {
        S: isinstance(value, str), B: isinstance(value, bool), NB: isinstance(value, bool),
        N: _is_int(value), NI: _is_int(value), OB: isinstance(value, dict),
        LS: isinstance(value, list) and all(isinstance(v, str) for v in value),
        SS: isinstance(value, str) or (isinstance(value, list)
                                       and all(isinstance(v, str) for v in value)),
        M: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
        LD: isinstance(value, list) and all(isinstance(v, dict) for v in value),
        LI: isinstance(value, list) and all(_is_int(v) and v >= 0 for v in value),
    }[kind]
    if not ok:
        raise _bad(value, kind, where)
    if kind == SS and isinstance(value, str):
        return [value]
    return copy.deepcopy(value)


def _check_host_values(host: dict) -> None:
    for key in UNSUPPORTED:
        if host[key] not in (None, "", 0, False, [], {}):
            raise InvalidArgument(f"HostConfig.{key}: not supported by corral yet")
    for key, choices in _CHOICES.items():
        if host[key] not in choices:
            raise InvalidArgument(f"HostConfig.{key}: '{host[key]}' is not supported "
                                  f"(one of {', '.join(c for c in choices if c)})")
    for key in ("Memory", "MemoryReservation", "CpuShares", "ShmSize", "CpuPeriod",
                "CpuQuota"):
        if host[key] < 0:
            raise InvalidArgument(f"HostConfig.{key}: must not be negative")
    if 0 < host["Memory"] < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if host["MemorySwap"] > 0 and host["Memory"] and host["MemorySwap"] < host["Memory"]:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory "
                              "limit, see usage")
    if host["NanoCpus"] and (host["CpuQuota"] or host["CpuPeriod"]):
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both "
                              "be set")
    _check_nano_cpus(host["NanoCpus"])
    _check_restart(host["RestartPolicy"], host["AutoRemove"])
    _check_log_config(host["LogConfig"])
    _check_ulimits(host["Ulimits"] or [])


def _check_nano_cpus(nano_cpus: int) -> None:
    # Go's runtime.NumCPU, which dockerd counts by: the CPUs we may run on.
    # As dockerd, no lower bound: a quota under the kernel's 1 ms fails the
    # start (the message's 0.01 is Windows').
    count = len(os.sched_getaffinity(0))
    if nano_cpus < 0 or nano_cpus > count * 1_000_000_000:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {count}.00, as there are "
                              f"only {count} CPUs available")


def _check_restart(policy: dict | None, auto_remove: bool) -> None:
    if not policy:
        return
    name = policy.get("Name", "")
    count = policy.get("MaximumRetryCount", 0)
    if name not in RESTART_POLICIES:
        raise InvalidArgument(f"invalid restart policy '{name}'")
    if not _is_int(count) or count < 0:
        raise InvalidArgument("HostConfig.RestartPolicy.MaximumRetryCount: must be a "
                              "non-negative integer")
    if count and name != "on-failure":
        raise InvalidArgument(f"maximum retry count cannot be used with restart policy "
                              f"'{name}'")
    if auto_remove and name not in ("", "no"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")


def _check_log_config(log: dict | None) -> None:
    if not log:
        return
    kind = log.get("Type") or "json-file"
    if kind != "json-file":
        raise InvalidArgument(f"HostConfig.LogConfig.Type: log driver '{kind}' is not "
                              f"supported (json-file)")
    options = log.get("Config") or {}
    if not isinstance(options, dict):
        raise InvalidArgument("HostConfig.LogConfig.Config: must be an object")
    for key, value in options.items():
        if key not in LOG_OPTIONS:
            raise InvalidArgument(f"unknown log opt '{key}' for json-file log driver")
        if not isinstance(value, str):
            raise InvalidArgument(f"HostConfig.LogConfig.Config.{key}: must be a string")
        parse_size(value) if key == "max-size" else _positive(value, key)


def _positive(text: str, key: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument(f"invalid value for log opt '{key}': {text}")
    return int(text)


def parse_size(text: str) -> int:
    """``10m`` and friends as Docker's units.RAMInBytes reads them."""
    units = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    lowered = text.strip().lower().removesuffix("b") if len(text) > 1 else text
    number = lowered.rstrip("kmgt")
    unit = lowered[len(number):]
    try:
        value = float(number)
    except ValueError:
        raise InvalidArgument(f"invalid size: '{text}'") from None
    if unit not in units or value < 0:
        raise InvalidArgument(f"invalid size: '{text}'")
    return int(value * units[unit])


def _check_ulimits(ulimits: list[dict]) -> None:
    for index, limit in enumerate(ulimits):
        name, soft, hard = limit.get("Name"), limit.get("Soft"), limit.get("Hard")
        if not isinstance(name, str) or not _is_int(soft) or not _is_int(hard):
            raise InvalidArgument(f"HostConfig.Ulimits[{index}]: needs Name, Soft and "
                                  f"Hard")
        if soft > hard:
            raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard "
                                  f"limit: {soft} > {hard}")


def _fill_host_defaults(host: dict) -> None:
    """The values Docker's inspect shows for what the client left out."""
    host["NetworkMode"] = host["NetworkMode"] or "default"
    host["RestartPolicy"] = {"Name": (host["RestartPolicy"] or {}).get("Name") or "no",
                             "MaximumRetryCount":
                                 (host["RestartPolicy"] or {}).get("MaximumRetryCount", 0)}
    log = host["LogConfig"] or {}
    host["LogConfig"] = {"Type": log.get("Type") or "json-file",
                         "Config": dict(log.get("Config") or {})}
    host["ConsoleSize"] = host["ConsoleSize"] or [0, 0]
    host["IpcMode"] = host["IpcMode"] or "private"
    host["CgroupnsMode"] = host["CgroupnsMode"] or "host"
    host["ShmSize"] = host["ShmSize"] or 64 * 1024 * 1024
    host["OomKillDisable"] = bool(host["OomKillDisable"])
    if host["Ulimits"] is None:
        host["Ulimits"] = None


# Documents -------------------------------------------------------------------

@dataclass
class State:
    """The dynamic state of a container, as inspect's ``State`` has it."""

    status: str = "created"     # created running paused restarting exited removing dead
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    oom_killed: bool = False
    restart_count: int = 0

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    def document(self) -> dict:
        return {"Status": self.status, "Running": self.running,
                "Paused": self.status == "paused",
                "Restarting": self.status == "restarting",
                "OOMKilled": self.oom_killed, "Dead": self.status == "dead",
                "Pid": self.pid if self.running else 0, "ExitCode": self.exit_code,
                "Error": self.error, "StartedAt": self.started_at,
                "FinishedAt": self.finished_at}


def human_duration(seconds: float) -> str:
    """Go's units.HumanDuration, which ``Status`` is written with."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def status_text(state: State, now: float | None = None) -> str:
    """ps's ``Status`` column: ``Up 5 seconds``, ``Exited (0) 2 minutes ago``."""
    now = time.time() if now is None else now
    if state.status in ("running", "paused"):
        text = f"Up {human_duration(now - parse_time(state.started_at))}"
        return f"{text} (Paused)" if state.status == "paused" else text
    if state.status == "restarting":
        ago = human_duration(now - parse_time(state.finished_at))
        return f"Restarting ({state.exit_code}) {ago} ago"
    if state.status == "exited":
        if parse_time(state.finished_at) <= 0:
            return f"Exited ({state.exit_code})"
        ago = human_duration(now - parse_time(state.finished_at))
        return f"Exited ({state.exit_code}) {ago} ago"
    return {"created": "Created", "removing": "Removal In Progress",
            "dead": "Dead"}.get(state.status, state.status)


def format_time(when: float) -> str:
    """RFC 3339 with nanoseconds in UTC, as Docker writes times."""
    seconds = int(when)
    nanos = int(round((when - seconds) * 1e9))
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{nanos:09d}Z"


def parse_time(text: str) -> float:
    """The Unix time of an RFC 3339 stamp; 0 for Go's zero time or junk."""
    import datetime

    if not text or text.startswith("0001-"):
        return 0.0
    main, _, rest = text.partition(".")
    fraction = ""
    zone = rest
    if rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
    else:
        main, zone = text[:19], text[19:]
    zone = "+00:00" if zone in ("Z", "") else zone
    try:
        stamp = datetime.datetime.fromisoformat(main[:19] + zone)
    except ValueError:
        return 0.0
    return stamp.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def command_text(path: str, args: list[str]) -> str:
    """ps's ``Command``: the program and its arguments joined by spaces."""
    return " ".join([path, *args]) if args else path


def merged_config(request: CreateRequest, image_config: dict, *, hostname: str,
                  env: list[str], image_ref: str) -> dict:
    """The ``Config`` inspect shows: the request over the image's config."""
    config = dict(request.config)
    given_entrypoint = config["Entrypoint"] is not None
    config["Hostname"] = hostname
    config["Image"] = image_ref
    config["Env"] = env
    if not given_entrypoint:
        config["Entrypoint"] = image_config.get("Entrypoint")
        if not config["Cmd"]:
            config["Cmd"] = image_config.get("Cmd")
    for key in ("WorkingDir", "User", "StopSignal"):
        if not config[key] and image_config.get(key):
            config[key] = image_config[key]
    for key in ("Volumes", "ExposedPorts"):
        if config[key] is None and image_config.get(key):
            config[key] = image_config[key]
    config["Labels"] = {**(image_config.get("Labels") or {}), **(config["Labels"] or {})}
    if not config["StopSignal"]:
        del config["StopSignal"]
    if config["StopTimeout"] is None:
        del config["StopTimeout"]
    for key in ("Healthcheck", "Shell", "MacAddress", "NetworkDisabled"):
        if not config[key]:
            del config[key]
    return config


def inspect_document(container, state: State, *, directory: str, exec_ids: list[str],
                     driver: str, size: tuple[int, int] | None = None) -> dict:
    """``GET /containers/{id}/json`` for a record and its state."""
    document = container.document
    name = container.name
    result = {
        "Id": container.id, "Created": format_time(container.created),
        "Path": document["path"], "Args": document["args"],
        "State": state.document(), "Image": container.image_id,
        "ResolvConfPath": f"{directory}/resolv.conf",
        "HostnamePath": f"{directory}/hostname", "HostsPath": f"{directory}/hosts",
        "LogPath": f"{directory}/{container.id}-json.log", "Name": f"/{name}",
        "RestartCount": state.restart_count, "Driver": driver, "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": exec_ids or None, "HostConfig": container.host_config,
        "GraphDriver": {"Name": driver, "Data": None},
        "Mounts": inspect_mounts(document),
        "Config": container.config,
        "NetworkSettings": _network_settings(container.host_config),
    }
    if size is not None:
        result["SizeRw"], result["SizeRootFs"] = size
    return result


def list_row(container, state: State, *, size: tuple[int, int] | None = None,
             now: float | None = None) -> dict:
    """One entry of ``GET /containers/json``."""
    document = container.document
    mode = container.host_config["NetworkMode"]
    row = {
        "Id": container.id, "Names": [f"/{container.name}"],
        "Image": container.image_ref, "ImageID": container.image_id,
        "Command": command_text(document["path"], document["args"]),
        "Created": int(container.created), "Ports": [],
        "Labels": container.config.get("Labels") or {},
        "State": state.status, "Status": status_text(state, now),
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": _network_settings(container.host_config)
                            ["Networks"]},
        "Mounts": inspect_mounts(document),
    }
    if size is not None:
        row["SizeRw"], row["SizeRootFs"] = size
    return row


def _network_settings(host: dict) -> dict:
    # TODO: no network layer yet: every container has only its loopback (or
    # the host's network), so there is no address, gateway or port to show.
    mode = host["NetworkMode"]
    shown = "bridge" if mode == "default" else mode
    endpoint = {"IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "",
                "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "MacAddress": "", "DriverOpts": None}
    return {"Bridge": "", "SandboxID": "", "HairpinMode": False,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Ports": {},
            "SandboxKey": "", "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None, "EndpointID": "", "Gateway": "",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
            "Networks": {shown: endpoint}}
