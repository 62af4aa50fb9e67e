"""The CNI configuration we generate and the way plugins are given it."""

from __future__ import annotations

import json
import os
import stat

import pytest

from corral.network import (
    Network,
    NetworkError,
    PluginError,
    PortMapping,
    cni,
    conflist,
    hostports,
)


def network(**changes) -> Network:
    fields = dict(id="f" * 64, name="web", driver="bridge", bridge="br-ffff",
                  subnet="10.5.0.0/16", gateway="10.5.0.1", ip_range="",
                  internal=False, labels={}, options={}, created=0.0, dns=True)
    fields.update(changes)
    return Network(**fields)


def test_bridge_network_list():
    config = conflist.build(network(), "/lib/ipam")
    assert config["cniVersion"] == "1.0.0" and config["name"] == "web"
    # No firewall plugin (firewall.py accepts forwarding per network) and no
    # portmap (hostports.py publishes ports).
    [bridge] = config["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "br-ffff"
    assert bridge["isGateway"] and bridge["hairpinMode"] and not bridge["ipMasq"]
    ipam = bridge["ipam"]
    assert ipam["dataDir"] == "/lib/ipam" and ipam["routes"] == [{"dst": "0.0.0.0/0"}]
    assert ipam["ranges"] == [[{"subnet": "10.5.0.0/16", "gateway": "10.5.0.1",
                                "rangeStart": "10.5.0.1", "rangeEnd": "10.5.255.254"}]]


def test_internal_range_mtu_and_sysctls():
    config = conflist.build(network(internal=True, ip_range="10.5.3.0/24",
                                    options={conflist.OPT_MTU: "1400",
                                             "sysctl.net.ipv4.conf.eth0.rp_filter": "2"}),
                            "/d")
    bridge = config["plugins"][0]
    assert "routes" not in bridge["ipam"] and bridge["mtu"] == 1400
    assert bridge["ipam"]["ranges"][0][0]["rangeStart"] == "10.5.3.1"
    assert bridge["ipam"]["ranges"][0][0]["rangeEnd"] == "10.5.3.254"
    assert config["plugins"][-1] == {"type": "tuning", "sysctl": {
        "net.ipv4.conf.eth0.rp_filter": "2"}}
    assert not conflist.masquerade(network(internal=True))
    assert not conflist.masquerade(network(options={conflist.OPT_MASQUERADE: "false"}))
    assert conflist.masquerade(network())


def test_runtime_config_only_for_declared_capabilities():
    listing = conflist.build(network(), "/d")
    rt = cni.RuntimeConf("c1", "/run/netns/c1", "eth0",
                         {"portMappings": [PortMapping(80, host_port=8080).to_cni()],
                          "ips": ["10.5.0.9/16"]})
    bridge = cni._config(listing, listing["plugins"][0], rt, None)
    # Any plugin a user's list holds gets the capabilities it declares.
    listing["plugins"] += [{"type": "portmap", "capabilities": {"portMappings": True}},
                           {"type": "firewall"}]
    portmap = cni._config(listing, listing["plugins"][1], rt, {"ips": []})
    firewall = cni._config(listing, listing["plugins"][2], rt, None)
    assert bridge["runtimeConfig"] == {"ips": ["10.5.0.9/16"]}
    assert portmap["runtimeConfig"] == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]}
    assert portmap["prevResult"] == {"ips": []} and "prevResult" not in bridge
    assert "runtimeConfig" not in firewall and firewall["name"] == "web"


def test_container_address_from_result():
    result = {"interfaces": [{"name": "br0", "mac": "aa"},
                             {"name": "veth1", "mac": "bb"},
                             {"name": "eth0", "mac": "02:42:0a:05:00:02",
                              "sandbox": "/run/netns/c1"}],
              "ips": [{"address": "fd00::2/64", "interface": 2},
                      {"address": "10.5.0.2/16", "gateway": "10.5.0.1",
                       "interface": 2}]}
    assert cni.container_address(result, "/run/netns/c1") == (
        "10.5.0.2", 16, "10.5.0.1", "02:42:0a:05:00:02")
    with pytest.raises(NetworkError, match="no IPv4 address"):
        cni.container_address({"ips": []}, "/x")


