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


# -- daemon.json as real installs leave it ---------------------------------------------------
# dietpi/dietpi-software (MichaIng/DietPi), Docker install: the file it writes when none is
# there, and what its G_CONFIG_INJECT after the "{" line makes of an existing "{\n}".
DIETPI = """{
    "data-root": "/mnt/dietpi_userdata/docker-data",
    "log-driver": "journald",
    "log-level": "warn",
    "debug": false
}
"""
DIETPI_INJECTED = '{\n    "debug": false,\n    "log-level": "warn",\n}\n'
OURS = {
    "storage-driver": "overlay2",
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
}


def test_the_file_as_dockerd_reads_it():
    path = "/etc/docker/daemon.json"
    assert docker_daemon.parse(None) == {}
    # 0 bytes or blanks (dockerd 23+ takes it, 20.10 stops at EOF) and null: no setting
    for empty in (b"", b"\n  \n", b"null\n", "\ufeff{}".encode()):
        assert docker_daemon.parse(empty) == {}
    # a byte order mark (Windows editors) is skipped
    assert docker_daemon.parse(b"\xef\xbb\xbf" + DIETPI.encode())["log-level"] == "warn"
    # dockerd (Go) keeps the last of duplicated keys: so do we
    assert docker_daemon.parse(b'{"debug": true, "debug": false}') == {"debug": False}
    refused = {
        DIETPI_INJECTED: "line 4 column 1 (a trailing comma?)",
        '{\n  // mirrors\n  "debug": true\n}': "line 2 column 3 (a comment? JSON has none)",
        '{\n  # mirrors\n  "debug": true\n}': "(a comment? JSON has none)",
        '{"mtu": NaN}': "NaN is not JSON",
        '{"debug": true': "line 1 column 15",
        '["debug"]': "the top level is list, not an object",
        '"debug"': "the top level is str",
    }
    for text, message in refused.items():
        with pytest.raises(ArmswarmError) as exc:
            docker_daemon.parse(text.encode(), path)
        assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value), exc.value
        assert "nothing changed" in str(exc.value)
    with pytest.raises(ArmswarmError, match="not UTF-8"):
        docker_daemon.parse(b'{"labels": ["\xff"]}', path)


def test_another_installers_keys_stay_ours_go_when_dropped():
    dietpi = docker_daemon.parse(DIETPI.encode())
    merged, kept = docker_daemon.merge(dietpi, OURS)
    # the node's images, volumes and swarm state are under DietPi's data-root: it stays
    assert merged["data-root"] == "/mnt/dietpi_userdata/docker-data"
    assert merged["log-driver"] == "json-file" and merged["log-level"] == "warn"
    assert kept == {"data-root", "log-level", "debug"}
    assert docker_daemon.check(merged, kept) == []
    # a key we set before and no longer set goes; the others' stay
    again, kept = docker_daemon.merge(merged | {"labels": ["a=b"]}, OURS, {*OURS, "labels"})
    assert "labels" not in again and again["data-root"] == dietpi["data-root"]
    # a key of the file this list does not know (a newer engine's) is left to dockerd ...
    assert docker_daemon.check({"min-api-version": "1.24"}, {"min-api-version"}) == []
    # ... but a bad value there is named with the file, as dockerd would stop at it
    problems = docker_daemon.check({"log-opts": {"max-file": 3}}, {"log-opts"}, "/x.json")
    assert problems == ['/x.json: log-opts: every value must be a string ("10m", "3")']


def test_values_dockerd_or_swarm_mode_refuse():
    assert docker_daemon.check({"live-restore": False, "features": {"buildkit": True}}) == []
    assert docker_daemon.check({"proxies": {"http-proxy": "http://proxy.lan:3128"}}) == []
    pools = {"default-address-pools": [{"base": "10.10.0.0/16", "size": 24}]}
    assert docker_daemon.check(pools) == []
    bad = {
        "live-restore": True,  # "incompatible with swarm mode": dockerd does not start
        "cluster-store": "consul://x:8500",
        "features": {"buildkit": "true"},
        "default-address-pools": [{"base": "10.10.0.0/16", "size": "24"}],
        "registry-mirrors": ["mirror.lan:5000"],
        "cgroup-parent": 1,
    }
    problems = "\n".join(docker_daemon.check(bad))
    for key in bad:
        assert f"armnode:docker:daemon:{key}:" in problems, key
    assert "swarm mode refuses live-restore" in problems
    # journald (DietPi's driver) takes no max-size: dockerd would not start
    journald = {"log-driver": "journald", "log-opts": {"max-size": "10m", "tag": "x"}}
    assert "max-size is no option of the journald log driver" in "".join(
        docker_daemon.check(journald)
    )
    assert docker_daemon.check({"log-driver": "local", "log-opts": {"max-size": "10m"}}) == []
    nft = {"firewall-backend": "nftables"}
    assert "swarm mode refuses nftables" in "".join(docker_daemon.check(nft))
    assert docker_daemon.check({**nft, "iptables": False}) == []


def test_a_setting_the_unit_gives_as_a_flag_is_refused(tmp_path):
    # docker-ce's docker.service; Debian's docker.io: -H fd:// $DOCKER_OPTS
    docker_ce = ["/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock"]
    both = {"hosts": ["tcp://0.0.0.0:2375"], "containerd": "/run/c.sock", "debug": True}
    problems = docker_daemon.flag_conflicts(both, docker_ce)
    assert [p.split(":")[3] for p in problems] == ["hosts", "containerd"]
    assert "as -H on dockerd's command line" in problems[0]
    assert docker_daemon.flag_conflicts({"debug": True, "runtimes": {}}, docker_ce) == []
    assert docker_daemon.flag_keys(["dockerd", "-D", "--log-level=warn", "-g", "/srv"]) == {
        "debug": "-D",
        "log-level": "--log-level",
        "data-root": "-g",
    }
    with pytest.raises(ArmswarmError, match="hosts: docker.service already gives it"):
        docker_daemon.validate(both, dockerd=str(tmp_path / "none"), argv=docker_ce)
    default = tmp_path / "default-docker"
    default.write_text('# Debian\n#DOCKER_OPTS="--dns 8.8.8.8"\nDOCKER_OPTS="--dns 9.9.9.9"\n')
    assert docker_daemon._environ_value(str(default), "DOCKER_OPTS") == ["--dns", "9.9.9.9"]


def test_a_data_root_move_away_from_the_data_is_refused(tmp_path):
    old, new = tmp_path / "dietpi-docker", tmp_path / "ssd-docker"
    (old / "swarm" / "raft").mkdir(parents=True)  # a swarm node's state
    (old / "volumes").mkdir()
    new.mkdir()
    current = {"data-root": str(old)}
    problem = docker_daemon.data_root_problem(current, {"data-root": str(new)}, "/d.json")
    assert problem.startswith(f"/d.json: data-root would change from {old} to {new}")
    assert docker_daemon.data_root_problem(current, current) == ""
    # moved by hand first: fine
    (new / "swarm").mkdir()
    (new / "swarm" / "state.json").write_text("{}")
    assert docker_daemon.data_root_problem(current, {"data-root": str(new)}) == ""
    # a fresh engine's skeleton is no data
    fresh = tmp_path / "fresh"
    for sub in ("swarm", "containers", "image/overlay2/imagedb/content/sha256"):
        (fresh / sub).mkdir(parents=True)
    (fresh / "volumes").mkdir()
    (fresh / "volumes" / "metadata.db").write_bytes(b"")
    assert docker_daemon.data_root_problem({"data-root": str(fresh)}, {"data-root": "/x"}) == ""
