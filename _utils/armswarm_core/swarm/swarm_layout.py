"""The swarm layout from pillar (managers, workers, per-node settings), validated, and the
labels and addresses it asks for each node.

Pure logic: inputs are the pillar layout and facts gathered from the minions
(``docker_swarm.facts``) plus the current node list; outputs are errors or an ordered plan.
``converge`` (behind the orchestration state ``swarm_cluster.converged``) executes the plan.
"""

import difflib
import ipaddress
from dataclasses import dataclass, field

from armswarm_core.common import config
from armswarm_core.swarm import swarm_engine

LABEL_PREFIX = "armswarm."
DEFAULT_PORT = 2377
# Seconds a minion has to say what it is before it counts as not answering (a loaded Pi
# can take longer than a fast board), and a promotion or demotion to settle in raft.
DEFAULT_ANSWER_TIMEOUT = 20
DEFAULT_ROLE_TIMEOUT = 60
# The minion id on each node (set last, never from pillar).
MINION_LABEL = f"{LABEL_PREFIX}minion"
# The keys of the labels the orchestration set last time (comma-separated): a label dropped
# from pillar is removed, a label set by hand is not.
MANAGED_LABEL = f"{LABEL_PREFIX}labels"


@dataclass
class NodeSettings:
    advertise_addr: str | None = None
    advertise_interface: str | None = None
    labels: dict = field(default_factory=dict)
    availability: str | None = None
    data_path_addr: str | None = None


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
    force: bool = False
    rotate_join_tokens: bool = False
    # Manager autolock: True/False, None leaves the swarm's as it is.
    autolock: bool | None = None
    answer_timeout: float = DEFAULT_ANSWER_TIMEOUT
    role_timeout: float = DEFAULT_ROLE_TIMEOUT
    # Fixed when the swarm is initialised.
    default_addr_pool: list | None = None
    subnet_size: int | None = None
    data_path_port: int | None = None
    # Cluster spec (swarm_engine.CLUSTER_SPEC keys, seconds), reconciled on every run.
    cluster: dict = field(default_factory=dict)

    @property
    def init_options(self) -> dict:
        """The init-only settings the layout gives (for ``docker_swarm.init``)."""
        given = {
            "default_addr_pool": self.default_addr_pool,
            "subnet_size": self.subnet_size,
            "data_path_port": self.data_path_port,
        }
        return {k: v for k, v in given.items() if v is not None}

    @property
    def members(self) -> list:
        return [*self.managers, *self.workers]

    def role(self, minion_id: str) -> str:
        return "manager" if minion_id in self.managers else "worker"


