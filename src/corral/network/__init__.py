"""corral.network: container networking through CNI plugins.

Networks are CNI network configuration lists we generate (bridge with
host-local IPAM; published ports and forwarding are iptables rules of our
own, hostports.py and firewall.py); a container is attached by a CNI ADD in
its own network namespace and detached by a DEL from the cached result.
Below the manager: imports nothing from corral.manager, corral.cli or
corral.shim. docs/architecture.md has the module table.
"""

from .errors import (
                     InvalidNetworkArgument,
                     NetworkConflict,
                     NetworkError,
                     NetworkNotFound,
                     PluginError,
                     PortBindFailed,
                     PortInUse,
                     PredefinedNetwork,
)
from .models import Attachment, Network, PortMapping
from .networks import Networks

__all__ = ["Attachment", "InvalidNetworkArgument", "Network", "NetworkConflict",
           "NetworkError", "NetworkNotFound", "Networks", "PluginError",
           "PortBindFailed", "PortInUse", "PortMapping", "PredefinedNetwork"]
