"""Form, grow and repair a Docker Swarm from pillar, from an orchestration on the master.

.. code-block:: yaml

    # salt/swarm/init.sls, run with: salt-run state.orch swarm.init
    armswarm-swarm-converged:
      swarm_cluster.converged:
        - name: armswarm:swarm

The layout (pillar ``armswarm:swarm``): ``managers`` and ``workers`` (minion ids, or
``{tgt: …, tgt_type: …}``), per-node ``nodes:<id>:advertise_addr|advertise_interface|labels|
availability``, ``allow_even_managers``, ``prune``, ``remove_undeclared_labels``,
``grain_labels``, ``force``. Everything is validated before anything changes.

Join tokens go from a manager to each joiner sealed with the joiner's minion key (the master
holds every accepted minion's public key): returns, the job cache and events carry ciphertext.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import salt.client
import salt.key
import salt.utils.event
import salt.utils.minions
from armswarm_core import ArmswarmError
from armswarm_core.swarm import swarm_layout, swarm_plan

log = logging.getLogger(__name__)

__virtualname__ = "swarm_cluster"
DEFAULT_TIMEOUT = 90
# A minion that cannot say what it is within this is reported as not answering (down).
FACTS_TIMEOUT = 20


def __virtual__():
    return __virtualname__


class _Minions:
    """Calls to minions through the master, with errors as ArmswarmError naming the minion."""

    def __init__(self, opts, timeout):
        self.opts = opts
        self.timeout = timeout
        self.client = salt.client.get_local_client(opts["conf_file"])

    def many(self, targets, fun, arg=(), kwarg=None, timeout=None) -> dict:
        """``{minion: return}`` for the minions that answered without an error."""
        rets = self.client.cmd(
            list(targets),
            fun,
            list(arg),
            tgt_type="list",
            kwarg=kwarg or {},
            timeout=timeout or self.timeout,
            full_return=True,
        )
        good = {}
        for minion_id, ret in rets.items():
            if isinstance(ret, dict) and ret.get("retcode", 0) == 0:
                good[minion_id] = ret.get("ret")
            else:
                log.warning(
                    "swarm_cluster: %s failed %s: %s",
                    minion_id,
                    fun,
                    ret.get("ret") if isinstance(ret, dict) else ret,
                )
        return good

    def one(self, target, fun, arg=(), kwarg=None):
        rets = self.client.cmd(
            target, fun, list(arg), kwarg=kwarg or {}, timeout=self.timeout, full_return=True
        )
        if target not in rets:
            raise ArmswarmError(f"{target} did not answer {fun}")
        ret = rets[target]
        if not isinstance(ret, dict) or ret.get("retcode", 0) != 0:
            detail = ret.get("ret") if isinstance(ret, dict) else ret
            raise ArmswarmError(f"{target}: {fun} failed: {detail}")
        return ret.get("ret")


def _progress(opts, step, **data):
    """One event per step on the master's bus (``armswarm/swarm/<step>``), and a log line."""
    log.info("swarm_cluster: %s %s", step, data)
    try:
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
            bus.fire_event(data, f"armswarm/swarm/{step}")
    except Exception:  # noqa: BLE001 - progress must never break the run
        log.debug("swarm_cluster: cannot fire progress event", exc_info=True)


def _public_key(opts, minion_id) -> str:
    path = os.path.join(opts["pki_dir"], "minions", minion_id)
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _expand(opts, targets: dict, layout):
    for key, target in targets.items():
        found = salt.utils.minions.CkMinions(opts).check_minions(target["tgt"], target["tgt_type"])
        setattr(layout, key, sorted(found.get("minions") or []))


def _join(minions, opts, joiner, sealed_token, remote_addrs, addr, port):
    ret = minions.one(
        joiner,
        "docker_swarm.join",
        [",".join(remote_addrs)],
        {"sealed_token": sealed_token, "advertise_addr": addr, "listen_addr": f"0.0.0.0:{port}"},
    )
    _progress(opts, "joined", minion=joiner, manager=ret["state"]["is_manager"])
    return ret["state"]["node_id"]


def _sealed_tokens(minions, opts, manager, role, joiners) -> dict:
    """One call to the manager for every joiner's token, each sealed for that joiner."""
    recipients = {m: _public_key(opts, m) for m in joiners}
    return minions.one(manager, "docker_swarm.sealed_join_tokens", [role, recipients])


