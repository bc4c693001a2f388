"""A changed daemon.json on the lab's swarm: checked before it is written, never all dockerds
restarted by one `state.apply`, then a rolling restart that keeps the managers' quorum."""

import json

import pytest
from conftest import swarm_table

pytestmark = pytest.mark.lab

LABEL = "armswarm.test=rolling"
MANAGERS = ("node1", "node2", "node3")


def _apply(lab, daemon=None, target="*"):
    args = [target, "state.apply", "armnode", "--timeout=600"]
    if daemon is not None:
        args.append(f"pillar={json.dumps({'armnode': {'docker': {'daemon': daemon}}})}")
    return lab.salt_json(*args, check=False)


def _state(states, sid="armnode-docker-daemon-json"):
    return next(s for s in states.values() if s["__id__"] == sid)


def _times(lab) -> dict:
    """Per node (systemd's view, one monotonic clock: the nodes share the host's kernel):
    when dockerd last stopped and when it last became active."""
    out = {}
    for node in lab.node_names():
        code, text = lab.exec(
            node,
            [
                "systemctl",
                "show",
                "docker",
                "-p",
                "ActiveExitTimestampMonotonic",
                "-p",
                "ActiveEnterTimestampMonotonic",
            ],
        )
        assert code == 0, text
        props = dict(line.split("=", 1) for line in text.split())
        out[node] = (
            int(props["ActiveExitTimestampMonotonic"]),
            int(props["ActiveEnterTimestampMonotonic"]),
        )
    return out


def _rolling(lab, *args):
    proc = lab.run_salt(
        "salt-run", "--out=json", "armnode_docker.rolling_restart", *args, check=False
    )
    result = json.loads(proc.stdout)
    assert proc.returncode == result["retcode"] == (1 if result["error"] else 0), proc.stderr
    return result


def _engine_labels(lab, node):
    code, out = lab.exec(node, ["docker", "info", "--format", "{{json .Labels}}"])
    assert code == 0, out
    return json.loads(out) or []


def _assert_restarted_one_at_a_time(before, after):
    windows = []
    for node, (stopped, started) in after.items():
        assert started > before[node][1], f"dockerd on {node} was not restarted"
        windows.append((stopped, started, node))
    windows.sort()
    for (_, end, first), (start, _, second) in zip(windows, windows[1:], strict=False):
        assert end < start, f"dockerd on {first} and {second} were down at the same time"


def _down(lab, hostname):
    table = swarm_table(lab)
    return hostname in table and table[hostname]["state"] != "ready"


def _all_ready(lab):
    table = swarm_table(lab)
    return len(table) == len(lab.node_names()) and all(
        n["state"] == "ready" for n in table.values()
    )


def _healthy(lab):
    table = swarm_table(lab)
    assert len(table) == len(lab.node_names()), table
    assert all(n["state"] == "ready" for n in table.values()), table
    assert sum(n["role"] == "manager" for n in table.values()) == len(MANAGERS)


def test_daemon_json_checked_and_restarted_rolling(lab):
    current = json.loads(lab.exec("node4", ["cat", "/etc/docker/daemon.json"])[1])
    # A typo is refused before the file is written, naming the key.
    ret = _apply(lab, {**current, "storage-drivr": "overlay2"}, target="node4")
    state = _state(ret["node4"])
    assert state["result"] is False and "armnode:docker:daemon:storage-drivr" in state["comment"]
    assert json.loads(lab.exec("node4", ["cat", "/etc/docker/daemon.json"])[1]) == current

    before = _times(lab)
    ret = _apply(lab, {**current, "labels": [LABEL]})
    for node in lab.node_names():
        state = _state(ret[node])
        assert state["result"] is True and state["changes"]["restart"] == "rolling (pending)"
        assert lab.salt_json(node, "armnode.docker_restart_pending")[node] is True
    # One state.apply restarted no dockerd: the swarm never lost its managers.
    assert _times(lab) == before
    assert all(LABEL not in _engine_labels(lab, node) for node in lab.node_names())

    # With a manager's engine down, restarting another would lose the quorum: refused.
    # (the socket too: any docker call would start it again)
    lab.exec("node3", ["systemctl", "stop", "docker.socket", "docker"])
    try:
        lab._wait(lambda: _down(lab, "node3"), 120, "node3 seen down by the managers")
        refused = _rolling(lab, "tgt=node1", "timeout=4")  # the wait for a safe swarm
        assert refused["restarted"] == [] and refused["pending"] == ["node1"], refused
        assert "fewer than the quorum of 2" in refused["error"], refused
    finally:
        lab.exec("node3", ["systemctl", "start", "docker.socket", "docker"])
    lab._wait(lambda: _all_ready(lab), 180, "node3 back in the swarm")

    before = _times(lab)
    done = _rolling(lab)
    assert done["error"] is None and done["pending"] == [], done
    # workers first, then the managers
    assert done["restarted"][:2] == ["node4", "node5"], done
    assert sorted(done["restarted"]) == lab.node_names()
    _assert_restarted_one_at_a_time(before, _times(lab))
    assert all(LABEL in _engine_labels(lab, node) for node in lab.node_names())
    _healthy(lab)
    assert all(
        lab.salt_json(node, "armnode.docker_restart_pending")[node] is False
        for node in lab.node_names()
    )

    # Back to the lab's own daemon.json, through the orchestration this time.
    ret = _apply(lab)
    assert all(_state(ret[node])["result"] is True for node in lab.node_names())
    before = _times(lab)
    lab.run_salt("salt-run", "state.orch", "swarm.dockerd")
    _assert_restarted_one_at_a_time(before, _times(lab))
    assert all(LABEL not in _engine_labels(lab, node) for node in lab.node_names())
    _healthy(lab)
