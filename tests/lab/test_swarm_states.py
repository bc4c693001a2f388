"""docker_swarm node states through `state.single` on the lab swarm: initialised, left, joined
and node_configured, each checked → applied → re-applied → checked; bad input and refusals
change nothing. The module gives the swarm back converged by the orchestration."""

import json
import time

import pytest
from helpers import state_return

LEFT = "docker_swarm.left"
JOINED = "docker_swarm.joined"
INITIALISED = "docker_swarm.initialised"
CONFIGURED = "docker_swarm.node_configured"


def call(lab, node, *args):
    return lab.salt_json(node, *args, "--timeout=120")[node]


def state_single(lab, node, fun, *args, test=False):
    return state_return(lab, node, "state.single", fun, *args, "--timeout=120", test=test)


def cycle(lab, node, fun, *args) -> dict:
    """test=True predicts, the run makes the same changes, a re-run and a re-check find none.
    Returns the changes."""
    predicted = state_single(lab, node, fun, *args, test=True)
    assert predicted["result"] is None, predicted["comment"]
    assert predicted["changes"], predicted["comment"]
    applied = state_single(lab, node, fun, *args)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"] == predicted["changes"], applied["comment"]
    for test in (False, True):
        again = state_single(lab, node, fun, *args, test=test)
        assert again["result"] is True and again["changes"] == {}, again["comment"]
    return applied["changes"]


def orch(lab) -> dict:
    """The swarm_cluster.converged state's return from one orchestration run."""
    proc = lab.run_salt("salt-run", "state.orch", "swarm.init", "--out=json", check=False)
    (states,) = json.loads(proc.stdout)["data"].values()
    (ret,) = states.values()
    return ret


def swarm_nodes(lab, via="node1") -> dict:
    return {n["hostname"]: n for n in call(lab, via, "docker_swarm.nodes") if n["state"] != "down"}


def by_hostname(lab, via) -> dict:
    """Every node, down ones included (no hostname is used twice in these tests)."""
    return {n["hostname"]: n for n in call(lab, via, "docker_swarm.nodes")}


def leader(lab, via="node1") -> str:
    (name,) = [n["hostname"] for n in call(lab, via, "docker_swarm.nodes") if n["leader"]]
    return name


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def pub_body(lab, minion_id: str) -> str:
    pem = (lab.master_root / "pki" / "minions" / minion_id).read_text()
    return "".join(line for line in pem.splitlines() if "-----" not in line)


def remove_down_entries(lab, via="node1"):
    for node in call(lab, via, "docker_swarm.nodes"):
        if node["state"] == "down":
            call(lab, via, "docker_swarm.remove_node", node["id"], "force=True")


def forget(lab, hostname, via="node1"):
    """Remove the entry a node that left keeps in the swarm (without waiting for it to be
    marked down), so the next join is the only node of that name."""
    call(lab, via, "docker_swarm.remove_node", hostname, "force=True")
    assert hostname not in by_hostname(lab, via)


@pytest.fixture(scope="module", autouse=True)
def converged(lab):
    """Start from the swarm the orchestration makes (a kept lab may be in any state), and give
    it back converged to the tests that follow."""
    ret = orch(lab)
    assert ret["result"] is True, ret["comment"]
    remove_down_entries(lab)
    call(lab, "node1", "docker_swarm.update_node", "node4", "availability=active")
    yield
    for name in lab.node_names():
        container = lab.client.containers.get(lab.container_name(lab.node(name)))
        if container.status == "paused":
            container.unpause()
    # node5 may have been left in a swarm of its own by a failed test.
    if call(lab, "node5", "docker_swarm.state")["is_manager"]:
        call(lab, "node5", "docker_swarm.leave", "force=True")
    call(lab, "node1", "docker_swarm.update_node", "node4", "availability=active")
    remove_down_entries(lab)
    ret = orch(lab)
    assert ret["result"] is True, ret["comment"]
    ret = orch(lab)
    assert ret["result"] is True and ret["changes"] == {}, ret["comment"]
    nodes = swarm_nodes(lab)
    assert sorted(nodes) == lab.node_names()
    assert sorted(n for n, v in nodes.items() if v["role"] == "manager") == [
        "node1",
        "node2",
        "node3",
    ]


