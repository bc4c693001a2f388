"""The swarm layout: validation and the plan, from pillar and minion facts (no daemons)."""

import pytest
from armswarm_core.swarm import swarm_engine, swarm_layout, swarm_plan

BASE = {"managers": ["m1", "m2", "m3"], "workers": ["w1", "w2"]}


def layout(**overrides):
    parsed, errors, targets = swarm_layout.parse_layout({**BASE, **overrides})
    assert errors == [] and targets == {}
    return parsed


def fact(n, state="inactive", manager=False, cluster_id=None, node_id=None, board="rockpro64"):
    return {
        "hostname": n,
        "swarm": {
            "state": state,
            "is_manager": manager,
            "cluster_id": cluster_id,
            "node_id": node_id,
            "error": None,
        },
        "interfaces": {"eth0": [f"10.0.0.{sum(map(ord, n)) % 200 + 10}"]},
        "default_interface": "eth0",
        "armnode": {
            "board": board,
            "arch": "aarch64",
            "cpus": 6,
            "big_cores": [4, 5],
            "root_kind": "ssd",
        },
    }


def swarm_node(n, role="worker", state="ready", reach=None, labels=None, addr=None):
    # Nodes the orchestration configured carry their minion id as a label.
    labels = {**labels, swarm_layout.MINION_LABEL: n} if labels is not None else {}
    if labels:  # the keys the orchestration set, as it keeps them
        labels[swarm_layout.MANAGED_LABEL] = ",".join(sorted(labels))
    return {
        "id": f"id-{n}",
        "hostname": n,
        "role": role,
        "availability": "active",
        "labels": labels,
        "state": state,
        "addr": addr,
        "leader": False,
        "reachability": reach,
    }


ALL = ["m1", "m2", "m3", "w1", "w2"]


def test_fresh_cluster_inits_first_manager_then_joins():
    facts = {n: fact(n) for n in ALL}
    plan, errors = swarm_plan.make_plan(layout(), facts, None)
    assert errors == []
    assert plan.init == "m1"
    assert plan.join_managers == ["m2", "m3"] and plan.join_workers == ["w1", "w2"]
    labels = plan.new_node_settings["w1"]["labels"]["new"]
    assert labels == {
        "armswarm.minion": "w1",
        "armswarm.board": "rockpro64",
        "armswarm.arch": "aarch64",
        "armswarm.cpus": "6",
        "armswarm.big-cores": "2",
        "armswarm.storage": "ssd",
        "armswarm.labels": "armswarm.arch,armswarm.big-cores,armswarm.board,armswarm.cpus,"
        "armswarm.minion,armswarm.storage",
    }


def test_converged_cluster_has_an_empty_plan():
    labels = swarm_layout.grain_labels(fact("x"))
    facts = {n: fact(n, "active", n.startswith("m"), "C1", f"id-{n}") for n in ALL}
    nodes = [
        swarm_node(
            n,
            "manager" if n.startswith("m") else "worker",
            reach="reachable" if n.startswith("m") else None,
            labels=labels,
        )
        for n in ALL
    ]
    plan, errors = swarm_plan.make_plan(layout(), facts, nodes)
    assert errors == [] and plan.changes() == {}


def test_even_managers_refused_unless_allowed():
    errors = swarm_layout.check_counts(layout(managers=["m1", "m2"]))
    assert "2 managers is an even number" in errors[0]
    assert swarm_layout.check_counts(layout(managers=["m1", "m2"], allow_even_managers=True)) == []
    assert "at least one manager" in swarm_layout.check_counts(layout(managers=[]))[0]


def test_bad_node_settings_name_the_key():
    _, errors, _ = swarm_layout.parse_layout(
        {
            **BASE,
            "nodes": {
                "w1": {"availability": "paused", "colour": "red"},
                "w2": {"advertise_addr": "not-an-ip"},
            },
        }
    )
    text = "\n".join(errors)
    assert "armswarm:swarm:nodes:w1:availability" in text
    assert "armswarm:swarm:nodes:w1:colour: unknown key" in text
    assert "armswarm:swarm:nodes:w2:advertise_addr" in text


