"""The CNI network configuration list we generate for a bridge network.

CNI SPEC.md, "Network configuration lists": one JSON document with
``cniVersion``, ``name`` and ``plugins``, run in order on ADD and in reverse
on DEL. Ours, for every bridge network:

- ``bridge``: the Linux bridge and a veth per container; ``isGateway`` puts
  the gateway address on the bridge (where our resolver listens),
  ``hairpinMode`` lets a container reach itself through a published port.
  Not ``ipMasq``: in 1.1.1 its DEL finds the addresses to un-NAT in the
  container's namespace, so a DEL after the namespace is gone (crash
  recovery) leaves the container's NAT chain behind. Outbound NAT is one
  rule per network instead, as Docker's (`firewall.py`);
- its IPAM, ``host-local``, leasing from the subnet (``rangeStart`` and
  ``rangeEnd`` from ip_range) into a ``dataDir`` under our root, with a
  default route unless the network is internal; it accepts the ``ips``
  capability for a requested address;
- not ``portmap``: the same DNAT and SNAT rules are ours (`hostports.py`),
  one iptables-restore per container where the plugin runs iptables ~19
  times on ADD and ~18 on DEL (the mappings still go in the result cache,
  as the ``portMappings`` capability arguments, for the DEL);
- not ``firewall``: what it accepts in FORWARD per container (at one
  iptables run per rule, on every ADD and DEL) `firewall.py` accepts per
  network, as Docker does, with the isolation between networks;
- ``tuning``, only when options ask for sysctls (none by default).

The plugins are Debian's containernetworking-plugins 1.1.1: they accept
cniVersion 1.0.0. A DEL runs the list its ADD cached, whatever we generate
today.
"""

from __future__ import annotations

from .models import Network
from .subnets import Addressing

CNI_VERSION = "1.0.0"

# Docker's driver options that map onto the bridge plugin.
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
OPT_MTU = "com.docker.network.driver.mtu"
KNOWN_OPTIONS = (OPT_BRIDGE_NAME, OPT_MASQUERADE, OPT_MTU,
                 "com.docker.network.bridge.default_bridge",
                 "com.docker.network.bridge.enable_icc",
                 "com.docker.network.bridge.host_binding_ipv4")


def build(network: Network, ipam_dir: str) -> dict:
    """The configuration list of ``network``; IPAM leases go to ``ipam_dir``."""
    plugins = [_bridge(network, ipam_dir)]
    sysctls = {key[len("sysctl."):]: value for key, value in network.options.items()
               if key.startswith("sysctl.")}
    if sysctls:
        plugins.append({"type": "tuning", "sysctl": sysctls})
    return {"cniVersion": CNI_VERSION, "name": network.name,
            "plugins": plugins}


def masquerade(network: Network) -> bool:
    """Outbound NAT: on unless internal or turned off by the Docker option."""
    option = str(network.options.get(OPT_MASQUERADE, "true")).lower()
    return not network.internal and option not in ("false", "0")


def _bridge(network: Network, ipam_dir: str) -> dict:
    first, last = Addressing(network.subnet, network.gateway,
                             network.ip_range).range_bounds()
    ipam: dict = {"type": "host-local", "dataDir": ipam_dir,
                  "ranges": [[{"subnet": network.subnet, "gateway": network.gateway,
                               "rangeStart": first, "rangeEnd": last}]]}
    if not network.internal:
        ipam["routes"] = [{"dst": "0.0.0.0/0"}]
    bridge = {"type": "bridge", "bridge": network.bridge, "isGateway": True,
              "ipMasq": False, "hairpinMode": True,
              "capabilities": {"ips": True}, "ipam": ipam}
    if OPT_MTU in network.options:
        bridge["mtu"] = int(network.options[OPT_MTU])
    return bridge