def test_left_initialised_and_joined_on_a_worker(lab):
    node1 = lab.node_address(lab.node("node1"))
    node5 = lab.node_address(lab.node("node5"))

    # A worker of a swarm does not start another one.
    refused = state_single(lab, "node5", INITIALISED, "name=swarm", f"advertise_addr={node5}")
    assert refused["result"] is False and refused["changes"] == {}
    assert "as a worker in a swarm: refusing to create another one" in refused["comment"]

    assert cycle(lab, "node5", LEFT, "name=swarm") == {
        "swarm": {"old": "active", "new": "inactive"}
    }
    assert call(lab, "node5", "docker_swarm.state")["state"] == "inactive"
    forget(lab, "node5")

    # Out of the swarm: a swarm of its own, whose only manager refuses to leave or be demoted.
    changes = cycle(lab, "node5", INITIALISED, "name=swarm", f"advertise_addr={node5}")
    assert changes == {"swarm": {"old": "inactive", "new": "manager (new swarm)"}}
    own = call(lab, "node5", "docker_swarm.state")
    assert own["is_manager"] is True and own["cluster_id"]
    for test in (True, False):
        ret = state_single(lab, "node5", LEFT, "name=swarm", test=test)
        assert ret["result"] is False and ret["changes"] == {}
        assert "This node is a manager" in ret["comment"] and "force" in ret["comment"]
        ret = state_single(lab, "node5", CONFIGURED, "name=node5", "role=worker", test=test)
        assert ret["result"] is False and ret["changes"] == {}
        assert "node5 is the last manager: demoting it ends the swarm" in ret["comment"]
    assert call(lab, "node5", "docker_swarm.state") == own
    assert cycle(lab, "node5", LEFT, "name=swarm", "force=True") == {
        "swarm": {"old": "active", "new": "inactive"}
    }

    # Back into the lab swarm with a token sealed for node5's key.
    blob = call(
        lab, "node1", "docker_swarm.sealed_join_token", "worker", pub_body(lab, "node5"), "node5"
    )
    assert blob.startswith("armswarm-sealed-v2:") and "SWMTKN" not in blob
    args = (
        "name=swarm",
        f"remote_addrs={node1}:2377",
        f"sealed_token={blob}",
        f"advertise_addr={node5}",
    )
    changes = cycle(lab, "node5", JOINED, *args)
    assert changes == {"swarm": {"old": "inactive", "new": "joined"}}
    assert "SWMTKN" not in json.dumps(changes)
    nodes = swarm_nodes(lab)
    assert nodes["node5"]["role"] == "worker" and nodes["node5"]["state"] == "ready"
    assert call(lab, "node5", "docker_swarm.state")["cluster_id"] is None  # a worker

    # A token sealed for another minion does not open on node5.
    call(lab, "node5", "docker_swarm.leave")
    forget(lab, "node5")
    wrong = call(
        lab, "node1", "docker_swarm.sealed_join_token", "worker", pub_body(lab, "node4"), "node4"
    )
    for test in (True, False):
        ret = state_single(
            lab,
            "node5",
            JOINED,
            "name=swarm",
            f"remote_addrs={node1}",
            f"sealed_token={wrong}",
            test=test,
        )
        assert ret["result"] is False and ret["changes"] == {}, ret["comment"]
        assert "SWMTKN" not in ret["comment"]
    assert call(lab, "node5", "docker_swarm.state")["state"] == "inactive"
    changes = cycle(lab, "node5", JOINED, *args)
    assert changes == {"swarm": {"old": "inactive", "new": "joined"}}


def test_manager_does_not_leave_without_force(lab):
    for test in (True, False):
        ret = state_single(lab, "node3", LEFT, "name=swarm", test=test)
        assert ret["result"] is False and ret["changes"] == {}
        assert ret["comment"] == "This node is a manager: leaving may cost quorum; set force: true"
    assert swarm_nodes(lab)["node3"]["role"] == "manager"
    own = state_single(lab, "node3", INITIALISED, "name=swarm", test=True)
    assert own["result"] is True and own["changes"] == {}
    assert own["comment"].startswith("Already a manager of swarm")


