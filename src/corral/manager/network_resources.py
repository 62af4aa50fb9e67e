"""The network resources of the Docker Engine API as engine operations:
``GET /networks`` and ``/networks/{id}``, create, remove and prune, with
Docker's documents, filters and errors; and what the container side
(networking.py) shares: the network layer, imported when first needed, and
its errors as the manager's classes.

The engine's ``networks`` (a ``corral.network.Networks``) does the work;
these methods check the bodies and shape the answers as dockerd 20.10 does.
"""

from __future__ import annotations

import contextlib
import hashlib

from .errors import Conflict, Error, InvalidArgument, NotFound

PREDEFINED = ("bridge", "host", "none")


class Forbidden(Error):
    """Docker's 403: connecting twice, disconnecting what is not connected."""

    status = 403


def network_layer():
    """``corral.network``, imported when first needed (not every engine
    call pays for it)."""
    from .. import network

    return network


def translate(exc: Exception) -> Error:
    """A network layer error as the manager's class with the same message."""
    network = network_layer()
    predefined = getattr(network, "PredefinedNetwork", None)
    if predefined is not None and isinstance(exc, predefined):
        return Forbidden(str(exc))
    for cls, ours in ((network.NetworkNotFound, NotFound),
                      (network.NetworkConflict, Conflict),
                      (network.InvalidNetworkArgument, InvalidArgument)):
        if isinstance(exc, cls):
            return ours(str(exc))
    return Error(str(exc))


@contextlib.contextmanager
def translated():
    network = network_layer()
    try:
        yield
    except network.NetworkError as exc:
        raise translate(exc) from exc


def endpoint_id(network_id: str, container_id: str) -> str:
    """A stable 64-hex endpoint ID for one attachment (Docker shows one)."""
    return hashlib.sha256(f"{network_id}/{container_id}".encode()).hexdigest()


class NetworkResources:
    """Mixin of Engine (through Networking): the ``network_*`` operations."""

    def network_list(self, *, filters: dict | None = None) -> list[dict]:
        """``GET /networks``."""
        with translated():
            found = self.networks.list()
        wanted = [n for n in found if _network_matches(n, filters or {})]
        return [self.network_document(n, containers=False) for n in wanted]

    def network_inspect(self, ref: str) -> dict:
        """``GET /networks/{id}``."""
        return self.network_document(self._network(ref))

    def network_document(self, network, *, containers: bool = True) -> dict:
        """A network as Docker's ``/networks`` documents show it."""
        attached = {}
        if containers:
            with translated():
                for a in self.networks.attachments(network=network.id):
                    attached[a.container_id] = {
                        "Name": a.name, "EndpointID": endpoint_id(network.id,
                                                                  a.container_id),
                        "MacAddress": a.mac, "IPv4Address": f"{a.ip}/{a.prefix_len}",
                        "IPv6Address": ""}
        config = {}
        for key, value in (("Subnet", network.subnet), ("IPRange", network.ip_range),
                           ("Gateway", network.gateway)):
            if value:
                config[key] = str(value)
        created = network.created
        return {"Name": network.name, "Id": network.id,
                "Created": created if isinstance(created, str)
                else _format_time(created),
                "Scope": "local", "Driver": network.driver, "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": None,
                         "Config": [config] if config else []},
                "Internal": bool(network.internal), "Attachable": False,
                "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
                "Containers": attached, "Options": dict(network.options or {}),
                "Labels": dict(network.labels or {})}

    def network_create(self, body: dict) -> dict:
        """``POST /networks/create``: ``{"Id", "Warning"}``."""
        request = _create_request(body)
        with translated():
            network = self.networks.create(request.pop("name"), **request)
        return {"Id": network.id, "Warning": ""}

    def network_remove(self, ref: str) -> None:
        """``DELETE /networks/{id}``."""
        network = self._network(ref)
        if network.name in PREDEFINED:
            raise Forbidden(f"{network.name} is a pre-defined network and cannot be "
                            f"removed")
        # A container just removed may still be releasing its endpoint.
        self.finish_releases(network.id)
        with translated():
            self.networks.remove(network.id)

    def network_prune(self, filters: dict | None = None) -> dict:
        """``POST /networks/prune``: the user networks no container is on."""
        self.finish_releases()
        if not filters:
            with translated():
                deleted = list(self.networks.prune())
            return {"NetworksDeleted": deleted or None}
        deleted = []
        for network in self.networks.list():
            if network.name in PREDEFINED or not _network_matches(network, filters):
                continue
            with contextlib.suppress(Error):
                with translated():
                    if not list(self.networks.attachments(network=network.id)):
                        self.networks.remove(network.id)
                        deleted.append(network.name)
        return {"NetworksDeleted": deleted or None}



def _format_time(when: float) -> str:
    from .docker_model import format_time

    return format_time(float(when or 0))


def _create_request(body: dict) -> dict:
    """``POST /networks/create``'s body as ``Networks.create`` arguments."""
    name = body.get("Name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument("network name must not be empty")
    if body.get("EnableIPv6"):
        raise InvalidArgument("EnableIPv6: IPv6 networks are not supported by corral yet")
    ipam = body.get("IPAM") or {}
    configs = ipam.get("Config") or [] if isinstance(ipam, dict) else None
    if not isinstance(configs, list) or len(configs) > 1:
        raise InvalidArgument("IPAM.Config: one IPv4 pool at most is supported")
    pool = configs[0] if configs else {}
    for key in ("Labels", "Options"):
        value = body.get(key)
        if value is not None and not isinstance(value, dict):
            raise InvalidArgument(f"{key}: must be an object of strings")
    return {"name": name, "driver": body.get("Driver") or "bridge",
            "subnet": pool.get("Subnet") or None, "gateway": pool.get("Gateway") or None,
            "ip_range": pool.get("IPRange") or None,
            "internal": bool(body.get("Internal")), "labels": body.get("Labels") or None,
            "options": body.get("Options") or None}


def _network_matches(network, filters: dict) -> bool:
    """Docker's network filters: name (substring), id (prefix), driver,
    label (key or key=value), type (custom or builtin)."""
    tests = {
        "name": lambda v: v in network.name,
        "id": lambda v: network.id.startswith(v),
        "driver": lambda v: network.driver == v,
        "type": lambda v: (network.name in PREDEFINED) == (v == "builtin"),
        "label": lambda v: _label_matches(network.labels or {}, v),
    }
    for key, values in filters.items():
        if key not in tests:
            raise InvalidArgument(f"invalid filter '{key}'")
        if values and not any(tests[key](v) for v in values):
            return False
    return True


def _label_matches(labels: dict, wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)
