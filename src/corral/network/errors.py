"""The errors of the network layer, one class per way a caller must react.

::

    NetworkError                    anything the network layer refuses or fails at
     ├── NetworkNotFound            no network by that name, ID or ID prefix (404)
     ├── NetworkConflict            name taken, subnet overlap, still in use (409)
     │    └── PredefinedNetwork     "bridge", "host" and "none" are not removed (403)
     ├── PortInUse                  a host port published or bound already (409/500)
     │    └── PortBindFailed        the bind check failed with an errno (500)
     ├── InvalidNetworkArgument     bad CIDR, gateway or range outside, bad driver (400)
     └── PluginError                a CNI plugin failed: its code, msg and details

Messages that clients show are Docker's own words; the rest follow
docs/dev/errors.md (`<operation> '<object>': <cause>`).
"""

from __future__ import annotations

import os


class NetworkError(Exception):
    """Base of every error the network layer raises."""


class NetworkNotFound(NetworkError):
    """No network matches the reference."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"network {ref} not found")
        self.ref = ref


class NetworkConflict(NetworkError):
    """The request collides with a network, an attachment or an address."""


class PredefinedNetwork(NetworkConflict):
    """The default networks cannot be removed (Docker answers 403)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is a pre-defined network and cannot be removed")
        self.name = name


class PortInUse(NetworkError):
    """A host port is published by another container or bound on the host."""

    def __init__(self, host_ip: str, host_port: int) -> None:
        shown = host_ip or "0.0.0.0"
        super().__init__(
            f"Bind for {shown}:{host_port} failed: port is already allocated")
        self.host_ip = host_ip
        self.host_port = host_port


class PortBindFailed(PortInUse):
    """The bind check of a host port failed: a host socket holds it
    (EADDRINUSE), the host has no such address (EADDRNOTAVAIL), or another
    errno. The message is what docker-proxy reports to dockerd; the manager
    puts the endpoint in front of it, as dockerd's bridge driver does."""

    def __init__(self, host_ip: str, host_port: int, protocol: str,
                 errno: int) -> None:
        shown = host_ip or "0.0.0.0"
        cause = os.strerror(errno)
        # Go's syscall error texts, which dockerd shows, start in lowercase.
        cause = cause[:1].lower() + cause[1:]
        NetworkError.__init__(
            self, f"Error starting userland proxy: listen {protocol}4 "
            f"{shown}:{host_port}: bind: {cause}")
        self.host_ip, self.host_port = host_ip, host_port
        self.protocol, self.errno = protocol, errno


class InvalidNetworkArgument(NetworkError):
    """An argument that no network could satisfy."""


class PluginError(NetworkError):
    """A CNI plugin answered with an error (CNI spec, "Error" result)."""

    def __init__(self, operation: str, plugin: str, code: int, msg: str,
                 details: str = "") -> None:
        cause = f"{msg}: {details}" if details else msg
        super().__init__(f"{operation} '{plugin}': {cause}")
        self.plugin = plugin
        self.code = code
        self.msg = msg
        self.details = details
