"""daemon.json checks and the order and safety of a rolling dockerd restart (pure logic)."""

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.node import docker_daemon

pytestmark = pytest.mark.unit


def test_bad_daemon_json_is_refused_naming_the_key(tmp_path):
    good = {
        "storage-driver": "overlay2",
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "insecure-registries": [],
        "live-restore": False,
    }
    assert docker_daemon.check(good) == []
    bad = {
        "storage-drivr": "overlay2",  # a typo dockerd refuses at start
        "live-restore": "false",
        "log-opts": {"max-file": 3},
        "insecure-registries": "registry.lan:5000",
        "data-root": "srv/docker",
        "mtu": True,
    }
    problems = "\n".join(docker_daemon.check(bad))
    for key in ("storage-drivr", "live-restore", "log-opts", "insecure-registries", "data-root"):
        assert f"armnode:docker:daemon:{key}:" in problems
    assert "armnode:docker:daemon:mtu: must be a whole number" in problems
    assert "registry.lan" not in problems
    with pytest.raises(ArmswarmError, match="storage-drivr"):
        docker_daemon.validate(bad, dockerd=str(tmp_path / "no-dockerd"))
    assert docker_daemon.check(["storage-driver"]) == ["armnode:docker:daemon: must be a mapping"]


def _node(nid, role, state="ready", reach="reachable"):
    return {
        "id": nid,
        "role": role,
        "state": state,
        "reachability": reach if role == "manager" else None,
    }


def test_quorum_is_kept():
    three = [_node("m1", "manager"), _node("m2", "manager"), _node("m3", "manager")]
    assert docker_daemon.quorum_problem(three, "m1") == ""
    one_down = [_node("m1", "manager"), _node("m2", "manager", "down", "unreachable"), three[2]]
    assert "fewer than the quorum of 2" in docker_daemon.quorum_problem(one_down, "m1")
    assert docker_daemon.quorum_problem([*one_down, _node("w1", "worker")], "w1") == ""


class _Swarm:
    """A swarm as the runner sees it: each restart takes the node down until it is listed
    again; records what was down at each moment."""

    def __init__(self, roles, fail=(), broken=(), back_after=2):
        self._roles = roles
        self.broken = set(broken)  # down all along (not restarted by the runner)
        self.down: dict = {}  # restarted node → listings it still reads down
        self.back_after = back_after
        self.log: list = []
        self.fail = set(fail)

    def roles(self):
        return dict(self._roles)

    def node_id(self, minion):
        return minion

    def nodes(self, exclude):
        listed = []
        for minion, role in self._roles.items():
            if role is None:
                continue
            down = self.down.get(minion, 0) > 0 or minion in self.broken
            listed.append(
                _node(
                    minion,
                    role,
                    "down" if down else "ready",
                    "unreachable" if down else "reachable",
                )
            )
        # a restarted node reads down for a few listings, then comes back
        self.down = {m: n - 1 for m, n in self.down.items() if n > 1}
        return listed

    def restart(self, minion):
        if minion in self.fail:
            return {"ok": False, "error": "dockerd is not back"}
        if self._roles.get(minion) is not None:  # outside a swarm nobody lists it
            self.down[minion] = self.back_after
        self.log.append((minion, sorted(self.down)))
        return {"ok": True}

    def sleep(self, seconds):
        pass


def test_rolling_restart_one_at_a_time_workers_first():
    roles = {
        "node1": "manager",
        "node2": "manager",
        "node3": "manager",
        "node4": "worker",
        "node5": "worker",
        "solo": None,
    }
    swarm = _Swarm(roles)
    result = docker_daemon.rolling_restart(swarm, sorted(roles), timeout=5)
    assert result == {
        "restarted": ["node4", "node5", "solo", "node1", "node2", "node3"],
        "pending": [],
        "error": None,
    }
    # never two nodes down at once (a node outside the swarm is not listed by it)
    assert all(down == ([m] if roles[m] else []) for m, down in swarm.log), swarm.log


def test_rolling_restart_stops_before_losing_the_quorum():
    roles = {"node1": "manager", "node2": "manager", "node3": "manager", "node4": "worker"}
    # node3's engine is down already: restarting node1 would leave one of three managers
    swarm = _Swarm(roles, broken=["node3"])
    result = docker_daemon.rolling_restart(swarm, ["node1", "node2", "node4"], timeout=0.2)
    assert result["restarted"] == ["node4"] and result["pending"] == ["node1", "node2"]
    assert "restarting node1 would leave 1 of 3 managers" in result["error"]
    assert [minion for minion, _ in swarm.log] == ["node4"]
    # a node whose engine does not come back stops the run
    swarm = _Swarm(roles, fail=["node4"])
    result = docker_daemon.rolling_restart(swarm, ["node1", "node4"], timeout=5)
    assert result["restarted"] == [] and result["pending"] == ["node4", "node1"]
    assert "node4" in result["error"]