def test_node_labels_merge_then_replace(lab):
    original = swarm_nodes(lab)["node4"]["labels"]
    assert original["armswarm.board"] == "sopine"  # set by the orchestration

    labels = json.dumps({"rack": "a", "ssd": "yes", "slot": 3})
    changes = cycle(lab, "node1", CONFIGURED, "name=node4", f"labels={labels}")
    merged = {**original, "rack": "a", "ssd": "yes", "slot": "3"}
    assert changes == {"labels": {"old": original, "new": merged}}
    assert swarm_nodes(lab)["node4"]["labels"] == merged

    # Declared labels only: the orchestration's grain labels go too.
    labels = json.dumps({"rack": "b"})
    args = ("name=node4", f"labels={labels}", "remove_undeclared_labels=True")
    changes = cycle(lab, "node1", CONFIGURED, *args)
    assert changes == {"labels": {"old": merged, "new": {"rack": "b"}}}
    assert swarm_nodes(lab)["node4"]["labels"] == {"rack": "b"}

    # Back to what the orchestration set.
    labels = json.dumps(original)
    args = ("name=node4", f"labels={labels}", "remove_undeclared_labels=True")
    changes = cycle(lab, "node1", CONFIGURED, *args)
    assert changes == {"labels": {"old": {"rack": "b"}, "new": original}}


def test_node_availability_drain_and_back(lab):
    assert swarm_nodes(lab)["node4"]["availability"] == "active"
    for old, new in (("active", "drain"), ("drain", "active")):
        changes = cycle(lab, "node2", CONFIGURED, "name=node4", f"availability={new}")
        assert changes == {"availability": {"old": old, "new": new}}
        assert swarm_nodes(lab, via="node3")["node4"]["availability"] == new


def test_bad_availability_is_refused_and_nothing_changes(lab):
    before = swarm_nodes(lab)
    for test in (True, False):
        ret = state_single(
            lab,
            "node1",
            CONFIGURED,
            "name=node4",
            "availability=paused",
            "labels={x: y}",
            test=test,
        )
        assert ret["result"] is False and ret["changes"] == {}
        assert ret["comment"] == (
            "availability must be one of active, pause, drain, not 'paused'"
        ), ret["comment"]
    ret = state_single(lab, "node1", CONFIGURED, "name=node9", "availability=drain")
    assert ret["result"] is False and "no swarm node named 'node9'" in ret["comment"]
    assert swarm_nodes(lab) == before


def test_node_role_promote_and_demote(lab):
    for old, new in (("worker", "manager"), ("manager", "worker")):
        changes = cycle(lab, "node1", CONFIGURED, "name=node4", f"role={new}")
        assert changes == {"role": {"old": old, "new": new}}
        nodes = swarm_nodes(lab)
        assert nodes["node4"]["role"] == new
        managers = sorted(n for n, v in nodes.items() if v["role"] == "manager")
        assert managers == ["node1", "node2", "node3"] + (["node4"] if new == "manager" else [])


def test_demotion_that_would_lose_quorum_is_refused(lab):
    # One manager down (paused): demoting another would leave 1 reachable of 2.
    chief = leader(lab)
    down, demoted = sorted({"node1", "node2", "node3"} - {chief})
    container = lab.client.containers.get(lab.container_name(lab.node(down)))
    container.pause()
    try:
        wait_for(
            lambda: by_hostname(lab, chief)[down]["reachability"] == "unreachable",
            f"{down} unreachable",
        )
        before = by_hostname(lab, chief)
        for test in (True, False):
            ret = state_single(lab, chief, CONFIGURED, f"name={demoted}", "role=worker", test=test)
            assert ret["result"] is False and ret["changes"] == {}
            assert ret["comment"] == (
                f"demoting {demoted} would leave 1 reachable of 2 managers, below quorum (2)"
            ), ret["comment"]
        after = by_hostname(lab, chief)
        assert after[demoted]["role"] == "manager"
        assert {n: v["role"] for n, v in after.items()} == {n: v["role"] for n, v in before.items()}
    finally:
        container.unpause()
    wait_for(
        lambda: all(
            v["reachability"] == "reachable"
            for v in by_hostname(lab, chief).values()
            if v["role"] == "manager"
        ),
        f"{down} reachable again",
    )
