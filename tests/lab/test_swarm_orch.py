"""`salt-run state.orch swarm.init` on the 5-node lab: the swarm `up` formed, formation from
nothing, idempotence, prediction, bad pillar, a node in another swarm, a dead leader, and no join
token anywhere."""

import ipaddress
import json
import re
import subprocess
import threading
import time

import pytest
from helpers import assert_no_join_token, assert_not_in_salt_files, busybox_rootfs, push_image


def orch(lab, *extra) -> dict:
    """The swarm_cluster.converged state's return from one orchestration run."""
    proc = lab.run_salt("salt-run", "state.orch", "swarm.init", "--out=json", *extra, check=False)
    data = json.loads(proc.stdout)
    (states,) = data["data"].values()
    (ret,) = states.values()
    return ret


def swarm_nodes(lab, manager="node2") -> dict:
    ret = lab.salt_json(manager, "docker_swarm.nodes", "--timeout=60")
    return {n["hostname"]: n for n in ret[manager] if n["state"] != "down"}


def call(lab, node, *args, check=True):
    return lab.salt_json(node, *args, "--timeout=60", check=check)[node]


@pytest.fixture(scope="module")
def events(lab, tmp_path_factory):
    """Everything on the master's event bus while these tests run."""
    capture = tmp_path_factory.mktemp("events") / "bus.txt"
    with open(capture, "w") as out:
        proc = subprocess.Popen(
            lab.salt_argv("salt-run", "state.event", "pretty=False"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    time.sleep(2)
    yield capture
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def formed(lab, events):
    """Earlier tests (and a kept lab, ARMSWARM_LAB_KEEP) leave the swarm in any state: these
    tests start from a swarm the orchestration formed from nothing."""
    for node in reversed(lab.node_names()):
        call(lab, node, "docker_swarm.leave", "force=True")
    ret = orch(lab)
    assert ret["result"] is True and ret["changes"]["init"] == "node1", ret["comment"]


def _assert_example_layout(nodes: dict, labels: dict):
    """The example pillar's swarm: node1-3 managers, node4-5 workers, labels from the board
    grains (``labels``: hostname → its labels)."""
    assert sorted(nodes) == ["node1", "node2", "node3", "node4", "node5"]
    assert all(v["state"] == "ready" for v in nodes.values()), nodes
    assert sorted(n for n, v in nodes.items() if v["role"] == "manager") == [
        "node1",
        "node2",
        "node3",
    ]
    assert labels["node4"]["armswarm.board"] == "sopine"
    assert labels["node1"]["armswarm.arch"] == "armv7"
    assert labels["node2"]["armswarm.big-cores"] == "2"


def test_swarm_formed_by_up(lab):
    """What `up`'s main job formed, as docker listed it before any test ran (conftest)."""
    if lab.swarm_formed_by_up is None:
        pytest.skip("kept lab (ARMSWARM_LAB_KEEP): this session's `up` formed no swarm")
    nodes = lab.swarm_formed_by_up
    _assert_example_layout(nodes, {name: v["labels"] for name, v in nodes.items()})


def test_formed_from_nothing_and_rerun_changes_nothing(lab):
    nodes = swarm_nodes(lab)
    _assert_example_layout(nodes, {name: v["labels"] for name, v in nodes.items()})
    for extra in ((), ("test=True",)):
        ret = orch(lab, *extra)
        assert ret["result"] is True and ret["changes"] == {}, ret["comment"]
        assert "The swarm matches the layout." in ret["comment"]


def wait_down(lab, hostnames, via="node1", timeout=60):
    """Until the swarm marks the nodes that left as down (takes a few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {n["hostname"]: n["state"] for n in call(lab, via, "docker_swarm.nodes")}
        if all(states.get(h) == "down" for h in hostnames):
            return
        time.sleep(1)
    raise AssertionError(f"{hostnames} not marked down: {states}")


def test_half_formed_swarm_prediction_is_what_the_run_does(lab):
    call(lab, "node5", "docker_swarm.leave")
    call(lab, "node3", "docker_swarm.leave", "force=True")
    wait_down(lab, ["node3", "node5"])
    predicted = orch(lab, "test=True")
    assert predicted["result"] is None
    changes = predicted["changes"]
    assert changes["join_managers"] == ["node3"] and changes["join_workers"] == ["node5"]
    # Each joins with no labels and gets them all back, in one line a node.
    assert sorted(changes["labels"]) == ["node3", "node5"]
    assert all(f"armswarm.minion={n}" in changes["labels"][n].split() for n in ("node3", "node5"))
    assert len(changes["remove_stale"]) == 2
    applied = orch(lab)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"] == changes
    assert sorted(swarm_nodes(lab)) == lab.node_names()
    again = orch(lab)
    assert again["result"] is True and again["changes"] == {}, again["comment"]
    # The stale (down) entries of node3 and node5 were removed.
    all_nodes = call(lab, "node1", "docker_swarm.nodes")
    assert len(all_nodes) == 5 and all(n["state"] == "ready" for n in all_nodes)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"managers": ["node1", "node2"]}, "2 managers is an even number"),
        ({"workers": ["node4", "node5", "node9"]}, "node9 is not a known minion"),
        ({"nodes": {"node5": {"advertise_addr": "NODE4"}}}, "node4, node5 share the advertise"),
        ({"managers": []}, "at least one manager is needed"),
        ({"nodes": {"node4": {"availability": "paused"}}}, "node4:availability"),
        # a typo'd address of a manager (it would leave raft without a leader)
        ({"nodes": {"node2": {"advertise_addr": "10.77.9.254"}}}, "is not an address of node2"),
    ],
)
def test_bad_pillar_is_refused_and_nothing_changes(lab, override, message):
    before = swarm_nodes(lab)
    text = json.dumps(override).replace("NODE4", lab.node_address(lab.node("node4")))
    ret = orch(lab, f'pillar={{"armswarm": {{"swarm": {text}}}}}')
    assert ret["result"] is False and ret["changes"] == {}
    assert message in ret["comment"], ret["comment"]
    assert swarm_nodes(lab) == before


def test_node_in_another_swarm_needs_force(lab):
    call(lab, "node5", "docker_swarm.leave")
    address = lab.node_address(lab.node("node5"))
    call(lab, "node5", "docker_swarm.init", f"advertise_addr={address}")
    ret = orch(lab)
    assert ret["result"] is False and ret["changes"] == {}
    assert "node5: already in another swarm" in ret["comment"], ret["comment"]
    ret = orch(lab, 'pillar={"armswarm": {"swarm": {"force": true}}}')
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["leave"] == ["node5"] and ret["changes"]["join_workers"] == ["node5"]
    assert orch(lab)["changes"] == {}


def _leader(lab, via, check=True):
    for node in call(lab, via, "docker_swarm.nodes", check=check):
        if node["leader"]:
            return node["hostname"]
    return None


def test_dead_leader_keeps_quorum_and_comes_back(lab):
    leader = _leader(lab, "node2")
    others = [n for n in ("node1", "node2", "node3") if n != leader]
    container = lab.client.containers.get(lab.container_name(lab.node(leader)))
    container.kill()
    deadline = time.monotonic() + 90
    new_leader = None
    while time.monotonic() < deadline and new_leader in (None, leader):
        time.sleep(2)
        try:
            # During the election the engine may refuse to list nodes (salt exits non-zero).
            new_leader = _leader(lab, others[0], check=False)
        except (KeyError, TypeError, AttributeError):
            new_leader = None
    assert new_leader in others, "the two other managers did not elect a leader"

    ret = orch(lab)
    assert ret["result"] is False and ret["changes"] == {}
    assert f"Not answering (left as they are): {leader}" in ret["comment"]

    # The node comes back with its swarm state wiped: the re-run joins it again.
    container.start()
    lab.wait_minions()
    call(lab, leader, "docker_swarm.leave", "force=True")
    wait_down(lab, [leader], via=others[0])
    ret = orch(lab)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["join_managers"] == [leader]
    assert orch(lab)["changes"] == {}
    managers = [n for n in call(lab, others[0], "docker_swarm.nodes") if n["role"] == "manager"]
    assert len(managers) == 3 and all(m["reachability"] == "reachable" for m in managers)


def _engine_swarm(lab, node) -> dict:
    """The ``Swarm`` part of ``docker info`` on ``node``, as docker itself reports it."""
    code, out = lab.exec(node, ["docker", "info", "--format", "{{json .Swarm}}"])
    assert code == 0, out
    return json.loads(out)


def test_quorum_lost_then_recovered_with_force_new_cluster(lab):
    """The runbook "Quorum lost" (docs/operations.rst) as written: two of the three managers'
    engines stop, the orchestration changes nothing and names the recovery, which keeps the
    swarm's objects; the two come back as managers of the recovered cluster."""
    code, out = lab.exec("node1", ["sh", "-c", "printf kept | docker config create quorum-probe -"])
    assert code == 0, out
    gone = ["node2", "node3"]
    try:
        # With a leader, recovery is refused: it would split the cluster.
        refused = lab.run_salt(
            "salt", "node1", "docker_swarm.init", "force_new_cluster=True", check=False
        )
        assert "this one has a leader" in refused.stdout, refused.stdout
        refused = lab.run_salt(
            "salt", "node4", "docker_swarm.init", "force_new_cluster=True", check=False
        )
        assert "runs on a surviving manager" in refused.stdout, refused.stdout
        cluster = _cluster_id(lab, "node1")
        for node in gone:
            code, out = lab.exec(node, ["systemctl", "stop", "docker.socket", "docker"])
            assert code == 0, out
        deadline = time.monotonic() + 90
        while not _engine_swarm(lab, "node1").get("Error"):
            assert time.monotonic() < deadline, "node1 still sees a leader"
            time.sleep(2)

        for extra in (("test=True",), ()):
            ret = orch(lab, *extra)
            assert ret["result"] is False and ret["changes"] == {}, ret
            text = ret["comment"]
            assert "node1: manager of a swarm without a leader (quorum lost?)" in text, text
            assert "salt node1 docker_swarm.init force_new_cluster=True" in text, text
        assert _engine_swarm(lab, "node1")["Error"]  # nothing changed

        recovered = call(lab, "node1", "docker_swarm.init", "force_new_cluster=True")
        assert recovered["changed"] is True, recovered
        engine = _engine_swarm(lab, "node1")
        assert engine["Managers"] == 1 and engine["Cluster"]["ID"] == cluster, engine
        code, out = lab.exec("node1", ["docker", "config", "inspect", "quorum-probe"])
        assert code == 0, out
        assert json.loads(out)[0]["Spec"]["Data"] == "a2VwdA=="  # b"kept"
    finally:
        for node in gone:
            lab.exec(node, ["systemctl", "start", "docker"])
    # Their node entries still say manager: back, they rejoin the recovered cluster's raft.
    # node1 lists them reachable a moment before their own engines have caught up with the
    # raft log and show the cluster (until then `docker info` has no Swarm.Cluster): both count.
    deadline = time.monotonic() + 180
    while True:
        managers = _docker_managers(lab, "node1")
        seen = {node: _engine_swarm(lab, node) for node in gone}
        if managers == dict.fromkeys(["node1", *gone], "reachable") and all(
            (s.get("Cluster") or {}).get("ID") == cluster for s in seen.values()
        ):
            break
        assert time.monotonic() < deadline, (managers, seen)
        time.sleep(3)
    for extra in (("test=True",), (), ("test=True",)):
        ret = orch(lab, *extra)
        assert ret["result"] is True and ret["changes"] == {}, ret["comment"]
    lab.exec("node1", ["docker", "config", "rm", "quorum-probe"])


def _cluster_id(lab, node):
    """The cluster ID ``node``'s engine shows, None where it shows none (a worker's, or a
    manager's that has not caught up with the raft log yet)."""
    return (_engine_swarm(lab, node).get("Cluster") or {}).get("ID")


def _docker_managers(lab, via) -> dict:
    """``{hostname: reachability}`` of the managers, as docker itself lists them."""
    code, out = lab.exec(
        via,
        [
            "sh",
            "-c",
            "docker node inspect --format "
            "'{{.Description.Hostname}} {{.Spec.Role}} {{if .ManagerStatus}}"
            "{{.ManagerStatus.Reachability}}{{end}}' $(docker node ls -q)",
        ],
    )
    assert code == 0, out
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {r[0]: r[2] if len(r) > 2 else None for r in rows if r[1] == "manager"}


def _host(addr):
    return addr.rsplit(":", 1)[0] if addr else None


def test_moving_the_manager_role_keeps_the_cluster(lab):
    """The manager role moves twice and back, each move in the check -> apply -> re-apply ->
    check cycle: promotions are waited for, so no demotion meets unreachable new managers.
    node5 (Debian 12, Docker 20.10) joins through node1 first; when node5 is promoted node1 is a
    worker, and Docker 20.10 then never makes node5 reachable (moby#47854): it must rejoin as a
    manager instead, in the same cluster."""
    cluster = _cluster_id(lab, "node3")
    call(lab, "node5", "docker_swarm.leave")
    wait_down(lab, ["node5"])
    assert orch(lab)["result"] is True
    node1_addr = call(lab, "node1", "docker_swarm.state")["node_addr"]
    node5 = call(lab, "node5", "docker_swarm.facts")
    assert _host(node5["join_addr"]) == node1_addr, node5["join_addr"]
    assert node5["swarm"]["engine_version"].startswith("20.10"), node5["swarm"]
    moves = [
        (["node2", "node3", "node4"], ["node1", "node5"]),
        (["node3", "node4", "node5"], ["node1", "node2"]),
        (["node1", "node2", "node3"], ["node4", "node5"]),
    ]
    made = []
    for managers, workers in moves:
        before = _docker_managers(lab, "node3")
        pillar = json.dumps({"armswarm": {"swarm": {"managers": managers, "workers": workers}}})
        predicted = orch(lab, f"pillar={pillar}", "test=True")
        assert predicted["result"] is None, predicted["comment"]
        coming = predicted["changes"].get("promote", []) + predicted["changes"].get(
            "rejoin_managers", []
        )
        assert sorted(coming) == sorted(set(managers) - set(before)), predicted["changes"]
        assert sorted(predicted["changes"]["demote"]) == sorted(set(before) - set(managers))
        applied = orch(lab, f"pillar={pillar}")
        assert applied["result"] is True, applied["comment"]
        assert applied["changes"] == predicted["changes"]
        made.append(applied["changes"])
        # Docker's own view: exactly the new managers, all reachable, one cluster.
        assert _docker_managers(lab, managers[-1]) == dict.fromkeys(managers, "reachable")
        # (a worker's engine shows no cluster ID: the managers, old and new, are the witnesses)
        assert {m: _cluster_id(lab, m) for m in managers} == dict.fromkeys(managers, cluster)
        for extra in ((), ("test=True",)):
            again = orch(lab, f"pillar={pillar}", *extra)
            assert again["result"] is True and again["changes"] == {}, again["comment"]
    assert made[1].get("rejoin_managers") == ["node5"], made[1]
    assert "node4" in made[0]["promote"]  # Docker 26.1 (Debian 13): promoted in place
    assert sorted(swarm_nodes(lab, "node1")) == lab.node_names()
    # Nothing stale is left: one entry per node, all ready. A demotion that moves the leader
    # starts a new dispatcher, which lists every node Unknown until its next heartbeat.
    expected = [f"{n} Ready" for n in lab.node_names()]
    deadline = time.monotonic() + 60
    while True:
        code, out = lab.exec(
            "node1", ["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"]
        )
        rows = sorted(line.strip() for line in out.splitlines() if line.strip())
        if rows == expected or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert rows == expected, out


def test_a_node_joins_drained_and_never_gets_a_task(lab):
    """A global service would put a task on a node the moment it joins: a node the layout
    drains joins drained, so its task history stays empty."""
    image = f"{lab.registry}/armswarm/busybox:join"
    push_image(lab, "node1", image, busybox_rootfs(("sh", "sleep")))
    code, out = lab.exec(
        "node1",
        [
            "docker",
            "service",
            "create",
            "--detach",
            "--with-registry-auth",  # the nodes pull from the lab registry, which needs it
            "--name",
            "joinprobe",
            "--mode",
            "global",
            "--endpoint-mode",
            "dnsrr",
            image,
            "sleep",
            "3600",
        ],
    )
    assert code == 0, out
    try:
        call(lab, "node5", "docker_swarm.leave")
        wait_down(lab, ["node5"])
        drained = json.dumps(
            {"armswarm": {"swarm": {"nodes": {"node5": {"availability": "drain"}}}}}
        )
        predicted = orch(lab, f"pillar={drained}", "test=True")
        assert predicted["changes"]["join_workers"] == ["node5"], predicted["comment"]
        applied = orch(lab, f"pillar={drained}")
        assert applied["result"] is True and applied["changes"] == predicted["changes"]
        for extra in ((), ("test=True",)):
            again = orch(lab, f"pillar={drained}", *extra)
            assert again["result"] is True and again["changes"] == {}, again["comment"]
        code, out = lab.exec(
            "node1", ["docker", "node", "inspect", "node5", "--format", "{{.Spec.Availability}}"]
        )
        assert out.strip() == "drain", out
        time.sleep(3)  # a task the scheduler gave node5 would show by now
        code, out = lab.exec(
            "node1",
            ["docker", "service", "ps", "joinprobe", "--format", "{{.Node}} {{.CurrentState}}"],
        )
        assert code == 0 and "node5" not in out, out
        # The probe does run tasks (it would on node5 too).
        deadline = time.monotonic() + 60
        while "node4 Running" not in out:
            assert time.monotonic() < deadline, out
            time.sleep(2)
            code, out = lab.exec(
                "node1",
                ["docker", "service", "ps", "joinprobe", "--format", "{{.Node}} {{.CurrentState}}"],
            )
        assert "node5" not in out, out
        active = json.dumps(
            {"armswarm": {"swarm": {"nodes": {"node5": {"availability": "active"}}}}}
        )
        assert orch(lab, f"pillar={active}")["result"] is True
        assert orch(lab)["changes"] == {}
    finally:
        lab.exec("node1", ["docker", "service", "rm", "joinprobe"])


def _overlay_tasks(lab, network, via="node1") -> dict:
    """``{node ID: (task address, host IP)}`` of an overlay network's tasks as docker on
    ``via`` lists them: the host IP is the data path address VXLAN traffic goes to."""
    code, out = lab.exec(
        via,
        ["docker", "network", "inspect", "--verbose", network, "--format", "{{json .Services}}"],
    )
    assert code == 0, out
    tasks = {}
    for service in (json.loads(out) or {}).values():
        for task in service.get("Tasks") or []:
            node_id = task["Name"].split(".")[1]
            tasks[node_id] = (task["EndpointIP"], task["Info"]["Host IP"])
    return tasks


def _node_id(lab, node) -> str:
    code, out = lab.exec(node, ["docker", "info", "--format", "{{.Swarm.NodeID}}"])
    assert code == 0 and out.strip(), out
    return out.strip()


def test_a_data_path_addr_carries_the_overlay_traffic(lab):
    """node5 rejoins with a second address of its own as its data path (VXLAN): refused while
    it does not hold that address, then joined with it in the full cycle; docker sends the
    overlay traffic of node5's task to that address (not to the one node5 advertises), and
    node1's kernel sends it there. (Ping between the tasks over that address does not pass in
    the lab, where it does over the advertise address: not asserted.)"""
    net = ipaddress.ip_network(lab.subnet)
    data_addr, own = str(net[215]), lab.node_address(lab.node("node5"))
    pillar = {"armswarm": {"swarm": {"nodes": {"node5": {"data_path_addr": data_addr}}}}}
    extra = f"pillar={json.dumps(pillar)}"
    image = f"{lab.registry}/armswarm/busybox:datapath"
    push_image(lab, "node1", image, busybox_rootfs(("sh", "sleep")))
    call(lab, "node5", "docker_swarm.leave")
    wait_down(lab, ["node5"])
    try:
        refused = orch(lab, extra, "test=True")
        assert refused["result"] is False and refused["changes"] == {}, refused
        assert (
            f"armswarm:swarm:nodes:node5:data_path_addr: {data_addr} is not an address of node5"
            in refused["comment"]
        ), refused["comment"]
        assert orch(lab, extra)["result"] is False
        assert "node5" not in swarm_nodes(lab, "node1")  # not joined: nothing changed
        code, out = lab.exec(
            "node5", ["ip", "addr", "add", f"{data_addr}/{net.prefixlen}", "dev", "eth0"]
        )
        assert code == 0, out
        predicted = orch(lab, extra, "test=True")
        assert predicted["result"] is None, predicted["comment"]
        assert predicted["changes"]["join_workers"] == ["node5"], predicted["changes"]
        applied = orch(lab, extra)
        assert applied["result"] is True and applied["changes"] == predicted["changes"]
        for again in (orch(lab, extra), orch(lab, extra, "test=True")):
            assert again["result"] is True and again["changes"] == {}, again["comment"]
        for argv in (
            ["network", "create", "--driver", "overlay", "dpnet"],
            ["service", "create", "--detach", "--with-registry-auth", "--name", "dpprobe"]
            + ["--mode", "global", "--network", "dpnet", "--endpoint-mode", "dnsrr"]
            + [image, "sleep", "3600"],
        ):
            code, out = lab.exec("node1", ["docker", *argv])
            assert code == 0, out
        node5_id, node1_id = _node_id(lab, "node5"), _node_id(lab, "node1")
        deadline = time.monotonic() + 120
        while not {node5_id, node1_id} <= set(tasks := _overlay_tasks(lab, "dpnet")):
            assert time.monotonic() < deadline, f"no tasks of node1 and node5 on dpnet: {tasks}"
            time.sleep(2)
        _, host_ip = tasks[node5_id]
        assert host_ip == data_addr != own, tasks
        assert tasks[node1_id][1] == lab.node_address(lab.node("node1")), tasks
        # The kernel's view on node1: frames for node5's task go to the data path address.
        code, out = lab.exec(
            "node1",
            [
                "sh",
                "-c",
                "id=$(docker network inspect --format '{{.Id}}' dpnet | cut -c1-10); "
                "nsenter --net=/var/run/docker/netns/1-$id bridge fdb show dev vxlan0",
            ],
        )
        assert code == 0, out
        vteps = {line.split(" dst ")[1].split()[0] for line in out.splitlines() if " dst " in line}
        assert data_addr in vteps and own not in vteps, out
    finally:
        lab.exec("node1", ["docker", "service", "rm", "dpprobe"])
        lab.run_salt("salt", "node5", "docker_swarm.leave", check=False)
        lab.exec("node5", ["ip", "addr", "del", f"{data_addr}/{net.prefixlen}", "dev", "eth0"])
        time.sleep(3)  # the service's tasks gone, the network can go
        lab.exec("node1", ["docker", "network", "rm", "dpnet"])
        wait_down(lab, ["node5"])
        ret = orch(lab)  # back on its one address, without a data path of its own
        assert ret["result"] is True and ret["changes"]["join_workers"] == ["node5"], ret
    assert orch(lab)["changes"] == {}


def _docker_labels(lab, node):
    code, out = lab.exec(
        "node1", ["docker", "node", "inspect", node, "--format", "{{json .Spec.Labels}}"]
    )
    assert code == 0, out
    return json.loads(out)


def test_labels_dropped_from_pillar_go_hand_set_ones_stay(lab):
    # (the lab's pillar gives node4 pool=workers: another key, added and dropped here)
    pool = json.dumps({"armswarm": {"swarm": {"nodes": {"node4": {"labels": {"tier": "a"}}}}}})
    for pillar, expected in ((pool, "a"), (None, None)):
        extra = (f"pillar={pillar}",) if pillar else ()
        predicted = orch(lab, *extra, "test=True")
        assert predicted["result"] is None and list(predicted["changes"]["labels"]) == ["node4"]
        # Only the keys that change: tier, and armswarm's list of the labels it set.
        (tier, managed) = predicted["changes"]["labels"]["node4"].split()
        assert tier == ("tier=a" if pillar else "-tier"), predicted["changes"]
        assert managed.startswith("armswarm.labels="), predicted["changes"]
        applied = orch(lab, *extra)
        assert applied["result"] is True and applied["changes"] == predicted["changes"]
        for again in (orch(lab, *extra), orch(lab, *extra, "test=True")):
            assert again["result"] is True and again["changes"] == {}, again["comment"]
        labels = _docker_labels(lab, "node4")
        assert labels.get("tier") == expected, labels
        assert labels["pool"] == "workers"  # still declared: stays
        if pillar:
            code, out = lab.exec(
                "node1", ["docker", "node", "update", "--label-add", "rack=r1", "node4"]
            )
            assert code == 0, out
    assert _docker_labels(lab, "node4")["rack"] == "r1"  # set by hand: stays
    lab.exec("node1", ["docker", "node", "update", "--label-rm", "rack", "node4"])


def _docker_cluster(lab):
    code, out = lab.exec("node1", ["docker", "info", "--format", "{{json .Swarm.Cluster}}"])
    assert code == 0, out
    return json.loads(out)


def _cycle(lab, pillar, expected_keys):
    extra = f"pillar={json.dumps(pillar)}"
    predicted = orch(lab, extra, "test=True")
    assert predicted["result"] is None and sorted(predicted["changes"]) == expected_keys, predicted
    applied = orch(lab, extra)
    assert applied["result"] is True and applied["changes"] == predicted["changes"], applied
    for again in (orch(lab, extra), orch(lab, extra, "test=True")):
        assert again["result"] is True and again["changes"] == {}, again["comment"]
    return applied


def test_init_options_and_cluster_spec(lab):
    layout = {
        "default_addr_pool": ["10.201.0.0/16"],
        "subnet_size": 26,
        "data_path_port": 4790,
        "cluster": {
            "task_history_retention_limit": 3,
            "dispatcher_heartbeat_period": 7,
            "node_cert_expiry": 7200,
        },
    }
    for node in reversed(lab.node_names()):
        call(lab, node, "docker_swarm.leave", "force=True")
    try:
        applied = _cycle(
            lab,
            {"armswarm": {"swarm": layout}},
            ["cluster", "init", "join_managers", "join_workers", "labels"],
        )
        assert applied["changes"]["cluster"]["dispatcher_heartbeat_period"]["new"] == 7
        cluster = _docker_cluster(lab)
        assert cluster["DefaultAddrPool"] == ["10.201.0.0/16"] and cluster["SubnetSize"] == 26
        assert cluster["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"] == 3
        assert cluster["Spec"]["Dispatcher"]["HeartbeatPeriod"] == 7_000_000_000
        assert cluster["Spec"]["CAConfig"]["NodeCertExpiry"] == 7200 * 10**9
        assert cluster["DataPathPort"] == 4790
        code, out = lab.exec("node1", ["docker", "network", "create", "-d", "overlay", "poolprobe"])
        assert code == 0, out
        code, out = lab.exec(
            "node1",
            [
                "docker",
                "network",
                "inspect",
                "poolprobe",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
            ],
        )
        lab.exec("node1", ["docker", "network", "rm", "poolprobe"])
        assert out.strip().startswith("10.201.") and out.strip().endswith("/26"), out
        # On the running swarm: the spec changes, the pool (fixed at init) is only reported.
        layout["cluster"]["task_history_retention_limit"] = 4
        layout["subnet_size"] = 24
        applied = _cycle(lab, {"armswarm": {"swarm": layout}}, ["cluster"])
        assert applied["changes"]["cluster"] == {
            "task_history_retention_limit": {"old": 3, "new": 4}
        }
        assert "subnet_size 26 (layout: 24)" in applied["comment"]
        assert _docker_cluster(lab)["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"] == 4
    finally:
        for node in reversed(lab.node_names()):
            call(lab, node, "docker_swarm.leave", "force=True")
        assert orch(lab)["result"] is True  # the lab's own swarm again


def _live_tokens(lab, via="node1") -> dict:
    """The join tokens as docker on a manager gives them (never printed by a failing assert)."""
    tokens = {}
    for role in ("worker", "manager"):
        code, out = lab.exec(via, ["docker", "swarm", "join-token", "-q", role])
        assert code == 0, f"docker swarm join-token {role} failed"
        tokens[role] = out.strip()
    return tokens


def test_join_tokens_rotated_after_a_join(lab, events):
    """A worker rejoins with rotate_join_tokens (check -> apply -> re-apply -> check): the live
    worker token changed, the manager token did not (no manager joined), a re-run changes
    nothing, no token in the returns, the job cache, events or logs."""
    before = _live_tokens(lab)
    call(lab, "node5", "docker_swarm.leave")
    extra = f"pillar={json.dumps({'armswarm': {'swarm': {'rotate_join_tokens': True}}})}"
    predicted = orch(lab, extra, "test=True")
    assert predicted["result"] is None, predicted["comment"]
    assert predicted["changes"]["rotate_join_tokens"] == ["worker"], predicted["changes"]
    assert _live_tokens(lab) == before  # predicted only
    proc = lab.run_salt("salt-run", "state.orch", "swarm.init", "--out=json", extra, check=False)
    ((ret,),) = [states.values() for states in json.loads(proc.stdout)["data"].values()]
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["join_workers"] == ["node5"], ret["changes"]
    assert ret["changes"] == predicted["changes"], ret["changes"]
    after = _live_tokens(lab)
    assert after["worker"] != before["worker"], "the worker token was not rotated"
    assert after["manager"] == before["manager"], "the manager token changed: nobody joined as one"
    for token in (*before.values(), *after.values()):
        assert token not in proc.stdout and token not in proc.stderr, "a join token in the return"
    for again in (orch(lab, extra), orch(lab, extra, "test=True")):
        assert again["result"] is True and again["changes"] == {}, again["comment"]
    assert _live_tokens(lab) == after  # nothing joined: nothing rotated again
    code, out = lab.exec(
        "node1",
        ["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"],
    )
    assert code == 0 and [ln.split() for ln in out.splitlines() if ln.startswith("node5 ")] == [
        ["node5", "Ready"]
    ], out  # one entry (the old one removed), a worker
    time.sleep(2)  # let the event capture flush
    assert_no_join_token(lab, events)


def _swarm_local_state(lab, node):
    code, out = lab.exec(node, ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"])
    assert code == 0, out
    return out.strip()


def _restart_locked(lab, node):
    """Restart the manager's dockerd; with autolock it comes back locked (docker says so)."""
    code, out = lab.exec(node, ["systemctl", "restart", "docker"])
    assert code == 0, out
    deadline = time.monotonic() + 60
    while (state := _swarm_local_state(lab, node)) != "locked":
        assert time.monotonic() < deadline, f"{node} not locked after its restart: {state}"
        time.sleep(1)


def test_autolock_on_a_restarted_manager_is_unlocked_then_off(lab, events):
    """Autolock from the layout in the check -> apply -> re-apply -> check cycle; a manager
    restarted comes back locked and the orchestration unlocks it (then the runner, with the
    key kept on the master only); the key is in no return, log or job cache; off again."""
    kept = lab.master_root / "cache" / "armswarm" / "unlock_keys" / "armswarm%3Aswarm"
    on = {"armswarm": {"swarm": {"autolock": True}}}
    try:
        applied = _cycle(lab, on, ["autolock", "unlock_key"])
        assert applied["changes"]["autolock"] == {"old": False, "new": True}
        assert _docker_cluster(lab)["Spec"]["EncryptionConfig"]["AutoLockManagers"] is True
        assert kept.stat().st_mode & 0o777 == 0o600
        code, key = lab.exec("node1", ["docker", "swarm", "unlock-key", "-q"])
        key = key.strip()
        assert code == 0 and key.startswith("SWMKEY-1-"), key

        _restart_locked(lab, "node2")
        extra = f"pillar={json.dumps(on)}"
        predicted = orch(lab, extra, "test=True")
        assert predicted["result"] is None and predicted["changes"] == {"unlock": ["node2"]}
        assert _swarm_local_state(lab, "node2") == "locked"  # the check changed nothing
        applied = orch(lab, extra)
        assert applied["result"] is True and applied["changes"] == predicted["changes"], applied
        assert _swarm_local_state(lab, "node2") == "active"
        assert _docker_managers(lab, "node2") == dict.fromkeys(
            ["node1", "node2", "node3"], "reachable"
        )
        for again in (orch(lab, extra), orch(lab, extra, "test=True")):
            assert again["result"] is True and again["changes"] == {}, again["comment"]

        # No manager named: the runner unlocks with the key kept on the master.
        _restart_locked(lab, "node3")
        proc = lab.run_salt("salt-run", "swarm_keys.unlock", "node3", "--out=json")
        assert json.loads(proc.stdout)["key_from"] == "kept on the master (armswarm:swarm)"
        assert _swarm_local_state(lab, "node3") == "active"
        time.sleep(2)  # let the event capture flush
        assert_not_in_salt_files(lab, re.escape(key), events)
    finally:
        off = f"pillar={json.dumps({'armswarm': {'swarm': {'autolock': False}}})}"
        predicted = orch(lab, off, "test=True")
        # (a manager left locked by a failure above is unlocked by this run first)
        applied = orch(lab, off)
        assert applied["result"] is True, applied["comment"]
    assert (
        predicted["changes"]
        == applied["changes"]
        == {
            "autolock": {"old": True, "new": False},
            "unlock_key": "dropped from the master",
        }
    )
    assert not kept.exists()
    assert not _docker_cluster(lab)["Spec"].get("EncryptionConfig", {}).get("AutoLockManagers")
    for again in (orch(lab, off), orch(lab, off, "test=True")):
        assert again["result"] is True and again["changes"] == {}, again["comment"]


def test_a_swarm_on_ipv6_advertise_addresses(lab):
    """node4 (Debian 13, Docker 26.1) and node5 (Debian 12, Docker 20.10) leave the lab's
    swarm and form one of their own from a second layout whose advertise addresses are the
    nodes' IPv6 ones (written two ways), then go back. Docker is the witness: the addresses
    it records for the nodes, and the manager address the worker joined through."""
    if not lab.has_ipv6():
        pytest.skip("the lab network has no IPv6 (made before it had, or a host without IPv6)")
    v6 = {n: lab.node_address6(lab.node(n)) for n in ("node4", "node5")}
    layout = {
        "managers": ["node4"],
        "workers": ["node5"],
        "nodes": {
            "node4": {"advertise_addr": v6["node4"]},
            "node5": {"advertise_addr": f"[{v6['node5'].upper()}]:2377"},
        },
    }
    pillar = json.dumps(
        {"swarm_layout": "armswarm:swarms:v6", "armswarm": {"swarms": {"v6": layout}}}
    )
    for node in ("node5", "node4"):
        call(lab, node, "docker_swarm.leave", "force=True")
    wait_down(lab, ["node4", "node5"])
    try:
        predicted = orch(lab, f"pillar={pillar}", "test=True")
        assert predicted["result"] is None, predicted["comment"]
        assert predicted["changes"]["init"] == "node4", predicted["changes"]
        assert predicted["changes"]["join_workers"] == ["node5"], predicted["changes"]
        applied = orch(lab, f"pillar={pillar}")
        assert applied["result"] is True, applied["comment"]
        assert applied["changes"] == predicted["changes"]
        for extra in ((), ("test=True",)):
            again = orch(lab, f"pillar={pillar}", *extra)
            assert again["result"] is True and again["changes"] == {}, again["comment"]
        code, out = lab.exec(
            "node4",
            [
                "sh",
                "-c",
                "docker node inspect --format '{{.Description.Hostname}} {{.Status.Addr}} "
                "{{if .ManagerStatus}}{{.ManagerStatus.Addr}}{{end}}' $(docker node ls -q)",
            ],
        )
        assert code == 0, out
        rows = sorted(tuple(line.split()) for line in out.splitlines() if line.strip())
        assert rows == [
            ("node4", v6["node4"], f"[{v6['node4']}]:2377"),
            ("node5", v6["node5"]),
        ], out
        worker = _engine_swarm(lab, "node5")
        assert worker["NodeAddr"] == v6["node5"], worker
        assert [m["Addr"] for m in worker["RemoteManagers"]] == [f"[{v6['node4']}]:2377"], worker
    finally:
        for node in ("node5", "node4"):
            lab.run_salt("salt", node, "docker_swarm.leave", "force=True", check=False)
    # Back in the lab's swarm, over IPv4 as before.
    ret = orch(lab)
    assert ret["result"] is True, ret["comment"]
    assert sorted(ret["changes"]["join_workers"]) == ["node4", "node5"], ret["changes"]
    assert orch(lab)["changes"] == {}
    assert sorted(swarm_nodes(lab, "node1")) == lab.node_names()


def _minion(lab, node, signal):
    """Send ``signal`` to every process of ``node``'s salt-minion (its dockerd runs on)."""
    code, out = lab.exec(node, ["systemctl", "kill", f"--signal={signal}", "salt-minion"])
    assert code == 0, out


def _orch_with_a_frozen_minion(lab, node, seconds, *extra):
    """One orchestration run while ``node``'s minion is stopped for ``seconds`` (as a loaded
    board that answers late): ``(return, seconds the run took)``."""
    _minion(lab, node, "SIGSTOP")
    thaw = threading.Timer(seconds, _minion, (lab, node, "SIGCONT"))
    thaw.start()
    begun = time.monotonic()
    try:
        ret = orch(lab, *extra)
    finally:
        thaw.cancel()
        _minion(lab, node, "SIGCONT")
    took = time.monotonic() - begun
    lab.salt_json(node, "test.ping", "--timeout=60")  # it answers again before anything else
    return ret, took


def test_a_slow_board_is_waited_for_as_long_as_answer_timeout_says(lab, events):
    """node5's minion answers only after 75 s: with the default 20 s it counts as not answering
    (left as it is, the run fails saying so); with ``answer_timeout: 150`` it is waited for.
    One ask waits about 50 s here (the timeout, then the lab's 20 s gather_job_timeout), so
    the board is asked again: a stopped minion that wakes drops its connection to the master
    and may lose the return of the job it was sent while stopped."""
    freeze = 75
    ret, _ = _orch_with_a_frozen_minion(lab, "node5", freeze, "test=True")
    assert ret["result"] is False and ret["changes"] == {}, ret
    assert "Not answering (left as they are): node5" in ret["comment"], ret["comment"]
    # docker's own view: the board never left the swarm
    assert swarm_nodes(lab, "node1")["node5"]["state"] == "ready"
    pillar = f"pillar={json.dumps({'armswarm': {'swarm': {'answer_timeout': 150}}})}"
    ret, took = _orch_with_a_frozen_minion(lab, "node5", freeze, pillar)
    assert ret["result"] is True and ret["changes"] == {}, ret["comment"]
    assert "Not answering" not in ret["comment"], ret["comment"]
    assert took >= freeze  # it did wait for node5's answer
    assert sorted(swarm_nodes(lab, "node1")) == lab.node_names()
    time.sleep(2)  # let the capture flush
    asked_again = [
        line for line in events.read_text().splitlines() if "armswarm/swarm/facts_again" in line
    ]
    assert asked_again and all('"missing": ["node5"]' in line for line in asked_again), asked_again


def test_no_join_token_in_job_cache_events_or_logs(lab, events):
    time.sleep(2)  # let the capture flush
    assert events.stat().st_size > 0
    assert_no_join_token(lab, events)
