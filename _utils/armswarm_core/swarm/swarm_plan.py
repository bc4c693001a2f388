"""What the swarm orchestration changes to reach the layout: joins, role changes, labels,
removals, checked against quorum before anything changes."""

import ipaddress
import json
import re
from dataclasses import dataclass, field

from armswarm_core.swarm import swarm_engine, swarm_layout


@dataclass
class Plan:
    cluster_id: str | None = None
    init: str | None = None
    leave: list = field(default_factory=list)  # nodes in a foreign swarm (force only)
    join_managers: list = field(default_factory=list)
    join_workers: list = field(default_factory=list)
    promote: list = field(default_factory=list)
    # Workers to make managers by leaving and joining again: promoted, their engine would hang
    # on a join address that is no manager any more (order_promotions).
    rejoin_managers: list = field(default_factory=list)
    demote: list = field(default_factory=list)
    updates: dict = field(default_factory=dict)  # minion id -> node_changes() for known nodes
    new_node_settings: dict = field(default_factory=dict)  # joiners: labels/availability to set
    prune: list = field(default_factory=list)  # swarm node dicts to remove
    stale: list = field(default_factory=list)  # down entries of nodes that join again
    drain: list = field(default_factory=list)  # running nodes outside the layout (prune)
    down: list = field(default_factory=list)  # pillar nodes that did not answer
    addresses: dict = field(default_factory=dict)
    cluster: dict = field(default_factory=dict)  # cluster spec: key -> {"old", "new"}
    autolock: dict = field(default_factory=dict)  # {"old", "new"} when it changes
    unlock: list = field(default_factory=list)  # locked managers to unlock with the kept key
    fixed: dict = field(
        default_factory=dict
    )  # init-only settings that differ: key -> (live, layout)

    def changes(self) -> dict:
        """The plan as state ``changes`` (what a run makes, what test=True predicts)."""
        out = {}
        if self.unlock:
            out["unlock"] = list(self.unlock)
        if self.init:
            out["init"] = self.init
        for key in (
            "leave",
            "join_managers",
            "join_workers",
            "promote",
            "rejoin_managers",
            "demote",
        ):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        out.update(node_report(self.node_updates()))
        if self.prune:
            out["prune"] = [n["hostname"] or n["id"] for n in self.prune]
        if self.drain:
            out["drain"] = [n["hostname"] or n["id"] for n in self.drain]
        if self.stale:
            out["remove_stale"] = [f"{n['hostname']} ({n['id'][:12]})" for n in self.stale]
        if self.cluster:
            out["cluster"] = dict(self.cluster)
        if self.autolock:
            out["autolock"] = dict(self.autolock)
        return out

    def node_updates(self) -> dict:
        """Minion id -> ``node_changes()`` of every node whose labels or availability change
        (known nodes, then joiners)."""
        updates = {k: v for k, v in self.updates.items() if v}
        updates.update(self.new_node_settings)
        return updates


def node_report(updates: dict) -> dict:
    """The node part of the state ``changes``, one line a node in Salt's outputter:
    ``{"labels": {minion: "key=value -gone"}, "availability": {minion: "active -> drain"}}``
    (only the nodes and keys that change; see :func:`label_diff`). Both the prediction and
    the run report through here, so they are the same."""
    out: dict = {}
    for minion_id, change in updates.items():
        if "labels" in change:
            out.setdefault("labels", {})[minion_id] = format_label_diff(
                label_diff(change["labels"]["old"], change["labels"]["new"])
            )
        if "availability" in change:
            old, new = change["availability"]["old"], change["availability"]["new"]
            out.setdefault("availability", {})[minion_id] = f"{old} -> {new}"
    return out


def label_diff(old: dict, new: dict) -> dict:
    """The labels that change: ``{key: new value}``, None for a label removed; sorted, the
    bookkeeping labels last."""
    diff = {k: v for k, v in new.items() if k not in old or old[k] != v}
    diff.update({k: None for k in old if k not in new})
    bookkeeping = (swarm_layout.MANAGED_LABEL, swarm_layout.MINION_LABEL)
    return dict(sorted(diff.items(), key=lambda kv: (kv[0] in bookkeeping, kv[0])))


def _quote(text: str, is_key: bool) -> str:
    plain = re.fullmatch(r"[^\s\"'=]+" if is_key else r"[^\s\"']+", text)
    return text if plain and not (is_key and text.startswith("-")) else json.dumps(text)


