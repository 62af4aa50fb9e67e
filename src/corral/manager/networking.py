"""Containers on networks: the engine's side of ``corral.network``.

What the create body asks of the network (HostConfig.NetworkMode,
PortBindings, PublishAllPorts with Config.ExposedPorts, Dns*, ExtraHosts,
Hostname, NetworkingConfig.EndpointsConfig) is checked here as dockerd
checks it (moby runconfig/hostconfig_unix.go gives the conflicts; the code
is ours), and kept in the record. At start the container gets its network
namespace (``<run>/netns/<id>``, lo up), one CNI attachment per network, the
primary one first as eth0 with the published ports, and its /etc/hosts and
/etc/resolv.conf; everything is released again on stop, on rm, at the next
start of a run that ended by itself, by the shim's exit command when no
daemon watches, and by reconcile after a crash.

The namespace in the OCI spec (runtime spec, "Namespaces": a ``path`` to
join): the container's own for bridge, user networks and ``none``; none at
all (the host's) for ``host``; the other container's for ``container:X``.

The network endpoints (``/networks/*``) are methods of the mixin it builds
on (network_resources.py), so the API server and the CLI call them as they
call the container ones.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import threading
from pathlib import Path

from . import ports
from .errors import Conflict, Error, InvalidArgument, NotFound
from .network_files import NetworkFiles, check_extra_host, hosts_file, resolv_conf
from .network_files import checked_address as _address
from .network_resources import (
    PREDEFINED,
    Forbidden,
    NetworkResources,
    endpoint_id,
    network_layer,
    translated,
)

log = logging.getLogger(__name__)

DEFAULT_BRIDGE = "corral0"
DEFAULT_SUBNET = "10.88.0.0/16"


def mode_kind(mode: str) -> str:
    """``bridge`` (the default network), ``host``, ``none``, ``container``,
    or ``user`` (a network by name or ID)."""
    if mode in ("", "default", "bridge"):
        return "bridge"
    if mode in ("host", "none"):
        return mode
    if mode.startswith("container:"):
        return "container"
    return "user"


def check_conflicts(config: dict, host: dict) -> None:
    """dockerd's refusals of options that make no sense with the mode."""
    kind = mode_kind(host["NetworkMode"])
    if kind == "container":
        if not host["NetworkMode"].partition(":")[2]:
            raise InvalidArgument("Invalid network mode: invalid container format "
                                  "container:<name|id>")
        for given, message in (
                (config["Hostname"], "hostname and the network mode"),
                (host["Dns"], "dns and the network mode"),
                (host["ExtraHosts"], "custom host-to-IP mapping and the network mode"),
                (host["PortBindings"] or host["PublishAllPorts"],
                 "port publishing and the container type network mode"),
                (config["ExposedPorts"], "port exposing and the container type network "
                                         "mode")):
            if given:
                raise InvalidArgument(f"conflicting options: {message}")
    if kind in ("container", "host") and config["MacAddress"]:
        raise InvalidArgument("conflicting options: mac-address and the network mode")
    for entry in host["ExtraHosts"] or []:
        check_extra_host(entry)
    for server in host["Dns"] or []:
        _address(server, f"invalid IP address: {server}")


def subnet_of(text: str) -> str:
    """``--bip``'s gateway/prefix (or a subnet) as the subnet it lies in."""
    try:
        return str(ipaddress.ip_interface(text).network)
    except ValueError:
        raise InvalidArgument(f"invalid --bip '{text}': not an address/prefix") from None