def _plugin(directory, name, script):
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_plugin_invocation_env_and_errors(tmp_path):
    _plugin(tmp_path, "echoenv", 'cat > "$0.stdin"; env > "$0.env"; '
            'echo \'{"cniVersion":"1.0.0","ips":[]}\'\n')
    _plugin(tmp_path, "fails", 'echo \'{"code":7,"msg":"no way","details":"x"}\'; '
            'exit 1\n')
    plugins = cni.Plugins([tmp_path / "missing", tmp_path])
    rt = cni.RuntimeConf("c1", "/run/netns/c1", "eth0")
    listing = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "echoenv"}]}
    assert plugins.add(listing, rt) == {"cniVersion": "1.0.0", "ips": []}
    env = dict(line.split("=", 1) for line in
               (tmp_path / "echoenv.env").read_text().splitlines() if "=" in line)
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_CONTAINERID"] == "c1"
    assert env["CNI_NETNS"] == "/run/netns/c1" and env["CNI_IFNAME"] == "eth0"
    assert env["CNI_PATH"] == f"{tmp_path / 'missing'}{os.pathsep}{tmp_path}"
    assert json.loads((tmp_path / "echoenv.stdin").read_text())["name"] == "n"
    with pytest.raises(PluginError, match="ADD 'fails': no way: x") as caught:
        plugins.add({**listing, "plugins": [{"type": "fails"}]}, rt)
    assert caught.value.code == 7
    with pytest.raises(NetworkError, match="find plugin 'nothere'"):
        plugins.find("nothere")
    with pytest.raises(NetworkError, match="not a plugin name"):
        plugins.find("../bin/sh")


def test_delete_runs_every_plugin_in_reverse(tmp_path):
    for name in ("one", "two"):
        _plugin(tmp_path, name, f'echo {name} >> "{tmp_path}/order"; exit 1\n')
    plugins = cni.Plugins([tmp_path])
    listing = {"cniVersion": "1.0.0", "name": "n",
               "plugins": [{"type": "one"}, {"type": "two"}]}
    with pytest.raises(PluginError, match="DEL 'two'"):
        plugins.delete(listing, cni.RuntimeConf("c1", "", "eth0"), None)
    assert (tmp_path / "order").read_text().split() == ["two", "one"]


def test_cache_round_trip(tmp_path):
    cache = cni.Cache(tmp_path / "results")
    path = cache.path("net", "c1", "eth0")
    assert cache.read(path) is None
    rt = cni.RuntimeConf("c1", "/ns", "eth0", {"portMappings": []})
    cache.write(path, {"name": "n"}, rt, {"ips": []})
    assert cache.read(path) == ({"name": "n"}, rt, {"ips": []})
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["net-c1-eth0.json"]


def test_published_port_rules():
    found = hostports.rules("c" * 64, "10.5.0.9", "10.5.0.0/16",
                            [PortMapping(80, "tcp", "", 8080),
                             PortMapping(53, "udp", "127.0.0.1", 5353)])
    assert len(found) == 6 and all("c" * 64 in rule for _, rule in found)
    dnat = [rule for chain, rule in found if chain == hostports.DNAT]
    assert dnat[0][-4:] == ["-j", "DNAT", "--to-destination", "10.5.0.9:80"]
    assert "-d" not in dnat[0] and dnat[0][dnat[0].index("--dport") + 1] == "8080"
    assert dnat[1][dnat[1].index("-d") + 1] == "127.0.0.1"
    sources = [rule[1] for chain, rule in found if chain == hostports.MASQ]
    assert sources == ["127.0.0.1/32", "10.5.0.0/16"] * 2
    assert hostports._quote(["-m", "comment", "--comment", "a b"]) == \
        '-m comment --comment "a b"'
    assert PortMapping.from_cni(PortMapping(53, "udp", "::1", 7).to_cni()) == \
        PortMapping(53, "udp", "::1", 7)
