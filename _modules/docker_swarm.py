"""Docker Swarm: the local node's swarm state, init/join/leave, nodes, tokens.

A thin façade over :mod:`armswarm_core.swarm.swarm_engine`. The engine endpoint is
``armswarm:docker:base_url`` in the minion config or pillar (default: the local socket).

Join tokens never appear in returns unless asked for (``reveal=True``): the orchestration moves
them sealed for the joining minion's key (:func:`sealed_join_token` on a manager, then
:func:`join` with ``sealed_token`` on the joiner), so job returns, the job cache and events
only carry ciphertext that just the joiner can open.
"""

import logging
import os

import salt.utils.network
from armswarm_core import ArmswarmError
from armswarm_core.common import addresses, docker_client
from armswarm_core.swarm import join_tokens, stacks, swarm_engine
from salt.exceptions import CommandExecutionError
from salt.utils.data import traverse_dict_and_list

log = logging.getLogger(__name__)

__virtualname__ = "docker_swarm"
# stacks() would shadow the core package of the same name here.
__func_alias__ = {"stacks_list": "stacks"}


def __virtual__():
    return docker_client.virtual(__virtualname__)


def _client():
    try:
        return docker_client.connect(__opts__, __pillar__)
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc


def _call(func, *args, **kwargs):
    try:
        return func(_client(), *args, **kwargs)
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc


def state():
    """
    This node's swarm state: ``state`` (inactive, pending, active, locked, error), node ID and
    address, whether it is a manager, cluster ID, manager and node counts.

    CLI Example:

    .. code-block:: bash

        salt '*' docker_swarm.state
    """
    return _call(swarm_engine.local_state)


def _engine_facts(client) -> tuple:
    """The swarm state and the recorded join address from one client and one `docker info`:
    on a manager that just lost quorum each `docker info` blocks ~20 s."""
    engine_info = client.info()
    return (
        swarm_engine.local_state(client, engine_info),
        swarm_engine.recorded_join_addr(client, engine_info),
    )


def facts():
    """
    What the swarm orchestration needs to know about this node, in one call (no secrets):
    its swarm state, IPv4 addresses per interface (``interfaces``; IPv6 ones in
    ``interfaces6``) and the default-route interface (to pick the advertise address and check
    one from pillar), and the ``armnode`` board facts used for node labels.

    CLI Example:

    .. code-block:: bash

        salt '*' docker_swarm.facts
    """
    try:
        with open("/proc/net/route", encoding="ascii") as fh:
            default_interface = swarm_engine.default_route_interface(fh.read())
    except OSError:
        default_interface = None
    swarm, join_addr = _call(_engine_facts)
    return {
        "id": __opts__["id"],
        # What the engine reports as the node hostname (os.Hostname), not the short "host".
        "hostname": __grains__.get("nodename") or __grains__.get("host"),
        "swarm": swarm,
        # The address its engine rejoins through (see swarm_engine.promotion_needs_live_join_addr).
        "join_addr": join_addr,
        "interfaces": _interfaces(),
        "interfaces6": _interfaces(6),
        "default_interface": default_interface,
        "armnode": __grains__.get("armnode") or {},
        "num_cpus": __grains__.get("num_cpus"),
        "cpuarch": __grains__.get("cpuarch"),
    }


def _interfaces(version: int = 4) -> dict:
    """The node's reachable addresses of one IP version per interface (IPv6: global and
    unique-local), as the kernel has them now (the grain is from the minion's start); the
    grain where they cannot be read."""
    live_of, reachable, grain = {
        4: (addresses.live_ip4, addresses.reachable_ip4, "ip4_interfaces"),
        6: (addresses.live_ip6, addresses.reachable_ip6, "ip6_interfaces"),
    }[version]
    try:
        live = live_of(salt.utils.network.interfaces())
    except Exception as exc:  # noqa: BLE001 - any failure to list them: the grain instead
        log.debug("docker_swarm: IPv%s interfaces from the grain: %s", version, exc)
        live = {}
    return reachable(live or __grains__.get(grain))