def test_targets_are_left_for_the_master_to_expand():
    parsed, errors, targets = swarm_layout.parse_layout(
        {"managers": ["m1"], "workers": {"tgt": "G@armnode:board:sopine"}}
    )
    assert errors == [] and targets == {
        "workers": {"tgt": "G@armnode:board:sopine", "tgt_type": "compound"}
    }


def test_duplicate_advertise_address_is_an_error():
    conf = layout(
        nodes={"w2": {"advertise_addr": "10.9.9.9"}, "w1": {"advertise_addr": "10.9.9.9"}}
    )
    facts = {n: fact(n) for n in ALL}
    for n in ("w1", "w2"):  # both hold it (a copied network config)
        facts[n]["interfaces"]["eth1"] = ["10.9.9.9"]
    plan, errors = swarm_plan.make_plan(conf, facts, None)
    assert any("w1, w2 share the advertise address 10.9.9.9" in e for e in errors)


def test_an_advertise_addr_that_is_not_the_nodes_is_refused():
    facts = {n: fact(n) for n in ALL}
    conf = layout(nodes={"m2": {"advertise_addr": "10.0.0.250"}})
    plan, errors = swarm_plan.make_plan(conf, facts, None)
    own = facts["m2"]["interfaces"]["eth0"][0]
    assert errors == [
        "armswarm:swarm:nodes:m2:advertise_addr: 10.0.0.250 is not an address of m2 "
        f"(its interfaces: eth0 {own})"
    ]
    facts["m2"]["interfaces"]["wlan0"] = ["10.0.0.250"]
    assert swarm_plan.make_plan(conf, facts, None)[1] == []


def test_an_ipv6_advertise_addr_is_checked_against_the_nodes_ipv6_addresses():
    facts = {n: fact(n) for n in ALL}
    conf = layout(nodes={"m2": {"advertise_addr": "[2001:DB8::0011]:2377"}})
    facts["m2"]["interfaces6"] = {"eth0": ["2001:db8::12"]}
    _, errors = swarm_plan.make_plan(conf, facts, None)
    assert errors == [
        "armswarm:swarm:nodes:m2:advertise_addr: 2001:db8::11 is not an address of m2 "
        "(its interfaces: eth0 2001:db8::12)"
    ]
    facts["m2"]["interfaces6"] = {}
    assert (
        "(its interfaces: none with an IPv6 address)"
        in swarm_plan.make_plan(conf, facts, None)[1][0]
    )
    # The same address, written differently: docker lists it in this canonical form.
    facts["m2"]["interfaces6"] = {"eth0": ["2001:db8::11"]}
    plan, errors = swarm_plan.make_plan(conf, facts, None)
    assert errors == [] and plan.addresses["m2"] == "2001:db8::11"
    # Facts without interfaces6 (a module from before they were collected): not checked.
    del facts["m2"]["interfaces6"]
    assert swarm_plan.make_plan(conf, facts, None)[1] == []


def test_a_data_path_addr_that_is_not_the_nodes_is_refused():
    facts = {n: fact(n) for n in ALL}
    conf = layout(nodes={"w1": {"data_path_addr": "192.168.50.7"}})
    own = facts["w1"]["interfaces"]["eth0"][0]
    assert swarm_plan.make_plan(conf, facts, None)[1] == [
        "armswarm:swarm:nodes:w1:data_path_addr: 192.168.50.7 is not an address of w1 "
        f"(its interfaces: eth0 {own})"
    ]
    facts["w1"]["interfaces"]["eth1"] = ["192.168.50.7"]  # a second network for the data path
    plan, errors = swarm_plan.make_plan(conf, facts, None)
    assert errors == [] and plan.addresses["w1"] == own  # advertised on eth0 as before
    conf6 = layout(nodes={"w1": {"data_path_addr": "FD00:0::7"}})
    facts["w1"]["interfaces6"] = {"eth1": ["fd00::7"]}
    assert swarm_plan.make_plan(conf6, facts, None)[1] == []
    facts["w1"]["interfaces6"] = {"eth1": ["fd00::8"]}
    assert swarm_plan.make_plan(conf6, facts, None)[1] == [
        "armswarm:swarm:nodes:w1:data_path_addr: fd00::7 is not an address of w1 "
        "(its interfaces: eth1 fd00::8)"
    ]