def format_label_diff(diff: dict) -> str:
    """``key=value`` for a label set, ``-key`` for one removed, space-separated; a key or
    value that is empty or holds a blank or a quote, a key that holds an ``=`` or starts with
    ``-``, is written as a JSON string, so the line reads back exactly."""
    return " ".join(
        f"-{_quote(k, True)}" if v is None else f"{_quote(k, True)}={_quote(v, False)}"
        for k, v in diff.items()
    )


def _not_own(minion_id: str, key: str, addr: str, node_facts: dict) -> list:
    """``[error]`` when ``addr`` (canonical form) is not one of the node's own addresses."""
    family, facts_key = ("IPv6", "interfaces6") if ":" in addr else ("IPv4", "interfaces")
    if facts_key not in node_facts and facts_key == "interfaces6":
        return []  # facts from before the IPv6 ones were collected: unchecked
    by_iface = node_facts.get(facts_key) or {}
    if addr in {a for addrs in by_iface.values() for a in addrs}:
        return []
    listed = ", ".join(f"{iface} {' '.join(addrs)}" for iface, addrs in sorted(by_iface.items()))
    return [
        f"armswarm:swarm:nodes:{minion_id}:{key}: {addr} is not an address of {minion_id} "
        f"(its interfaces: {listed or f'none with an {family} address'})"
    ]