def init(
    advertise_addr=None,
    listen_addr=swarm_engine.DEFAULT_LISTEN,
    force_new_cluster=False,
    default_addr_pool=None,
    subnet_size=None,
    data_path_addr=None,
    data_path_port=None,
):
    """
    Create a swarm with this node as first manager. Does nothing (``changed: False``) when the
    node is already in a swarm: ``init`` never makes a second cluster. ``default_addr_pool``
    (a list of CIDRs) and ``subnet_size`` set where overlay networks get their subnets
    (docker's default 10.0.0.0/8 collides with many home networks); ``data_path_addr`` and
    ``data_path_port`` the VXLAN data path. They are fixed once the swarm exists.

    advertise_addr
        Address (or interface) other nodes reach this one at.
    listen_addr
        Address for the raft and control traffic (default ``0.0.0.0:2377``).
    force_new_cluster
        Disaster recovery when the swarm lost quorum: this surviving manager becomes the
        single manager of the same cluster, with its state (services, networks, configs,
        secrets). Refused on a manager that still has a leader and on a worker. Run it on one
        manager only (docs: operations, "Quorum lost").

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.init advertise_addr=10.0.0.11
    """
    current = state()
    if current["state"] != "inactive" and not force_new_cluster:
        return {
            "changed": False,
            "comment": f"already in a swarm ({current['state']})",
            "state": current,
        }
    if force_new_cluster and current["cluster_id"]:
        # A manager that still sees its cluster would split it off: recovery only.
        raise CommandExecutionError(
            "force_new_cluster is for a manager whose swarm lost quorum; this one has a leader"
        )
    if force_new_cluster and not (current["state"] == "active" and current["is_manager"]):
        # The cluster's state comes from a manager's raft log: elsewhere it would be empty.
        what = (
            "a worker" if current["state"] == "active" else f"in swarm state {current['state']!r}"
        )
        raise CommandExecutionError(
            f"force_new_cluster runs on a surviving manager of the swarm; this node is {what}"
        )
    options = {"force_new_cluster": True} if force_new_cluster else {}
    given = {
        "default_addr_pool": default_addr_pool,
        "subnet_size": subnet_size,
        "data_path_addr": data_path_addr,
        "data_path_port": data_path_port,
    }
    options.update({k: v for k, v in given.items() if v is not None})
    new = _call(
        swarm_engine.init, advertise_addr=advertise_addr, listen_addr=listen_addr, **options
    )
    if force_new_cluster:
        return {
            "changed": True,
            "comment": "this node is now the single manager of the swarm, with its services, "
            "networks, configs and secrets; managers that come back rejoin by themselves; "
            "re-run the orchestration (salt-run state.orch swarm.init)",
            "state": new,
        }
    return {"changed": True, "comment": "swarm initialised", "state": new}


def sealed_join_token(role, recipient_pub, recipient):
    """
    The join token for ``role`` (``worker`` or ``manager``), sealed for minion ``recipient``
    whose public key is ``recipient_pub`` (PEM): only that minion, with that id, can open it.
    Run on a manager.

    CLI Example:

    .. code-block:: bash

        pub=$(cat /etc/salt/pki/master/minions/node4)
        salt node1 docker_swarm.sealed_join_token worker "$pub" node4
    """
    return sealed_join_tokens(role, {str(recipient): recipient_pub})[str(recipient)]


def sealed_join_tokens(role, recipients):
    """
    :func:`sealed_join_token` for many joiners in one call: ``recipients`` maps minion ids to
    their public keys; returns minion id → sealed token. Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.sealed_join_tokens worker '{node4: "MIIBIjAN...", node5: "..."}'
    """
    if role not in swarm_engine.ROLES:
        raise CommandExecutionError(f"role must be manager or worker, not {role!r}")
    token = _call(swarm_engine.join_tokens)[role]
    try:
        return {
            minion: join_tokens.seal(token, pub, str(minion))
            for minion, pub in dict(recipients).items()
        }
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc


def join_token(role="worker", reveal=False):
    """
    The join token for ``role``. Returns it only with ``reveal=True`` (it then lands in the
    job cache); otherwise says whether one exists.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.join_token manager reveal=True
    """
    token = _call(swarm_engine.join_tokens).get(role)
    if reveal:
        return token
    return {"role": role, "available": bool(token), "hint": "reveal=True prints it"}


def rotate_join_tokens(worker=True, manager=False):
    """
    Rotate join tokens (nodes already in the swarm are not affected). Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.rotate_join_tokens worker=True manager=True
    """
    _call(swarm_engine.rotate_join_tokens, worker=worker, manager=manager)
    return {"rotated": [r for r, flag in (("worker", worker), ("manager", manager)) if flag]}