def _remote_addrs(manager, plan, swarm_nodes, port) -> list:
    """Where joiners find the swarm: the engine uses the first address only, so it must be a
    manager now (not a node waiting for promotion): the manager we talk to, then the other
    reachable managers."""
    addrs = [f"{plan.addresses[manager]}:{port}"] if manager in plan.addresses else []
    for node in swarm_nodes or []:
        if node["role"] == "manager" and node["reachability"] == "reachable":
            addr = node.get("manager_addr") or f"{node['addr']}:{port}"
            if addr not in addrs:
                addrs.append(addr)
    return addrs


def _execute(minions, opts, layout, plan, facts, manager, swarm_nodes, done):
    """Carry the plan out, recording each step in ``done`` (the changes made so far, also when
    a step fails); return the manager to ask for the final node list."""
    port = layout.listen_port
    for minion_id in plan.leave:
        minions.one(minion_id, "docker_swarm.leave", kwarg={"force": True})
        done.setdefault("leave", []).append(minion_id)
        _progress(opts, "left", minion=minion_id)
    node_ids = {m: (facts[m].get("swarm") or {}).get("node_id") for m in facts}
    if plan.init:
        addr = plan.addresses[plan.init]
        ret = minions.one(
            plan.init,
            "docker_swarm.init",
            kwarg={"advertise_addr": addr, "listen_addr": f"0.0.0.0:{port}"},
        )
        node_ids[plan.init] = ret["state"]["node_id"]
        manager = plan.init
        done["init"] = plan.init
        _progress(opts, "initialised", minion=plan.init, address=addr)
    # Promotions first: a promoted node then serves joins as a manager.
    for minion_id in plan.promote:
        minions.one(manager, "docker_swarm.update_node", [node_ids[minion_id]], {"role": "manager"})
        done.setdefault("promote", []).append(minion_id)
        _progress(opts, "promoted", minion=minion_id)
    remote = _remote_addrs(manager, plan, swarm_nodes, port)
    # Managers one at a time: each join changes the raft membership.
    for minion_id in plan.join_managers:
        token = _sealed_tokens(minions, opts, manager, "manager", [minion_id])[minion_id]
        node_ids[minion_id] = _join(
            minions, opts, minion_id, token, remote, plan.addresses[minion_id], port
        )
        done.setdefault("join_managers", []).append(minion_id)
        remote.append(f"{plan.addresses[minion_id]}:{port}")
    # Workers in parallel: they do not vote.
    if plan.join_workers:
        tokens = _sealed_tokens(minions, opts, manager, "worker", plan.join_workers)
        with ThreadPoolExecutor(max_workers=min(16, len(plan.join_workers))) as pool:
            futures = {
                m: pool.submit(
                    _join,
                    _Minions(opts, minions.timeout),
                    opts,
                    m,
                    tokens[m],
                    remote,
                    plan.addresses[m],
                    port,
                )
                for m in plan.join_workers
            }
            failures = []
            for minion_id, future in futures.items():
                try:
                    node_ids[minion_id] = future.result()
                    done.setdefault("join_workers", []).append(minion_id)
                except ArmswarmError as exc:
                    failures.append(str(exc))
            if failures:
                raise ArmswarmError("; ".join(failures))
    for minion_id in plan.demote:
        minions.one(manager, "docker_swarm.update_node", [node_ids[minion_id]], {"role": "worker"})
        done.setdefault("demote", []).append(minion_id)
        _progress(opts, "demoted", minion=minion_id)
    for node in plan.stale:
        # The dead earlier self of a node that joined again: demote, then remove it.
        if node["role"] == "manager":
            minions.one(manager, "docker_swarm.update_node", [node["id"]], {"role": "worker"})
        minions.one(manager, "docker_swarm.remove_node", [node["id"]], {"force": True})
        done.setdefault("remove_stale", []).append(f"{node['hostname']} ({node['id'][:12]})")
        _progress(opts, "stale-removed", node=node["hostname"], id=node["id"])
    updates = {m: c for m, c in plan.updates.items() if c}
    updates.update(plan.new_node_settings)
    batch = {}
    for minion_id, change in updates.items():
        settings = {"remove_undeclared_labels": layout.remove_undeclared_labels}
        if "labels" in change:
            settings["labels"] = change["labels"]["new"]
        if "availability" in change:
            settings["availability"] = change["availability"]["new"]
        batch[node_ids[minion_id]] = settings
    if batch:
        # One call for every node: a per-node call would make the run grow with the cluster.
        minions.one(manager, "docker_swarm.update_nodes", [batch])
        done["nodes"] = updates
        _progress(opts, "nodes-configured", minions=sorted(updates))
    for node in plan.drain:
        minions.one(manager, "docker_swarm.update_node", [node["id"]], {"availability": "drain"})
        done.setdefault("drain", []).append(node["hostname"] or node["id"])
        _progress(opts, "drained", node=node["hostname"] or node["id"])
    for node in plan.prune:
        if node["role"] == "manager":
            minions.one(manager, "docker_swarm.update_node", [node["id"]], {"role": "worker"})
        minions.one(manager, "docker_swarm.remove_node", [node["id"]], {"force": True})
        done.setdefault("prune", []).append(node["hostname"] or node["id"])
        _progress(opts, "pruned", node=node["hostname"] or node["id"])
    return manager


