"""The swarm layout from pillar (managers, workers, per-node settings), validated, and the
labels and addresses it asks for each node.

Pure logic: inputs are the pillar layout and facts gathered from the minions
(``docker_swarm.facts``) plus the current node list; outputs are errors or an ordered plan.
``converge`` (behind the orchestration state ``swarm_cluster.converged``) executes the plan.
"""

import ipaddress
from dataclasses import dataclass, field

from armswarm_core.common import config
from armswarm_core.swarm import swarm_engine

LABEL_PREFIX = "armswarm."
DEFAULT_PORT = 2377


@dataclass
class NodeSettings:
    advertise_addr: str | None = None
    advertise_interface: str | None = None
    labels: dict = field(default_factory=dict)
    availability: str | None = None


@dataclass
class Layout:
    managers: list
    workers: list
    nodes: dict
    allow_even_managers: bool = False
    prune: bool = False
    remove_undeclared_labels: bool = False
    grain_labels: bool = True
    listen_port: int = DEFAULT_PORT

    @property
    def members(self) -> list:
        return [*self.managers, *self.workers]

    def role(self, minion_id: str) -> str:
        return "manager" if minion_id in self.managers else "worker"


def _target(value, key: str, errors: list):
    """A list of minion ids, or ``{tgt: …, tgt_type: …}`` to expand on the master."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, dict) and "tgt" in value:
        return {"tgt": value["tgt"], "tgt_type": value.get("tgt_type", "compound")}
    errors.append(f"armswarm:swarm:{key}: a list of minion ids or {{tgt: …, tgt_type: …}}")
    return []


def _flag(conf: dict, key: str, default: bool, errors: list) -> bool:
    """A pillar boolean; a quoted "false" is false, anything unclear is an error."""
    value = conf.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", ""):
        return False
    errors.append(f"armswarm:swarm:{key}: {value!r} is not true or false")
    return default


def _port(conf: dict, errors: list) -> int:
    try:
        port = int(conf.get("listen_port", DEFAULT_PORT))
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        errors.append(f"armswarm:swarm:listen_port: {conf.get('listen_port')!r} is not a port")
        return DEFAULT_PORT
    return port


def layout_conf(opts=None, pillar=None, path: str = "armswarm:swarm") -> dict | None:
    """The layout at pillar key ``path``, for :func:`parse_layout`: the same merge as every
    setting (the config's layout < pillar's, key by key; neither is changed). ``None`` when
    neither has a mapping there (parse_layout says so)."""
    from_opts, problems = config.section(opts, path)
    from_pillar, more = config.section(config.pillar_of(opts, pillar), path)
    if problems or more or not (from_opts or from_pillar):
        return None
    return config.merge(from_opts, from_pillar)


def parse_layout(conf) -> tuple[Layout | None, list, dict]:
    """``(layout, errors, targets)``; ``targets``: managers/workers given as targets to expand."""
    errors: list = []
    if not isinstance(conf, dict):
        return None, ["pillar armswarm:swarm is missing or not a mapping"], {}
    targets = {}
    lists = {}
    for key in ("managers", "workers"):
        value = _target(conf.get(key), key, errors)
        if isinstance(value, dict):
            targets[key] = value
            lists[key] = []
        else:
            lists[key] = value
    nodes = {}
    node_conf = conf.get("nodes") or {}
    if not isinstance(node_conf, dict):
        errors.append("armswarm:swarm:nodes: must be a mapping of minion id to settings")
        node_conf = {}
    for minion_id, settings in node_conf.items():
        if not isinstance(settings, dict):
            errors.append(f"armswarm:swarm:nodes:{minion_id}: must be a mapping")
            continue
        unknown = set(settings) - {
            "advertise_addr",
            "advertise_interface",
            "labels",
            "availability",
        }
        if unknown:
            errors.append(f"armswarm:swarm:nodes:{minion_id}: unknown keys {sorted(unknown)}")
        labels = settings.get("labels") or {}
        if not isinstance(labels, dict):
            errors.append(f"armswarm:swarm:nodes:{minion_id}:labels: must be a mapping")
            labels = {}
        availability = settings.get("availability")
        if availability is not None and availability not in swarm_engine.AVAILABILITIES:
            errors.append(
                f"armswarm:swarm:nodes:{minion_id}:availability: {availability!r} is not one of "
                f"{', '.join(swarm_engine.AVAILABILITIES)}"
            )
        addr = settings.get("advertise_addr")
        if addr is not None:
            try:
                ipaddress.ip_address(_strip_port(str(addr)))
            except ValueError:
                errors.append(
                    f"armswarm:swarm:nodes:{minion_id}:advertise_addr: {addr!r} "
                    "is not an IP address"
                )
        nodes[minion_id] = NodeSettings(
            advertise_addr=addr,
            advertise_interface=settings.get("advertise_interface"),
            labels={str(k): str(v) for k, v in labels.items()},
            availability=availability,
        )
    layout = Layout(
        managers=lists["managers"],
        workers=lists["workers"],
        nodes=nodes,
        allow_even_managers=_flag(conf, "allow_even_managers", False, errors),
        prune=_flag(conf, "prune", False, errors),
        remove_undeclared_labels=_flag(conf, "remove_undeclared_labels", False, errors),
        grain_labels=_flag(conf, "grain_labels", True, errors),
        listen_port=_port(conf, errors),
    )
    return layout, errors, targets


def check_counts(layout: Layout) -> list:
    errors = []
    if not layout.managers:
        errors.append("armswarm:swarm:managers: at least one manager is needed")
    elif len(layout.managers) % 2 == 0 and not layout.allow_even_managers:
        errors.append(
            f"armswarm:swarm:managers: {len(layout.managers)} managers is an even number "
            f"({', '.join(layout.managers)}); quorum needs "
            f"{swarm_engine.quorum(len(layout.managers))}, so "
            "one more manager adds no fault tolerance. Use an odd number or set "
            "armswarm:swarm:allow_even_managers: true"
        )
    both = sorted(set(layout.managers) & set(layout.workers))
    if both:
        errors.append(f"armswarm:swarm: {', '.join(both)} listed as manager and as worker")
    for key in ("managers", "workers"):
        seen = set()
        for minion_id in getattr(layout, key):
            if minion_id in seen:
                errors.append(f"armswarm:swarm:{key}: {minion_id} is listed twice")
            seen.add(minion_id)
    stray = sorted(set(layout.nodes) - set(layout.members))
    if stray:
        errors.append(
            f"armswarm:swarm:nodes: settings for {', '.join(stray)}, which is neither a "
            "manager nor a worker"
        )
    return errors


def _strip_port(addr: str) -> str:
    """``10.0.0.1:2377`` → ``10.0.0.1`` (IPv6 addresses keep their colons)."""
    host, sep, port = addr.rpartition(":")
    return host if sep and port.isdigit() and host.count(":") == 0 else addr


def advertise_addr(minion_id: str, layout: Layout, facts: dict) -> str | None:
    """The address a node advertises: pillar address, else pillar interface, else the node's
    default-route interface."""
    settings = layout.nodes.get(minion_id) or NodeSettings()
    if settings.advertise_addr:
        return _strip_port(str(settings.advertise_addr))
    iface = settings.advertise_interface or facts.get("default_interface")
    addrs = (facts.get("interfaces") or {}).get(iface) or []
    return addrs[0] if addrs else None


def grain_labels(facts: dict) -> dict:
    """Placement labels every node gets from its grains (``node.labels.armswarm.board == …``)."""
    armnode = facts.get("armnode") or {}
    labels = {
        "board": armnode.get("board") or "generic",
        "arch": armnode.get("arch") or facts.get("cpuarch") or "",
        "cpus": str(armnode.get("cpus") or facts.get("num_cpus") or ""),
        "big-cores": str(len(armnode.get("big_cores") or [])),
        "storage": armnode.get("root_kind") or "",
    }
    return {f"{LABEL_PREFIX}{k}": v for k, v in labels.items() if v != ""}


MINION_LABEL = f"{LABEL_PREFIX}minion"


def desired_labels(minion_id: str, layout: Layout, facts: dict) -> dict:
    # The minion id on the node: stale entries and prune candidates are matched by it, since
    # hostnames and minion ids need not agree.
    labels = {MINION_LABEL: minion_id}
    if layout.grain_labels:
        labels.update(grain_labels(facts))
    labels.update((layout.nodes.get(minion_id) or NodeSettings()).labels)
    return labels
