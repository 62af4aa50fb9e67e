"""`Networks`: the network layer's one entry point, for corrald, the CLI and CRI.

Every public method is safe across processes working on one root: records
are in SQLite (WAL), and each change that spans plugin calls or iptables
runs under an exclusive flock on ROOT/network.lock, taken per call (flock
also serializes the threads of one process, each opening the file anew).

Paths:

    ROOT/networks.db                 networks and attachments (store.py)
    ROOT/cni/results/NET-CTR-IF.json the CNI result cache (cni.py)
    ROOT/cni/ipam/NAME/              host-local's leases for network NAME
    RUN/netns/CTR                    a container's network namespace (netns.py)
    RUN/resolvers/NET.pid            a network's name resolver (resolvers.py)
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import secrets
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from . import cni, conflist, firewall, hostports, netns, resolvers, subnets
from . import ports as host_ports
from .errors import (
    InvalidNetworkArgument,
    NetworkConflict,
    NetworkError,
    NetworkNotFound,
    PredefinedNetwork,
)
from .models import Attachment, Network, PortMapping
from .store import Store

DEFAULT_PLUGIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")


class Networks:
    """Networks and container attachments, through CNI plugins."""

    def __init__(self, root: Path, run: Path, *, default_bridge: str = "corral0",
                 default_subnet: str = "10.88.0.0/16",
                 plugin_dirs: Sequence[Path] = DEFAULT_PLUGIN_DIRS) -> None:
        self.root, self.run = Path(root), Path(run)
        self.root.mkdir(parents=True, exist_ok=True)
        self.plugins = cni.Plugins(plugin_dirs)
        self.cache = cni.Cache(self.root / "cni" / "results")
        self.ipam_dir = self.root / "cni" / "ipam"
        self.netns_dir = self.run / "netns"
        self.resolvers = resolvers.Resolvers(self.run / "resolvers",
                                             self.root / "networks.db")
        self.store = Store(self.root / "networks.db")
        self._predefine(default_bridge, default_subnet)

    def close(self) -> None:
        """Release the database connection."""
        self.store.close()

    # -- networks ---------------------------------------------------------

    def get(self, ref: str) -> Network:
        """The network by full ID, then name, then unique ID prefix (Docker's order).

        Raises:
            NetworkNotFound: nothing matches, or a prefix matches several.
        """
        found = self.store.networks()
        for match in ([n for n in found if n.id == ref],
                      [n for n in found if n.name == ref],
                      [n for n in found if ref and n.id.startswith(ref)]):
            if len(match) == 1:
                return match[0]
            if len(match) > 1:
                raise NetworkNotFound(ref)
        raise NetworkNotFound(ref)

    def list(self) -> list[Network]:
        """Every network, the predefined "bridge", "host" and "none" included."""
        return self.store.networks()

    def create(self, name: str, *, driver: str = "bridge", subnet: str | None = None,
               gateway: str | None = None, ip_range: str | None = None,
               internal: bool = False, labels: dict | None = None,
               options: dict | None = None) -> Network:
        """A new bridge network (its bridge appears with the first attach).

        Raises:
            InvalidNetworkArgument: a bad name, driver, CIDR, gateway or range.
            NetworkConflict: the name is taken, or the subnet overlaps.
        """
        options = {str(k): str(v) for k, v in (options or {}).items()}
        _check_create(name, driver, subnet, gateway, ip_range)
        with self._locked():
            network = self._new_network(name, subnet, gateway, ip_range, internal,
                                        labels or {}, options)
            self.store.insert_network(network)
            try:
                firewall.add_network(network)
            except NetworkError:
                self.store.delete_network(network.id)
                raise
        return network

    def remove(self, ref: str) -> None:
        """Remove a network with no attachments, its bridge, rules and leases.

        Raises:
            PredefinedNetwork: "bridge", "host" or "none".
            NetworkConflict: containers are still attached.
        """
        network = self.get(ref)
        if network.predefined:
            raise PredefinedNetwork(network.name)
        with self._locked():
            if self.store.attachments(self._by_id(), network_id=network.id):
                raise NetworkConflict(
                    f"error while removing network: network {network.name} id "
                    f"{network.id} has active endpoints")
            self._teardown(network)

    def prune(self) -> list[str]:
        """Remove every user network without attachments; their names."""
        removed = []
        with self._locked():
            used = {a.network.id for a, _ in self.store.attachments(self._by_id())}
            for network in self.store.networks():
                if not network.predefined and network.id not in used:
                    self._teardown(network)
                    removed.append(network.name)
        return removed

    def teardown(self, *, keep: Collection[str] = ()) -> None:
        """Every bridge network of this root off the host, the default one's
        too (resolvers, rules, bridges, leases, records), but for those on the
        bridges named in ``keep``: for a root that is being thrown away, such
        as a test's. Attachments are not looked at."""
        with self._locked():
            for network in self.store.networks():
                if network.driver == "bridge" and network.bridge not in keep:
                    self._teardown(network)

    # -- namespaces -------------------------------------------------------

    def create_netns(self, container_id: str) -> Path:
        """RUN/netns/ID: a new network namespace with its loopback up."""
        with self._locked():
            return netns.create(self.netns_dir, container_id)

    def remove_netns(self, container_id: str) -> None:
        """Unmount and delete RUN/netns/ID; nothing if it is gone."""
        netns.remove(self.netns_dir, container_id)

    # -- attachments ------------------------------------------------------

    def attach(self, ref: str, container_id: str, netns_path: Path, *, name: str,
               ifname: str = "eth0", aliases: Sequence[str] = (),
               ip: str | None = None,
               ports: Sequence[PortMapping] = ()) -> Attachment:
        """Connect a container's namespace to a network (CNI ADD).

        Raises:
            NetworkNotFound: no such network.
            InvalidNetworkArgument: the network is "host" or "none", or a bad
                address or port.
            NetworkConflict: already attached, or the address is taken.
            PortInUse: a host port is published or bound already.
            NetworkError: a plugin failed; nothing of the attach is left.
        """
        network = self.get(ref)
        _check_attachable(network, ip)
        # The host's lock after the root's (always in this order): the
        # claim of host ports and their publish are one step for every root.
        with self._locked(), (hostports.host_lock() if ports
                              else contextlib.nullcontext()):
            mappings = self._claim(network, container_id, ip, ports)
            attachment = self._add(network, container_id, str(netns_path), ifname,
                                   ip, mappings)
            attachment = replace(attachment, name=name, aliases=list(aliases))
            try:
                if network.dns:
                    self.resolvers.ensure(network)
                self.store.insert_attachment(attachment, str(netns_path))
            except BaseException:
                self._delete(network, container_id, ifname)
                raise
        return attachment

    def detach(self, ref: str, container_id: str) -> None:
        """Disconnect (CNI DEL from the cache); idempotent, the netns may be gone."""
        network = self.get(ref)
        with self._locked():
            found = self.store.attachments(self._by_id(), container_id=container_id,
                                           network_id=network.id)
            ifname = found[0][0].ifname if found else "eth0"
            self._delete(network, container_id, ifname)
            self.store.delete_attachment(network.id, container_id)

    def check(self, ref: str, container_id: str) -> None:
        """CNI CHECK of an attachment against its cached result."""
        network = self.get(ref)
        attached = self.attachments(container_id=container_id, network=network.id)
        entry = attached and self.cache.read(self.cache.path(
            network.id, container_id, attached[0].ifname))
        if not entry or entry[2] is None:
            raise NetworkError(f"check '{container_id}': not attached to network "
                               f"{network.name}")
        config, rt, result = entry
        self.plugins.check(config, rt, result)

    def attachments(self, *, container_id: str | None = None,
                    network: str | None = None) -> list[Attachment]:
        """Attachments, of one container and/or on one network."""
        network_id = self.get(network).id if network is not None else None
        return [a for a, _ in self.store.attachments(
            self._by_id(), container_id=container_id, network_id=network_id)]

    def resolver(self, ref: str) -> str | None:
        """The nameserver for containers on the network, None on the default bridge."""
        network = self.get(ref)
        return network.gateway if network.dns else None

    def ensure_resolvers(self, container_id: str | None = None) -> list[str]:
        """Start again the dead resolvers of the user networks that have
        attachments (the container's networks, if given); the names of the
        networks whose resolver was started. A pid check while they live."""
        attached = {a.network.id: a.network for a, _ in self.store.attachments(
            self._by_id(), container_id=container_id) if a.network.dns}
        return self.resolvers.revive(attached.values(), self._locked)

    def rename(self, container_id: str, name: str) -> None:
        """The container's new name, on every network (the resolvers follow)."""
        self.store.rename(container_id, name)

    # -- internals --------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / "network.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _by_id(self) -> dict[str, Network]:
        return {n.id: n for n in self.store.networks()}

    def _predefine(self, default_bridge: str, default_subnet: str) -> None:
        existing = {n.name for n in self.store.networks()}
        address = subnets.addressing(default_subnet)
        wanted = [
            Network(_new_id(), "bridge", "bridge", default_bridge, address.subnet,
                    address.gateway, "", False, {},
                    {conflist.OPT_BRIDGE_NAME: default_bridge,
                     "com.docker.network.bridge.default_bridge": "true",
                     conflist.OPT_MASQUERADE: "true"}, time.time(), False),
            Network(_new_id(), "host", "host", "", "", "", "", False, {}, {},
                    time.time(), False),
            Network(_new_id(), "none", "null", "", "", "", "", False, {}, {},
                    time.time(), False)]
        for network in wanted:
            if network.name not in existing:
                # Another process may predefine it at the same moment.
                with contextlib.suppress(sqlite3.IntegrityError):
                    self.store.insert_network(network)

    def _new_network(self, name: str, subnet: str | None, gateway: str | None,
                     ip_range: str | None, internal: bool, labels: dict,
                     options: dict) -> Network:
        existing = self.store.networks()
        if any(n.name == name for n in existing):
            raise NetworkConflict(f"network with name {name} already exists")
        taken = [n.subnet for n in existing]
        if subnet:
            address = subnets.addressing(subnet, gateway, ip_range)
            subnets.check_free(address.subnet, taken)
        else:
            chosen = subnets.choose(taken, subnets.host_networks())
            address = subnets.addressing(str(chosen))
        network_id = _new_id()
        bridge = options.get(conflist.OPT_BRIDGE_NAME) or f"br-{network_id[:12]}"
        if len(bridge) > 15 or "/" in bridge or not bridge.strip():
            raise InvalidNetworkArgument(f"bridge name '{bridge}': not an interface "
                                         "name of at most 15 characters")
        if any(n.bridge == bridge for n in existing):
            raise NetworkConflict(f"bridge name '{bridge}': used by another network")
        return Network(network_id, name, "bridge", bridge, address.subnet,
                       address.gateway, address.ip_range, internal, dict(labels),
                       options, time.time(), True)

    def _teardown(self, network: Network) -> None:
        self.resolvers.stop(network)
        firewall.remove_network(network)
        subprocess.run(["ip", "link", "del", network.bridge], capture_output=True)
        shutil.rmtree(self.ipam_dir / network.name, ignore_errors=True)
        self.store.delete_network(network.id)

    def _claim(self, network: Network, container_id: str, ip: str | None,
               wanted: Sequence[PortMapping]) -> list[PortMapping]:
        everyone = self.store.attachments(self._by_id())
        if any(a.network.id == network.id and a.container_id == container_id
               for a, _ in everyone):
            raise NetworkConflict(f"container {container_id} is already attached to "
                                  f"network {network.name}")
        if ip and any(a.network.id == network.id and a.ip == ip for a, _ in everyone):
            raise NetworkConflict("Address already in use")
        published = [p for a, _ in everyone for p in a.ports]
        if wanted:
            # Other roots' too: the nat table knows every published port.
            published += [m for _, m in hostports.published_on_host()]
        return host_ports.resolve(wanted, published)

    def _add(self, network: Network, container_id: str, netns_path: str,
             ifname: str, ip: str | None,
             mappings: list[PortMapping]) -> Attachment:
        first = not Path("/sys/class/net", network.bridge).exists()
        if first:
            _first_use(network)
        config = conflist.build(network, str(self.ipam_dir))
        capability_args: dict = {"portMappings": [m.to_cni() for m in mappings]}
        if ip:
            capability_args["ips"] = [f"{ip}/{network.subnet.split('/')[1]}"]
        rt = cni.RuntimeConf(container_id, netns_path, ifname, capability_args)
        path = self.cache.path(network.id, container_id, ifname)
        # Cached before ADD: whatever a failed or interrupted ADD made, the
        # DEL below (or a later detach) finds what to undo.
        self.cache.write(path, config, rt, None)
        try:
            result = self.plugins.add(config, rt)
            address, prefix, gateway, mac = cni.container_address(result, netns_path)
            # The result first: a DEL then knows what to unpublish.
            self.cache.write(path, config, rt, result)
            hostports.publish(container_id, address, network.subnet, network.bridge,
                              mappings)
        except BaseException:
            with contextlib.suppress(NetworkError):
                self.plugins.delete(config, rt, None)
            path.unlink(missing_ok=True)
            if first:
                # NOTE: a bridge the plugin made in a failed ADD is left with
                # no MAC, and the next ADD fails to set one (bridge 1.1.1).
                subprocess.run(["ip", "link", "del", network.bridge],
                               capture_output=True)
            raise
        return Attachment(network, container_id, "", ifname, address, prefix,
                          gateway or network.gateway, mac, [], mappings)

    def _delete(self, network: Network, container_id: str, ifname: str) -> None:
        path = self.cache.path(network.id, container_id, ifname)
        entry = self.cache.read(path)
        if entry is None:
            # No cache (never written, or lost): a DEL from today's
            # configuration still frees the lease, held by container ID.
            if network.driver != "bridge":
                return
            entry = (conflist.build(network, str(self.ipam_dir)),
                     cni.RuntimeConf(container_id, "", ifname), None)
        config, rt, result = entry
        self._unpublish(network, config, rt, result)
        # CNI SPEC.md: DEL must succeed when resources are gone; with the
        # namespace gone, plugins are given none. The kernel deletes the
        # veth pair with the namespace, but later, in a work queue: do not
        # leave the host's end to it.
        gone = not netns.is_netns(rt.netns)
        rt.netns = "" if gone else rt.netns
        self.plugins.delete(config, rt, result)
        if gone and result is not None:
            _delete_host_ends(result, network.bridge)
        path.unlink(missing_ok=True)

    @staticmethod
    def _unpublish(network: Network, config: dict, rt: cni.RuntimeConf,
                   result: dict | None) -> None:
        # Entries cached before hostports.py ran portmap, which undoes its own.
        wanted = rt.capability_args.get("portMappings") or []
        if result is None or not wanted or any(
                plugin["type"] == "portmap" for plugin in config["plugins"]):
            return
        address = cni.container_address(result, rt.netns)[0]
        hostports.unpublish(rt.container_id, address, network.subnet,
                            [PortMapping.from_cni(m) for m in wanted])


def _delete_host_ends(result: dict, bridge: str) -> None:
    """Delete the host's ends of the veths a CNI result names (its
    interfaces without a sandbox, but the bridge), where they are left."""
    for interface in result.get("interfaces") or []:
        name = interface.get("name", "")
        if interface.get("sandbox") or not name or name == bridge:
            continue
        if Path("/sys/class/net", name).exists():
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def _new_id() -> str:
    return secrets.token_hex(32)


def _check_create(name: str, driver: str, subnet: str | None, gateway: str | None,
                  ip_range: str | None) -> None:
    if not _NAME.match(name or ""):
        raise InvalidNetworkArgument(f"invalid network name '{name}': only "
                                     "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if driver in ("host", "null"):
        raise NetworkConflict(f'only one instance of "{driver}" network is allowed')
    if driver != "bridge":
        raise InvalidNetworkArgument(f'plugin "{driver}" not found')
    if (gateway or ip_range) and not subnet:
        raise InvalidNetworkArgument("gateway and ip-range need a subnet")


def _check_attachable(network: Network, ip: str | None) -> None:
    if network.driver != "bridge":
        raise InvalidNetworkArgument(
            f"attach to network '{network.name}': driver {network.driver} is not "
            "attached through CNI")
    if ip:
        if not network.dns:
            raise InvalidNetworkArgument(
                "user specified IP address is supported on user defined networks only")
        address = subnets.parse_address(ip, "ip")
        if address == subnets.parse_address(network.gateway, "gateway"):
            raise NetworkConflict("Address already in use")  # dockerd's wording
        if address not in subnets.parse_cidr(network.subnet):
            raise InvalidNetworkArgument(
                f"invalid address {ip}: it does not belong to any of this "
                "network's subnets")
        if network.ip_range and address not in subnets.parse_cidr(network.ip_range):
            # host-local leases only from its range (docs/limitations.md).
            raise InvalidNetworkArgument(
                f"invalid address {ip}: outside the network's ip-range "
                f"{network.ip_range}")


def _first_use(network: Network) -> None:
    # Docker enables forwarding when it sets up a bridge; the bridge plugin
    # does as well with isGateway, but only once it runs.
    try:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    except OSError as exc:
        raise NetworkError(f"enable ip_forward: {exc.strerror}") from exc
    firewall.add_network(network)
