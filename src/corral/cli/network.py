"""``corral network ...`` and ``corral port``, with Docker's flags and
output, and the parsing of run/create's network flags (-p, -P, --network,
--network-alias, --ip, --dns*, --add-host, --expose) into the create body.

Every command calls ``context.backend``: the engine in process, or corrald
through ``Remote`` (``-H``); both take and return Docker's bodies.
"""

from __future__ import annotations

import argparse
import sys

from . import output


class PublishError(ValueError):
    """A -p or --expose value that is not one of Docker's forms."""


# run and create ------------------------------------------------------------------

def add_network_flags(parser: argparse.ArgumentParser) -> None:
    """The network flags of docker run and docker create."""
    add = parser.add_argument
    add("-p", "--publish", action="append", default=[],
        metavar="[IP:][HOSTPORT:]PORT[/PROTO]", help="publish a container's port")
    add("-P", "--publish-all", action="store_true",
        help="publish every exposed port on a random host port")
    add("--expose", action="append", default=[], metavar="PORT[/PROTO]",
        help="expose a port (or a range) without publishing it")
    add("--network", "--net", dest="network", help="connect to a network "
        "(bridge, host, none, container:NAME|ID, or a network's name or ID)")
    add("--network-alias", action="append", default=[], metavar="ALIAS",
        help="another name the container answers to on the network")
    add("--ip", help="IPv4 address on the network (user networks with a subnet)")
    add("--dns", action="append", default=[], metavar="IP", help="a DNS server")
    add("--dns-search", action="append", default=[], metavar="DOMAIN")
    add("--dns-option", "--dns-opt", action="append", default=[], metavar="OPTION")
    add("--add-host", action="append", default=[], metavar="HOST:IP",
        help="an /etc/hosts entry (IP may be host-gateway)")


def _port_range(text: str) -> list[int]:
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise PublishError(f"invalid port '{text}'")
    start, end = int(first), int(last) if sep else int(first)
    if not 0 < start <= end < 65536:
        raise PublishError(f"invalid port range '{text}'")
    return list(range(start, end + 1))


def parse_publish(text: str) -> list[tuple[str, str, str]]:
    """One -p value as (container ``port/proto``, host IP, host port) triples;
    ranges of equal length pair up, a host range on one port is refused."""
    rest, _, protocol = text.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp", "sctp"):
        raise PublishError(f"invalid proto '{protocol}' in '{text}'")
    host_ip, host_port = "", ""
    if rest.startswith("["):
        raise PublishError(f"'{text}': IPv6 host addresses are not supported")
    parts = rest.split(":")
    if len(parts) == 3:
        host_ip, host_port, container = parts
    elif len(parts) == 2:
        host_port, container = parts
    elif len(parts) == 1:
        container = parts[0]
    else:
        raise PublishError(f"invalid publish spec '{text}'")
    inside = _port_range(container)
    if not host_port:
        return [(f"{port}/{protocol}", host_ip, "") for port in inside]
    outside = _port_range(host_port)
    if len(outside) != len(inside):
        raise PublishError(f"'{text}': the host and container port ranges must have "
                           f"the same length")
    return [(f"{port}/{protocol}", host_ip, str(host))
            for port, host in zip(inside, outside, strict=True)]


