"""Docker Swarm operations over the docker SDK, shared by the execution, state and runner modules.

Functions take a ``docker.DockerClient`` (see :mod:`armswarm_core.common.docker_client`) and return
plain data.
Pure helpers (``node_changes``, ``quorum``) hold the decisions so they can be unit-tested.
Join tokens and unlock keys are returned only by the functions whose name says so; nothing here
logs them.
"""

import json
import logging
import os
import re
import time

from armswarm_core import ArmswarmError

try:
    import docker.errors
except ImportError:  # pragma: no cover - client.missing_dependency() reports it
    docker = None


log = logging.getLogger(__name__)
ROLES = ("manager", "worker")
AVAILABILITIES = ("active", "pause", "drain")
DEFAULT_LISTEN = "0.0.0.0:2377"


def _api_error(action: str, exc) -> ArmswarmError:
    explanation = getattr(exc, "explanation", None) or str(exc)
    return ArmswarmError(f"{action}: {explanation}")


# -- local node ---------------------------------------------------------------------------------
def local_state(client, engine_info: dict | None = None) -> dict:
    """This engine's view of the swarm (no secrets); from ``engine_info`` (``client.info()``)
    when the caller has it."""
    engine = engine_info if engine_info is not None else client.info()
    info = engine.get("Swarm") or {}
    cluster = info.get("Cluster") or {}
    return {
        "state": info.get("LocalNodeState") or "inactive",
        "node_id": info.get("NodeID") or None,
        "node_addr": info.get("NodeAddr") or None,
        "is_manager": bool(info.get("ControlAvailable")),
        "cluster_id": cluster.get("ID") or None,
        "managers": info.get("Managers"),
        "nodes": info.get("Nodes"),
        "remote_managers": sorted(m.get("Addr") for m in info.get("RemoteManagers") or []),
        "error": info.get("Error") or None,
        "engine_version": engine.get("ServerVersion") or None,
    }


def recorded_join_addr(client, engine_info: dict | None = None) -> str | None:
    """The manager address this engine joined through, as it keeps it on disk
    (``<DockerRootDir>/swarm/docker-state.json``, ``RemoteAddr``): the engine has no API for it.
    None for the node that initialised the swarm, or when it cannot be read."""
    engine = engine_info if engine_info is not None else client.info()
    root = engine.get("DockerRootDir") or "/var/lib/docker"
    try:
        with open(os.path.join(root, "swarm", "docker-state.json"), encoding="utf-8") as fh:
            return json.load(fh).get("RemoteAddr") or None
    except (OSError, ValueError, AttributeError):
        return None