def _target(value, key: str, errors: list):
    """A list of minion ids, or ``{tgt: …, tgt_type: …}`` to expand on the master (a bare
    string is neither: a list is never made from a scalar)."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if (
        isinstance(value, dict)
        and isinstance(value.get("tgt"), str)
        and isinstance(value.get("tgt_type", ""), str)
    ):
        _unknown(f"armswarm:swarm:{key}", value, ("tgt", "tgt_type"), errors)
        return {"tgt": value["tgt"], "tgt_type": value.get("tgt_type") or "compound"}
    errors.append(
        f"armswarm:swarm:{key}: must be a list of minion ids or {{tgt: …, tgt_type: …}}, "
        f"not {config.kind(value)}"
    )
    return []


def _flag(conf: dict, key: str, default: bool | None, errors: list) -> bool | None:
    """A pillar boolean: only a YAML true or false (a quoted "false" would read as true)."""
    value = conf.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    errors.append(f"armswarm:swarm:{key}: must be true or false, not {config.kind(value)}")
    return default


def _port(conf: dict, errors: list) -> int:
    value = conf.get("listen_port")
    if value is None:
        return DEFAULT_PORT
    try:
        # A whole number or a quoted one; never a boolean (True would be port 1).
        port = config.coerce(value, "int")
    except TypeError:
        port = 0
    if not 0 < port < 65536:
        errors.append(f"armswarm:swarm:listen_port: {value!r} is not a port")
        return DEFAULT_PORT
    return port


def _seconds(conf: dict, key: str, default: float, errors: list) -> float:
    """A positive number of seconds (a YAML number; never a boolean or a string)."""
    value = conf.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        errors.append(
            f"armswarm:swarm:{key}: must be a number of seconds (1 to 3600), "
            f"not {config.kind(value) if not isinstance(value, int | float) else value}"
        )
        return default
    return value


# Every key of the layout; anything else is a typo to name, not to ignore.
KEYS = (
    "managers",
    "workers",
    "nodes",
    "allow_even_managers",
    "prune",
    "remove_undeclared_labels",
    "grain_labels",
    "listen_port",
    "force",
    "rotate_join_tokens",
    "autolock",
    "answer_timeout",
    "role_timeout",
    "default_addr_pool",
    "subnet_size",
    "data_path_port",
    "cluster",
)
NODE_KEYS = ("advertise_addr", "advertise_interface", "labels", "availability", "data_path_addr")


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _init_options(conf: dict, errors: list) -> dict:
    out = {}
    pool = conf.get("default_addr_pool")
    if pool is not None:
        if not isinstance(pool, list) or not pool or not all(isinstance(p, str) for p in pool):
            errors.append(
                "armswarm:swarm:default_addr_pool: must be a list of CIDRs, not "
                f"{config.kind(pool)}"
            )
        else:
            for cidr in pool:
                try:
                    ipaddress.ip_network(cidr)
                except ValueError:
                    errors.append(f"armswarm:swarm:default_addr_pool: {cidr!r} is not a CIDR")
            out["default_addr_pool"] = list(pool)
    for key, low, high in (("subnet_size", 8, 30), ("data_path_port", 1024, 49151)):
        value = conf.get(key)
        if value is None:
            continue
        if not _whole(value, low, high):
            errors.append(f"armswarm:swarm:{key}: must be a whole number {low} to {high}")
        else:
            out[key] = value
    return out


def _cluster(conf: dict, errors: list) -> dict:
    given = conf.get("cluster")
    if given is None:
        return {}
    if not isinstance(given, dict):
        errors.append(f"armswarm:swarm:cluster: must be a mapping, not {config.kind(given)}")
        return {}
    _unknown("armswarm:swarm:cluster", given, tuple(swarm_engine.CLUSTER_SPEC), errors)
    out = {}
    for key in swarm_engine.CLUSTER_SPEC:
        value = given.get(key)
        if value is None:
            continue
        # swarmkit refuses node certificates shorter than an hour (ca.MinNodeCertExpiration).
        low = {"task_history_retention_limit": 0, "node_cert_expiry": 3600}.get(key, 1)
        if not _whole(value, low, 10**9):
            errors.append(
                f"armswarm:swarm:cluster:{key}: must be a whole number"
                + (" of seconds" if key != "task_history_retention_limit" else "")
                + (f", at least {low}" if low > 1 else "")
            )
        else:
            out[key] = value
    return out


def _unknown(where: str, given, known: tuple, errors: list) -> None:
    for key in sorted(set(given) - set(known), key=str):
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        errors.append(f"{where}:{key}: unknown key{hint}")


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
    _unknown("armswarm:swarm", conf, KEYS, errors)
    # Minion ids, targets, labels and interface names go into Salt targets, node labels and
    # the engine's arguments: none has a line break.
    errors += config.control_characters(conf, "armswarm:swarm")
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
        _unknown(f"armswarm:swarm:nodes:{minion_id}", settings, NODE_KEYS, errors)
        labels = settings.get("labels") or {}
        if not isinstance(labels, dict):
            errors.append(f"armswarm:swarm:nodes:{minion_id}:labels: must be a mapping")
            labels = {}
        for reserved in (MANAGED_LABEL,):
            if reserved in labels:
                errors.append(
                    f"armswarm:swarm:nodes:{minion_id}:labels:{reserved}: reserved, "
                    "armswarm keeps its list of labels there"
                )
                labels = {k: v for k, v in labels.items() if k != reserved}
        if MINION_LABEL in labels:
            # Stale entries and prune candidates are told apart by it: pillar must not move it.
            errors.append(
                f"armswarm:swarm:nodes:{minion_id}:labels:{MINION_LABEL}: reserved, "
                "armswarm sets it to the minion id"
            )
            labels = {k: v for k, v in labels.items() if k != MINION_LABEL}
        for label, value in labels.items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                errors.append(
                    f"armswarm:swarm:nodes:{minion_id}:labels:{label}: must be a string, "
                    f"not {config.kind(value)}"
                )
        iface = settings.get("advertise_interface")
        if iface is not None and not isinstance(iface, str):
            errors.append(
                f"armswarm:swarm:nodes:{minion_id}:advertise_interface: must be a string, "
                f"not {config.kind(iface)}"
            )
        availability = settings.get("availability")
        if availability is not None and availability not in swarm_engine.AVAILABILITIES:
            errors.append(
                f"armswarm:swarm:nodes:{minion_id}:availability: {availability!r} is not one of "
                f"{', '.join(swarm_engine.AVAILABILITIES)}"
            )
        data_path_addr = settings.get("data_path_addr")
        if data_path_addr is not None:
            try:
                ipaddress.ip_address(str(data_path_addr))
            except ValueError:
                errors.append(
                    f"armswarm:swarm:nodes:{minion_id}:data_path_addr: {data_path_addr!r} "
                    "is not an IP address"
                )
        addr = settings.get("advertise_addr")
        if addr is not None:
            try:
                ipaddress.ip_address(_strip_port(str(addr)))
            except ValueError:
                errors.append(
                    f"armswarm:swarm:nodes:{minion_id}:advertise_addr: {addr!r} "
                    "is not an IP address"
                    + (
                        " (a number: YAML reads an unquoted IPv6 address of digits only, such as"
                        " 2001:1:2:3:4:5:6:7, as one; quote it)"
                        if isinstance(addr, int) and not isinstance(addr, bool)
                        else ""
                    )
                )
        nodes[minion_id] = NodeSettings(
            advertise_addr=addr,
            advertise_interface=settings.get("advertise_interface"),
            labels={str(k): str(v) for k, v in labels.items()},
            availability=availability,
            data_path_addr=data_path_addr,
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
        force=_flag(conf, "force", False, errors),
        rotate_join_tokens=_flag(conf, "rotate_join_tokens", False, errors),
        autolock=_flag(conf, "autolock", None, errors),
        answer_timeout=_seconds(conf, "answer_timeout", DEFAULT_ANSWER_TIMEOUT, errors),
        role_timeout=_seconds(conf, "role_timeout", DEFAULT_ROLE_TIMEOUT, errors),
        **_init_options(conf, errors),
        cluster=_cluster(conf, errors),
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
    """``10.0.0.1:2377`` → ``10.0.0.1``, ``[2001:db8::11]:2377`` and ``[2001:db8::11]`` →
    ``2001:db8::11`` (a bare IPv6 address keeps its colons); an IP address in its canonical
    form (``2001:DB8::0011`` → ``2001:db8::11``, as docker lists it)."""
    host, sep, port = addr.rpartition(":")
    if addr.startswith("[") and "]" in addr:
        inside, _, rest = addr[1:].partition("]")
        host = inside if rest == "" or (rest.startswith(":") and rest[1:].isdigit()) else addr
    elif not (sep and port.isdigit() and host.count(":") == 0):
        host = addr
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


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


def desired_labels(minion_id: str, layout: Layout, facts: dict) -> dict:
    # The minion id on the node: stale entries and prune candidates are matched by it, since
    # hostnames and minion ids need not agree.
    labels = grain_labels(facts) if layout.grain_labels else {}
    labels.update((layout.nodes.get(minion_id) or NodeSettings()).labels)
    labels[MINION_LABEL] = minion_id  # last: nothing overrides it
    return labels
