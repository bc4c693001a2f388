"""Overlay networks: the desired settings, the engine's current ones, and what differs."""

from armswarm_core import ArmswarmError

try:
    import docker.errors
    import docker.types
except ImportError:  # pragma: no cover - client.missing_dependency() reports it
    docker = None


ENCRYPTED = "encrypted"
MTU_OPTION = "com.docker.network.driver.mtu"


def desired(
    driver="overlay",
    attachable=False,
    internal=False,
    subnet=None,
    gateway=None,
    encrypted=False,
    labels=None,
    mtu=None,
    enable_ipv6=False,
    subnet6=None,
) -> dict:
    """The settings a network must have. ``mtu``: the VXLAN MTU (a whole number 68 to
    65535; on boards whose uplink has a smaller MTU, e.g. PPPoE or a VPN); ``enable_ipv6``
    with ``subnet6``: an IPv6 subnet beside the IPv4 one."""
    for key, value in (
        ("attachable", attachable),
        ("internal", internal),
        ("encrypted", encrypted),
        ("enable_ipv6", enable_ipv6),
    ):
        if not isinstance(value, bool):
            raise ArmswarmError(f"{key}: must be true or false, not {value!r}")
    if mtu is not None and (
        isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535
    ):
        raise ArmswarmError(f"mtu: must be a whole number 68 to 65535, not {mtu!r}")
    if subnet6 is not None and not enable_ipv6:
        raise ArmswarmError("subnet6: needs enable_ipv6: true")
    return {
        "mtu": mtu,
        "enable_ipv6": enable_ipv6,
        "subnet6": subnet6,
        "driver": driver,
        "attachable": bool(attachable),
        "internal": bool(internal),
        "subnet": subnet,
        "gateway": gateway,
        "encrypted": bool(encrypted),
        # None: whatever labels the network has; a mapping: exactly these.
        "labels": None if labels is None else {str(k): str(v) for k, v in labels.items()},
    }


def normalise(raw: dict) -> dict:
    """The engine's network as the same shape as :func:`desired`."""
    pools = (raw.get("IPAM") or {}).get("Config") or []
    v4 = [p for p in pools if ":" not in (p.get("Subnet") or "")]
    v6 = [p for p in pools if ":" in (p.get("Subnet") or "")]
    pool = v4[0] if v4 else {}
    options = raw.get("Options") or {}
    return {
        "mtu": int(options[MTU_OPTION]) if str(options.get(MTU_OPTION, "")).isdigit() else None,
        "enable_ipv6": bool(raw.get("EnableIPv6")),
        "subnet6": v6[0].get("Subnet") if v6 else None,
        "driver": raw.get("Driver"),
        "attachable": bool(raw.get("Attachable")),
        "internal": bool(raw.get("Internal")),
        "subnet": pool.get("Subnet"),
        "gateway": pool.get("Gateway"),
        "encrypted": ENCRYPTED in (raw.get("Options") or {}),
        "labels": dict(raw.get("Labels") or {}),
    }


def diff(current: dict | None, want: dict) -> dict:
    """Fields that differ; an unset subnet/gateway accepts whatever IPAM chose."""
    if current is None:
        return dict(want)
    out = {}
    for key, value in want.items():
        if key in ("subnet", "gateway", "labels", "mtu", "subnet6") and value is None:
            continue
        if current.get(key) != value:
            out[key] = {"old": current.get(key), "new": value}
    return out


def current(client, name: str) -> dict | None:
    """The swarm-scoped network called exactly ``name``, or None."""
    try:
        found = [n for n in client.api.networks(names=[name]) if n.get("Name") == name]
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"cannot list networks: {exc.explanation or exc}") from exc
    if not found:
        return None
    return normalise(client.api.inspect_network(found[0]["Id"]))


def in_use(client, name: str) -> bool:
    """Whether any service of the swarm is attached to the network."""
    try:
        net = client.api.inspect_network(name)
        services = client.api.services()
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"cannot inspect network {name}: {exc.explanation or exc}") from exc
    for service in services:
        spec = service.get("Spec") or {}
        attached = (spec.get("TaskTemplate") or {}).get("Networks") or spec.get("Networks") or []
        if any(a.get("Target") in (net["Id"], name) for a in attached):
            return True
    return bool(net.get("Containers"))


def create(client, name: str, want: dict):
    ipam = None
    pools = []
    if want.get("subnet"):
        pools.append(docker.types.IPAMPool(subnet=want["subnet"], gateway=want.get("gateway")))
    if want.get("subnet6"):
        pools.append(docker.types.IPAMPool(subnet=want["subnet6"]))
    if pools:
        ipam = docker.types.IPAMConfig(pool_configs=pools)
    options = {ENCRYPTED: ""} if want.get("encrypted") else {}
    if want.get("mtu"):
        options[MTU_OPTION] = str(want["mtu"])
    try:
        client.api.create_network(
            name,
            driver=want["driver"],
            scope="swarm",
            attachable=want["attachable"],
            internal=want["internal"],
            ipam=ipam,
            labels=want["labels"] or None,
            options=options or None,
            enable_ipv6=bool(want.get("enable_ipv6")),
        )
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"creating network {name} failed: {exc.explanation or exc}") from exc


def remove(client, name: str):
    try:
        client.api.remove_network(name)
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"removing network {name} failed: {exc.explanation or exc}") from exc