def make_plan(
    layout: swarm_layout.Layout,
    facts: dict,
    swarm_nodes: list | None,
    force: bool = False,
    cluster_now: dict | None = None,
    unlockable: bool = False,
):
    """``(plan, errors)``. ``facts`` holds only the minions that answered; ``swarm_nodes`` is
    the node list of the cluster the pillar's managers are in (None when there is none);
    ``cluster_now`` that cluster's settings (``docker_swarm.cluster_settings``);
    ``unlockable``: an unlock key is at hand (a running manager's or the one kept on the
    master), so a locked manager is planned to be unlocked rather than refused."""
    errors = []
    plan = Plan()
    plan.down = [m for m in layout.members if m not in facts]

    # Addresses: every answering node needs one, and no two may share it.
    owners: dict = {}
    for minion_id in layout.members:
        if minion_id not in facts:
            continue
        addr = swarm_layout.advertise_addr(minion_id, layout, facts[minion_id])
        if not addr:
            errors.append(
                f"armswarm:swarm:nodes:{minion_id}: no advertise address (set "
                "advertise_addr or advertise_interface)"
            )
            continue
        settings = layout.nodes.get(minion_id)
        if settings and settings.advertise_addr:
            # A typo here on a joining manager leaves a raft without a leader: refuse it
            # before anything changes.
            errors += _not_own(minion_id, "advertise_addr", addr, facts[minion_id])
        if settings and settings.data_path_addr:
            # ... and here, a node whose overlay traffic goes nowhere.
            dp_addr = str(ipaddress.ip_address(str(settings.data_path_addr)))
            errors += _not_own(minion_id, "data_path_addr", dp_addr, facts[minion_id])
        plan.addresses[minion_id] = addr
        owners.setdefault(addr, []).append(minion_id)
    for addr, ids in owners.items():
        if len(ids) > 1:
            errors.append(f"armswarm:swarm: {', '.join(ids)} share the advertise address {addr}")

    # Which cluster is ours: the one the pillar's managers are in (or, when the manager role
    # moves to nodes that are no managers yet, the one the layout's current managers are in).
    clusters: dict = {}
    for minion_id in cluster_candidates(layout, facts):
        swarm_state = (facts.get(minion_id) or {}).get("swarm") or {}
        if swarm_state.get("state") == "active" and swarm_state.get("is_manager"):
            if not swarm_state.get("cluster_id"):
                errors.append(
                    f"{minion_id}: manager of a swarm without a leader (quorum lost?): "
                    f"{swarm_state.get('error') or 'no cluster information'}; if most managers "
                    "are gone for good, recover on ONE surviving manager: `salt "
                    f"{minion_id} docker_swarm.init force_new_cluster=True` (docs: operations, "
                    "Quorum lost)"
                )
                continue
            clusters.setdefault(swarm_state.get("cluster_id"), []).append(minion_id)
    if errors:
        return plan, errors
    if len(clusters) > 1:
        detail = "; ".join(f"cluster {cid[:12]}: {', '.join(ids)}" for cid, ids in clusters.items())
        errors.append(f"armswarm:swarm:managers: the managers are in different swarms ({detail})")
        return plan, errors
    plan.cluster_id = next(iter(clusters), None)
    locked = [
        m
        for m in layout.members
        if ((facts.get(m) or {}).get("swarm") or {}).get("state") == "locked"
    ]
    if plan.cluster_id is None and locked and unlockable:
        # Every manager locked (the cluster restarted at once): nothing else can be told
        # before they are unlocked (the workers' swarm has no manager to list it).
        plan.unlock = locked
        return plan, errors
    member_ids = {n["id"]: n for n in swarm_nodes or []}
    kept = _layout_entries(layout, facts, swarm_nodes)

    for minion_id in layout.members:
        node_facts = facts.get(minion_id)
        if node_facts is None:
            continue
        swarm_state = node_facts.get("swarm") or {}
        local = swarm_state.get("state")
        node_id = swarm_state.get("node_id")
        want = layout.role(minion_id)
        if local == "locked" and unlockable:
            # An autolocked manager after a restart: it is unlocked first, then planned again.
            plan.unlock.append(minion_id)
            continue
        if local == "locked":
            errors.append(
                f"{minion_id}: its swarm is locked (autolock) and no unlock key is at hand "
                "(no running manager gives one, none is kept on the master); unlock it with "
                f"salt-run swarm_keys.unlock {minion_id} <a running manager>, or "
                f"salt {minion_id} docker_swarm.unlock key_pillar=…, and re-run"
            )
            continue
        if local in ("pending", "error"):
            errors.append(
                f"{minion_id}: its swarm state is {local!r}"
                + (f" ({swarm_state.get('error')})" if swarm_state.get("error") else "")
                + "; fix it by hand (leave, or restart dockerd) and re-run"
            )
            continue
        if local == "active" and node_id in member_ids:
            current = member_ids[node_id]
            if current["role"] != want:
                (plan.promote if want == "manager" else plan.demote).append(minion_id)
            settings = layout.nodes.get(minion_id) or swarm_layout.NodeSettings()
            plan.updates[minion_id] = swarm_engine.node_changes(
                current,
                labels=swarm_layout.desired_labels(minion_id, layout, node_facts),
                availability=settings.availability,
                remove_undeclared_labels=layout.remove_undeclared_labels,
                managed_label=swarm_layout.MANAGED_LABEL,
            )
            continue
        if local == "active":
            # In a swarm, but not in ours (or ours does not exist yet).
            if not force:
                errors.append(
                    f"{minion_id}: already in another swarm"
                    + (
                        f" (cluster {swarm_state['cluster_id'][:12]})"
                        if swarm_state.get("cluster_id")
                        else ""
                    )
                    + "; refusing to take it over (set force: true to make it leave)"
                )
                continue
            plan.leave.append(minion_id)
        settings = layout.nodes.get(minion_id) or swarm_layout.NodeSettings()
        # A node that joins starts with no labels and its layout availability (it joins with
        # it, see converge._join); the first manager of a new swarm starts "active".
        joins_with = (
            settings.availability
            if not (plan.cluster_id is None and plan.init is None and want == "manager")
            else None
        )
        new = swarm_engine.node_changes(
            {"labels": {}, "availability": joins_with or "active"},
            labels=swarm_layout.desired_labels(minion_id, layout, node_facts),
            availability=settings.availability,
            managed_label=swarm_layout.MANAGED_LABEL,
        )
        if new:
            plan.new_node_settings[minion_id] = new
        # Its earlier self is a stale entry to clear after the join: labelled with this
        # minion id, or (an entry from before the label) same hostname and down or at this
        # node's address (the engine says it is in no swarm, so that entry is not it).
        plan.stale.extend(
            n for n in swarm_nodes or [] if _earlier_self(n, minion_id, node_facts, plan, kept)
        )
        if plan.cluster_id is None and plan.init is None and want == "manager":
            plan.init = minion_id
        elif want == "manager":
            plan.join_managers.append(minion_id)
        else:
            plan.join_workers.append(minion_id)

    down_managers = [m for m in layout.managers if m in plan.down]
    if plan.init and down_managers and not force:
        # They may well be in a swarm: a new one would be a second cluster.
        errors.append(
            f"cannot tell whether {', '.join(down_managers)} (not answering) are in a swarm: "
            "refusing to initialise a new one; re-run when they answer, or set force: true"
        )
    if plan.init is None and plan.cluster_id is None and (plan.join_managers or plan.join_workers):
        errors.append("armswarm:swarm:managers: no manager answers, nothing to form a swarm on")

    if plan.promote:
        plan.promote, plan.rejoin_managers = order_promotions(
            plan.promote, facts, swarm_nodes, plan.addresses
        )
        for minion_id in plan.rejoin_managers:
            # It comes back as a new node: no labels, its layout availability from the join.
            settings = layout.nodes.get(minion_id) or swarm_layout.NodeSettings()
            plan.updates.pop(minion_id, None)
            new = swarm_engine.node_changes(
                {"labels": {}, "availability": settings.availability or "active"},
                labels=swarm_layout.desired_labels(minion_id, layout, facts[minion_id]),
                availability=settings.availability,
                managed_label=swarm_layout.MANAGED_LABEL,
            )
            if new:
                plan.new_node_settings[minion_id] = new

    # Demotions go one at a time, unreachable managers first; each step must keep quorum
    # among the managers that stay (swarmkit would refuse otherwise, halfway through).
    if plan.demote and swarm_nodes:
        by_id = {n["id"]: n for n in swarm_nodes}
        node_of = {m: by_id[facts[m]["swarm"]["node_id"]] for m in plan.demote}
        plan.demote.sort(key=lambda m: node_of[m]["reachability"] == "reachable")
        staying = [n for n in swarm_nodes if n["role"] == "manager"]
        # Promotions and manager joins come first and are waited for: those nodes answer, so
        # they count as reachable managers when the demotions are checked.
        coming = len(plan.promote) + len(plan.rejoin_managers) + len(plan.join_managers)
        for minion_id in plan.demote:
            staying = [n for n in staying if n["id"] != node_of[minion_id]["id"]]
            reachable = coming + sum(1 for n in staying if n["reachability"] == "reachable")
            total = coming + len(staying)
            if not total or reachable < swarm_engine.quorum(total):
                errors.append(
                    f"demoting {minion_id} would leave {reachable} reachable of "
                    f"{total} managers, below quorum ({swarm_engine.quorum(total)})"
                )
                break

    # Cluster settings: the spec is reconciled; what is fixed at init is only reported.
    for key, want in layout.cluster.items():
        have = (cluster_now or {}).get(key) if plan.init is None else None
        if have != want:
            plan.cluster[key] = {"old": have, "new": want}
    if layout.autolock is not None:
        # A new swarm starts without autolock.
        have = bool((cluster_now or {}).get("autolock")) if plan.init is None else False
        if have != layout.autolock:
            plan.autolock = {"old": have, "new": layout.autolock}
    if cluster_now and plan.init is None:
        for key, want in layout.init_options.items():
            if cluster_now.get(key) is not None and cluster_now.get(key) != want:
                plan.fixed[key] = (cluster_now.get(key), want)

    if layout.prune and swarm_nodes:
        ours = {(facts.get(m) or {}).get("swarm", {}).get("node_id") for m in layout.members}
        members = set(layout.members)
        stale_ids = {n["id"] for n in plan.stale}
        for node in swarm_nodes:
            # A layout node that is down keeps its place: it is not answering, not unwanted.
            if (
                node["id"] in ours
                or node["id"] in stale_ids
                or node["labels"].get(swarm_layout.MINION_LABEL) in members
                or node["hostname"] in plan.down
            ):
                continue
            if node["state"] == "down":
                plan.prune.append(node)
            elif node["availability"] != "drain":
                # Still running: drain it; it is removed once it left (or went down).
                plan.drain.append(node)
    return plan, errors


