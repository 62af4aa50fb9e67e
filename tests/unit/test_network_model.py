"""The network parts of the container model, without root: -p and the
other run flags into the create body, PortBindings and ExposedPorts checked
as dockerd checks them, the conflicts of the network modes, /etc/hosts and
resolv.conf, published ports shown as inspect and ps show them, and the
bodies of the /networks endpoints."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from corral.cli.main import build_parser
from corral.cli.network import PublishError, parse_publish
from corral.manager import network_resources, networking, ports
from corral.manager.docker_model import check_create
from corral.manager.errors import InvalidArgument
from corral.network import PortMapping


@pytest.mark.parametrize("text, expected", [
    ("80", [("80/tcp", "", "")]),
    ("8080:80", [("80/tcp", "", "8080")]),
    ("127.0.0.1:8080:80", [("80/tcp", "127.0.0.1", "8080")]),
    ("127.0.0.1::80", [("80/tcp", "127.0.0.1", "")]),
    ("8080:80/udp", [("80/udp", "", "8080")]),
    ("9000-9001:90-91", [("90/tcp", "", "9000"), ("91/tcp", "", "9001")]),
    ("90-91", [("90/tcp", "", ""), ("91/tcp", "", "")]),
])
def test_publish_forms(text, expected):
    assert parse_publish(text) == expected


@pytest.mark.parametrize("text", ["http", "1:2:3:4", "80/icmp", "9000-9002:90-91",
                                  "0:80", "70000", "[::1]:80:80"])
def test_bad_publish_forms(text):
    with pytest.raises(PublishError):
        parse_publish(text)


def _body(*flags: str) -> dict:
    from corral.cli.create_flags import create_body

    args = build_parser().parse_args(["create", *flags, "img"])
    return create_body(args, attach=False)


def test_run_flags_make_dockers_body():
    body = _body("-p", "127.0.0.1:8080:80", "--expose", "443", "-P", "--net", "front",
                 "--network-alias", "web", "--ip", "10.1.0.5", "--dns", "192.0.2.1",
                 "--dns-search", "example.test", "--dns-option", "ndots:2",
                 "--add-host", "db:192.0.2.7")
    host = body["HostConfig"]
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1",
                                                "HostPort": "8080"}]}
    assert body["ExposedPorts"] == {"80/tcp": {}, "443/tcp": {}}
    assert host["PublishAllPorts"] is True and host["NetworkMode"] == "front"
    assert host["Dns"] == ["192.0.2.1"] and host["DnsSearch"] == ["example.test"]
    assert host["DnsOptions"] == ["ndots:2"] and host["ExtraHosts"] == ["db:192.0.2.7"]
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"front": {
        "Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.1.0.5"}}}}
    assert _body()["HostConfig"]["NetworkMode"] == "default"


def test_port_bindings_are_normalized_and_checked():
    assert ports.normalize_bindings({"80": [{"HostPort": 8080}], "53/UDP": None}) == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": []}
    for bad, message in (({"80x/tcp": []}, 'invalid port specification: "80x"'),
                         ({"80/tcp": [{"HostPort": "a"}]},
                          'invalid port specification: "a"'),
                         ({"80/tcp": [{"HostIp": "nowhere"}]},
                          "invalid host IP address: nowhere")):
        with pytest.raises(InvalidArgument, match=message):
            ports.normalize_bindings(bad)
    assert ports.normalize_exposed({"80": {}, "53/udp": {}}) == {"80/tcp": {},
                                                                "53/udp": {}}


def test_mappings_from_bindings_and_publish_all():
    host = {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
            "PublishAllPorts": True}
    config = {"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}}
    assert ports.mappings(host, config) == (PortMapping(80, "tcp", "127.0.0.1", 8080),
                                            PortMapping(443, "tcp", "", 0))
    assert ports.mappings({"PortBindings": {}}, config) == ()


def _container(exposed=None, bindings=None):
    return SimpleNamespace(config={"ExposedPorts": exposed},
                           host_config={"PortBindings": bindings})


def test_published_ports_as_inspect_and_ps_show_them():
    container = _container({"80/tcp": {}, "443/tcp": {}},
                           {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})
    attachment = SimpleNamespace(ports=[PortMapping(80, "tcp", "", 8080)])
    assert ports.published(container, {"bridge": attachment}, True) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "443/tcp": None}
    assert ports.published(container, {}, False) == {}
    assert ports.list_rows(container, [attachment]) == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"PrivatePort": 443, "Type": "tcp"}]
    assert ports.port_text("80/tcp", [{"HostIp": "", "HostPort": "8080"}]) == [
        "80/tcp -> 0.0.0.0:8080"]


@pytest.mark.parametrize("body, message", [
    ({"Hostname": "h", "HostConfig": {"NetworkMode": "container:x"}},
     "conflicting options: hostname and the network mode"),
    ({"HostConfig": {"NetworkMode": "container:x", "Dns": ["192.0.2.1"]}},
     "conflicting options: dns and the network mode"),
    ({"HostConfig": {"NetworkMode": "container:x", "ExtraHosts": ["a:192.0.2.1"]}},
     "conflicting options: custom host-to-IP mapping and the network mode"),
    ({"HostConfig": {"NetworkMode": "container:x", "PublishAllPorts": True}},
     "conflicting options: port publishing and the container type network mode"),
    ({"ExposedPorts": {"80/tcp": {}}, "HostConfig": {"NetworkMode": "container:x"}},
     "conflicting options: port exposing and the container type network mode"),
    ({"MacAddress": "02:42:ac:11:00:02", "HostConfig": {"NetworkMode": "host"}},
     "conflicting options: mac-address and the network mode"),
    ({"HostConfig": {"NetworkMode": "container:"}}, "Invalid network mode"),
    ({"HostConfig": {"ExtraHosts": ["a:999.1.1.1"]}},
     'invalid IP address in add-host: "999.1.1.1"'),
    ({"HostConfig": {"Dns": ["dns.example"]}}, "invalid IP address: dns.example"),
])
def test_mode_conflicts_are_dockerds(body, message):
    request = check_create(body)
    with pytest.raises(InvalidArgument, match=message):
        networking.check_conflicts(request.config, request.host_config)


def test_mode_kinds():
    assert [networking.mode_kind(m) for m in ("", "default", "bridge", "host", "none",
                                              "container:x", "front")] == [
        "bridge", "bridge", "bridge", "host", "none", "container", "user"]
    assert networking.check_extra_host("gw:host-gateway") == ("gw", "host-gateway")
    assert networking.subnet_of("172.18.0.1/16") == "172.18.0.0/16"
    with pytest.raises(InvalidArgument):
        networking.subnet_of("nonsense")


def test_hosts_and_resolv_conf():
    hosts = networking.hosts_file([("db", "192.0.2.7")], "10.1.0.2\tbox\n")
    assert hosts.startswith("127.0.0.1\tlocalhost\n")
    assert hosts.endswith("192.0.2.7\tdb\n10.1.0.2\tbox\n")
    host = {"Dns": ["192.0.2.53"], "DnsSearch": ["example.test"],
            "DnsOptions": ["ndots:0"]}
    assert networking.resolv_conf(host, "10.1.0.1") == (
        "nameserver 10.1.0.1\nnameserver 192.0.2.53\nsearch example.test\n"
        "options ndots:0\n")
    plain = networking.resolv_conf(host, None)
    assert "nameserver 192.0.2.53\n" in plain and "options ndots:0\n" in plain


def test_network_create_bodies_and_filters():
    request = network_resources._create_request({
        "Name": "front", "Driver": "bridge", "Internal": True, "Labels": {"a": "b"},
        "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.254"}]}})
    assert request == {"name": "front", "driver": "bridge", "subnet": "10.9.0.0/24",
                       "gateway": "10.9.0.254", "ip_range": None, "internal": True,
                       "labels": {"a": "b"}, "options": None}
    for bad in ({"Name": ""}, {"Name": "x", "EnableIPv6": True},
                {"Name": "x", "IPAM": {"Config": [{}, {}]}}):
        with pytest.raises(InvalidArgument):
            network_resources._create_request(bad)
    network = SimpleNamespace(name="front", id="abc123", driver="bridge",
                              labels={"team": "web"})
    assert network_resources._network_matches(network, {"name": ["ron"], "label": ["team"]})
    assert network_resources._network_matches(network, {"type": ["custom"], "id": ["abc"]})
    assert not network_resources._network_matches(network, {"label": ["team=db"]})
    assert not network_resources._network_matches(network, {"type": ["builtin"]})
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        network_resources._network_matches(network, {"colour": ["red"]})
