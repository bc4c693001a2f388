"""Form, grow and repair the swarm from its layout: validate, gather facts, plan, carry the
plan out and report. The logic of the ``swarm_cluster.converged`` orchestration state.

It talks to the minions through a *transport* (the state's goes through the Salt master;
unit tests use a fake cluster):

``many(targets, fun, arg=(), kwarg=None, timeout=None) -> {minion: return}``
    call ``fun`` on many minions at once; the minions that answered, each with its return
    or, when its call failed, an :class:`~armswarm_core.ArmswarmError` naming it.
``clock() -> seconds``
    a monotonic clock (the time the calls above take passes on it).
``one(target, fun, arg=(), kwarg=None, timeout=None) -> return``
    call ``fun`` on one minion (``timeout``: seconds, when longer than the transport's own);
    raises :class:`~armswarm_core.ArmswarmError` naming the minion when it does not answer or
    the call fails.
``fork() -> transport``
    a transport of its own for another thread (workers join in parallel).
``accepted() -> set``
    the minion ids the master accepted a key of.
``public_keys(ids) -> {minion: PEM}``
    those minions' public keys (join tokens are sealed with them).
``expand(tgt, tgt_type) -> [minion]``
    the minions a target names.
``progress(step, **data)``
    report one step (the state fires ``armswarm/swarm/<step>`` on the master's bus); must
    never raise.
``key_store() -> unlock_keys.Store``
    the master's kept autolock unlock keys (opened with the master's own key).

Join tokens never pass through here in plaintext: a manager seals each one for its joiner's
key, and only the joiner opens it. The unlock key goes from a manager sealed for the master,
is kept so, and goes to a locked manager sealed again for that manager's key.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from armswarm_core import ArmswarmError
from armswarm_core.common import config, state_results
from armswarm_core.swarm import swarm_engine, swarm_layout, swarm_plan

# What a role change's call may take beyond its wait (the Salt round trip).
CALL_MARGIN = 30
# Seconds one ask for facts waits before the minions that did not answer are asked again
# (the default answer_timeout: with it there is one ask, as before).
ASK_EVERY = swarm_layout.DEFAULT_ANSWER_TIMEOUT
KEY_KEPT = "kept on the master, sealed"
KEY_DROPPED = "dropped from the master"


def run(name: str, conf, transport, force=None, test: bool = False) -> dict:
    """The state return (``name``, ``changes``, ``result``, ``comment``) of converging the
    swarm to the layout ``conf`` (the pillar's ``armswarm:swarm``). ``force`` (None: the
    layout's ``force``) takes over nodes in another swarm; ``test`` only predicts."""
    ret = state_results.new(name)
    if force is not None and not isinstance(force, bool):
        # A quoted "false" would make every node of another swarm leave it.
        return state_results.failed(
            ret, f"force: must be true or false, not {config.kind(force)}; nothing changed"
        )
    parsed, errors = resolve_layout(conf, transport)
    if parsed is None:
        return state_results.failed(ret, "\n".join(errors))
    if errors:
        return state_results.failed(
            ret, "Invalid swarm layout, nothing changed:\n" + "\n".join(errors)
        )
    if force is None:
        force = parsed.force

    facts = gather_facts(parsed, transport)
    manager = live_manager(parsed, facts)
    store = transport.key_store()
    done: dict = {}
    try:
        locked = [m for m in parsed.members if _local_state(facts, m) == "locked"]
        # Autolocked managers back from a restart: unlocked first (with a running manager's
        # key, else the one kept on the master), then everything is planned on what they say.
        sealed_key = _key_for_locked(transport, store, name, manager) if locked else None
        if sealed_key and not test:
            _unlock(transport, store, parsed, locked, sealed_key, done)
            facts = gather_facts(parsed, transport)
            manager = live_manager(parsed, facts)
        swarm_nodes = transport.one(manager, "docker_swarm.nodes") if manager else None
        cluster_now = transport.one(manager, "docker_swarm.cluster_settings") if manager else None
        plan, errors = swarm_plan.make_plan(
            parsed,
            facts,
            swarm_nodes,
            force=force,
            cluster_now=cluster_now,
            unlockable=bool(sealed_key),
        )
        if errors:
            return state_results.failed(
                ret,
                ("Cannot converge the swarm" + (":" if done else ", nothing changed:") + "\n")
                + "\n".join(errors),
                done or None,
            )
        changes = {**done, **plan.changes()}
        key_change = _key_change(transport, store, name, plan, cluster_now, manager)
        if key_change:
            changes["unlock_key"] = key_change
        if parsed.rotate_join_tokens and (plan.join_managers or plan.join_workers):
            changes["rotate_join_tokens"] = [
                r
                for r, joins in (("worker", plan.join_workers), ("manager", plan.join_managers))
                if joins
            ]
        notes = _notes(plan, changes)
        if not changes:
            state_results.unchanged(ret, "The swarm matches the layout." + notes)
        elif test:
            return state_results.would_change(ret, "The swarm would be changed." + notes, changes)
        else:
            manager = execute(transport, parsed, plan, facts, manager, swarm_nodes, done)
            if key_change:
                _keep_key(transport, store, name, manager, key_change)
                done["unlock_key"] = key_change
            state_results.changed(ret, "The swarm was changed." + notes, changes)
        # Nodes that do not answer leave the swarm unconverged whatever else was done.
        ret["result"] = not plan.down
        table = (
            swarm_plan.node_table(transport.one(manager, "docker_swarm.nodes"), manager)
            if manager
            else []
        )
    except ArmswarmError as exc:
        # What was done before the failure is still a change.
        return state_results.failed(ret, exc, done)
    if table:
        ret["comment"] += "\n" + "\n".join(table)
    transport.progress("done", result=ret["result"])
    return ret


def resolve_layout(conf, transport):
    """``(layout, errors)``: the layout parsed, its targets expanded to minion ids, checked
    against the accepted keys and the manager count. ``layout`` is None when ``conf`` cannot
    be read at all; any error means nothing may change."""
    parsed, errors, targets = swarm_layout.parse_layout(conf)
    if parsed is None:
        return None, errors
    for key, target in targets.items():
        found = sorted(transport.expand(target["tgt"], target["tgt_type"]) or [])
        if key == "workers" and not found and parsed.prune:
            # With no workers every worker node would be drained and removed: a target that
            # matches nobody is a typo far more often than a wish.
            errors.append(
                f"armswarm:swarm:workers: the target {target['tgt']!r} "
                f"({target['tgt_type']}) matches no minion, and prune is on"
            )
        setattr(parsed, key, found)
    accepted = set(transport.accepted() or [])
    errors += [
        f"armswarm:swarm: {m} is not a known minion (no accepted key)"
        for m in parsed.members
        if m not in accepted
    ]
    errors += swarm_layout.check_counts(parsed)
    return parsed, errors


def gather_facts(layout, transport) -> dict:
    """``docker_swarm.facts`` of the layout's minions that answered with a swarm state.

    A minion that has not answered is asked again, for at most ``answer_timeout`` in all:
    a board stalled while the job came in (swapping, a hung SD card) drops its connection
    to the master when it wakes, runs the job and loses the return, so waiting longer for
    that one job would never see it. A minion that answered with an error is not asked
    again: it is there, and its answer will not change within the wait."""
    deadline = transport.clock() + layout.answer_timeout
    answers, pending = {}, list(layout.members)
    while True:
        wait = min(ASK_EVERY, deadline - transport.clock())
        answers.update(transport.many(pending, "docker_swarm.facts", timeout=max(wait, 1)))
        pending = [m for m in layout.members if m not in answers]
        left = deadline - transport.clock()
        if not pending or left < 1:
            break
        transport.progress("facts_again", missing=sorted(pending), seconds_left=round(left))
    facts = {m: f for m, f in answers.items() if isinstance(f, dict) and "swarm" in f}
    transport.progress(
        "facts", answered=sorted(facts), missing=sorted(set(layout.members) - set(facts))
    )
    return facts


def live_manager(layout, facts):
    """The first layout manager that sees its cluster, to ask for the node list (one without
    a leader cannot list nodes; ``make_plan`` explains that case); when no layout manager is
    a manager yet (the whole role moves), the first layout worker that still is one. None
    when there is none."""
    for minion_id in swarm_plan.cluster_candidates(layout, facts):
        swarm_state = (facts.get(minion_id) or {}).get("swarm") or {}
        if (
            swarm_state.get("state") == "active"
            and swarm_state.get("is_manager")
            and swarm_state.get("cluster_id")
        ):
            return minion_id
    return None


def _local_state(facts, minion_id):
    return ((facts.get(minion_id) or {}).get("swarm") or {}).get("state")


def _sealed_key(transport, manager):
    """The running swarm's unlock key, sealed for the master (None without autolock)."""
    answer = transport.one(manager, "docker_swarm.unlock_key")
    return answer.get("sealed") if isinstance(answer, dict) and answer.get("available") else None


def _key_for_locked(transport, store, name, manager):
    """The key for locked managers, sealed for the master: a running manager's (current),
    else the one kept for this layout (no manager runs: the whole cluster was restarted)."""
    if manager:
        sealed = _sealed_key(transport, manager)
        if sealed:
            return sealed
    kept = store.kept(name)
    return kept["sealed"] if kept else None


def _unlock(transport, store, layout, locked, sealed_key, done):
    """Unlock the managers ``locked``: the key opened on the master and sealed for each
    minion only; then wait until they are managers of their cluster again (all unlocked
    first: with every manager locked, none has a leader until a quorum of them is back)."""
    recipients = transport.public_keys(list(locked))
    for minion_id in locked:
        transport.one(
            minion_id,
            "docker_swarm.unlock",
            kwarg={"sealed_key": store.reseal(sealed_key, recipients[minion_id], minion_id)},
        )
        done.setdefault("unlock", []).append(minion_id)
        transport.progress("unlocked", minion=minion_id)
    deadline = time.monotonic() + layout.role_timeout
    waiting = list(locked)
    while waiting:
        states = {m: transport.one(m, "docker_swarm.state") for m in waiting}
        waiting = [
            m
            for m, state in states.items()
            if not (state.get("state") == "active" and state.get("is_manager"))
            or not state.get("cluster_id")
        ]
        if waiting and time.monotonic() > deadline:
            raise ArmswarmError(
                f"unlocked, but not managers of their swarm after {layout.role_timeout:g} s: "
                + ", ".join(f"{m} ({states[m].get('state')})" for m in waiting)
            )
        if waiting:
            time.sleep(1)


def _key_change(transport, store, name, plan, cluster_now, manager):
    """What happens to the unlock key kept on the master: it follows the swarm's autolock
    after this run (kept while on, current and of this cluster; dropped when off)."""
    if plan.autolock:
        on = plan.autolock["new"]
    elif cluster_now is None:
        return None  # no manager to ask (a new swarm, or all locked): the key stays as it is
    else:
        on = bool(cluster_now.get("autolock"))
    if not on:
        return KEY_DROPPED if store.kept(name) else None
    if plan.autolock:
        return KEY_KEPT  # a new key, made when autolock goes on
    sealed = _sealed_key(transport, manager) if manager else None
    if sealed is None or store.matches(name, plan.cluster_id, sealed):
        return None
    return KEY_KEPT


def _keep_key(transport, store, name, manager, change):
    if change == KEY_DROPPED:
        store.drop(name)
        transport.progress("unlock-key-dropped")
        return
    sealed = _sealed_key(transport, manager)
    if not sealed:
        raise ArmswarmError(f"{manager}: autolock is on but it gives no unlock key")
    store.keep(name, transport.one(manager, "docker_swarm.state").get("cluster_id"), sealed)
    transport.progress("unlock-key-kept")


def _notes(plan, changes) -> str:
    """What the comment adds about nodes left as they are."""
    notes = f"\nNot answering (left as they are): {', '.join(plan.down)}" if plan.down else ""
    if plan.fixed:
        notes += "\nFixed when the swarm was initialised, left as they are: " + ", ".join(
            f"{key} {live} (layout: {want})" for key, (live, want) in sorted(plan.fixed.items())
        )
    if plan.drain:
        notes += (
            f"\nDrained, not in the layout: {', '.join(changes['drain'])}; they are "
            "removed once they leave the swarm (or go down)"
        )
    return notes


def _join(transport, joiner, sealed_token, remote_addrs, addr, port, settings=None):
    kwarg = {
        "sealed_token": sealed_token,
        "advertise_addr": addr,
        "listen_addr": swarm_engine.listen_addr_for(addr, port),
    }
    if settings and settings.availability:
        # From the first moment: drained after the join, it could already have had a task.
        kwarg["availability"] = settings.availability
    if settings and settings.data_path_addr:
        kwarg["data_path_addr"] = settings.data_path_addr
    ret = transport.one(joiner, "docker_swarm.join", [",".join(remote_addrs)], kwarg)
    transport.progress("joined", minion=joiner, manager=ret["state"]["is_manager"])
    return ret["state"]["node_id"]


def _join_planned(transport, layout, plan, minion_id, token, remote):
    """A join with the node's planned address and its layout settings; its new node id."""
    return _join(
        transport,
        minion_id,
        token,
        remote,
        plan.addresses[minion_id],
        layout.listen_port,
        _join_availability(layout, minion_id),
    )


def _join_availability(layout, minion_id):
    """The node's layout settings a join uses (availability, data path address)."""
    return layout.nodes.get(minion_id)


def _sealed_tokens(transport, manager, role, joiners) -> dict:
    """One call to the manager for every joiner's token, each sealed for that joiner."""
    recipients = transport.public_keys(list(joiners))
    return transport.one(manager, "docker_swarm.sealed_join_tokens", [role, recipients])


def remote_addrs(manager, plan, swarm_nodes, port) -> list:
    """Where joiners find the swarm: the engine uses the first address only, so it must be a
    manager now (not a node waiting for promotion): the manager we talk to, then the other
    reachable managers."""
    addrs = (
        [swarm_engine.host_port(plan.addresses[manager], port)] if manager in plan.addresses else []
    )
    for node in swarm_nodes or []:
        if node["role"] == "manager" and node["reachability"] == "reachable":
            addr = node.get("manager_addr") or swarm_engine.host_port(node["addr"], port)
            if addr not in addrs:
                addrs.append(addr)
    return addrs


def _set_role(transport, layout, manager, node_id, role):
    transport.one(
        manager,
        "docker_swarm.set_role",
        [node_id, role],
        {"timeout": layout.role_timeout},
        timeout=layout.role_timeout + CALL_MARGIN,
    )


def execute(transport, layout, plan, facts, manager, swarm_nodes, done):
    """Carry the plan out, recording each step in ``done`` (the changes made so far, also when
    a step fails); return the manager to ask for the final node list."""
    port = layout.listen_port
    for minion_id in plan.leave:
        # A manager of another swarm steps down there first: its wait is the role change's.
        transport.one(
            minion_id,
            "docker_swarm.leave",
            kwarg={"force": True, "timeout": layout.role_timeout},
            timeout=layout.role_timeout + CALL_MARGIN,
        )
        done.setdefault("leave", []).append(minion_id)
        transport.progress("left", minion=minion_id)
    node_ids = {m: (facts[m].get("swarm") or {}).get("node_id") for m in facts}
    if plan.init:
        addr = plan.addresses[plan.init]
        kwarg = {
            "advertise_addr": addr,
            "listen_addr": swarm_engine.listen_addr_for(addr, port),
            **layout.init_options,
        }
        data_path_addr = (layout.nodes.get(plan.init) or swarm_layout.NodeSettings()).data_path_addr
        if data_path_addr:
            kwarg["data_path_addr"] = data_path_addr
        ret = transport.one(plan.init, "docker_swarm.init", kwarg=kwarg)
        node_ids[plan.init] = ret["state"]["node_id"]
        manager = plan.init
        done["init"] = plan.init
        transport.progress("initialised", minion=plan.init, address=addr)
    if plan.cluster:
        transport.one(
            manager,
            "docker_swarm.update_cluster",
            [{key: change["new"] for key, change in plan.cluster.items()}],
        )
        done["cluster"] = dict(plan.cluster)
        transport.progress("cluster-configured", settings=sorted(plan.cluster))
    if plan.autolock:
        transport.one(manager, "docker_swarm.autolock", kwarg={"enabled": plan.autolock["new"]})
        done["autolock"] = dict(plan.autolock)
        transport.progress("autolock", enabled=plan.autolock["new"])
    # Promotions first, each waited for until the node is a reachable manager: it then serves
    # joins, and counts for the quorum of the demotions below (fired back to back, the
    # promoted nodes are still unreachable when the first demotion is checked).
    for minion_id in plan.promote:
        _set_role(transport, layout, manager, node_ids[minion_id], "manager")
        done.setdefault("promote", []).append(minion_id)
        transport.progress("promoted", minion=minion_id)
    remote = remote_addrs(manager, plan, swarm_nodes, port)
    remote += [swarm_engine.host_port(plan.addresses[m], port) for m in done.get("promote", [])]
    # A joiner keeps the first address as its join address: one that stays a manager.
    leaving = {swarm_engine.addr_host(plan.addresses.get(m)) for m in plan.demote}
    remote = list(dict.fromkeys(sorted(remote, key=lambda a: swarm_engine.addr_host(a) in leaving)))
    for minion_id in plan.rejoin_managers:
        # Promoted, its engine would hang on a join address that is no manager any more
        # (swarm_plan.order_promotions): it leaves as the worker it is and joins as a manager
        # through live ones; its old entry goes, the new one gets its labels below.
        old_id = node_ids[minion_id]
        # The token first: a failure then leaves the node where it was.
        token = _sealed_tokens(transport, manager, "manager", [minion_id])[minion_id]
        transport.one(minion_id, "docker_swarm.leave")
        # Recorded now: a failed join below must not read as "nothing changed".
        done.setdefault("left_to_rejoin", []).append(minion_id)
        node_ids[minion_id] = _join_planned(transport, layout, plan, minion_id, token, remote)
        transport.one(manager, "docker_swarm.remove_node", [old_id], {"force": True})
        # Reachable before any demotion counts on it.
        _set_role(transport, layout, manager, node_ids[minion_id], "manager")
        done["left_to_rejoin"].remove(minion_id)
        if not done["left_to_rejoin"]:
            del done["left_to_rejoin"]
        done.setdefault("rejoin_managers", []).append(minion_id)
        transport.progress("rejoined-as-manager", minion=minion_id)
    if manager in plan.demote and (plan.promote or plan.rejoin_managers):
        # The node we talk through is about to lose its role: ask a promoted one from now on.
        manager = (plan.promote or plan.rejoin_managers)[0]
    # Managers one at a time: each join changes the raft membership.
    for minion_id in plan.join_managers:
        token = _sealed_tokens(transport, manager, "manager", [minion_id])[minion_id]
        node_ids[minion_id] = _join_planned(transport, layout, plan, minion_id, token, remote)
        done.setdefault("join_managers", []).append(minion_id)
        remote.append(swarm_engine.host_port(plan.addresses[minion_id], port))
    # Workers in parallel: they do not vote.
    if plan.join_workers:
        tokens = _sealed_tokens(transport, manager, "worker", plan.join_workers)
        with ThreadPoolExecutor(max_workers=min(16, len(plan.join_workers))) as pool:
            futures = {
                m: pool.submit(_join_planned, transport.fork(), layout, plan, m, tokens[m], remote)
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
    if layout.rotate_join_tokens and (plan.join_managers or plan.join_workers):
        # The tokens used are spent: a copy of one (a log, a leaked blob) joins nothing more.
        roles = {"worker": bool(plan.join_workers), "manager": bool(plan.join_managers)}
        transport.one(manager, "docker_swarm.rotate_join_tokens", kwarg=roles)
        done["rotate_join_tokens"] = [r for r, flag in roles.items() if flag]
        transport.progress("join-tokens-rotated", roles=done["rotate_join_tokens"])
    if manager in plan.demote:
        manager = next(
            (
                m
                for m in (*plan.promote, *plan.rejoin_managers, *plan.join_managers)
                if m not in plan.demote
            ),
            manager,
        )
    # One at a time, each checked against quorum on the live node list by the manager and
    # waited for until the node left the raft membership.
    for minion_id in plan.demote:
        _set_role(transport, layout, manager, node_ids[minion_id], "worker")
        done.setdefault("demote", []).append(minion_id)
        transport.progress("demoted", minion=minion_id)
    for node in plan.stale:
        # The dead earlier self of a node that joined again: demote, then remove it.
        if node["role"] == "manager":
            transport.one(manager, "docker_swarm.update_node", [node["id"]], {"role": "worker"})
        transport.one(manager, "docker_swarm.remove_node", [node["id"]], {"force": True})
        done.setdefault("remove_stale", []).append(f"{node['hostname']} ({node['id'][:12]})")
        transport.progress("stale-removed", node=node["hostname"], id=node["id"])
    updates = plan.node_updates()
    batch = {}
    for minion_id, change in updates.items():
        settings = {"remove_undeclared_labels": layout.remove_undeclared_labels}
        if "labels" in change:
            # The declared labels: the manager merges them into the node's labels as they
            # are then, and removes the ones it set before that are no longer declared.
            settings["labels"] = swarm_layout.desired_labels(minion_id, layout, facts[minion_id])
            settings["managed_label"] = swarm_layout.MANAGED_LABEL
        if "availability" in change:
            settings["availability"] = change["availability"]["new"]
        batch[node_ids[minion_id]] = settings
    if batch:
        # One call for every node: a per-node call would make the run grow with the cluster.
        transport.one(manager, "docker_swarm.update_nodes", [batch])
        done.update(swarm_plan.node_report(updates))
        transport.progress("nodes-configured", minions=sorted(updates))
    for node in plan.drain:
        transport.one(manager, "docker_swarm.update_node", [node["id"]], {"availability": "drain"})
        done.setdefault("drain", []).append(node["hostname"] or node["id"])
        transport.progress("drained", node=node["hostname"] or node["id"])
    for node in plan.prune:
        if node["role"] == "manager":
            transport.one(manager, "docker_swarm.update_node", [node["id"]], {"role": "worker"})
        transport.one(manager, "docker_swarm.remove_node", [node["id"]], {"force": True})
        done.setdefault("prune", []).append(node["hostname"] or node["id"])
        transport.progress("pruned", node=node["hostname"] or node["id"])
    return manager
