"""Published and exposed ports as the Docker Engine API carries them:
HostConfig.PortBindings (``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``),
Config.ExposedPorts (``{"80/tcp": {}}``) with PublishAllPorts, turned into
the ``corral.network.PortMapping`` list of an attachment, and back into
inspect's NetworkSettings.Ports and ps's Ports.

The checks are dockerd's (``invalid port specification: "x"`` for a
container or host port that is not one); a host port range on one container
port ("pick one of these") is refused, the CLI expands ``-p A-B:C-D`` into
single ports itself.
"""

from __future__ import annotations

import ipaddress

from .errors import InvalidArgument

PROTOCOLS = ("tcp", "udp", "sctp")


def split_port(key: str) -> tuple[int, str]:
    """``"80/tcp"`` (or ``"80"``) as (80, "tcp")."""
    number, _, protocol = str(key).partition("/")
    protocol = (protocol or "tcp").lower()
    if not number.isdigit() or not 0 < int(number) < 65536 or protocol not in PROTOCOLS:
        raise InvalidArgument(f"invalid port specification: \"{number}\"")
    return int(number), protocol


def _host_port(text: object) -> int:
    text = "" if text is None else str(text)
    if text == "":
        return 0
    if not text.isdigit() or int(text) > 65535:
        raise InvalidArgument(f"invalid port specification: \"{text}\"")
    return int(text)


def normalize_bindings(bindings: dict | None) -> dict | None:
    """PortBindings checked, keys as ``port/proto``, entries with both fields."""
    if not bindings:
        return bindings or {}
    result: dict = {}
    for key, entries in bindings.items():
        number, protocol = split_port(key)
        if entries is not None and not isinstance(entries, list):
            raise InvalidArgument(f"HostConfig.PortBindings.{key}: must be a list")
        checked = []
        for entry in entries or []:
            if not isinstance(entry, dict):
                raise InvalidArgument(f"HostConfig.PortBindings.{key}: entries must be "
                                      f"objects")
            host_ip = entry.get("HostIp") or ""
            if host_ip:
                try:
                    ipaddress.ip_address(host_ip)
                except ValueError:
                    raise InvalidArgument(f"invalid host IP address: {host_ip}") from None
            host_port = entry.get("HostPort") or ""
            _host_port(host_port)
            checked.append({"HostIp": host_ip, "HostPort": str(host_port)})
        result.setdefault(f"{number}/{protocol}", []).extend(checked)
    return result


def normalize_exposed(exposed: dict | None) -> dict | None:
    if not exposed:
        return exposed
    if not isinstance(exposed, dict):
        raise InvalidArgument("Config.ExposedPorts: must be an object")
    return {"{}/{}".format(*split_port(key)): {} for key in exposed}


def mappings(host: dict, config: dict) -> tuple:
    """The PortMapping list of the container's primary attachment."""
    from ..network import PortMapping

    result = []
    bindings = host.get("PortBindings") or {}
    for key, entries in bindings.items():
        number, protocol = split_port(key)
        for entry in entries or [{"HostIp": "", "HostPort": ""}]:
            result.append(PortMapping(number, protocol, entry["HostIp"] or "",
                                      _host_port(entry["HostPort"])))
    if host.get("PublishAllPorts"):
        for key in config.get("ExposedPorts") or {}:
            if key not in bindings:
                number, protocol = split_port(key)
                result.append(PortMapping(number, protocol, "", 0))
    return tuple(result)


def _all_ports(container) -> list[str]:
    keys = list(container.config.get("ExposedPorts") or {})
    keys += [k for k in container.host_config.get("PortBindings") or {} if k not in keys]
    return sorted(keys, key=split_port)


def _mapped(attachments) -> list:
    return [port for attachment in attachments for port in attachment.ports or ()]


def published(container, attached: dict, running: bool) -> dict:
    """NetworkSettings.Ports: every exposed or bound port, with its host
    addresses while it runs (None when unpublished)."""
    if not running:
        return {}
    result: dict = {key: None for key in _all_ports(container)}
    for port in _mapped(attached.values()):
        key = f"{port.container_port}/{port.protocol}"
        entry = {"HostIp": port.host_ip or "0.0.0.0", "HostPort": str(port.host_port)}
        result[key] = [*(result.get(key) or []), entry]
    return result


def list_rows(container, attachments) -> list[dict]:
    """ps's Ports: ``{"IP", "PrivatePort", "PublicPort", "Type"}`` per host
    address; ``{"PrivatePort", "Type"}`` for a port exposed only."""
    if not attachments:
        return []
    rows, seen = [], set()
    for port in _mapped(attachments):
        seen.add((port.container_port, port.protocol))
        rows.append({"IP": port.host_ip or "0.0.0.0", "PrivatePort": port.container_port,
                     "PublicPort": port.host_port, "Type": port.protocol})
    for key in _all_ports(container):
        number, protocol = split_port(key)
        if (number, protocol) not in seen:
            rows.append({"PrivatePort": number, "Type": protocol})
    return rows


def port_text(key: str, entries: list[dict] | None) -> list[str]:
    """``docker port``'s lines for one port: ``80/tcp -> 0.0.0.0:8080``."""
    return [f"{key} -> {e.get('HostIp') or '0.0.0.0'}:{e.get('HostPort')}"
            for e in entries or []]