def converged(name, layout=None, force=None, timeout=DEFAULT_TIMEOUT):
    """
    Make the swarm match the layout in pillar ``name`` (default ``armswarm:swarm``): init once,
    managers joined one at a time, workers in parallel, labels from grains and pillar,
    availability, optional prune. Runs in an orchestration on the master.

    name
        Pillar key of the layout, unless ``layout`` is given.
    layout
        The layout itself (same shape as the pillar).
    force
        Take over nodes that are in another swarm (they leave it first). Default: the layout's
        ``force`` (false).
    timeout
        Seconds to wait for each minion call.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    opts = __opts__
    if opts.get("__role") != "master":
        ret["comment"] = "swarm_cluster.converged runs in an orchestration: salt-run state.orch"
        return ret
    # Read pillar directly: Salt 3008's pillar.get redacts values unless unmasked (3006 lacks
    # that flag). The master config's layout, if any, is merged under it key by key.
    conf = layout if layout is not None else swarm_layout.layout_conf(__opts__, __pillar__, name)
    parsed, errors, targets = swarm_layout.parse_layout(conf)
    if parsed is None:
        ret["comment"] = "\n".join(errors)
        return ret
    force = bool(conf.get("force", False)) if force is None else bool(force)
    _expand(opts, targets, parsed)
    accepted = set(salt.key.get_key(opts).list_keys().get("minions") or [])
    errors += [
        f"armswarm:swarm: {m} is not a known minion (no accepted key)"
        for m in parsed.members
        if m not in accepted
    ]
    errors += swarm_layout.check_counts(parsed)
    if errors:
        ret["comment"] = "Invalid swarm layout, nothing changed:\n" + "\n".join(errors)
        return ret

    minions = _Minions(opts, timeout)
    facts = {
        m: f
        for m, f in minions.many(
            parsed.members, "docker_swarm.facts", timeout=FACTS_TIMEOUT
        ).items()
        if isinstance(f, dict) and "swarm" in f
    }
    _progress(
        opts, "facts", answered=sorted(facts), missing=sorted(set(parsed.members) - set(facts))
    )
    # Ask a manager that sees its cluster (one without a leader cannot list nodes; make_plan
    # explains that case).
    live_managers = [
        m
        for m in parsed.managers
        if m in facts
        and facts[m]["swarm"]["state"] == "active"
        and facts[m]["swarm"]["is_manager"]
        and facts[m]["swarm"]["cluster_id"]
    ]
    manager = live_managers[0] if live_managers else None
    done: dict = {}
    try:
        swarm_nodes = minions.one(manager, "docker_swarm.nodes") if manager else None
        plan, errors = swarm_plan.make_plan(parsed, facts, swarm_nodes, force=force)
        if errors:
            ret["comment"] = "Cannot converge the swarm, nothing changed:\n" + "\n".join(errors)
            return ret
        changes = plan.changes()
        down = f"\nNot answering (left as they are): {', '.join(plan.down)}" if plan.down else ""
        if plan.drain:
            down += (
                f"\nDrained, not in the layout: {', '.join(changes['drain'])}; they are "
                "removed once they leave the swarm (or go down)"
            )
        if not changes:
            ret["result"] = not plan.down
            ret["comment"] = "The swarm matches the layout." + down
        elif opts.get("test"):
            ret["result"] = None
            ret["changes"] = changes
            ret["comment"] = "The swarm would be changed." + down
            return ret
        else:
            manager = _execute(minions, opts, parsed, plan, facts, manager, swarm_nodes, done)
            ret["changes"] = changes
            ret["result"] = not plan.down
            ret["comment"] = "The swarm was changed." + down
        table = swarm_plan.node_table(minions.one(manager, "docker_swarm.nodes")) if manager else []
    except ArmswarmError as exc:
        # What was done before the failure is still a change.
        ret["changes"] = done
        ret["result"] = False
        ret["comment"] = f"{exc}"
        return ret
    if table:
        ret["comment"] += "\n" + "\n".join(table)
    _progress(opts, "done", result=ret["result"])
    return ret