def network_body(args: argparse.Namespace, body: dict) -> None:
    """Add the network flags to a create body, in place."""
    host = body["HostConfig"]
    bindings: dict = {}
    exposed: dict = {}
    for text in args.publish:
        for key, host_ip, host_port in parse_publish(text):
            bindings.setdefault(key, []).append({"HostIp": host_ip,
                                                 "HostPort": host_port})
            exposed[key] = {}
    for text in args.expose:
        port, _, protocol = text.partition("/")
        for number in _port_range(port):
            exposed[f"{number}/{protocol or 'tcp'}"] = {}
    if exposed:
        body["ExposedPorts"] = exposed
    for key, value in (("PortBindings", bindings), ("PublishAllPorts", args.publish_all),
                       ("Dns", args.dns), ("DnsSearch", args.dns_search),
                       ("DnsOptions", args.dns_option), ("ExtraHosts", args.add_host)):
        if value:
            host[key] = value
    mode = args.network or "default"
    host["NetworkMode"] = mode
    endpoint: dict = {}
    if args.network_alias:
        endpoint["Aliases"] = list(args.network_alias)
    if args.ip:
        endpoint["IPAMConfig"] = {"IPv4Address": args.ip}
    if endpoint:
        body["NetworkingConfig"] = {"EndpointsConfig": {mode: endpoint}}


# corral network ----------------------------------------------------------------

def register(commands) -> None:
    network = commands.add_parser("network", help="manage networks")
    group = network.add_subparsers(dest="network_command", metavar="COMMAND")
    group.required = True
    for name, adder in _COMMANDS:
        adder(group.add_parser(name, help=adder.__doc__))
    port = commands.add_parser("port", help="list a container's published ports")
    port.add_argument("container", metavar="CONTAINER")
    port.add_argument("port", nargs="?", metavar="PORT[/PROTO]")
    port.set_defaults(func=cmd_port)


def _create(parser: argparse.ArgumentParser) -> None:
    """create a network"""
    parser.add_argument("-d", "--driver", default="bridge")
    parser.add_argument("--subnet")
    parser.add_argument("--gateway")
    parser.add_argument("--ip-range")
    parser.add_argument("--internal", action="store_true")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("name", metavar="NETWORK")
    parser.set_defaults(func=cmd_create)


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items)


def cmd_create(context, args) -> int:
    pool = {key: value for key, value in (("Subnet", args.subnet),
                                          ("Gateway", args.gateway),
                                          ("IPRange", args.ip_range)) if value}
    if (args.gateway or args.ip_range) and not args.subnet:
        raise SystemExit("corral: --gateway and --ip-range need a --subnet")
    body = {"Name": args.name, "CheckDuplicate": True, "Driver": args.driver,
            "Internal": args.internal, "Labels": _pairs(args.label),
            "Options": _pairs(args.opt),
            "IPAM": {"Driver": "default", "Config": [pool] if pool else []}}
    print(context.backend.network_create(body)["Id"])
    return 0


def _ls(parser: argparse.ArgumentParser) -> None:
    """list networks"""
    parser.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    parser.add_argument("-f", "--filter", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--no-trunc", action="store_true")
    parser.add_argument("--format")
    parser.set_defaults(func=cmd_ls)


def cmd_ls(context, args) -> int:
    filters: dict[str, list[str]] = {}
    for item in args.filter:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    rows = context.backend.network_list(filters=filters or None)
    rows.sort(key=lambda n: n["Name"])
    short = (lambda i: i) if args.no_trunc else (lambda i: i[:12])
    if args.quiet:
        for row in rows:
            print(short(row["Id"]))
        return 0
    fields = [{"ID": short(r["Id"]), "Name": r["Name"], "Driver": r["Driver"],
               "Scope": r["Scope"], "Internal": str(r["Internal"]).lower(),
               "Labels": ",".join(f"{k}={v}" for k, v in (r["Labels"] or {}).items())}
              for r in rows]
    if args.format:
        output.formatted(args.format, fields, {"ID": "NETWORK ID", "Name": "NAME",
                                               "Driver": "DRIVER", "Scope": "SCOPE"})
        return 0
    output.table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                 [[f["ID"], f["Name"], f["Driver"], f["Scope"]] for f in fields])
    return 0


def _inspect(parser: argparse.ArgumentParser) -> None:
    """show networks' details as JSON"""
    parser.add_argument("-f", "--format")
    parser.add_argument("networks", nargs="+", metavar="NETWORK")
    parser.set_defaults(func=cmd_inspect)


