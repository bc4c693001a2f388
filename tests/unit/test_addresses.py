"""A node's reachable IPv4 addresses: the rule the swarm's advertise address and the
registry's listen address share."""

import subprocess

import pytest
import salt.utils.network
from armswarm_core.common import addresses

pytestmark = pytest.mark.unit


def test_docker_bridges_loopback_and_link_local_are_nobodys_address():
    grain = {
        "lo": ["127.0.0.1"],
        "eth0": ["192.168.1.21", "192.168.1.21", "169.254.3.4"],
        "docker0": ["172.17.0.1"],
        "docker_gwbridge": ["172.18.0.1"],
        "br-5d2f0c1a9b7e": ["172.19.0.1"],
        "veth1a2b3c": [],
        "virbr0": ["192.168.122.1"],
        "wlan0": ["10.0.0.7"],
        "eth1": [],
        "usb0": ["not-an-address"],
    }
    assert addresses.reachable_ip4(grain) == {"eth0": ["192.168.1.21"], "wlan0": ["10.0.0.7"]}
    assert addresses.node_addresses(grain) == ["192.168.1.21", "10.0.0.7"]
    assert addresses.reachable_ip4(None) == {} and addresses.node_addresses({}) == []


def test_live_addresses_include_secondary_ipv4_not_ipv6():
    interfaces = {
        "eth0": {
            "up": True,
            "inet": [{"address": "192.168.1.21", "netmask": "255.255.255.0"}],
            "secondary": [
                {"type": "inet", "address": "192.168.1.50", "label": "eth0:1"},
                {"type": "inet6", "address": "fd00::5"},
            ],
            "inet6": [{"address": "fe80::1", "prefixlen": "64"}],
        },
        "eth1": {"up": False},
    }
    assert addresses.live_ip4(interfaces) == {"eth0": ["192.168.1.21", "192.168.1.50"], "eth1": []}


def test_live_addresses_are_what_the_kernel_lists():
    # this machine's interfaces, read as docker_swarm.facts reads them, against `ip` itself
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    kernel: dict = {}
    for line in out.splitlines():
        fields = line.split()
        iface = fields[1].split("@")[0]
        kernel.setdefault(iface, []).append(fields[3].split("/")[0])
    assert kernel, out
    live = addresses.live_ip4(salt.utils.network.interfaces())
    assert {i: sorted(a) for i, a in live.items() if a} == {i: sorted(a) for i, a in kernel.items()}
    reachable = addresses.reachable_ip4(live)
    assert "lo" not in reachable and not any(i.startswith("docker") for i in reachable)
    assert all(set(a) <= set(kernel[i]) for i, a in reachable.items())


def test_ipv6_addresses_without_link_local_loopback_and_docker_bridges():
    grain = {
        "lo": ["::1"],
        "eth0": ["fe80::ba27:ebff:fe12:3456", "2001:DB8::0011", "2001:db8::11", "192.168.1.21"],
        "docker0": ["fd00:dead::1"],
        "wlan0": ["fd12:3456:789a::7", "fe80::1%wlan0"],
        "eth1": ["::"],
    }
    assert addresses.reachable_ip6(grain) == {
        "eth0": ["2001:db8::11"],  # once, in the form docker lists it
        "wlan0": ["fd12:3456:789a::7"],
    }
    assert addresses.reachable_ip6(None) == {}
    # and no IPv6 address passes for an IPv4 one
    assert addresses.reachable_ip4(grain) == {"eth0": ["192.168.1.21"]}


def test_live_ipv6_addresses_are_what_the_kernel_lists():
    out = subprocess.run(
        ["ip", "-6", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    kernel: dict = {}
    for line in out.splitlines():
        fields = line.split()
        kernel.setdefault(fields[1].split("@")[0], []).append(fields[3].split("/")[0])
    live = addresses.live_ip6(salt.utils.network.interfaces())
    assert {i: sorted(a) for i, a in live.items() if a} == {i: sorted(a) for i, a in kernel.items()}