def test_a_node_that_does_not_say_its_role_is_not_restarted():
    swarm = _Swarm({"node1": "manager", "node4": "worker"})
    result = docker_daemon.rolling_restart(swarm, ["node4", "node9"], timeout=5)
    assert result["restarted"] == ["node4"] and result["pending"] == ["node9"]
    assert "node9: no swarm state" in result["error"]


class _Settling(_Swarm):
    """node3 looks unreachable for the first few listings, as right after node1's restart."""

    def __init__(self, roles, unsettled=3):
        super().__init__(roles, broken=["node3"])
        self.unsettled = unsettled

    def nodes(self, exclude):
        listed = super().nodes(exclude)
        self.unsettled -= 1
        if self.unsettled <= 0:
            self.broken.clear()
        return listed


def test_a_swarm_settling_after_a_restart_is_waited_for():
    roles = {"node1": "manager", "node2": "manager", "node3": "manager"}
    swarm = _Settling(roles)
    result = docker_daemon.rolling_restart(swarm, ["node1", "node2"], timeout=30)
    assert result == {"restarted": ["node1", "node2"], "pending": [], "error": None}
    assert all(len(down) == 1 for _, down in swarm.log)


class _Reconnecting(_Swarm):
    """Restarting a manager makes the workers reconnect: they read down for a few listings."""

    def __init__(self, roles, listings=3):
        super().__init__(roles)
        self.listings = listings
        self.reconnecting = 0
        self.last: list = []

    def restart(self, minion):
        answer = super().restart(minion)
        if self._roles[minion] == "manager":
            self.reconnecting = self.listings
        return answer

    def nodes(self, exclude):
        if self.reconnecting:
            self.reconnecting -= 1
            self.broken = {m for m, r in self._roles.items() if r == "worker"}
        else:
            self.broken = set()
        self.last = super().nodes(exclude)
        return self.last


def test_the_run_waits_for_the_workers_a_manager_restart_disconnected():
    roles = {"node1": "manager", "node2": "manager", "node3": "manager", "node4": "worker"}
    swarm = _Reconnecting(roles)
    result = docker_daemon.rolling_restart(swarm, ["node1", "node2", "node4"], timeout=30)
    assert result == {"restarted": ["node4", "node1", "node2"], "pending": [], "error": None}
    # at the end every node reads ready, as it did before
    assert {n["id"]: n["state"] for n in swarm.last} == dict.fromkeys(roles, "ready")
    # node2 was restarted only once node4 read ready again after node1's restart
    assert all(len(down) == 1 for _, down in swarm.log)


def test_workers_that_stay_down_after_a_restart_stop_the_run():
    roles = {"node1": "manager", "node2": "manager", "node3": "manager", "node4": "worker"}
    swarm = _Reconnecting(roles, listings=10**6)
    result = docker_daemon.rolling_restart(swarm, ["node1", "node2"], timeout=0.2)
    assert result["restarted"] == ["node1"] and result["pending"] == ["node2"]
    assert "after the restart of node1" in result["error"] and "node4" in result["error"]


class _Autolocked(_Swarm):
    """Autolock on: a restarted manager comes back locked until the master unlocks it."""

    def __init__(self, roles, unlock_ok=True):
        super().__init__(roles)
        self.unlock_ok = unlock_ok
        self.locked: set = set()
        self.unlocked: list = []

    def restart(self, minion):
        answer = super().restart(minion)
        if self._roles[minion] == "manager":
            self.locked.add(minion)
            self.down[minion] = 10**6  # a locked manager stays down in the node list
            return {"ok": False, "locked": True, "error": "back but locked"}
        return answer

    def unlock(self, minion):
        assert minion in self.locked
        if not self.unlock_ok:
            return {"ok": False, "error": "came back locked and cannot be unlocked: no key"}
        self.locked.discard(minion)
        self.unlocked.append(minion)
        self.down[minion] = self.back_after
        return {"ok": True, "unlocked": True}


def test_a_manager_back_locked_is_unlocked_and_the_run_goes_on():
    roles = {"node1": "manager", "node2": "manager", "node3": "manager", "node4": "worker"}
    swarm = _Autolocked(roles)
    result = docker_daemon.rolling_restart(swarm, ["node1", "node2", "node4"], timeout=5)
    assert result == {"restarted": ["node4", "node1", "node2"], "pending": [], "error": None}
    assert swarm.unlocked == ["node1", "node2"] and not swarm.locked


def test_a_manager_that_cannot_be_unlocked_stops_the_run():
    roles = {"node1": "manager", "node2": "manager", "node3": "manager"}
    swarm = _Autolocked(roles, unlock_ok=False)
    result = docker_daemon.rolling_restart(swarm, ["node1", "node2"], timeout=5)
    assert result["restarted"] == [] and result["pending"] == ["node1", "node2"]
    assert result["error"] == "node1: came back locked and cannot be unlocked: no key"