def cmd_inspect(context, args) -> int:
    from ..manager.errors import NotFound

    documents, status = [], 0
    for ref in args.networks:
        try:
            documents.append(context.backend.network_inspect(ref))
        except NotFound as exc:
            print(f"Error: {exc}", file=sys.stderr)
            status = 1
    output.inspected(documents, args.format)
    return status


def _rm(parser: argparse.ArgumentParser) -> None:
    """remove networks"""
    parser.add_argument("-f", "--force", action="store_true",
                        help="no error for a network that does not exist")
    parser.add_argument("networks", nargs="+", metavar="NETWORK")
    parser.set_defaults(func=cmd_rm)


def cmd_rm(context, args) -> int:
    from ..manager.errors import Error, NotFound

    status = 0
    for ref in args.networks:
        try:
            context.backend.network_remove(ref)
        except NotFound:
            if not args.force:
                print(f"Error: No such network: {ref}", file=sys.stderr)
                status = 1
            continue
        except Error as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            status = 1
            continue
        print(ref)
    return status


def _connect(parser: argparse.ArgumentParser) -> None:
    """connect a container to a network"""
    parser.add_argument("--alias", action="append", default=[])
    parser.add_argument("--ip")
    parser.add_argument("network", metavar="NETWORK")
    parser.add_argument("container", metavar="CONTAINER")
    parser.set_defaults(func=cmd_connect)


def cmd_connect(context, args) -> int:
    endpoint: dict = {"Aliases": args.alias or None}
    if args.ip:
        endpoint["IPAMConfig"] = {"IPv4Address": args.ip}
    context.backend.network_connect(args.network, {"Container": args.container,
                                                   "EndpointConfig": endpoint})
    return 0


def _disconnect(parser: argparse.ArgumentParser) -> None:
    """disconnect a container from a network"""
    parser.add_argument("-f", "--force", action="store_true")
    parser.add_argument("network", metavar="NETWORK")
    parser.add_argument("container", metavar="CONTAINER")
    parser.set_defaults(func=cmd_disconnect)


def cmd_disconnect(context, args) -> int:
    context.backend.network_disconnect(args.network, {"Container": args.container,
                                                      "Force": args.force})
    return 0


def _prune(parser: argparse.ArgumentParser) -> None:
    """remove the networks no container uses"""
    parser.add_argument("-f", "--force", action="store_true", help="do not ask")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
    parser.set_defaults(func=cmd_prune)


def cmd_prune(context, args) -> int:
    if not args.force:
        sys.stdout.write("WARNING! This will remove all custom networks not used by at "
                         "least one container.\nAre you sure you want to continue? "
                         "[y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    filters: dict[str, list[str]] = {}
    for item in args.filter:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    deleted = context.backend.network_prune(filters or None).get("NetworksDeleted")
    if deleted:
        print("Deleted Networks:")
        for name in deleted:
            print(name)
    return 0


def cmd_port(context, args) -> int:
    """``docker port``: ``80/tcp -> 0.0.0.0:8080`` lines, or the addresses
    of one port."""
    from ..manager.ports import port_text

    document = context.backend.inspect(args.container)
    published = document.get("NetworkSettings", {}).get("Ports") or {}
    if args.port:
        number, _, protocol = args.port.partition("/")
        key = f"{number}/{protocol or 'tcp'}"
        entries = published.get(key)
        if not entries:
            print(f"Error: No public port '{key}' published for {args.container}",
                  file=sys.stderr)
            return 1
        for entry in entries:
            print(f"{entry.get('HostIp') or '0.0.0.0'}:{entry.get('HostPort')}")
        return 0
    for key, entries in published.items():
        for line in port_text(key, entries):
            print(line)
    return 0


_COMMANDS = [("create", _create), ("ls", _ls), ("list", _ls), ("inspect", _inspect),
             ("rm", _rm), ("remove", _rm), ("connect", _connect),
             ("disconnect", _disconnect), ("prune", _prune)]