def order_promotions(candidates, facts, swarm_nodes, addresses) -> tuple[list, list]:
    """``(promote, rejoin)``: the promotions in an order that works, and the nodes that must
    leave and join again as managers instead.

    On engines before 26.1.4 (Debian 12's 20.10) a promoted node that fails its first raft
    contact retries only through the address it once joined through; when that node is no
    manager any more, it never becomes reachable (moby#47854). So a node goes when its join
    address is a reachable manager, or one promoted before it; what is left rejoins."""
    managers = {
        swarm_engine.addr_host(n.get("manager_addr") or n.get("addr"))
        for n in swarm_nodes or []
        if n["role"] == "manager" and n["reachability"] == "reachable"
    }

    def can_go(minion_id):
        node_facts = facts.get(minion_id) or {}
        engine = (node_facts.get("swarm") or {}).get("engine_version")
        join_host = swarm_engine.addr_host(node_facts.get("join_addr"))
        return (
            not swarm_engine.promotion_needs_live_join_addr(engine)
            or join_host is None
            or join_host in managers
        )

    ordered, waiting = [], list(candidates)
    while True:
        ready = [m for m in waiting if can_go(m)]
        if not ready:
            return ordered, waiting
        for minion_id in ready:
            ordered.append(minion_id)
            waiting.remove(minion_id)
            managers.add(swarm_engine.addr_host(addresses.get(minion_id)))