class Networking(NetworkFiles, NetworkResources):
    """Mixin of Engine: the container's network from create to removal, and
    the network endpoints. Needs ``root``, ``run``, ``records``, ``resolve``,
    ``state``, ``_locked``, ``directory`` of the engine."""

    default_bridge = DEFAULT_BRIDGE
    default_subnet = DEFAULT_SUBNET
    _networks = None

    _networks_lock = threading.Lock()

    @property
    def networks(self):
        """The ``corral.network.Networks`` of this root (made on first use)."""
        with self._networks_lock:
            if self._networks is None:
                self._networks = network_layer().Networks(
                    self.root, self.run, default_bridge=self.default_bridge,
                    default_subnet=self.default_subnet)
        return self._networks

    def close_networks(self) -> None:
        """Close the network store; the run directory's netns mount goes
        too once no namespace is left in it (so the run directory can be
        removed), under the network layer's lock that creates take."""
        if self._networks is None:
            return
        self.wait_releases()
        directory = self.run / "netns"
        with contextlib.suppress(OSError), self._networks._locked():
            if _mounted_here(directory) and not any(directory.iterdir()):
                from .. import _syscalls

                _syscalls.umount2(str(directory), _syscalls.MNT_DETACH)
        self._networks.close()
        self._networks = None

    def network_flags(self) -> list[str]:
        """The flags that make another process's engine see the same default
        network (the shim's exit command passes them on)."""
        return ["--bridge", self.default_bridge, "--bip", self.default_subnet]

    def _network(self, ref: str):
        with translated():
            return self.networks.get(ref)

    # Create --------------------------------------------------------------------

    def check_networking(self, request) -> list[str]:
        """Check what the create body asks of the network, before anything is
        made; normalizes HostConfig.PortBindings and EndpointsConfig. Returns
        the create's warnings (dockerd's words)."""
        config, host = request.config, request.host_config
        check_conflicts(config, host)
        host["PortBindings"] = ports.normalize_bindings(host["PortBindings"])
        config["ExposedPorts"] = ports.normalize_exposed(config["ExposedPorts"])
        kind = mode_kind(host["NetworkMode"])
        if kind == "container":
            self.resolve(host["NetworkMode"].partition(":")[2])
            request.networking_config = {}
            return []
        warnings = []
        if kind == "host" and host["PortBindings"]:
            warnings.append("Published ports are discarded when using host network "
                            "mode")
        endpoints = (request.networking_config or {}).get("EndpointsConfig") or {}
        if not isinstance(endpoints, dict):
            raise InvalidArgument("NetworkingConfig.EndpointsConfig: must be an object")
        primary = "bridge" if kind == "bridge" else host["NetworkMode"]
        if kind == "bridge":
            # The docker CLI keys the default network's endpoint "default".
            endpoints = {("bridge" if k in ("default", "bridge") else k): v
                         for k, v in endpoints.items()}
        checked = {}
        for ref in [primary, *(k for k in endpoints if k != primary)]:
            given = endpoints.get(ref) or {}
            if kind in ("host", "none") and ref != primary:
                raise InvalidArgument("Container cannot be connected to network "
                                      "endpoints")
            try:
                network = self._network(ref)
            except NotFound:
                # As dockerd: a network that is not there fails the start, not
                # the create (a 404 from create makes the docker CLI pull).
                checked[ref] = self._endpoint_config(None, given)
                continue
            checked[network.name] = self._endpoint_config(network, given)
        request.networking_config = {"EndpointsConfig": checked}
        return warnings

    def _endpoint_config(self, network, given: dict) -> dict:
        if not isinstance(given, dict):
            raise InvalidArgument("EndpointsConfig: each network needs an object")
        aliases = list(given.get("Aliases") or [])
        ipam = given.get("IPAMConfig") or {}
        ip = (ipam.get("IPv4Address") or "") if isinstance(ipam, dict) else ""
        if network is None:
            return {"IPAMConfig": {"IPv4Address": ip} if ip else None,
                    "Aliases": aliases or None, "NetworkID": ""}
        user_defined = network.name not in PREDEFINED
        if ip:
            _address(ip, f"invalid IPv4 address: {ip}")
            if not user_defined:
                raise InvalidArgument("user specified IP address is supported on user "
                                      "defined networks only")
            if not network.subnet or ipaddress.ip_address(ip) not in \
                    ipaddress.ip_network(network.subnet, strict=False):
                raise InvalidArgument(f"no configured subnet or ip-range contain the IP "
                                      f"address {ip}")
        if aliases and not user_defined:
            raise InvalidArgument("network-scoped alias is supported only for "
                                  "containers in user defined networks")
        return {"IPAMConfig": {"IPv4Address": ip} if ip else None,
                "Aliases": aliases or None, "NetworkID": network.id}

    def network_namespace(self, spec: dict, request, container_id: str) -> None:
        """Point the spec's network namespace where the mode says."""
        host = request.host_config
        kind = mode_kind(host["NetworkMode"])
        path = None
        if kind == "container":
            other = self.resolve(host["NetworkMode"].partition(":")[2])
            if mode_kind(other.host_config["NetworkMode"]) != "host":
                path = str(self.netns_path(other.id))
        elif kind != "host":
            path = str(self.netns_path(container_id))
        namespaces = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
        if path:
            namespaces.append({"type": "network", "path": path})
        spec["linux"]["namespaces"] = namespaces

    def netns_path(self, container_id: str) -> Path:
        return self.run / "netns" / container_id

    def needs_network_cleanup(self, container) -> bool:
        """Whether the container has a network of its own to release."""
        return mode_kind(container.host_config["NetworkMode"]) not in ("host",
                                                                       "container")

    # Start and release -----------------------------------------------------------

    def network_up(self, container) -> None:
        """Before the shim starts: the namespace, the attachments, the files.
        On failure nothing is left."""
        kind = mode_kind(container.host_config["NetworkMode"])
        try:
            if kind == "container":
                self._join_other(container)
            elif kind == "host":
                self._write_host_mode_hosts(container)
            else:
                with translated():
                    netns = self.networks.create_netns(container.id)
                    attachments = [] if kind == "none" else self._attach_all(container,
                                                                             netns)
                self._write_network_files(container, attachments)
        except BaseException as exc:
            self.release_network(container.id)
            if isinstance(exc, Error) and container.host_config.get("AutoRemove"):
                # As for a start the runtime refused: docker run --rm waits
                # for this removal.
                self._destroy(container.id, volumes=True)
            raise

    def _attach_all(self, container, netns: Path) -> list:
        endpoints = _endpoints(container)
        bindings = ports.mappings(container.host_config, container.config)
        attachments = []
        for index, (name, endpoint) in enumerate(endpoints.items()):
            ip = (endpoint.get("IPAMConfig") or {}).get("IPv4Address") or None
            ref = endpoint.get("NetworkID") or name
            try:
                attachments.append(self.networks.attach(
                    ref, container.id, netns, name=container.name,
                    ifname=f"eth{index}", aliases=tuple(endpoint.get("Aliases") or ()),
                    ip=ip, ports=bindings if index == 0 else ()))
            except network_layer().PortBindFailed as exc:
                # dockerd's bridge driver names the endpoint before
                # docker-proxy's words.
                network_id = self.networks.get(ref).id
                raise Error(f"driver failed programming external connectivity on "
                            f"endpoint {container.name} "
                            f"({endpoint_id(network_id, container.id)}): {exc}") from exc
        return attachments

    def _join_other(self, container) -> None:
        other = self.resolve(container.host_config["NetworkMode"].partition(":")[2])
        if not self.state(other).running:
            raise Conflict(f"cannot join network of a non running container: {other.id}")
        for name in ("hostname", "hosts", "resolv.conf"):
            with contextlib.suppress(OSError):
                text = (self.directory(other.id) / name).read_text()
                (self.directory(container.id) / name).write_text(text)

    def release_network(self, container_id: str) -> None:
        """Detach from every network and remove the namespace; idempotent, and
        the caller holds the container's lock."""
        with translated():
            for attachment in self.networks.attachments(container_id=container_id):
                try:
                    self.networks.detach(attachment.network.id, container_id)
                except network_layer().NetworkError as exc:
                    log.warning("detach container %s: %s", container_id, exc)
            self.networks.remove_netns(container_id)

    # A removal releases the network after the record is gone, in a worker:
    # the CNI DELs (~150 ms) are then off the path of `docker run --rm`,
    # which waits for the record only. It is safe because what a new
    # container could be given back (the IPAM lease, the host ports: the
    # attachment's row) is freed by the DEL itself, never before; a crash
    # before the end leaves a namespace or an attachment no record owns,
    # which reconcile releases (network_leftovers); and a network rm or
    # prune first finishes what is pending (finish_releases).

    def release_later(self, container_id: str) -> None:
        """``release_network`` of a container whose record is gone, in a
        worker thread of this process (`close_networks` waits for it)."""
        def release() -> None:
            try:
                self.release_network(container_id)
            except (Error, OSError) as exc:
                log.warning("release network of container %s: %s", container_id,
                            exc)
            finally:
                with self._networks_lock:
                    self._pending_releases().pop(container_id, None)

        worker = threading.Thread(target=release, name=f"release-{container_id[:12]}")
        with self._networks_lock:
            self._pending_releases()[container_id] = worker
        worker.start()

    def finish_releases(self, network_id: str | None = None) -> None:
        """Wait for this process's pending releases, then release what
        containers with no record still hold (on one network, or any): a
        release another process has on its way, or one a crash cut short."""
        self.wait_releases()
        with translated():
            attached = self.networks.attachments(network=network_id)
        for container_id in dict.fromkeys(a.container_id for a in attached):
            try:
                self.records.get(container_id)
            except NotFound:
                self.release_network(container_id)

    def wait_releases(self) -> None:
        """Until this process's release workers have ended."""
        while True:
            with self._networks_lock:
                workers = list(self._pending_releases().values())
            if not workers:
                return
            for worker in workers:
                worker.join()

    def _pending_releases(self) -> dict[str, threading.Thread]:
        """Container ID -> its release worker; the caller holds _networks_lock."""
        return self.__dict__.setdefault("_pending", {})

    def rename_on_networks(self, container_id: str, name: str) -> None:
        """The new name is what the resolver answers for."""
        with translated():
            self.networks.rename(container_id, name)

    def revive_resolvers(self, container_id: str | None = None) -> list[str]:
        """Start the name resolvers found dead again (of the container's
        networks, if given): corrald's start and watch, an exec. A pid check
        while they live; a failure is logged, not raised."""
        try:
            return self.networks.ensure_resolvers(container_id)
        except network_layer().NetworkError as exc:
            log.warning("revive resolvers: %s", exc)
            return []

    def network_leftovers(self) -> set[str]:
        """IDs that have a namespace or an attachment (reconcile compares
        them with the records)."""
        found = set()
        with contextlib.suppress(OSError):
            found |= {p.name for p in (self.run / "netns").iterdir()}
        with contextlib.suppress(network_layer().NetworkError):
            found |= {a.container_id for a in self.networks.attachments()}
        return found

    def release_if_stopped(self, container_id: str) -> None:
        """Under the lock: release the network of a container not running
        (a stop, a run that ended by itself)."""
        with self._locked(container_id):
            try:
                container = self.records.get(container_id)
            except NotFound:
                return
            if not self.state(container).running:
                self.release_network(container_id)

    # Documents ------------------------------------------------------------------

    def _attachments(self, container_id: str) -> list:
        with contextlib.suppress(network_layer().NetworkError):
            return list(self.networks.attachments(container_id=container_id))
        return []

    def network_settings(self, container, state, *, short: bool = False) -> dict:
        """inspect's NetworkSettings (``short``: ps's, Networks only)."""
        host = container.host_config
        kind = mode_kind(host["NetworkMode"])
        attached = {a.network.name: a
                    for a in (self._attachments(container.id) if state.running else [])}
        networks = {}
        if kind in ("host", "none"):
            networks[kind] = self._endpoint_document(container, kind, {}, None)
        elif kind != "container":
            endpoints = _endpoints(container)
            for name, endpoint in endpoints.items():
                networks[name] = self._endpoint_document(container, name, endpoint,
                                                         attached.get(name))
        if short:
            return {"Networks": networks}
        primary = attached.get("bridge") if kind == "bridge" else None
        top = networks.get("bridge", {}) if primary else {}
        return {"Bridge": "", "SandboxID": endpoint_id("sandbox", container.id)
                if state.running else "",
                "HairpinMode": False, "LinkLocalIPv6Address": "",
                "LinkLocalIPv6PrefixLen": 0,
                "Ports": ports.published(container, attached, state.running),
                "SandboxKey": str(self.netns_path(container.id))
                if state.running and kind not in ("host", "container") else "",
                "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
                "EndpointID": top.get("EndpointID", ""),
                "Gateway": top.get("Gateway", ""), "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0, "IPAddress": top.get("IPAddress", ""),
                "IPPrefixLen": top.get("IPPrefixLen", 0), "IPv6Gateway": "",
                "MacAddress": top.get("MacAddress", ""), "Networks": networks}

    def _endpoint_document(self, container, name: str, endpoint: dict,
                           attachment) -> dict:
        network_id = endpoint.get("NetworkID") or ""
        if not network_id:
            with contextlib.suppress(Error):
                network_id = self._network(name).id
        aliases = endpoint.get("Aliases")
        dns_names = None
        if name not in PREDEFINED:
            dns_names = [container.name, *(aliases or []), container.id[:12]]
        return {"IPAMConfig": endpoint.get("IPAMConfig"), "Links": None,
                "Aliases": aliases, "MacAddress": attachment.mac if attachment else "",
                "NetworkID": network_id,
                "EndpointID": endpoint_id(network_id, container.id) if attachment else "",
                "Gateway": attachment.gateway if attachment else "",
                "IPAddress": attachment.ip if attachment else "",
                "IPPrefixLen": attachment.prefix_len if attachment else 0,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "DriverOpts": None, "DNSNames": dns_names}

    def port_rows(self, container, state) -> list[dict]:
        """ps's ``Ports``: published ports, and exposed ones without."""
        attached = self._attachments(container.id) if state.running else []
        return ports.list_rows(container, attached)

    # Connect and disconnect ---------------------------------------------------

    def network_connect(self, ref: str, body: dict) -> None:
        """``POST /networks/{id}/connect``: ``{"Container", "EndpointConfig"}``;
        a running container is attached at once, a stopped one at its start."""
        network = self._network(ref)
        container = self.resolve(_container_ref(body))
        kind = mode_kind(container.host_config["NetworkMode"])
        if kind in ("host", "container") or network.name == "host":
            raise InvalidArgument("container sharing network namespace with another "
                                  "container or host cannot be connected to any other "
                                  "network")
        if kind == "none" or network.name == "none":
            raise InvalidArgument("container cannot be connected to multiple networks "
                                  "with one of the networks in private (none) mode")
        with self._locked(container.id):
            container = self.records.get(container.id)
            endpoints = dict(_endpoints(container))
            if network.name in endpoints:
                raise Forbidden(f"endpoint with name {container.name} already exists in "
                                f"network {network.name}")
            endpoint = self._endpoint_config(network, body.get("EndpointConfig") or {})
            running = self.state(container).running
            if running:
                self._attach_running(container, network, endpoint)
            endpoints[network.name] = endpoint
            self._save_endpoints(container, endpoints)
            if running:
                self._rewrite_hosts(container)

    def _attach_running(self, container, network, endpoint: dict) -> None:
        used = {a.ifname for a in self._attachments(container.id)}
        ifname = next(f"eth{n}" for n in range(len(used) + 1) if f"eth{n}" not in used)
        ip = (endpoint.get("IPAMConfig") or {}).get("IPv4Address") or None
        with translated():
            self.networks.attach(network.id, container.id, self.netns_path(container.id),
                                 name=container.name, ifname=ifname,
                                 aliases=tuple(endpoint.get("Aliases") or ()), ip=ip)

    def network_disconnect(self, ref: str, body: dict) -> None:
        """``POST /networks/{id}/disconnect``: ``{"Container", "Force"}``."""
        network = self._network(ref)
        try:
            container = self.resolve(_container_ref(body))
        except NotFound:
            if body.get("Force"):
                with translated():
                    self.networks.detach(network.id, _container_ref(body))
                return
            raise
        if network.name in ("host", "none"):
            raise InvalidArgument("container cannot be disconnected from host network "
                                  "or connected to host network")
        with self._locked(container.id):
            container = self.records.get(container.id)
            endpoints = dict(_endpoints(container))
            if network.name not in endpoints and not body.get("Force"):
                raise Forbidden(f"container {container.id} is not connected to network "
                                f"{network.name}")
            endpoints.pop(network.name, None)
            with translated():
                self.networks.detach(network.id, container.id)
            self._save_endpoints(container, endpoints)
            if self.state(container).running:
                self._rewrite_hosts(container)

    def _rewrite_hosts(self, container) -> None:
        # The attachments in the order of the container's endpoints (the
        # order it joined them).
        attached = {a.network.name: a for a in self._attachments(container.id)}
        order = list(_endpoints(self.records.get(container.id)))
        self._write_hosts(container, [attached[n] for n in order if n in attached])

    def _save_endpoints(self, container, endpoints: dict) -> None:
        networking = dict(container.document.get("networking_config") or {},
                          EndpointsConfig=endpoints)
        self.records.update(container.id, document=dict(container.document,
                                                        networking_config=networking))

def _mounted_here(directory: Path) -> bool:
    """Whether a mount sits on ``directory`` (a bind mount of the same
    filesystem too, which os.path.ismount does not see)."""
    wanted = os.path.realpath(directory)
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        return any(line.split()[4] == wanted for line in mountinfo)


def _endpoints(container) -> dict:
    """The networks the container is on, in order (records made before
    networking had none: the default bridge)."""
    networking = container.document.get("networking_config") or {}
    endpoints = networking.get("EndpointsConfig")
    if endpoints is None:
        mode = mode_kind(container.host_config["NetworkMode"])
        return {"bridge": {}} if mode == "bridge" else {}
    return endpoints


def _container_ref(body: dict) -> str:
    ref = body.get("Container") if isinstance(body, dict) else None
    if not isinstance(ref, str) or not ref:
        raise InvalidArgument("request body: Container: a container name or ID is "
                              "needed")
    return ref


__all__ = ["Networking", "Forbidden", "check_conflicts", "mode_kind", "hosts_file",
           "resolv_conf"]
