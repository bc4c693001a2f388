"""A node's IP addresses that other nodes can reach, per interface (IPv4, and IPv6 apart).

One rule for every place that asks "is this address the node's own" or "which address does the
node offer" (the swarm's advertise address, the registry's listen address): no loopback, no
docker bridges (``docker0``'s 172.17.0.1 and ``docker_gwbridge``'s 172.18.0.1 are the same on
every node), no container ends, no libvirt bridge, no link-local addresses.
"""

import ipaddress

LOCAL_INTERFACES = ("lo", "docker", "br-", "veth", "virbr")


def reachable_ip4(ip4_interfaces) -> dict:
    """``{interface: [address, ...]}`` from an ``ip4_interfaces``-shaped mapping, keeping the
    interface and address order, without local interfaces and addresses; interfaces left with
    no address are dropped."""
    return _reachable(ip4_interfaces, 4)


def reachable_ip6(ip6_interfaces) -> dict:
    """The same for IPv6 (an ``ip6_interfaces``-shaped mapping): link-local ``fe80::`` addresses
    are left out too, since one needs its interface's zone to be reached."""
    return _reachable(ip6_interfaces, 6)


def _reachable(interfaces, version: int) -> dict:
    out = {}
    for iface, addrs in (interfaces or {}).items():
        if str(iface).startswith(LOCAL_INTERFACES):
            continue
        kept = []
        for addr in addrs or ():
            try:
                ip = ipaddress.ip_address(str(addr).split("%", 1)[0])
            except ValueError:
                continue
            if ip.version != version or ip.is_loopback or ip.is_link_local or ip.is_unspecified:
                continue
            if str(ip) not in kept:
                kept.append(str(ip))
        if kept:
            out[str(iface)] = kept
    return out


def node_addresses(ip4_interfaces) -> list:
    """The reachable addresses of :func:`reachable_ip4`, flat, each once, in interface order."""
    out = []
    for addrs in reachable_ip4(ip4_interfaces).values():
        out.extend(a for a in addrs if a not in out)
    return out


def live_ip6(interfaces) -> dict:
    """:func:`live_ip4` for the ``inet6`` addresses."""
    out = {}
    for iface, listed in (interfaces or {}).items():
        entries = (listed or {}).get("inet6") or ()
        out[iface] = [e["address"] for e in entries if isinstance(e, dict) and e.get("address")]
    return out


def live_ip4(interfaces) -> dict:
    """``{interface: [address, ...]}`` from ``salt.utils.network.interfaces()``'s shape
    (``{"eth0": {"inet": [{"address": ...}], "secondary": [...]}}``): the addresses the kernel
    has now, where the ``ip4_interfaces`` grain holds those of the minion's start (a board's
    DHCP lease may have changed since). Secondary IPv4 addresses count, as in the grain."""
    out = {}
    for iface, listed in (interfaces or {}).items():
        data = listed or {}
        entries = list(data.get("inet") or ()) + [
            e
            for e in data.get("secondary") or ()
            if isinstance(e, dict) and e.get("type") == "inet"
        ]
        out[iface] = [e["address"] for e in entries if isinstance(e, dict) and e.get("address")]
    return out