def test_node_in_another_swarm_refused_without_force():
    facts = {n: fact(n) for n in ALL}
    facts["w2"] = fact("w2", "active", True, "FOREIGN", "id-x")
    _, errors = swarm_plan.make_plan(layout(), facts, None)
    assert any("w2: already in another swarm" in e for e in errors)
    plan, errors = swarm_plan.make_plan(layout(), facts, None, force=True)
    assert errors == [] and plan.leave == ["w2"] and "w2" in plan.join_workers


def test_managers_in_two_swarms_is_an_error():
    facts = {n: fact(n) for n in ALL}
    facts["m1"] = fact("m1", "active", True, "A" * 20, "id-m1")
    facts["m3"] = fact("m3", "active", True, "B" * 20, "id-m3")
    _, errors = swarm_plan.make_plan(layout(), facts, [swarm_node("m1", "manager")])
    assert "the managers are in different swarms" in errors[0]


def test_down_node_is_reported_not_touched():
    facts = {n: fact(n, "active", n.startswith("m"), "C1", f"id-{n}") for n in ALL if n != "m1"}
    labels = swarm_layout.grain_labels(fact("x"))
    nodes = [
        swarm_node(
            n,
            "manager" if n.startswith("m") else "worker",
            labels=labels,
            reach="reachable" if n.startswith("m") else None,
        )
        for n in ALL
    ]
    nodes[0]["state"], nodes[0]["reachability"] = "down", "unreachable"
    plan, errors = swarm_plan.make_plan(layout(prune=True), facts, nodes)
    assert errors == [] and plan.down == ["m1"] and plan.changes() == {}


def test_rejoining_node_clears_its_stale_entry():
    labels = swarm_layout.grain_labels(fact("x"))
    facts = {n: fact(n, "active", n.startswith("m"), "C1", f"id-{n}") for n in ALL}
    facts["w2"] = fact("w2")  # wiped: inactive
    nodes = [
        swarm_node(
            n,
            "manager" if n.startswith("m") else "worker",
            labels=labels,
            reach="reachable" if n.startswith("m") else None,
        )
        for n in ALL
    ]
    nodes[-1]["state"] = "down"
    plan, errors = swarm_plan.make_plan(layout(), facts, nodes)
    assert errors == [] and plan.join_workers == ["w2"]
    assert [n["id"] for n in plan.stale] == ["id-w2"]


def test_demotion_that_loses_quorum_is_refused():
    facts = {n: fact(n, "active", n.startswith("m"), "C1", f"id-{n}") for n in ALL}
    nodes = [
        swarm_node(
            n,
            "manager" if n.startswith("m") else "worker",
            reach="reachable" if n.startswith("m") else None,
        )
        for n in ALL
    ]
    nodes[2]["reachability"] = "unreachable"  # m3 is down
    # Demoting m2 leaves m1 and the dead m3: 1 reachable of 2, below quorum.
    unsafe = layout(managers=["m1", "m3"], workers=["m2", "w1", "w2"], allow_even_managers=True)
    _, errors = swarm_plan.make_plan(unsafe, facts, nodes)
    assert any("demoting m2 would leave 1 reachable of 2 managers" in e for e in errors)
    # Demoting both m2 and m3 is safe when the dead one goes first.
    safe = layout(managers=["m1"], workers=["m2", "m3", "w1", "w2"])
    plan, errors = swarm_plan.make_plan(safe, facts, nodes)
    assert errors == [] and plan.demote == ["m3", "m2"]


def converged(extra=()):
    labels = swarm_layout.grain_labels(fact("x"))
    facts = {n: fact(n, "active", n.startswith("m"), "C1", f"id-{n}") for n in ALL}
    nodes = [
        swarm_node(
            n,
            "manager" if n.startswith("m") else "worker",
            labels=labels,
            reach="reachable" if n.startswith("m") else None,
        )
        for n in ALL
    ]
    return facts, nodes + list(extra)


