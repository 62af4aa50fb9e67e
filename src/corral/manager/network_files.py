"""The files of a container's network: /etc/hosts and /etc/resolv.conf as
dockerd writes them (libnetwork's sandbox files; the code is ours).

At start, from the container's attachments: the name of the container on
each of its addresses, in the order it joined its networks (one line per
endpoint, as Docker adds them), then ExtraHosts; on a user network our
resolver first in resolv.conf. A connect or disconnect of a running
container rewrites /etc/hosts in place (the container has the file bind
mounted, so the same inode must change). In host mode, a copy of the
host's /etc/hosts unless ExtraHosts are given, as dockerd does.
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

from .errors import InvalidArgument
from .network_resources import translated


def check_extra_host(entry: str) -> tuple[str, str]:
    """``name:ip`` (or ``name:host-gateway``) as its two parts."""
    name, sep, address = entry.partition(":")
    if not sep or not name:
        raise InvalidArgument(f"bad format for add-host: \"{entry}\"")
    if address != "host-gateway":
        checked_address(address, f"invalid IP address in add-host: \"{address}\"")
    return name, address


def checked_address(text: str, message: str) -> str:
    """``text`` as an IP address in its usual form, or InvalidArgument(``message``)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidArgument(message) from None


class NetworkFiles:
    """Mixin of Networking: writes the files. Needs ``directory``,
    ``networks`` and ``_network`` of the engine."""

    def _write_network_files(self, container, attachments: list) -> None:
        directory = self.directory(container.id)
        host = container.host_config
        self._write_hosts(container, attachments)
        resolver = None
        if attachments:
            with translated():
                resolver = self.networks.resolver(attachments[0].network.id)
        (directory / "resolv.conf").write_text(resolv_conf(host, resolver))

    def _write_hosts(self, container, attachments: list) -> None:
        """/etc/hosts: the container's name on each of its addresses, in the
        order it joined its networks, as Docker adds one per endpoint. The
        file is rewritten in place: the container sees the bind-mounted file."""
        config = container.config
        hostname = config["Hostname"]
        domain = config.get("Domainname") or ""
        full = f"{hostname}.{domain} {hostname}" if domain else hostname
        own = "".join(f"{a.ip}\t{full}\n" for a in attachments) or \
            f"127.0.1.1\t{full}\n"
        text = hosts_file(self._extra_hosts(container.host_config), own)
        (self.directory(container.id) / "hosts").write_text(text)

    def _write_host_mode_hosts(self, container) -> None:
        # As dockerd: in host mode the container gets a copy of the host's
        # /etc/hosts, unless ExtraHosts are given (then the usual file).
        if container.host_config["ExtraHosts"]:
            return
        with contextlib.suppress(FileNotFoundError):
            text = Path("/etc/hosts").read_text()
            (self.directory(container.id) / "hosts").write_text(text)

    def _extra_hosts(self, host: dict) -> list[tuple[str, str]]:
        pairs = []
        for entry in host["ExtraHosts"] or []:
            name, address = check_extra_host(entry)
            if address == "host-gateway":
                address = self._network("bridge").gateway
            pairs.append((name, address))
        return pairs


def hosts_file(extra: list[tuple[str, str]], own: str) -> str:
    """/etc/hosts as Docker writes it: localhost, ExtraHosts, the container."""
    lines = "".join(f"{address}\t{name}\n" for name, address in extra)
    return ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
            f"ff02::2\tip6-allrouters\n{lines}{own}")


def resolv_conf(host: dict, resolver: str | None) -> str:
    """resolv.conf: on a user network our resolver first (then any Dns
    given), else the host's servers or Dns; DnsSearch, DnsOptions."""
    if resolver is None:
        return _host_resolv_conf(host)
    lines = [f"nameserver {resolver}",
             *(f"nameserver {server}" for server in host["Dns"] or [])]
    search = host["DnsSearch"] or _host_words("search")
    if search:
        lines.append(f"search {' '.join(search)}")
    if host["DnsOptions"]:
        lines.append(f"options {' '.join(host['DnsOptions'])}")
    return "".join(f"{line}\n" for line in lines)


def _host_words(key: str) -> list[str]:
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if words and words[0] == key:
                return words[1:]
    return []


def _host_resolv_conf(host: dict) -> str:
    """The host's resolv.conf with loopback servers dropped (they mean nothing
    in the container's network namespace), or what Dns/DnsSearch ask."""
    lines = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if not words or words[0].startswith(("#", ";")):
                continue
            if words[0] == "nameserver" and (host["Dns"] or
                                             words[1:2] and words[1].startswith("127.")):
                continue
            if words[0] in ("search", "domain") and host["DnsSearch"]:
                continue
            if words[0] == "options" and host["DnsOptions"]:
                continue
            lines.append(line)
    lines += [f"nameserver {server}" for server in host["Dns"] or []]
    if host["DnsSearch"]:
        lines.append(f"search {' '.join(host['DnsSearch'])}")
    if host["DnsOptions"]:
        lines.append(f"options {' '.join(host['DnsOptions'])}")
    return "".join(f"{line}\n" for line in lines)