def _version_tuple(version: str | None) -> tuple:
    """``20.10.24+dfsg1`` -> ``(20, 10, 24)``; ``()`` when it does not start with a version."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    return tuple(int(p or 0) for p in match.groups()) if match else ()


def promotion_needs_live_join_addr(engine_version: str | None) -> bool:
    """Whether a promotion on this engine can get stuck on its join address (moby#47854, fixed
    in 26.1.4): a promoted node restarts its swarm node through the address it once joined
    through, and when that node is no manager any more it fails, again and again, until it
    leaves. Unknown versions count as affected (the way round it is only slower)."""
    version = _version_tuple(engine_version)
    return not version or version < (26, 1, 4)


def addr_host(addr: str | None) -> str | None:
    """The host of ``host:port`` / ``[v6]:port`` / a bare host."""
    if not addr:
        return None
    if addr.startswith("["):
        return addr[1:].split("]", 1)[0]
    return addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr


def host_port(host: str, port) -> str:
    """``host:port``, an IPv6 host in brackets (``[2001:db8::11]:2377``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_addr_for(advertise: str | None, port) -> str:
    """Where the engine listens for the swarm: every IPv4 address, or every IPv6 one for a
    node that advertises an IPv6 address (``0.0.0.0`` would not accept it)."""
    return host_port("::" if advertise and ":" in advertise else "0.0.0.0", port)


def init(client, advertise_addr=None, listen_addr=DEFAULT_LISTEN, **options) -> dict:
    """Create a new swarm with this engine as its first manager; return the new local state."""
    try:
        client.api.init_swarm(advertise_addr=advertise_addr, listen_addr=listen_addr, **options)
    except docker.errors.APIError as exc:
        raise _api_error("swarm init failed", exc) from exc
    return local_state(client)


def _wait_local(client, done, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    state = local_state(client)
    while not done(state) and time.monotonic() < deadline:
        time.sleep(1)
        state = local_state(client)
    return state


def join(
    client,
    remote_addrs,
    token,
    advertise_addr=None,
    listen_addr=DEFAULT_LISTEN,
    timeout: float = 90,
    availability=None,
    data_path_addr=None,
) -> dict:
    """Join an existing swarm; the role comes from the token. ``availability`` (active,
    pause, drain) is the node's from its first moment: a node drained after joining could
    already have received a task."""
    if availability is not None and availability not in AVAILABILITIES:
        raise ArmswarmError(
            f"availability must be one of {', '.join(AVAILABILITIES)}, not {availability!r}"
        )
    try:
        if availability is None:
            client.api.join_swarm(
                remote_addrs=list(remote_addrs),
                join_token=token,
                listen_addr=listen_addr,
                advertise_addr=advertise_addr,
                data_path_addr=data_path_addr,
            )
        else:
            # The SDK's join_swarm has no availability; the engine's JoinRequest has had it
            # since API 1.31 (what `docker swarm join --availability` sends).
            response = client.api._post_json(
                client.api._url("/swarm/join"),
                data={
                    "RemoteAddrs": list(remote_addrs),
                    "ListenAddr": listen_addr,
                    "JoinToken": token,
                    "AdvertiseAddr": advertise_addr,
                    "Availability": availability,
                    **({"DataPathAddr": data_path_addr} if data_path_addr else {}),
                },
            )
            client.api._raise_for_status(response)
    except docker.errors.APIError as exc:
        # The engine's message can quote the token: keep only what does not.
        message = str(getattr(exc, "explanation", "") or exc)
        if "SWMTKN-" in message:
            message = "the engine refused the join (token or address)"
        if "continue in the background" not in message:
            raise ArmswarmError(f"swarm join failed: {message}") from exc
        # A slow join (over the engine's 20 s) goes on in the background: wait for it.
    state = _wait_local(client, lambda s: s["state"] in ("active", "error"), timeout)
    if state["state"] != "active":
        raise ArmswarmError(f"swarm join did not complete: {state['state']} ({state['error']})")
    return state


def leave(client, force=False, timeout: float = 60) -> dict:
    """Leave the swarm. A manager needs ``force``; it then steps down first (demoted by the
    leader, once the quorum check allows it) and leaves as a worker, so the managers that stay
    keep their quorum. The last manager, or one whose swarm has no leader (recovery), leaves
    with the engine's forced leave.
    """
    current = local_state(client)
    if current["state"] == "inactive":
        return current
    if current["is_manager"]:
        if not force:
            raise ArmswarmError("this node is a manager: leaving needs force (quorum)")
        try:
            all_nodes = nodes(client)
        except ArmswarmError:
            all_nodes = None  # no leader: nothing to protect, recovery
        me = next((n for n in all_nodes or [] if n["id"] == current["node_id"]), None)
        others = [n for n in all_nodes or [] if n["role"] == "manager" and n is not me]
        if me and others:
            check_demotion(all_nodes, me)
            update_node(client, me["id"], role="worker")
            stepped_down = _wait_local(client, lambda s: not s["is_manager"], timeout)
            if stepped_down["is_manager"]:
                # A forced leave now would take a raft member away without the leader's
                # consent: the managers that stay could lose quorum.
                raise ArmswarmError(
                    f"this node was demoted but is still a manager after {timeout:g} s "
                    "(raft membership not handed over yet): not leaving; re-run later"
                )
    # The low-level API throughout: ``client.swarm`` inspects the swarm when it is created, which
    # fails on a manager that lost quorum, exactly when a forced leave is needed.
    try:
        client.api.leave_swarm(force=force)
    except docker.errors.APIError as exc:
        raise _api_error("swarm leave failed", exc) from exc
    return local_state(client)


def default_route_interface(route_table: str) -> str | None:
    """The interface of the IPv4 default route, from ``/proc/net/route`` text."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


# -- cluster (manager only) ---------------------------------------------------------------------
def _swarm_attrs(client) -> dict:
    try:
        return client.api.inspect_swarm()
    except docker.errors.APIError as exc:
        raise _api_error("this node is not a swarm manager", exc) from exc


def join_tokens(client) -> dict:
    """``{"worker": …, "manager": …}``: secrets, for callers that seal or reveal them."""
    tokens = _swarm_attrs(client).get("JoinTokens") or {}
    return {"worker": tokens.get("Worker"), "manager": tokens.get("Manager")}


def rotate_join_tokens(client, worker=True, manager=False) -> None:
    attrs = _swarm_attrs(client)
    try:
        client.api.update_swarm(
            version=attrs["Version"]["Index"],
            swarm_spec=attrs["Spec"],
            rotate_worker_token=worker,
            rotate_manager_token=manager,
        )
    except docker.errors.APIError as exc:
        raise _api_error("token rotation failed", exc) from exc


# Cluster settings from the layout, as ``(spec section, spec key, seconds as nanoseconds)``.
CLUSTER_SPEC = {
    "task_history_retention_limit": ("Orchestration", "TaskHistoryRetentionLimit", False),
    "dispatcher_heartbeat_period": ("Dispatcher", "HeartbeatPeriod", True),
    "node_cert_expiry": ("CAConfig", "NodeCertExpiry", True),
}
# Fixed when the swarm is initialised (the engine cannot change them later).
INIT_ONLY = {
    "default_addr_pool": "DefaultAddrPool",
    "subnet_size": "SubnetSize",
    "data_path_port": "DataPathPort",
}


def cluster_settings(client) -> dict:
    """The cluster settings the layout can set (no secrets): the spec's, in seconds, and the
    ones fixed at init."""
    attrs = _swarm_attrs(client)
    spec = attrs.get("Spec") or {}
    out = {}
    for key, (section, field, nanos) in CLUSTER_SPEC.items():
        value = (spec.get(section) or {}).get(field)
        out[key] = value // 1_000_000_000 if nanos and value is not None else value
    for key, field in INIT_ONLY.items():
        out[key] = attrs.get(field)
    # Whether managers lock on restart (the key itself is only in unlock_key()).
    out["autolock"] = bool((spec.get("EncryptionConfig") or {}).get("AutoLockManagers"))
    return out


def update_cluster(client, settings: dict) -> dict:
    """Set cluster spec values (``CLUSTER_SPEC`` keys, seconds); return the changes."""
    unknown = sorted(set(settings) - set(CLUSTER_SPEC))
    if unknown:
        raise ArmswarmError(f"not a cluster setting: {', '.join(unknown)}")
    attrs = _swarm_attrs(client)
    spec = dict(attrs["Spec"])
    current = cluster_settings(client)
    changes = {}
    for key, value in settings.items():
        if current.get(key) == value:
            continue
        section, field, nanos = CLUSTER_SPEC[key]
        spec[section] = dict(spec.get(section) or {})
        spec[section][field] = value * 1_000_000_000 if nanos else value
        changes[key] = {"old": current.get(key), "new": value}
    if changes:
        try:
            client.api.update_swarm(version=attrs["Version"]["Index"], swarm_spec=spec)
        except docker.errors.APIError as exc:
            raise _api_error("updating the cluster settings failed", exc) from exc
    return changes


def set_autolock(client, enabled: bool) -> bool:
    """Turn manager autolock on or off; return whether anything changed."""
    attrs = _swarm_attrs(client)
    spec = dict(attrs["Spec"])
    encryption = dict(spec.get("EncryptionConfig") or {})
    if bool(encryption.get("AutoLockManagers")) == bool(enabled):
        return False
    encryption["AutoLockManagers"] = bool(enabled)
    spec["EncryptionConfig"] = encryption
    try:
        client.api.update_swarm(version=attrs["Version"]["Index"], swarm_spec=spec)
    except docker.errors.APIError as exc:
        raise _api_error("changing autolock failed", exc) from exc
    return True


def autolock_enabled(client) -> bool:
    spec = _swarm_attrs(client).get("Spec") or {}
    return bool((spec.get("EncryptionConfig") or {}).get("AutoLockManagers"))


def unlock_key(client) -> str | None:
    """The key that unlocks a restarted manager when autolock is on (a secret)."""
    try:
        return client.api.get_unlock_key().get("UnlockKey") or None
    except docker.errors.APIError as exc:
        raise _api_error("cannot read the unlock key", exc) from exc


def unlock(client, key: str) -> dict:
    try:
        client.api.unlock_swarm(key)
    except docker.errors.APIError as exc:
        # Never echo the key.
        raise ArmswarmError("unlocking the swarm failed (wrong key?)") from exc
    return local_state(client)


def normalise_node(raw: dict) -> dict:
    """A node as plain data: what states compare and tables print."""
    spec = raw.get("Spec") or {}
    status = raw.get("Status") or {}
    manager = raw.get("ManagerStatus") or {}
    description = raw.get("Description") or {}
    return {
        "id": raw.get("ID"),
        "hostname": description.get("Hostname"),
        "role": spec.get("Role"),
        "availability": spec.get("Availability"),
        "labels": dict(spec.get("Labels") or {}),
        "state": status.get("State"),
        "addr": status.get("Addr"),
        "leader": bool(manager.get("Leader")),
        "reachability": manager.get("Reachability"),
        "manager_addr": manager.get("Addr"),
        "engine_labels": dict((description.get("Engine") or {}).get("Labels") or {}),
        "version": (raw.get("Version") or {}).get("Index"),
    }


def nodes(client) -> list[dict]:
    try:
        raw = client.api.nodes()
    except docker.errors.APIError as exc:
        raise _api_error("cannot list nodes (is this a manager?)", exc) from exc
    return sorted((normalise_node(n) for n in raw), key=lambda n: (n["hostname"] or "", n["id"]))


def find_node(client, name: str) -> dict:
    """A node by ID or hostname; a hostname used by several nodes is an error, not a guess."""
    matches = [n for n in nodes(client) if name in (n["id"], n["hostname"])]
    if not matches:
        raise ArmswarmError(f"no swarm node named {name!r}")
    if len(matches) > 1:
        ids = ", ".join(f"{n['id'][:12]} ({n['state']})" for n in matches)
        raise ArmswarmError(f"several swarm nodes are named {name!r}: {ids}; use the node ID")
    return matches[0]


def quorum(managers: int) -> int:
    """Managers that must be reachable for the raft cluster to work."""
    return managers // 2 + 1


def node_changes(
    current: dict,
    labels=None,
    availability=None,
    role=None,
    remove_undeclared_labels=False,
    managed_label=None,
) -> dict:
    """What an update would change: ``{field: {"old": …, "new": …}}``; empty when converged.

    Labels are strings in the engine, so declared values are compared as strings. Undeclared
    labels stay unless ``remove_undeclared_labels`` (another tool may own them). With
    ``managed_label``, that label lists the keys declared last time: a key listed there and
    no longer declared is removed (it was ours), and the label is set to the keys declared now.
    """
    changes = {}
    if labels is not None or remove_undeclared_labels:
        old = dict(current.get("labels") or {})
        new = {} if remove_undeclared_labels else dict(old)
        declared = {str(k): "" if v is None else str(v) for k, v in (labels or {}).items()}
        if managed_label:
            ours_before = set(filter(None, old.get(managed_label, "").split(",")))
            for key in ours_before - set(declared):
                new.pop(key, None)
            declared[managed_label] = ",".join(sorted(k for k in declared if k != managed_label))
        new.update(declared)
        if new != old:
            changes["labels"] = {"old": old, "new": new}
    if availability is not None:
        if availability not in AVAILABILITIES:
            raise ArmswarmError(
                f"availability must be one of {', '.join(AVAILABILITIES)}, not {availability!r}"
            )
        if availability != current.get("availability"):
            changes["availability"] = {"old": current.get("availability"), "new": availability}
    if role is not None:
        if role not in ROLES:
            raise ArmswarmError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if role != current.get("role"):
            changes["role"] = {"old": current.get("role"), "new": role}
    return changes


def check_demotion(all_nodes: list[dict], node: dict) -> None:
    """Refuse to demote (or remove) a manager when the rest could not keep quorum."""
    if node["role"] != "manager":
        return
    managers = [n for n in all_nodes if n["role"] == "manager"]
    remaining = [n for n in managers if n["id"] != node["id"]]
    reachable = [n for n in remaining if n["reachability"] == "reachable"]
    if not remaining:
        raise ArmswarmError(f"{node['hostname']} is the last manager: demoting it ends the swarm")
    if len(reachable) < quorum(len(remaining)):
        raise ArmswarmError(
            f"demoting {node['hostname']} would leave {len(reachable)} reachable of "
            f"{len(remaining)} managers, below quorum ({quorum(len(remaining))})"
        )


def update_node(
    client,
    name: str,
    labels=None,
    availability=None,
    role=None,
    remove_undeclared_labels=False,
    test=False,
    managed_label=None,
) -> dict:
    """Reconcile one node's labels, availability and role; return the changes (made or not)."""
    node = find_node(client, name)
    changes = node_changes(
        node, labels, availability, role, remove_undeclared_labels, managed_label=managed_label
    )
    if not changes or test:
        return changes
    if changes.get("role", {}).get("new") == "worker":
        check_demotion(nodes(client), node)
    for attempt in (1, 2):
        try:
            raw = client.api.inspect_node(node["id"])
            spec = dict(raw["Spec"])
            if "labels" in changes:
                spec["Labels"] = changes["labels"]["new"]
            if "availability" in changes:
                spec["Availability"] = availability
            if "role" in changes:
                spec["Role"] = role
            client.api.update_node(node["id"], raw["Version"]["Index"], spec)
            break
        except docker.errors.APIError as exc:
            # A node that just joined may still be updating its own entry: re-read, try again.
            if attempt == 1 and "out of sequence" in str(exc.explanation or exc):
                continue
            raise _api_error(f"updating node {name} failed", exc) from exc
    return changes


def _wait_nodes(client, done, timeout: float, sleep=time.sleep) -> tuple[bool, list | None]:
    """``(done, nodes)``: poll the node list until ``done(nodes)`` or ``timeout``. A failed
    list (a leader election in progress) counts as not done yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = nodes(client)
        except ArmswarmError:
            current = None
        if current is not None and done(current):
            return True, current
        if time.monotonic() >= deadline:
            return False, current
        sleep(1)


def _has_leader(all_nodes) -> bool:
    return any(n["leader"] for n in all_nodes)


def set_role(client, name: str, role: str, timeout: float = 60) -> dict:
    """Promote or demote one node and wait until the raft membership follows: a promoted
    node is a reachable manager, a demoted one is no manager any more, with a leader either
    way. A demotion is checked against quorum on the live node list first. Returns
    ``{"changed", "node", "waited"}``; raises when the wait times out (naming what it saw),
    so a caller never goes on with a membership change still in flight."""
    if role not in ROLES:
        raise ArmswarmError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    started = time.monotonic()
    node = find_node(client, name)
    changed = bool(update_node(client, node["id"], role=role))

    def settled(all_nodes):
        me = next((n for n in all_nodes if n["id"] == node["id"]), None)
        if me is None or not _has_leader(all_nodes):
            return False
        if role == "manager":
            return me["role"] == "manager" and me["reachability"] == "reachable"
        return me["role"] == "worker" and me["reachability"] is None

    ok, last = _wait_nodes(client, settled, timeout)
    if not ok:
        me = next((n for n in last or [] if n["id"] == node["id"]), None)
        seen = (
            f"role {me['role']}, reachability {me['reachability'] or 'none'}"
            if me
            else "no node list (no leader?)"
        )
        raise ArmswarmError(
            f"{'promoting' if role == 'manager' else 'demoting'} {node['hostname']}: not "
            f"settled after {timeout:g} s ({seen}); stopping here"
        )
    return {"changed": changed, "node": node["hostname"], "waited": time.monotonic() - started}


def remove_node(client, name: str, force=False) -> dict:
    """Remove a node from the swarm (a manager is demoted first, if quorum allows)."""
    node = find_node(client, name)
    all_nodes = nodes(client)
    if node["role"] == "manager":
        check_demotion(all_nodes, node)
        update_node(client, node["id"], role="worker")
    try:
        client.api.remove_node(node["id"], force=force)
    except docker.errors.APIError as exc:
        raise _api_error(f"removing node {name} failed", exc) from exc
    return node
