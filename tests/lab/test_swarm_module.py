"""docker_swarm execution module on the lab: init, sealed join tokens, node updates, leave."""

import time
from pathlib import Path

import pytest
from helpers import assert_no_join_token


def _pub_body(lab, minion_id: str) -> str:
    pem = (lab.master_root / "pki" / "minions" / minion_id).read_text()
    return "".join(line for line in pem.splitlines() if "-----" not in line)


def _one(lab, target, *args, check=True):
    """One minion's return; ``check=False`` for a call meant to fail (salt exits non-zero)."""
    ret = lab.salt_json(target, *args, "--timeout=60", check=check)
    assert target in ret, ret
    return ret[target]


@pytest.fixture(scope="module")
def swarm(lab):
    # Start from no swarm (the lab's main job formed one), and give it back formed.
    for node in reversed(lab.node_names()):
        _one(lab, node, "docker_swarm.leave", "force=True")
    yield lab
    for node in reversed(lab.node_names()):
        _one(lab, node, "docker_swarm.leave", "force=True")
    lab.run_salt("salt-run", "state.orch", "swarm.init")


def test_init_join_label_leave(swarm):
    lab = swarm
    node1 = lab.node_address(lab.node("node1"))
    first = _one(lab, "node1", "docker_swarm.init", f"advertise_addr={node1}")
    assert first["changed"] is True and first["state"]["is_manager"] is True
    again = _one(lab, "node1", "docker_swarm.init", f"advertise_addr={node1}")
    assert again["changed"] is False

    for joiner, role in (("node2", "manager"), ("node4", "worker")):
        blob = _one(
            lab, "node1", "docker_swarm.sealed_join_token", role, _pub_body(lab, joiner), joiner
        )
        assert blob.startswith("armswarm-sealed-v2:") and "SWMTKN" not in blob
        address = lab.node_address(lab.node(joiner))
        joined = _one(
            lab,
            joiner,
            "docker_swarm.join",
            f"{node1}:2377",
            f"sealed_token={blob}",
            f"advertise_addr={address}",
        )
        assert joined["changed"] is True, joined
        assert joined["state"]["is_manager"] is (role == "manager")

    # A token sealed for node4 is useless to node5.
    blob = _one(
        lab, "node1", "docker_swarm.sealed_join_token", "worker", _pub_body(lab, "node4"), "node4"
    )
    refused = _one(
        lab, "node5", "docker_swarm.join", f"{node1}:2377", f"sealed_token={blob}", check=False
    )
    assert "cannot open the join token" in str(refused)

    nodes = {n["hostname"]: n for n in _one(lab, "node1", "docker_swarm.nodes")}
    assert sorted(nodes) == ["node1", "node2", "node4"]
    assert nodes["node1"]["leader"] is True and nodes["node4"]["role"] == "worker"

    labels = "labels={board: sopine, cpus: 4}"
    predicted = _one(lab, "node1", "docker_swarm.update_node", "node4", labels, "test=True")
    applied = _one(lab, "node1", "docker_swarm.update_node", "node4", labels)
    assert predicted == applied == {"labels": {"old": {}, "new": {"board": "sopine", "cpus": "4"}}}
    assert _one(lab, "node1", "docker_swarm.update_node", "node4", labels) == {}
    assert _one(lab, "node1", "docker_swarm.join_token", "worker")["available"] is True

    # Bad input is refused before the engine is asked.
    refused = _one(
        lab, "node1", "docker_swarm.update_node", "node4", "availability=paused", check=False
    )
    assert "availability must be one of" in str(refused)


def _wait_node(lab, name, done, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        listed = {n["hostname"]: n for n in _one(lab, "node1", "docker_swarm.nodes")}
        if done(listed.get(name)) or time.monotonic() > deadline:
            return listed.get(name)
        time.sleep(1)


def test_a_manager_leaves_as_a_worker(swarm):
    # After test_init_join_label_leave: node1 leads, node2 is the other manager. Leaving, node2
    # steps down first and goes only once it is no raft member: the leader then lists it as a
    # worker that is down, never as a manager gone unreachable (a voter lost).
    lab = swarm
    # Bad input is refused before anything is asked of the engine.
    bad = _one(lab, "node2", "docker_swarm.leave", "force=1", check=False)
    assert "force: must be true or false" in str(bad), bad
    bad = _one(lab, "node2", "docker_swarm.leave", "force=True", "timeout=-1", check=False)
    assert "timeout: must be a number of seconds" in str(bad), bad
    code, out = lab.exec("node2", ["docker", "info", "--format", "{{.Swarm.ControlAvailable}}"])
    assert (code, out.strip()) == (0, "true"), out
    left = _one(lab, "node2", "docker_swarm.leave", "force=True", "timeout=120")
    assert left["changed"] is True and left["state"]["state"] == "inactive", left
    node2 = _wait_node(lab, "node2", lambda n: n and n["state"] == "down")
    assert node2 and (node2["role"], node2["state"]) == ("worker", "down"), node2
    assert node2["reachability"] is None, node2
    managers = [n for n in _one(lab, "node1", "docker_swarm.nodes") if n["role"] == "manager"]
    assert [(m["hostname"], m["leader"]) for m in managers] == [("node1", True)], managers


def test_no_join_token_anywhere_on_the_master(swarm):
    # The module returned sealed blobs only: nothing in the job cache or logs has a token.
    assert_no_join_token(swarm)
    assert Path(swarm.master_root / "cache" / "jobs").is_dir()
