"""A node's IPv4 addresses that other nodes can reach, per interface.

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
    out = {}
    for iface, addrs in (ip4_interfaces or {}).items():
        if str(iface).startswith(LOCAL_INTERFACES):
            continue
        kept = []
        for addr in addrs or ():
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            if ip.version != 4 or ip.is_loopback or ip.is_link_local or ip.is_unspecified:
                continue
            if addr not in kept:
                kept.append(addr)
        if kept:
            out[str(iface)] = kept
    return out


def node_addresses(ip4_interfaces) -> list:
    """The reachable addresses of :func:`reachable_ip4`, flat, each once, in interface order."""
    out = []
    for addrs in reachable_ip4(ip4_interfaces).values():
        out.extend(a for a in addrs if a not in out)
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