def test_prune_removes_down_nodes_outside_the_layout_and_drains_running_ones():
    facts, nodes = converged([swarm_node("old", state="down"), swarm_node("spare")])
    plan, _ = swarm_plan.make_plan(layout(), facts, nodes)
    assert plan.prune == [] and plan.drain == []
    plan, errors = swarm_plan.make_plan(layout(prune=True), facts, nodes)
    assert errors == []
    assert [n["hostname"] for n in plan.prune] == ["old"]
    assert [n["hostname"] for n in plan.drain] == ["spare"]


def test_down_layout_node_with_another_hostname_is_not_pruned():
    facts, nodes = converged()
    del facts["w1"]  # w1's minion is down; its swarm hostname is w1-host
    nodes[3]["hostname"], nodes[3]["state"] = "w1-host", "down"
    plan, errors = swarm_plan.make_plan(layout(prune=True), facts, nodes)
    assert errors == [] and plan.prune == [] and plan.down == ["w1"]


def test_stale_entry_is_not_also_pruned():
    facts, nodes = converged()
    facts["w2"] = fact("w2")  # wiped, joins again
    nodes[4]["state"] = "down"
    plan, errors = swarm_plan.make_plan(layout(prune=True), facts, nodes)
    assert errors == [] and [n["id"] for n in plan.stale] == ["id-w2"] and plan.prune == []


def test_no_new_swarm_while_managers_do_not_answer():
    facts = {"m3": fact("m3"), "w1": fact("w1"), "w2": fact("w2")}  # m1, m2 down
    _, errors = swarm_plan.make_plan(layout(), facts, None)
    assert any("cannot tell whether m1, m2 (not answering) are in a swarm" in e for e in errors)


def test_quoted_booleans_are_refused_and_bad_port():
    # A quoted "false" read as true would prune, or make other swarms' nodes leave.
    parsed, errors, _ = swarm_layout.parse_layout(
        {**BASE, "prune": "false", "force": "no", "grain_labels": 1, "listen_port": "x"}
    )
    assert parsed.prune is False and parsed.force is False and parsed.grain_labels is True
    assert errors == [
        "armswarm:swarm:prune: must be true or false, not a string",
        "armswarm:swarm:grain_labels: must be true or false, not a number",
        "armswarm:swarm:listen_port: 'x' is not a port",
        "armswarm:swarm:force: must be true or false, not a string",
    ]
    _, errors, _ = swarm_layout.parse_layout({**BASE, "listen_port": True})
    assert errors == ["armswarm:swarm:listen_port: True is not a port"]
    parsed, errors, _ = swarm_layout.parse_layout({**BASE, "force": True, "listen_port": "2400"})
    assert errors == [] and parsed.force is True and parsed.listen_port == 2400


def test_unknown_keys_name_the_closest_known_one():
    _, errors, _ = swarm_layout.parse_layout(
        {
            **BASE,
            "prnue": True,
            "nodes": {"w1": {"label": {}}},
            "workers": {"tgt": "w*", "tgt_typ": "glob"},
        }
    )
    assert errors == [
        "armswarm:swarm:prnue: unknown key (did you mean prune?)",
        "armswarm:swarm:workers:tgt_typ: unknown key (did you mean tgt_type?)",
        "armswarm:swarm:nodes:w1:label: unknown key (did you mean labels?)",
    ]


def test_a_scalar_is_not_a_list_of_minions():
    _, errors, _ = swarm_layout.parse_layout({**BASE, "workers": "w1"})
    assert errors == [
        "armswarm:swarm:workers: must be a list of minion ids or {tgt: …, tgt_type: …}, "
        "not a string"
    ]


