"""Invoking CNI plugins on a network configuration list (CNI SPEC.md 1.0.0).

A plugin is an executable found by its ``type`` in the plugin directories
(``CNI_PATH``). It gets its parameters in ``CNI_*`` environment variables and
its configuration on stdin, and answers a result (ADD) or nothing (DEL,
CHECK) on stdout; a failure is a non-zero exit with ``{"code", "msg",
"details"}`` on stdout. For a list, we follow the spec's "Execution of
network configuration lists":

- ADD runs the plugins in order, each given the previous plugin's result as
  ``prevResult``; the last result is the attachment's result;
- DEL runs them in reverse, each given the cached ADD result as
  ``prevResult`` (so the cache must hold what ADD ran with: the list, the
  runtime's capability arguments and the result);
- CHECK runs them in order with the cached result.

Capability arguments (``runtimeConfig``) go only to the plugins that declare
the capability in their ``capabilities`` map ("Deriving runtimeConfig").
The cache is one JSON file per attachment (libcni keeps the same in
/var/lib/cni/results), written atomically.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NetworkError, PluginError

PLUGIN_TIMEOUT = 60.0


@dataclass
class RuntimeConf:
    """What the runtime passes besides the configuration: CNI_* and runtimeConfig."""

    container_id: str
    netns: str                      # "" when the namespace is gone (DEL only)
    ifname: str
    capability_args: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """Its form in the cache."""
        return {"containerId": self.container_id, "netns": self.netns,
                "ifName": self.ifname, "capabilityArgs": self.capability_args}


class Plugins:
    """The plugin directories, searched in order (CNI_PATH)."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = [Path(d) for d in dirs]

    @property
    def cni_path(self) -> str:
        """The CNI_PATH value: plugins may call others (the IPAM plugin)."""
        return os.pathsep.join(str(d) for d in self.dirs)

    def find(self, plugin_type: str) -> Path:
        """The executable for ``plugin_type``."""
        if not plugin_type or "/" in plugin_type or plugin_type.startswith("."):
            raise NetworkError(f"find plugin '{plugin_type}': not a plugin name")
        for directory in self.dirs:
            candidate = directory / plugin_type
            if os.access(candidate, os.X_OK):
                return candidate
        raise NetworkError(f"find plugin '{plugin_type}': not found in "
                           f"{self.cni_path}")

    def invoke(self, command: str, plugin: dict, rt: RuntimeConf) -> dict:
        """Run one plugin with its full configuration; its parsed stdout."""
        path = self.find(plugin["type"])
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": rt.container_id,
               "CNI_NETNS": rt.netns, "CNI_IFNAME": rt.ifname, "CNI_ARGS": "",
               "CNI_PATH": self.cni_path,
               "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        try:
            done = subprocess.run([str(path)], input=json.dumps(plugin).encode(),
                                  env=env, capture_output=True,
                                  timeout=PLUGIN_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NetworkError(f"{command} '{plugin['type']}': {exc}") from exc
        answer = _parse(done.stdout)
        if done.returncode != 0:
            raise PluginError(command, plugin["type"],
                              int(answer.get("code", 0) or 0),
                              answer.get("msg") or done.stderr.decode(
                                  errors="replace").strip() or "failed",
                              answer.get("details", ""))
        return answer

    def add(self, conflist: dict, rt: RuntimeConf) -> dict:
        """ADD the list; the final result (spec: "prevResult" chaining)."""
        result: dict | None = None
        for plugin in conflist["plugins"]:
            result = self.invoke("ADD", _config(conflist, plugin, rt, result), rt)
        return result or {}

    def delete(self, conflist: dict, rt: RuntimeConf, result: dict | None) -> None:
        """DEL the list in reverse, each plugin given the cached result.

        Every plugin runs even if one fails (each frees its own resources);
        the first error is raised at the end.
        """
        first: NetworkError | None = None
        for plugin in reversed(conflist["plugins"]):
            try:
                self.invoke("DEL", _config(conflist, plugin, rt, result), rt)
            except NetworkError as exc:
                first = first or exc
        if first is not None:
            raise first

    def check(self, conflist: dict, rt: RuntimeConf, result: dict) -> None:
        """CHECK the list in order with the cached result."""
        ipv6 = any(":" in entry.get("address", "") for entry in result.get("ips", []))
        for plugin in conflist["plugins"]:
            try:
                self.invoke("CHECK", _config(conflist, plugin, rt, result), rt)
            except PluginError as exc:
                # portmap 1.1.1 checks its ip6tables chain even for an IPv4-only
                # result, where ADD made none: that answer says nothing.
                if ipv6 or not (plugin["type"] == "portmap"
                                and exc.msg.startswith("could not check ipv6")):
                    raise


def _config(conflist: dict, plugin: dict, rt: RuntimeConf,
            prev_result: dict | None) -> dict:
    # SPEC.md "Deriving execution configuration from plugin configuration":
    # the list's name and version are inserted; runtimeConfig carries only
    # the capabilities the plugin declares.
    config = dict(plugin)
    config["cniVersion"] = conflist["cniVersion"]
    config["name"] = conflist["name"]
    wanted = plugin.get("capabilities", {})
    runtime = {key: value for key, value in rt.capability_args.items()
               if wanted.get(key)}
    config.pop("runtimeConfig", None)
    if runtime:
        config["runtimeConfig"] = runtime
    if prev_result is not None:
        config["prevResult"] = prev_result
    return config


def _parse(stdout: bytes) -> dict:
    if not stdout.strip():
        return {}
    try:
        answer = json.loads(stdout)
    except ValueError:
        return {"msg": stdout.decode(errors="replace").strip()}
    return answer if isinstance(answer, dict) else {}


def container_address(result: dict, netns: str) -> tuple[str, int, str, str]:
    """The container's IPv4 address, prefix length, gateway and MAC in a result."""
    interfaces = result.get("interfaces", [])
    for entry in result.get("ips", []):
        if ":" in entry.get("address", ""):
            continue
        index = entry.get("interface")
        interface = interfaces[index] if index is not None and index < len(
            interfaces) else {}
        if index is not None and interface.get("sandbox", netns) != netns:
            continue
        address, _, prefix = entry["address"].partition("/")
        return address, int(prefix or 32), entry.get("gateway", ""), interface.get(
            "mac", "")
    raise NetworkError("read CNI result: no IPv4 address for the container")


class Cache:
    """The results of ADD, one file per attachment, for DEL and CHECK."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, network_id: str, container_id: str, ifname: str) -> Path:
        """Where one attachment's entry lives."""
        return self.directory / f"{network_id}-{container_id}-{ifname}.json"

    def write(self, path: Path, conflist: dict, rt: RuntimeConf,
              result: dict | None) -> None:
        """Store the entry (atomic: a temporary file renamed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"kind": "cniCacheV1", "config": conflist, "result": result,
                 **rt.to_json()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)

    def read(self, path: Path) -> tuple[dict, RuntimeConf, dict | None] | None:
        """The entry, or None if there is none."""
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        rt = RuntimeConf(entry["containerId"], entry["netns"], entry["ifName"],
                         entry.get("capabilityArgs", {}))
        return entry["config"], rt, entry.get("result")
