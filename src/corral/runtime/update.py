"""``update``: new resource limits for a running container.

The resources come as a linux.resources JSON object (``-r FILE``, or ``-r -``
for stdin, as containerd sends them) and/or as runc's flags, which override
the file's fields. They are written to the container's cgroup.
"""

from __future__ import annotations

import json
import sys

from .cgroups import Cgroup
from .errors import FailedPrecondition, InvalidSpec
from .spec import validate_resources
from .state import State

# flag name -> (section, key)
_FLAG_FIELDS = {
    "memory": ("memory", "limit"),
    "memory_swap": ("memory", "swap"),
    "memory_reservation": ("memory", "reservation"),
    "cpu_shares": ("cpu", "shares"),
    "cpu_quota": ("cpu", "quota"),
    "cpu_period": ("cpu", "period"),
    "cpuset_cpus": ("cpu", "cpus"),
    "cpuset_mems": ("cpu", "mems"),
    "pids_limit": ("pids", "limit"),
    "blkio_weight": ("blockIO", "weight"),
}
_TEXT_FIELDS = {"cpus", "mems"}
_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, flag: str) -> int:
    value = text.strip().lower().removesuffix("b")
    multiplier = 1
    if value and value[-1] in _SUFFIXES:
        multiplier = _SUFFIXES[value[-1]]
        value = value[:-1]
    try:
        return int(value) * multiplier
    except ValueError:
        raise InvalidSpec(f"--{flag}", f"{text!r} is not a number") from None


def resources_from(values: dict) -> dict:
    resources: dict = {}
    source = values.get("resources")
    if source:
        try:
            if source == "-":
                resources = json.load(sys.stdin)
            else:
                with open(source) as f:
                    resources = json.load(f)
        except OSError as exc:
            raise InvalidSpec("--resources", f"read '{source}': {exc.strerror}") from None
        except ValueError as exc:
            raise InvalidSpec("--resources", f"not valid JSON: {exc}") from None
        if not isinstance(resources, dict):
            raise InvalidSpec("--resources", "must be a JSON object")
    for name, (section, key) in _FLAG_FIELDS.items():
        text = values.get(name)
        if not text:
            continue
        flag = name.replace("_", "-")
        value = text if key in _TEXT_FIELDS else parse_size(text, flag)
        resources.setdefault(section, {})[key] = value
    return resources


def update(root: str, container_id: str, values: dict) -> None:
    state = State.load(root, container_id)
    if state.status() == "stopped":
        raise FailedPrecondition("container not running")
    resources = resources_from(values)
    validate_resources(resources, "--resources")
    Cgroup(state.record.get("cgroups") or {}).apply(resources, updating=True)