def autolock(enabled=True):
    """
    Turn manager autolock on or off. With autolock, a restarted manager stays locked until
    :func:`unlock` gets the unlock key (:func:`unlock_key`). Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.autolock enabled=True
    """
    if not isinstance(enabled, bool):
        # bool("false") is True: a quoted value would lock the managers.
        raise CommandExecutionError(f"enabled: must be true or false, not {enabled!r}")
    changed = _call(swarm_engine.set_autolock, enabled)
    return {"changed": changed, "autolock": enabled}


def unlock_key():
    """
    The unlock key of an autolocked swarm, sealed for the Salt master (with the master's
    public key this minion holds, ``pki_dir/minion_master.pub``): ``{"available", "sealed"}``.
    The plaintext is never returned: job returns and the job cache hold ciphertext only.
    ``salt-run swarm_keys.unlock <locked node> <running manager>`` opens it on the master and
    unlocks the locked manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.unlock_key
    """
    key = _call(swarm_engine.unlock_key)
    if not key:
        return {"available": False, "sealed": None}
    try:
        with open(os.path.join(__opts__["pki_dir"], "minion_master.pub"), "rb") as fh:
            master_pub = fh.read()
        sealed = join_tokens.seal(key, master_pub, join_tokens.MASTER)
    except (OSError, ArmswarmError) as exc:
        raise CommandExecutionError(f"cannot seal the unlock key for the master: {exc}") from exc
    return {"available": True, "sealed": sealed}


def unlock(key=None, key_pillar=None, sealed_key=None):
    """
    Unlock this (locked) manager with the swarm's unlock key: ``sealed_key`` (sealed for this
    minion, as ``salt-run swarm_keys.unlock`` sends it), or read from the pillar key
    ``key_pillar``, or ``key`` (a ``key`` argument is stored in the job cache like any
    argument, a pillar value or a sealed one is not). The key is never returned or logged.

    CLI Example:

    .. code-block:: bash

        salt node2 docker_swarm.unlock key_pillar=armswarm:swarm:unlock_key
    """
    if sealed_key:
        try:
            with open(os.path.join(__opts__["pki_dir"], "minion.pem"), "rb") as fh:
                key = join_tokens.unseal(sealed_key, fh.read(), __opts__["id"])
        except (OSError, ArmswarmError) as exc:
            raise CommandExecutionError(f"cannot open the unlock key: {exc}") from exc
    elif key_pillar:
        key = traverse_dict_and_list(__pillar__, key_pillar, None)
    if not key:
        raise CommandExecutionError("an unlock key is needed: sealed_key, key_pillar or key")
    return _call(swarm_engine.unlock, str(key))


def join(
    remote_addrs,
    sealed_token,
    advertise_addr=None,
    listen_addr=swarm_engine.DEFAULT_LISTEN,
    availability=None,
    data_path_addr=None,
):
    """
    Join the swarm managed at ``remote_addrs`` (a list or comma-separated ``host:port``),
    with a token sealed for this minion (:func:`sealed_join_token`), with ``availability``
    (active, pause, drain) from the first moment when given. Does nothing when the node is
    already in a swarm.

    CLI Example:

    .. code-block:: bash

        salt node4 docker_swarm.join 10.0.0.11:2377 sealed_token=armswarm-sealed-v2:...
    """
    current = state()
    if current["state"] != "inactive":
        return {
            "changed": False,
            "comment": f"already in a swarm ({current['state']})",
            "state": current,
        }
    if isinstance(remote_addrs, str):
        remote_addrs = [a.strip() for a in remote_addrs.split(",") if a.strip()]
    key_file = os.path.join(__opts__["pki_dir"], "minion.pem")
    try:
        with open(key_file, "rb") as fh:
            token = join_tokens.unseal(sealed_token, fh.read(), __opts__["id"])
    except (OSError, ArmswarmError) as exc:
        raise CommandExecutionError(f"cannot open the join token: {exc}") from exc
    new = _call(
        swarm_engine.join,
        remote_addrs,
        token,
        advertise_addr=advertise_addr,
        listen_addr=listen_addr,
        availability=availability,
        data_path_addr=data_path_addr,
    )
    return {
        "changed": True,
        "comment": f"joined as {'manager' if new['is_manager'] else 'worker'}",
        "state": new,
    }


