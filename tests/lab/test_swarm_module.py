"""docker_swarm execution module on the lab: init, sealed join tokens, node updates, leave."""

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


def test_no_join_token_anywhere_on_the_master(swarm):
    # The module returned sealed blobs only: nothing in the job cache or logs has a token.
    assert_no_join_token(swarm)
    assert Path(swarm.master_root / "cache" / "jobs").is_dir()
