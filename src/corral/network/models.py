"""The records of the network layer: networks, port mappings, attachments.

A `Network` is what `docker network inspect` describes; an `Attachment` is
one container's endpoint on one network (Docker's "endpoint"), made by a CNI
ADD and kept until the matching DEL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREDEFINED = ("bridge", "host", "none")


@dataclass
class Network:
    """One network: a CNI network configuration list for driver "bridge"."""

    id: str
    name: str
    driver: str          # "bridge" | "host" | "null"
    bridge: str
    subnet: str
    gateway: str
    ip_range: str
    internal: bool
    labels: dict
    options: dict
    created: float
    dns: bool            # names resolved on it: user bridge networks only

    @property
    def predefined(self) -> bool:
        """True for "bridge", "host" and "none", which are never removed."""
        return self.name in PREDEFINED


@dataclass
class PortMapping:
    """A published port: host_ip:host_port on the host to container_port."""

    container_port: int
    protocol: str = "tcp"     # "tcp" | "udp"
    host_ip: str = ""         # "" = every address
    host_port: int = 0        # 0 = a free port chosen at attach

    def to_cni(self) -> dict:
        """The entry of the portMappings capability (CNI CONVENTIONS.md)."""
        return {"hostPort": self.host_port, "containerPort": self.container_port,
                "protocol": self.protocol, "hostIP": self.host_ip}

    @classmethod
    def from_cni(cls, entry: dict) -> PortMapping:
        """The inverse of `to_cni`."""
        return cls(int(entry["containerPort"]), entry.get("protocol", "tcp"),
                   entry.get("hostIP", ""), int(entry.get("hostPort", 0)))

    @classmethod
    def from_dict(cls, data: dict) -> PortMapping:
        """The inverse of `dataclasses.asdict`."""
        return cls(int(data["container_port"]), data.get("protocol", "tcp"),
                   data.get("host_ip", ""), int(data.get("host_port", 0)))


@dataclass
class Attachment:
    """One container on one network, as the CNI ADD result describes it."""

    network: Network
    container_id: str
    name: str
    ifname: str
    ip: str
    prefix_len: int
    gateway: str
    mac: str
    aliases: list[str] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)   # host ports resolved