def leave(force=False, timeout=60):
    """
    Leave the swarm. A manager needs ``force=True`` (it may cost the cluster its quorum): it
    steps down first and leaves once it is no manager any more, waiting up to ``timeout``
    seconds for that; when the wait runs out it stays in the swarm and the call fails.

    CLI Example:

    .. code-block:: bash

        salt node5 docker_swarm.leave
        salt node3 docker_swarm.leave force=True timeout=120
    """
    if not isinstance(force, bool):
        raise CommandExecutionError(f"force: must be true or false, not {force!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise CommandExecutionError(f"timeout: must be a number of seconds, not {timeout!r}")
    current = state()
    if current["state"] == "inactive":
        return {"changed": False, "comment": "not in a swarm", "state": current}
    new = _call(swarm_engine.leave, force=force, timeout=timeout)
    return {"changed": True, "comment": "left the swarm", "state": new}


def nodes():
    """
    Every node of the swarm (ID, hostname, role, availability, labels, state, leader,
    reachability). Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.nodes
    """
    return _call(swarm_engine.nodes)


def update_node(
    node, labels=None, availability=None, role=None, remove_undeclared_labels=False, test=False
):
    """
    Reconcile one node: ``labels`` (a dict, merged unless ``remove_undeclared_labels``),
    ``availability`` (active, pause, drain), ``role`` (manager, worker; a demotion that would
    lose quorum is refused). Returns the changes; ``test=True`` only computes them.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.update_node node4 labels='{board: sopine}' availability=drain
    """
    return _call(
        swarm_engine.update_node,
        node,
        labels=labels,
        availability=availability,
        role=role,
        remove_undeclared_labels=remove_undeclared_labels,
        test=test,
    )


def set_role(node, role, timeout=60):
    """
    Promote (``role=manager``) or demote (``role=worker``) one node and wait, up to
    ``timeout`` seconds, until the raft membership follows: a promoted node is a reachable
    manager, a demoted one no manager any more, and the swarm has a leader. A demotion that
    would lose quorum (on the live node list) is refused; a wait that times out is an error.
    Run on a manager that stays one.

    CLI Example:

    .. code-block:: bash

        salt node3 docker_swarm.set_role node4 manager
        salt node3 docker_swarm.set_role node1 worker timeout=120
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise CommandExecutionError(f"timeout: must be a number of seconds, not {timeout!r}")
    return _call(swarm_engine.set_role, node, role, timeout=timeout)


def update_nodes(updates):
    """
    :func:`update_node` for many nodes in one call: ``updates`` maps node IDs or hostnames to
    ``{labels, availability, role, remove_undeclared_labels}``; returns node → changes.
    Stops at the first error (the nodes before it are updated). Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.update_nodes '{node4: {labels: {pool: a}}, node5: {role: worker}}'
    """
    done = {}
    for node, settings in dict(updates).items():
        done[node] = _call(swarm_engine.update_node, node, **dict(settings))
    return done


def remove_node(node, force=False):
    """
    Remove a node from the swarm; a manager is demoted first when quorum allows.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.remove_node node5 force=True
    """
    removed = _call(swarm_engine.remove_node, node, force=force)
    return {"removed": removed["hostname"], "id": removed["id"]}


def stacks_list():
    """
    The stacks in the swarm: per stack the number of services, the tasks running and the
    replicas asked for. Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.stacks
    """
    return _call(stacks.list_stacks)


def services(stack=None):
    """
    The services (of ``stack``, or all): name, stack, image, mode, replicas wanted and
    running, update state. Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.services stack=demo
    """
    return _call(stacks.list_services, stack)


def tasks(stack=None, service=None):
    """
    The tasks of a stack, of a service (its full name, ``<stack>_<service>``) or all: service,
    slot, the node it runs on (hostname), desired and current state, and the error of a task
    that failed or cannot be placed (``no suitable node …``). Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.tasks stack=demo
        salt node1 docker_swarm.tasks service=demo_web
    """
    return _call(stacks.list_tasks, stack=stack, service=service)


def cluster_settings():
    """
    The cluster settings a layout can set: ``task_history_retention_limit``,
    ``dispatcher_heartbeat_period`` and ``node_cert_expiry`` (seconds), ``autolock`` (whether
    managers lock on restart; never the key), and the ones fixed at init
    (``default_addr_pool``, ``subnet_size``, ``data_path_port``). Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.cluster_settings
    """
    return _call(swarm_engine.cluster_settings)


def update_cluster(settings):
    """
    Set cluster settings (the keys of :func:`cluster_settings` that are not fixed at init);
    returns the changes. Run on a manager.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_swarm.update_cluster '{task_history_retention_limit: 3}'
    """
    if not isinstance(settings, dict):
        raise CommandExecutionError("settings: must be a mapping")
    return _call(swarm_engine.update_cluster, settings)