def test_the_minion_label_is_reserved():
    conf = {**BASE, "nodes": {"w1": {"labels": {swarm_layout.MINION_LABEL: "w2", "disk": "ssd"}}}}
    parsed, errors, _ = swarm_layout.parse_layout(conf)
    assert errors == [
        "armswarm:swarm:nodes:w1:labels:armswarm.minion: reserved, armswarm sets it to the "
        "minion id"
    ]
    # Even a layout that got past validation cannot move it.
    parsed.nodes["w1"].labels[swarm_layout.MINION_LABEL] = "w2"
    labels = swarm_layout.desired_labels("w1", parsed, fact("w1"))
    assert labels[swarm_layout.MINION_LABEL] == "w1" and labels["disk"] == "ssd"


def test_stale_removal_never_takes_a_down_member_with_the_same_hostname():
    # Boards ship with one hostname: w1 (down) and w2 (rejoining) are both "odroid".
    facts, nodes = converged()
    del facts["w1"]
    facts["w2"] = {**fact("w2"), "hostname": "odroid"}
    nodes[3].update(hostname="odroid", state="down", labels={})  # w1, from before the label
    nodes[4].update(hostname="odroid", state="down")  # w2's earlier self, labelled
    plan, errors = swarm_plan.make_plan(layout(), facts, nodes)
    assert errors == [] and plan.down == ["w1"]
    assert [n["id"] for n in plan.stale] == ["id-w2"]


def test_stale_removal_never_takes_a_healthy_member():
    # m1 (healthy) and the rejoining w2 share a hostname, and w2 got the address m1's entry
    # still shows (m1 was re-addressed by DHCP).
    facts, nodes = converged()
    facts["w2"] = {**fact("w2"), "hostname": "m1", "interfaces": {"eth0": ["10.0.9.9"]}}
    for node in nodes:
        node["labels"] = {}  # joined before the label existed
    nodes[0]["addr"] = "10.0.9.9"
    nodes[4].update(hostname="m1", state="down")
    plan, errors = swarm_plan.make_plan(
        layout(nodes={"w2": {"advertise_addr": "10.0.9.9"}}), facts, nodes
    )
    assert errors == [] and plan.join_workers == ["w2"]
    assert [n["id"] for n in plan.stale] == ["id-w2"]


@pytest.mark.parametrize(
    ("table", "iface"),
    [
        ("Iface\tDestination\tGateway\neth0\t00000000\t0100000A\n", "eth0"),
        ("Iface\tDestination\tGateway\neth1\t0000000A\t00000000\n", None),
    ],
)
def test_default_route_interface(table, iface):
    assert swarm_engine.default_route_interface(table) == iface


def test_a_demotion_counts_the_nodes_promoted_before_it():
    # One manager m1 hands the role to w1: fine, w1 is promoted (and waited for) first.
    facts = {n: fact(n, "active", n == "m1", "C1", f"id-{n}") for n in ALL}
    nodes = [
        swarm_node(
            n, "manager" if n == "m1" else "worker", reach="reachable" if n == "m1" else None
        )
        for n in ALL
    ]
    moved = layout(managers=["w1"], workers=["m1", "m2", "m3", "w2"])
    plan, errors = swarm_plan.make_plan(moved, facts, nodes)
    assert errors == [] and plan.promote == ["w1"] and plan.demote == ["m1"]
    assert plan.cluster_id == "C1"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("answer_timeout", "60", "must be a number of seconds"),
        ("role_timeout", True, "must be a number of seconds"),
        ("answer_timeout", 0, "must be a number of seconds"),
    ],
)
def test_timeouts_are_numbers_of_seconds(key, value, message):
    _, errors, _ = swarm_layout.parse_layout({**BASE, key: value})
    assert [e for e in errors if e.startswith(f"armswarm:swarm:{key}: {message}")], errors
    assert layout(answer_timeout=45, role_timeout=120).answer_timeout == 45


