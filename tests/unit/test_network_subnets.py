"""Subnet checks and pools, ports, and bad input refused before any change."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from corral.network import (
    InvalidNetworkArgument,
    NetworkConflict,
    NetworkNotFound,
    Networks,
    PortInUse,
    PortMapping,
    PredefinedNetwork,
    hostports,
    ports,
    subnets,
)


def test_addressing_defaults_and_checks():
    assert subnets.addressing("10.9.0.0/16") == subnets.Addressing(
        "10.9.0.0/16", "10.9.0.1", "")
    assert subnets.addressing("10.9.0.0/16", "10.9.3.3", "10.9.4.0/24").gateway == (
        "10.9.3.3")
    cases = [("bogus", None, None, "invalid CIDR address: bogus"),
             ("10.9.0.1/16", None, None, "host bits set"),
             ("fd00::/64", None, None, "only IPv4"),
             ("10.9.0.0/16", "10.8.0.1", None, "no matching subnet for gateway 10.8.0.1"),
             ("10.9.0.0/16", "nope", None, "invalid gateway address: nope"),
             ("10.9.0.0/16", None, "10.10.0.0/24", "no matching subnet for range"),
             ("10.9.0.0/16", None, "10.9.0.0/8", "invalid CIDR address|host bits")]
    for subnet, gateway, ip_range, message in cases:
        with pytest.raises(InvalidNetworkArgument, match=message):
            subnets.addressing(subnet, gateway, ip_range)


def test_pool_skips_networks_and_host_routes():
    host = [ipaddress.IPv4Network("172.19.5.0/24")]
    assert str(subnets.choose(["172.18.0.0/16"], host)) == "172.20.0.0/16"
    everything = [str(n) for n in subnets.pool()]
    assert str(subnets.choose(everything[:-1], [])) == everything[-1]
    with pytest.raises(NetworkConflict, match="could not find an available"):
        subnets.choose(everything, [])
    with pytest.raises(NetworkConflict, match="Pool overlaps with other one"):
        subnets.check_free("10.1.2.0/24", ["10.1.0.0/16"])
    subnets.check_free("10.2.0.0/16", ["10.1.0.0/16", ""])


def test_host_networks_include_loopback():
    assert any(ipaddress.IPv4Address("127.0.0.1") in n
               for n in subnets.host_networks())


def test_ports_chosen_and_clashes():
    # Outside the ephemeral range: no outgoing connection of the host holds them.
    published = [PortMapping(80, host_port=61001)]
    resolved = ports.resolve([PortMapping(80), PortMapping(81)], published,
                             port_range=(61001, 61003))
    assert {m.host_port for m in resolved} <= {61002, 61003}
    assert len({m.host_port for m in resolved}) == 2
    with pytest.raises(PortInUse, match="Bind for 0.0.0.0:61001 failed: port is "
                       "already allocated"):
        ports.resolve([PortMapping(90, host_port=61001)], published)
    with pytest.raises(PortInUse, match="127.0.0.1:61001"):
        ports.resolve([PortMapping(90, host_ip="127.0.0.1", host_port=61001)],
                      published)
    # Another address, or the other protocol, is no clash.
    assert ports.clashes(PortMapping(1, host_ip="127.0.0.1", host_port=5),
                         PortMapping(1, host_ip="127.0.0.2", host_port=5)) is False
    assert not ports.clashes(PortMapping(1, "udp", host_port=5), PortMapping(
        1, host_port=5))
    for bad in (PortMapping(80, "sctp"), PortMapping(0), PortMapping(80, host_port=70000),
                PortMapping(80, host_ip="nope")):
        with pytest.raises(InvalidNetworkArgument):
            ports.resolve([bad], [])


def test_port_bound_on_host_is_taken():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUse):
            ports.resolve([PortMapping(80, host_port=port)], [])
        assert ports.bound_on_host(PortMapping(80, host_ip="127.0.0.1",
                                               host_port=port))


def test_wildcard_host_ip_clashes_with_every_address():
    for wild in ("", "0.0.0.0"):
        assert ports.clashes(PortMapping(80, host_ip=wild, host_port=8080),
                             PortMapping(81, host_ip="127.0.0.1", host_port=8080))
    assert not ports.clashes(PortMapping(80, host_ip="127.0.0.2", host_port=8080),
                             PortMapping(81, host_ip="127.0.0.1", host_port=8080))


def test_dnat_rules_read_back_from_iptables_s():
    line = ("-A CORRAL-HOSTPORTS -d 127.0.0.1/32 -p udp -m udp --dport 8053 -m "
            "comment --comment abc123 -j DNAT --to-destination 10.88.0.2:53")
    assert hostports.parse_rule(line.split()) == (
        "abc123", PortMapping(53, "udp", "127.0.0.1", 8053))
    wild = ("-A CORRAL-HOSTPORTS -p tcp -m tcp --dport 8080 -m comment --comment x "
            "-j DNAT --to-destination 10.88.0.3:80")
    assert hostports.parse_rule(wild.split()) == ("x", PortMapping(80, "tcp", "", 8080))
    assert hostports.parse_rule("-N CORRAL-HOSTPORTS".split()) is None
    # Rules made by hostports.rules() parse back to their mapping.
    made = hostports.rules("cid", "10.1.0.5", "10.1.0.0/24",
                           [PortMapping(80, "tcp", "10.0.0.1", 9000)])[0]
    assert hostports.parse_rule(["-A", made[0], *made[1]]) == (
        "cid", PortMapping(80, "tcp", "10.0.0.1", 9000))


@pytest.fixture
def networks(tmp_path):
    made = Networks(tmp_path / "lib", tmp_path / "run")
    yield made
    made.close()


def test_predefined_and_lookups(networks, tmp_path):
    listed = {n.name: n for n in networks.list()}
    assert {k: v.driver for k, v in listed.items()} == {
        "bridge": "bridge", "host": "host", "none": "null"}
    bridge = listed["bridge"]
    assert (bridge.bridge, bridge.subnet, bridge.dns) == ("corral0", "10.88.0.0/16",
                                                          False)
    assert networks.get(bridge.id) == bridge == networks.get(bridge.id[:6])
    assert networks.resolver("bridge") is None
    with pytest.raises(NetworkNotFound, match="network nope not found"):
        networks.get("nope")
    with pytest.raises(PredefinedNetwork, match="bridge is a pre-defined network"):
        networks.remove("bridge")
    again = Networks(tmp_path / "lib", tmp_path / "run")
    assert {n.id for n in again.list()} == {n.id for n in listed.values()}
    again.close()


def test_bad_create_refused_before_anything(networks, tmp_path):
    cases = [(dict(name="bad/name"), InvalidNetworkArgument),
             (dict(name="x", driver="overlay"), InvalidNetworkArgument),
             (dict(name="x", driver="host"), NetworkConflict),
             (dict(name="x", gateway="10.1.0.1"), InvalidNetworkArgument),
             (dict(name="x", subnet="10.1.0.0/33"), InvalidNetworkArgument),
             (dict(name="x", subnet="10.88.1.0/24"), NetworkConflict),
             (dict(name="bridge", subnet="10.90.0.0/24"), NetworkConflict),
             (dict(name="x", subnet="10.90.0.0/24",
                   options={"com.docker.network.bridge.name": "a" * 16}),
              InvalidNetworkArgument),
             (dict(name="x", subnet="10.90.0.0/24",
                   options={"com.docker.network.bridge.name": "corral0"}),
              NetworkConflict)]
    for arguments, error in cases:
        with pytest.raises(error):
            networks.create(**arguments)
    assert [n.name for n in networks.list()] == ["bridge", "host", "none"]
    with pytest.raises(InvalidNetworkArgument, match="not attached through CNI"):
        networks.attach("host", "c1", tmp_path, name="c1")
    with pytest.raises(InvalidNetworkArgument, match="user defined networks only"):
        networks.attach("bridge", "c1", tmp_path, name="c1", ip="10.88.0.5")
    assert not (tmp_path / "lib" / "cni" / "results").exists()