def cluster_candidates(layout, facts) -> list:
    """The members whose cluster is ours: the layout's managers that are active managers;
    when none is, the layout's workers that are (the manager role moves to new nodes)."""

    def manager_now(minion_id):
        swarm_state = (facts.get(minion_id) or {}).get("swarm") or {}
        return swarm_state.get("state") == "active" and swarm_state.get("is_manager")

    found = [m for m in layout.managers if manager_now(m)]
    return found or [m for m in layout.workers if manager_now(m)]


def _layout_entries(layout, facts, swarm_nodes) -> set:
    """Ids of the entries that are (or may be) a layout member other than a joiner's earlier
    self: the node id an answering member reports, and any entry labelled with a member's
    minion id that is not down-and-rejoining. Stale-entry removal never touches these."""
    ids = {
        ((facts.get(m) or {}).get("swarm") or {}).get("node_id")
        for m in layout.members
        if ((facts.get(m) or {}).get("swarm") or {}).get("state") == "active"
    }
    members = set(layout.members)
    for node in swarm_nodes or []:
        owner = node["labels"].get(swarm_layout.MINION_LABEL)
        if owner in members and owner not in facts:
            ids.add(node["id"])  # a member that is down: it keeps its entry
    ids.discard(None)
    return ids


def _earlier_self(node, minion_id, node_facts, plan, kept) -> bool:
    """Whether swarm entry ``node`` is the dead earlier self of ``minion_id`` (joining now)."""
    if node["id"] in kept:
        return False
    owner = node["labels"].get(swarm_layout.MINION_LABEL)
    if owner is not None:
        return owner == minion_id
    if plan.down:
        # An unlabelled entry could be a member that does not answer: never removed then.
        return False
    hostname = node_facts.get("hostname") or minion_id
    return node["hostname"] == hostname and (
        node["state"] == "down" or node["addr"] == plan.addresses.get(minion_id)
    )


def node_table(swarm_nodes: list, manager: str | None = None) -> list[str]:
    """The end-of-run table: hostname, role, leader/reachability, availability, labels.

    The labels are shortened to fit a line: the bookkeeping ones (the list of labels armswarm
    set; the minion id when it is the hostname) are left out and the ``armswarm.`` prefix is
    dropped (where no other label has that short name); a last line then says so and where
    to see them all."""
    rows = [f"{'hostname':<12} {'role':<8} {'manager':<12} {'avail':<7} {'state':<6} labels"]
    shortened = False
    for node in sorted(swarm_nodes, key=lambda n: (n["role"] != "manager", n["hostname"] or "")):
        status = "leader" if node["leader"] else (node["reachability"] or "")
        labels, short = _short_labels(node)
        shortened = shortened or short
        rows.append(
            f"{node['hostname'] or node['id'][:12]:<12} {node['role']:<8} {status:<12} "
            f"{node['availability']:<7} {node['state']:<6} {labels}".rstrip()
        )
    if shortened:
        rows.append(
            f"(labels shortened; in full: salt {manager or '<manager>'} docker_swarm.nodes)"
        )
    return rows


def _short_labels(node) -> tuple[str, bool]:
    """``(labels as the table shows them, whether any was left out or shortened)``."""
    labels = dict(node["labels"])
    shortened = labels.pop(swarm_layout.MANAGED_LABEL, None) is not None
    if node["hostname"] and labels.get(swarm_layout.MINION_LABEL) == node["hostname"]:
        del labels[swarm_layout.MINION_LABEL]
        shortened = True
    words = []
    for key, value in sorted(labels.items()):
        short = key.removeprefix(swarm_layout.LABEL_PREFIX)
        if short == key or not short or short in labels:
            short = key  # no prefix, or another label has that name
        shortened = shortened or short != key
        words.append(f"{_quote(short, True)}={_quote(value, False)}")
    return " ".join(words), shortened