def test_a_label_dropped_from_pillar_goes_and_a_hand_set_label_stays():
    facts, nodes = converged()
    nodes[3]["labels"].update({"pool": "a", "rack": "r1"})  # w1: pool from pillar, rack by hand
    nodes[3]["labels"][swarm_layout.MANAGED_LABEL] += ",pool"
    plan, errors = swarm_plan.make_plan(layout(), facts, nodes)  # pool no longer declared
    assert errors == []
    new = plan.updates["w1"]["labels"]["new"]
    assert "pool" not in new and new["rack"] == "r1"
    assert "pool" not in new[swarm_layout.MANAGED_LABEL].split(",")
    assert all(not plan.updates[n] for n in ALL if n != "w1")
    # With remove_undeclared_labels, the hand-set one goes too.
    plan, _ = swarm_plan.make_plan(layout(remove_undeclared_labels=True), facts, nodes)
    assert "rack" not in plan.updates["w1"]["labels"]["new"]


def test_the_label_list_is_reserved():
    _, errors, _ = swarm_layout.parse_layout(
        {**BASE, "nodes": {"w1": {"labels": {swarm_layout.MANAGED_LABEL: "x"}}}}
    )
    assert errors == [
        "armswarm:swarm:nodes:w1:labels:armswarm.labels: reserved, armswarm keeps its list of "
        "labels there"
    ]


def test_the_changes_show_only_the_labels_that_change_one_line_a_node():
    facts, nodes = converged()
    nodes[3]["labels"].update({"pool": "a", "rack": "r1"})  # w1: pool from pillar, rack by hand
    nodes[3]["labels"][swarm_layout.MANAGED_LABEL] += ",pool"
    conf = layout(nodes={"w1": {"labels": {"disk": "ssd"}, "availability": "drain"}})
    plan, errors = swarm_plan.make_plan(conf, facts, nodes)
    assert errors == []
    managed = nodes[3]["labels"][swarm_layout.MANAGED_LABEL].replace(",pool", "").split(",")
    assert plan.changes() == {
        "availability": {"w1": "active -> drain"},
        "labels": {"w1": f"disk=ssd -pool armswarm.labels={','.join(sorted([*managed, 'disk']))}"},
    }
    assert swarm_plan.label_diff({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": ""}) == {
        "b": "9",
        "c": None,
        "d": "",
    }


@pytest.mark.parametrize(
    "diff, line",
    [
        ({"pool": "db", "gone": None}, "pool=db -gone"),
        ({"note": "two words", "empty": "", "eq": "a=b"}, 'note="two words" empty="" eq=a=b'),
        ({"a=b": "x", "-x": None, 'q"': "'"}, '"a=b"=x -"-x" "q\\""="\'"'),
    ],
)
def test_a_label_diff_line_reads_back_exactly(diff, line):
    assert swarm_plan.format_label_diff(diff) == line


def test_the_node_table_leaves_out_the_bookkeeping_labels_and_the_prefix():
    nodes = [
        {
            "id": "abc",
            "hostname": "w1",
            "role": "worker",
            "leader": False,
            "reachability": None,
            "availability": "active",
            "state": "ready",
            "labels": {
                "armswarm.board": "sopine",
                "armswarm.minion": "w1",
                "armswarm.labels": "armswarm.board,armswarm.minion,pool,armswarm.disk",
                "armswarm.disk": "ssd",
                "disk": "hdd",  # set by hand: the short name is taken, the prefix stays
                "pool": "two words",
            },
        },
        {
            "id": "def",
            "hostname": "m1",
            "role": "manager",
            "leader": True,
            "reachability": "reachable",
            "availability": "active",
            "state": "ready",
            "labels": {"armswarm.minion": "m1-old"},  # not its hostname: shown
        },
    ]
    head, m1, w1, note = swarm_plan.node_table(nodes, "m1")
    assert head.split() == ["hostname", "role", "manager", "avail", "state", "labels"]
    assert m1.split() == ["m1", "manager", "leader", "active", "ready", "minion=m1-old"]
    assert w1.endswith(' board=sopine armswarm.disk=ssd disk=hdd pool="two words"')
    assert note == "(labels shortened; in full: salt m1 docker_swarm.nodes)"
    assert swarm_plan.node_table([{**nodes[1], "labels": {"pool": "a"}}]) == [
        head,
        m1[:-13] + "pool=a",
    ]
