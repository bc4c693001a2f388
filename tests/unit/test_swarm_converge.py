"""The swarm convergence (``armswarm_core.swarm.converge``) against a simulated cluster.

The fake transport plays the master, the minions and their engines: facts, node lists, init,
joins that open their sealed token with the minion's own key (real Salt keys, real sealing),
role/label/availability updates with the engine's quorum check, leaves, removals, minions
that do not answer and calls that fail. Assertions look at the calls it recorded and at the
simulated cluster afterwards.
"""

import copy
import fnmatch
import hashlib
import secrets
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import pytest
import salt.config
import salt.crypt
import salt.output
from armswarm_core import ArmswarmError
from armswarm_core.swarm import converge, join_tokens, swarm_engine, unlock_keys

pytestmark = pytest.mark.unit

PORT = 2377
MANAGERS = ["m1", "m2", "m3"]
WORKERS = ["w1", "w2"]
ALL = [*MANAGERS, *WORKERS]
LAYOUT = {"managers": MANAGERS, "workers": WORKERS}
# What changes a node or the swarm, from docker_swarm's docstrings (test=True calls none).
CHANGING = {
    "docker_swarm.rotate_join_tokens",
    "docker_swarm.init",
    "docker_swarm.join",
    "docker_swarm.leave",
    "docker_swarm.update_node",
    "docker_swarm.update_nodes",
    "docker_swarm.set_role",
    "docker_swarm.remove_node",
    "docker_swarm.autolock",
    "docker_swarm.unlock",
}
BOARDS = {"m1": "hc1", "m2": "rockpro64", "m3": "rockpro64"}

_KEYS: dict = {}


def minion_keys(minion_id):
    """A Salt minion key pair (made once per id: 2048-bit RSA takes a moment)."""
    if minion_id not in _KEYS:
        _KEYS[minion_id] = salt.crypt.gen_keys(2048)
    return _KEYS[minion_id]


class Minion:
    def __init__(self, minion_id, number):
        self.id = minion_id
        self.addr = f"10.0.0.{10 + number}"  # what it advertises
        self.ip4 = self.addr
        self.ip6 = None
        self.private, self.public = minion_keys(minion_id)
        self.board = BOARDS.get(minion_id, "sopine")
        self.state = "inactive"  # the engine's LocalNodeState
        self.node_id = None
        self.cluster_id = None  # set for a node in a swarm that is not the simulated one
        self.up = True  # the minion answers
        self.lost = 0  # the next asks for facts it runs and loses the return of (stalled)
        self.engine = "20.10.24+dfsg1"  # Debian 12's docker.io
        self.join_addr = None  # what docker-state.json keeps as RemoteAddr
        self.locked = False  # restarted with autolock on: waits for the unlock key


def engine_addr(addr):
    """How the engine writes a manager's address (ManagerStatus.Addr): IPv6 in brackets."""
    return f"[{addr}]:{PORT}" if ":" in addr else f"{addr}:{PORT}"


def listen_on(minion):
    """What the engine must listen on to take the swarm traffic to its advertised address."""
    return f"[::]:{PORT}" if ":" in minion.addr else f"0.0.0.0:{PORT}"


class FakeCluster:
    """Minions, their engines and the one swarm they can form; also the transport."""

    def __init__(self, names=ALL):
        self.minions = {}
        self.cluster_id = None
        self.tokens = {}  # role -> plaintext join token
        self.nodes = {}  # node id -> the node as docker_swarm.nodes returns it
        self.calls = []  # (target, fun, arg, kwarg)
        self.events = []  # (step, data)
        self.expanded = []
        self.key_requests = []
        self.fail = {}  # (minion, fun) -> error message
        self.joined_with = {}  # minion -> availability at join
        self.init_options = None
        self.cluster_spec = {
            "task_history_retention_limit": 5,
            "dispatcher_heartbeat_period": 5,
            "node_cert_expiry": 7776000,
            "subnet_size": 24,
            "default_addr_pool": ["10.0.0.0/8"],
            "data_path_port": 4789,
        }
        self.settling = set()  # node ids whose role change raft has not followed yet
        self.never_settles = set()  # hostnames whose role change never settles
        self.now = 1000.0  # the transport's clock: an ask that misses a minion waits it out
        self.serial = 0
        self.lock = threading.RLock()
        self.autolock = False
        self.unlock_key = None  # plaintext, as the engine holds it
        # The master: its own key pair and the directory unlock keys are kept in.
        self.master_private, self.master_public = minion_keys("salt-master")
        self.master_dir = Path(tempfile.mkdtemp(prefix="fake-master-"))
        weakref.finalize(self, shutil.rmtree, self.master_dir, True)
        (self.master_dir / "pki").mkdir()
        (self.master_dir / "pki" / "master.pem").write_text(self.master_private)
        for name in names:
            self.add_minion(name)

    # -- the world ---------------------------------------------------------------------------
    def add_minion(self, name):
        self.minions[name] = Minion(name, len(self.minions) + 1)
        return self.minions[name]

    def managers(self):
        return [n for n in self.nodes.values() if n["role"] == "manager"]

    def has_quorum(self):
        managers = self.managers()
        reachable = [n for n in managers if n["reachability"] == "reachable"]
        return bool(managers) and len(reachable) >= swarm_engine.quorum(len(managers))

    def entry(self, minion):
        return self.nodes.get(minion.node_id) if minion.cluster_id is None else None

    def swarm_state(self, minion):
        if minion.locked:
            # What docker info says of a locked manager: no node, no cluster.
            return {
                "state": "locked",
                "node_id": None,
                "node_addr": minion.addr,
                "is_manager": False,
                "cluster_id": None,
                "managers": None,
                "nodes": None,
                "remote_managers": [],
                "error": "swarm is encrypted and needs to be unlocked before it can be used",
                "engine_version": minion.engine,
            }
        node = self.entry(minion)
        ours = node is not None and minion.state == "active"
        manager = ours and node["role"] == "manager"
        if minion.cluster_id is not None:  # in another swarm
            cluster_id, manager = minion.cluster_id, True
        else:
            cluster_id = self.cluster_id if manager and self.has_quorum() else None
        return {
            "state": minion.state,
            "node_id": minion.node_id,
            "node_addr": minion.addr if minion.state == "active" else None,
            "is_manager": manager,
            "cluster_id": cluster_id,
            "managers": len(self.managers()) if manager else None,
            "nodes": len(self.nodes) if manager else None,
            "remote_managers": [],
            "error": None,
            "engine_version": minion.engine,
        }

    def view(self):
        """The swarm as its node list says: hostname -> (role, state, availability)."""
        return {
            n["hostname"]: (n["role"], n["state"], n["availability"])
            for n in self.nodes.values()
            if n["state"] != "down"
        }

    def node_of(self, name):
        return self.nodes[self.minions[name].node_id]

    def leave_by_hand(self, name):
        """``docker swarm leave --force`` on the node: its entry stays, down."""
        minion = self.minions[name]
        node = self.nodes[minion.node_id]
        node["state"] = "down"
        if node["role"] == "manager":
            node["reachability"], node["leader"] = "unreachable", False
        minion.state, minion.node_id = "inactive", None

    def power_off(self, name):
        minion = self.minions[name]
        minion.up = False
        node = self.entry(minion)
        if node:
            node["state"] = "down"
            if node["role"] == "manager":
                node["reachability"], node["leader"] = "unreachable", False

    def restart_engine(self, name):
        """dockerd restarted: with autolock a manager comes back locked (unreachable)."""
        minion = self.minions[name]
        node = self.entry(minion)
        if self.autolock and node and node["role"] == "manager":
            minion.locked = True
            node["state"], node["reachability"], node["leader"] = "down", "unreachable", False
            ready = [n for n in self.managers() if n["state"] == "ready"]
            if ready and not any(n["leader"] for n in self.managers()):
                ready[0]["leader"] = True

    def changing_calls(self):
        return [(t, f) for t, f, _, _ in self.calls if f in CHANGING]

    # -- the engines (docker_swarm execution functions) --------------------------------------
    def _new_id(self, name):
        self.serial += 1
        return hashlib.sha1(f"{name}-{self.serial}".encode()).hexdigest()[:25]

    def _require_manager(self, minion):
        node = self.entry(minion)
        if node is None or node["role"] != "manager" or minion.state != "active":
            raise ArmswarmError("This node is not a swarm manager.")
        if not self.has_quorum():
            raise ArmswarmError("rpc error: The swarm does not have a leader.")

    def _find(self, name):
        matches = [n for n in self.nodes.values() if name in (n["id"], n["hostname"])]
        if len(matches) != 1:
            raise ArmswarmError(f"no single swarm node named {name!r}")
        return matches[0]

    def fun_facts(self, minion):
        return {
            "id": minion.id,
            "hostname": minion.id,
            "swarm": self.swarm_state(minion),
            "join_addr": minion.join_addr,
            "interfaces": {"eth0": [minion.ip4]},
            "interfaces6": {"eth0": [minion.ip6]} if minion.ip6 else {},
            "default_interface": "eth0",
            "armnode": {"board": minion.board, "arch": "aarch64", "cpus": 4, "big_cores": []},
            "num_cpus": 4,
            "cpuarch": "aarch64",
        }

    def fun_cluster_settings(self, minion):
        self._require_manager(minion)
        return {**self.cluster_spec, "autolock": self.autolock}

    def fun_state(self, minion):
        return self.swarm_state(minion)

    def fun_autolock(self, minion, enabled=True):
        self._require_manager(minion)
        assert isinstance(enabled, bool)
        changed = enabled != self.autolock
        if changed:
            # As swarmkit: a new key each time autolock goes on, none while it is off.
            self.autolock = enabled
            self.unlock_key = f"SWMKEY-1-{secrets.token_hex(16)}" if enabled else None
        return {"changed": changed, "autolock": enabled}

    def fun_unlock_key(self, minion):
        self._require_manager(minion)
        if not self.unlock_key:
            return {"available": False, "sealed": None}
        sealed = join_tokens.seal(self.unlock_key, self.master_public, join_tokens.MASTER)
        return {"available": True, "sealed": sealed}

    def fun_unlock(self, minion, sealed_key=None):
        assert join_tokens.is_sealed(sealed_key), "an unlock key travelled in plaintext"
        if not minion.locked:
            raise ArmswarmError("This node is not part of a swarm or is not locked")
        if join_tokens.unseal(sealed_key, minion.private, minion.id) != self.unlock_key:
            raise ArmswarmError("unlocking the swarm failed (wrong key?)")
        minion.locked = False
        node = self.entry(minion)
        node["state"], node["reachability"] = "ready", "reachable"
        return self.swarm_state(minion)

    def fun_update_cluster(self, minion, settings):
        self._require_manager(minion)
        changes = {k: {"old": self.cluster_spec.get(k), "new": v} for k, v in settings.items()}
        self.cluster_spec.update(settings)
        return changes

    def fun_init(self, minion, advertise_addr=None, listen_addr=None, **options):
        if minion.state != "inactive":
            return {"changed": False, "state": self.swarm_state(minion)}
        assert advertise_addr == minion.addr and listen_addr == listen_on(minion)
        assert self.cluster_id is None, "a second swarm initialised"
        self.init_options = options
        self.cluster_spec.update(
            {k: v for k, v in options.items() if k in ("default_addr_pool", "subnet_size")}
        )
        self.cluster_id = secrets.token_hex(12)
        self.tokens = {
            role: f"SWMTKN-1-{secrets.token_hex(20)}-{role}" for role in ("manager", "worker")
        }
        self._add_node(minion, "manager")
        return {"changed": True, "state": self.swarm_state(minion)}

    def _add_node(self, minion, role):
        minion.state, minion.node_id = "active", self._new_id(minion.id)
        self.nodes[minion.node_id] = {
            "id": minion.node_id,
            "hostname": minion.id,
            "role": role,
            "availability": "active",
            "labels": {},
            "state": "ready",
            "addr": minion.addr,
            "leader": not self.managers(),
            "reachability": "reachable" if role == "manager" else None,
            "manager_addr": engine_addr(minion.addr) if role == "manager" else None,
            "engine_labels": {},
            "version": 1,
        }

    def fun_sealed_join_tokens(self, minion, role, recipients):
        self._require_manager(minion)
        return {m: join_tokens.seal(self.tokens[role], pub, m) for m, pub in recipients.items()}

    def fun_join(self, minion, remote_addrs, sealed_token=None, advertise_addr=None, **kwargs):
        if minion.state != "inactive":
            return {"changed": False, "state": self.swarm_state(minion)}
        assert join_tokens.is_sealed(sealed_token), "a join token travelled in plaintext"
        token = join_tokens.unseal(sealed_token, minion.private, minion.id)
        first = remote_addrs.split(",")[0]
        # The engine tries the first address only: it must be a manager now.
        if first not in {n["manager_addr"] for n in self.managers() if n["state"] == "ready"}:
            raise ArmswarmError(f"could not connect to {first}")
        availability = kwargs.pop("availability", None)
        assert advertise_addr == minion.addr and kwargs == {"listen_addr": listen_on(minion)}
        (role,) = [r for r, t in self.tokens.items() if t == token]
        self._add_node(minion, role)
        minion.join_addr = first
        if availability:
            self.nodes[minion.node_id]["availability"] = availability
        # What the node had from its first moment in the swarm.
        self.joined_with[minion.id] = self.nodes[minion.node_id]["availability"]
        return {"changed": True, "state": self.swarm_state(minion)}

    def fun_leave(self, minion, force=False, timeout=60):
        if minion.state == "inactive":
            return {"changed": False}
        node = self.entry(minion)
        if node is not None:
            node["state"] = "down"
        minion.state, minion.node_id, minion.cluster_id = "inactive", None, None
        minion.join_addr = None
        return {"changed": True, "state": self.swarm_state(minion)}

    def fun_nodes(self, minion):
        self._require_manager(minion)
        return sorted(copy.deepcopy(list(self.nodes.values())), key=lambda n: n["hostname"])

    def fun_update_node(self, minion, name, **settings):
        self._require_manager(minion)
        node = self._find(name)
        changes = swarm_engine.node_changes(node, **settings)
        if changes.get("role", {}).get("new") == "worker":
            swarm_engine.check_demotion(list(self.nodes.values()), node)
        for key, change in changes.items():
            node[key] = change["new"]
        if "role" in changes:
            manager = node["role"] == "manager"
            # As the engine does: a promoted node joins raft a moment later ("unknown" until
            # then); a demoted one leaves it a moment later.
            node["reachability"] = "unknown" if manager else node["reachability"]
            node["manager_addr"] = engine_addr(node["addr"]) if manager else None
            self.settling.add(node["id"])
            if manager and self._stuck_on_join_addr(node):
                self.never_settles.add(node["hostname"])
        return changes

    def _stuck_on_join_addr(self, node):
        """moby#47854 (engines before 26.1.4): a promoted node whose join address is no
        manager any more restarts its swarm node through it, again and again."""
        minion = self.minions[node["hostname"]]
        if not minion.join_addr or not swarm_engine.promotion_needs_live_join_addr(minion.engine):
            return False
        live = {
            n["manager_addr"]
            for n in self.managers()
            if n["reachability"] == "reachable" and n["state"] == "ready"
        }
        return minion.join_addr not in live

    def fun_rotate_join_tokens(self, minion, worker=True, manager=False):
        self._require_manager(minion)
        for role, flag in (("worker", worker), ("manager", manager)):
            if flag:
                self.tokens[role] = f"SWMTKN-1-{secrets.token_hex(20)}-{role}"
        return {"rotated": [r for r, f in (("worker", worker), ("manager", manager)) if f]}

    def _settle(self, node):
        if node["id"] in self.settling and node["hostname"] not in self.never_settles:
            self.settling.discard(node["id"])
            manager = node["role"] == "manager"
            node["reachability"] = "reachable" if manager and node["state"] == "ready" else None
            if not manager:
                node["leader"] = False
                if not any(n["leader"] for n in self.managers()):
                    self.managers()[0]["leader"] = True

    def fun_set_role(self, minion, name, role, timeout=None):
        """The engine's set_role: update, then wait until raft follows (or time out)."""
        assert timeout == 60
        self._require_manager(minion)
        node = self._find(name)
        changes = self.fun_update_node(minion, name, role=role)
        self._settle(node)
        if node["id"] in self.settling:
            raise ArmswarmError(f"{role}: {node['hostname']}: not settled after {timeout} s")
        return {"changed": bool(changes), "node": node["hostname"], "waited": 1.0}

    def fun_update_nodes(self, minion, batch):
        return {name: self.fun_update_node(minion, name, **s) for name, s in batch.items()}

    def fun_remove_node(self, minion, name, force=False):
        self._require_manager(minion)
        node = self._find(name)
        if node["state"] != "down" and not force:
            raise ArmswarmError(f"node {name} is not down")
        if node["role"] == "manager":
            self.fun_update_node(minion, node["id"], role="worker")
        del self.nodes[node["id"]]
        return {"removed": node["hostname"], "id": node["id"]}

    def _call(self, target, fun, arg, kwarg):
        minion = self.minions[target]
        if (target, fun) in self.fail:
            raise ArmswarmError(self.fail[(target, fun)])
        return getattr(self, "fun_" + fun.split(".", 1)[1])(minion, *arg, **kwarg)

    # -- the transport -----------------------------------------------------------------------
    def many(self, targets, fun, arg=(), kwarg=None, timeout=None):
        with self.lock:
            self.calls.append(("+".join(targets), fun, list(arg), dict(kwarg or {})))
            out = {}
            for target in targets:
                minion = self.minions.get(target)
                if minion is None or not minion.up:
                    continue
                if fun == "docker_swarm.facts" and minion.lost:
                    minion.lost -= 1
                    continue
                try:
                    out[target] = self._call(target, fun, list(arg), dict(kwarg or {}))
                except ArmswarmError as exc:
                    out[target] = exc
            if set(targets) - set(out):
                self.now += timeout  # Salt waits the timeout out for the missing
            return out

    def clock(self):
        return self.now

    def one(self, target, fun, arg=(), kwarg=None, timeout=None):
        with self.lock:
            self.calls.append((target, fun, list(arg), dict(kwarg or {})))
            if target not in self.minions or not self.minions[target].up:
                raise ArmswarmError(f"{target} did not answer {fun}")
            try:
                return copy.deepcopy(self._call(target, fun, list(arg), dict(kwarg or {})))
            except ArmswarmError as exc:
                raise ArmswarmError(f"{target}: {fun} failed: {exc}") from None

    def fork(self):
        return self

    def accepted(self):
        return set(self.minions)

    def public_keys(self, ids):
        self.key_requests.append(list(ids))
        return {m: self.minions[m].public for m in ids}

    def expand(self, tgt, tgt_type):
        self.expanded.append((tgt, tgt_type))
        assert tgt_type == "glob"
        return [m for m in self.minions if fnmatch.fnmatch(m, tgt)]

    def progress(self, step, **data):
        self.events.append((step, data))

    def key_store(self):
        return unlock_keys.Store(str(self.master_dir / "cache"), str(self.master_dir / "pki"))


def converge_run(cluster, conf=LAYOUT, **kwargs):
    return converge.run("armswarm:swarm", copy.deepcopy(conf), cluster, **kwargs)


def formed(names=ALL, conf=LAYOUT):
    cluster = FakeCluster(names)
    ret = converge_run(cluster, conf)
    assert ret["result"] is True, ret["comment"]
    cluster.calls.clear()
    cluster.events.clear()
    cluster.key_requests.clear()
    return cluster


def assert_no_plaintext_token(cluster, ret):
    assert cluster.tokens, "no swarm was formed"
    for token in cluster.tokens.values():
        for where in (ret, cluster.calls, cluster.events):
            assert token not in repr(where)


# -- forming, growing, repairing ---------------------------------------------------------------
def test_fresh_cluster_init_on_first_manager_then_sealed_joins():
    cluster = FakeCluster()
    ret = converge_run(cluster)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["init"] == "m1"
    assert ret["changes"]["join_managers"] == ["m2", "m3"]
    assert sorted(ret["changes"]["join_workers"]) == ["w1", "w2"]
    assert ret["comment"].startswith("The swarm was changed.")
    assert "leader" in ret["comment"].splitlines()[2]  # the table: managers first, m1 leads

    changing = cluster.changing_calls()
    assert changing[0] == ("m1", "docker_swarm.init")
    assert changing[1:3] == [("m2", "docker_swarm.join"), ("m3", "docker_swarm.join")]
    assert sorted(changing[3:5]) == [("w1", "docker_swarm.join"), ("w2", "docker_swarm.join")]
    assert changing[5:] == [("m1", "docker_swarm.update_nodes")]
    # Each manager's token was sealed for that manager alone, the workers' in one call.
    assert cluster.key_requests == [["m2"], ["m3"], ["w1", "w2"]]
    token_calls = [c for c in cluster.calls if c[1] == "docker_swarm.sealed_join_tokens"]
    assert [(t, a[0], sorted(a[1])) for t, _, a, _ in token_calls] == [
        ("m1", "manager", ["m2"]),
        ("m1", "manager", ["m3"]),
        ("m1", "worker", ["w1", "w2"]),
    ]
    assert_no_plaintext_token(cluster, ret)

    assert cluster.view() == {
        "m1": ("manager", "ready", "active"),
        "m2": ("manager", "ready", "active"),
        "m3": ("manager", "ready", "active"),
        "w1": ("worker", "ready", "active"),
        "w2": ("worker", "ready", "active"),
    }
    assert cluster.node_of("w1")["labels"]["armswarm.minion"] == "w1"
    assert cluster.node_of("m1")["labels"]["armswarm.board"] == "hc1"
    assert cluster.node_of("w2")["labels"]["armswarm.board"] == "sopine"
    assert [s for s, _ in cluster.events][0] == "facts"
    assert cluster.events[-1] == ("done", {"result": True})


def test_second_run_changes_nothing():
    cluster = formed()
    before = copy.deepcopy(cluster.nodes)
    for test in (False, True):
        ret = converge_run(cluster, test=test)
        assert ret["result"] is True and ret["changes"] == {}, ret["comment"]
        assert ret["comment"].startswith("The swarm matches the layout.\nhostname")
    assert cluster.changing_calls() == []
    assert cluster.nodes == before


def test_test_mode_predicts_what_a_run_then_does():
    cluster = FakeCluster()
    predicted = converge_run(cluster, test=True)
    assert predicted["result"] is None
    assert predicted["comment"] == "The swarm would be changed."
    assert cluster.changing_calls() == []
    assert not any(c[1] == "docker_swarm.sealed_join_tokens" for c in cluster.calls)
    assert cluster.nodes == {} and cluster.cluster_id is None

    done = converge_run(cluster)
    assert done["result"] is True
    assert predicted["changes"] == done["changes"]
    assert set(done["changes"]) == {"init", "join_managers", "join_workers", "labels"}


def test_grow_a_new_worker_joins():
    cluster = formed()
    cluster.add_minion("w3")
    conf = {**LAYOUT, "workers": [*WORKERS, "w3"]}
    ret = converge_run(cluster, conf)

    assert ret["result"] is True, ret["comment"]
    assert set(ret["changes"]) == {"join_workers", "labels"}
    assert ret["changes"]["join_workers"] == ["w3"] and list(ret["changes"]["labels"]) == ["w3"]
    assert cluster.changing_calls() == [
        ("w3", "docker_swarm.join"),
        ("m1", "docker_swarm.update_nodes"),
    ]
    (join,) = [c for c in cluster.calls if c[1] == "docker_swarm.join"]
    remote = join[2][0].split(",")
    assert remote[0] == f"{cluster.minions['m1'].addr}:{PORT}"
    assert sorted(remote) == sorted(f"{cluster.minions[m].addr}:{PORT}" for m in MANAGERS)
    assert cluster.view()["w3"] == ("worker", "ready", "active")
    assert cluster.node_of("w3")["labels"]["armswarm.minion"] == "w3"
    assert_no_plaintext_token(cluster, ret)


def test_a_swarm_on_ipv6_addresses_from_pillar_listens_and_joins_on_ipv6():
    cluster = FakeCluster()
    for number, minion in enumerate(cluster.minions.values()):
        minion.ip6 = f"fd00::{10 + number:x}"
        minion.addr = minion.ip6
    nodes = {m.id: {"advertise_addr": f"[{m.ip6.upper()}]:2377"} for m in cluster.minions.values()}
    conf = {**LAYOUT, "nodes": nodes}
    ret = converge_run(cluster, conf)
    assert ret["result"] is True, ret["comment"]
    joins = {c[0]: c[2][0].split(",") for c in cluster.calls if c[1] == "docker_swarm.join"}
    assert sorted(joins) == ["m2", "m3", "w1", "w2"]
    # The first join goes through m1, each later one through the managers that joined before.
    assert joins["m2"] == ["[fd00::a]:2377"]
    assert joins["w1"][0] == "[fd00::a]:2377" and "[fd00::c]:2377" in joins["w1"]
    assert {n["hostname"]: n["addr"] for n in cluster.nodes.values()} == {
        m.id: m.ip6 for m in cluster.minions.values()
    }
    assert converge_run(cluster, conf)["changes"] == {}
    # An IPv6 address the node does not have is refused before anything changes.
    nodes["w2"] = {"advertise_addr": "fd00::99"}
    cluster.calls.clear()
    ret = converge_run(cluster, conf)
    assert ret["result"] is False and "fd00::99 is not an address of w2" in ret["comment"]
    assert cluster.changing_calls() == []


def test_join_tokens_rotated_after_the_joins_when_asked():
    cluster = formed()
    used = dict(cluster.tokens)
    cluster.add_minion("w3")
    ret = converge_run(cluster, {**LAYOUT, "workers": [*WORKERS, "w3"], "rotate_join_tokens": True})
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["rotate_join_tokens"] == ["worker"]
    assert cluster.changing_calls()[:2] == [
        ("w3", "docker_swarm.join"),
        ("m1", "docker_swarm.rotate_join_tokens"),
    ]
    assert cluster.tokens["worker"] != used["worker"]  # the token w3 used joins nobody now
    assert cluster.tokens["manager"] == used["manager"]
    # nothing joined: nothing rotated
    again = converge_run(
        cluster, {**LAYOUT, "workers": [*WORKERS, "w3"], "rotate_join_tokens": True}
    )
    assert "rotate_join_tokens" not in again["changes"]
    # a string is not a boolean
    bad = converge_run(cluster, {**LAYOUT, "rotate_join_tokens": "true"})
    assert bad["result"] is False and "rotate_join_tokens" in bad["comment"]


@pytest.mark.parametrize(
    ("name", "role", "changed"),
    [("w1", "worker", "join_workers"), ("m3", "manager", "join_managers")],
)
def test_repair_a_node_that_left_rejoins_and_its_old_entry_goes(name, role, changed):
    cluster = formed()
    old_id = cluster.minions[name].node_id
    cluster.leave_by_hand(name)
    ret = converge_run(cluster)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"][changed] == [name]
    assert ret["changes"]["remove_stale"] == [f"{name} ({old_id[:12]})"]
    assert "init" not in ret["changes"]
    new_id = cluster.minions[name].node_id
    assert new_id != old_id and old_id not in cluster.nodes
    assert [n["hostname"] for n in cluster.nodes.values()].count(name) == 1
    assert cluster.view()[name] == (role, "ready", "active")
    assert cluster.node_of(name)["labels"]["armswarm.minion"] == name
    assert ("m1", "docker_swarm.remove_node", [old_id], {"force": True}) in cluster.calls
    # And the swarm is whole again: a further run has nothing to do.
    assert converge_run(cluster)["changes"] == {}


def test_layout_change_updates_labels_and_availability_in_one_call():
    cluster = formed()
    conf = {**LAYOUT, "nodes": {"w2": {"labels": {"pool": "db"}, "availability": "drain"}}}
    ret = converge_run(cluster, conf)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {
        "availability": {"w2": "active -> drain"},
        # Only what changes: the label and the list of labels armswarm set.
        "labels": {
            "w2": "pool=db armswarm.labels=armswarm.arch,armswarm.big-cores,armswarm.board,"
            "armswarm.cpus,armswarm.minion,pool"
        },
    }
    assert cluster.changing_calls() == [("m1", "docker_swarm.update_nodes")]
    assert cluster.node_of("w2")["labels"]["pool"] == "db"
    assert cluster.node_of("w2")["availability"] == "drain"
    assert cluster.node_of("w1")["availability"] == "active"


def test_targets_are_expanded_by_the_master():
    cluster = FakeCluster()
    conf = {
        "managers": {"tgt": "m*", "tgt_type": "glob"},
        "workers": {"tgt": "w*", "tgt_type": "glob"},
    }
    ret = converge_run(cluster, conf)
    assert ret["result"] is True, ret["comment"]
    assert cluster.expanded == [("m*", "glob"), ("w*", "glob")]
    assert ret["changes"]["init"] == "m1"
    assert sorted(cluster.view()) == ALL


# -- refusing ----------------------------------------------------------------------------------
def test_demotion_that_would_lose_quorum_is_refused_before_any_change():
    cluster = formed()
    cluster.power_off("m2")
    before = copy.deepcopy(cluster.nodes)
    conf = {"managers": ["m1", "m2"], "workers": ["m3", *WORKERS], "allow_even_managers": True}
    ret = converge_run(cluster, conf)

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert ret["comment"].startswith("Cannot converge the swarm, nothing changed:")
    assert "demoting m3 would leave 1 reachable of 2 managers, below quorum (2)" in ret["comment"]
    assert cluster.changing_calls() == []
    assert cluster.nodes == before


def test_a_minion_not_answering_is_left_alone_and_fails_the_run():
    cluster = FakeCluster()
    cluster.minions["w2"].up = False
    ret = converge_run(cluster)

    assert ret["result"] is False
    assert ret["changes"]["join_workers"] == ["w1"]
    assert "\nNot answering (left as they are): w2\n" in ret["comment"]
    assert "w2" not in cluster.view() and cluster.view()["w1"][0] == "worker"
    assert not any(target == "w2" for target, _ in cluster.changing_calls())
    assert ("facts", {"answered": ["m1", "m2", "m3", "w1"], "missing": ["w2"]}) in cluster.events

    cluster.minions["w2"].up = True
    again = converge_run(cluster)
    assert again["result"] is True and again["changes"]["join_workers"] == ["w2"]


def facts_asks(cluster):
    return [target for target, fun, _, _ in cluster.calls if fun == "docker_swarm.facts"]


def test_a_board_that_lost_the_ask_is_asked_again_within_answer_timeout():
    # A stalled board runs the job when it wakes but loses the return (its connection to the
    # master dropped), so only a new ask gets its answer.
    cluster = FakeCluster()
    cluster.minions["w2"].lost = 2
    ret = converge_run(cluster, {**LAYOUT, "answer_timeout": 120})

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["join_workers"] == ["w1", "w2"]
    assert facts_asks(cluster)[:3] == ["m1+m2+m3+w1+w2", "w2", "w2"]
    again = [d for step, d in cluster.events if step == "facts_again"]
    assert again == [
        {"missing": ["w2"], "seconds_left": 100},
        {"missing": ["w2"], "seconds_left": 80},
    ]


def test_with_the_default_answer_timeout_a_board_is_asked_once():
    cluster = formed()
    cluster.minions["w2"].lost = 1
    ret = converge_run(cluster, test=True)

    assert ret["result"] is False
    assert "\nNot answering (left as they are): w2\n" in ret["comment"]
    assert facts_asks(cluster) == ["m1+m2+m3+w1+w2"]
    assert not any(step == "facts_again" for step, _ in cluster.events)


def test_a_board_that_never_answers_is_asked_until_answer_timeout_is_spent():
    cluster = formed()
    cluster.minions["w2"].up = False
    begun = cluster.now
    ret = converge_run(cluster, {**LAYOUT, "answer_timeout": 50}, test=True)

    assert ret["result"] is False and "Not answering (left as they are): w2" in ret["comment"]
    assert facts_asks(cluster) == ["m1+m2+m3+w1+w2", "w2", "w2"]
    assert cluster.now - begun == 50  # asks of 20, 20 and the 10 s left


def test_a_board_whose_facts_fail_is_not_asked_again():
    cluster = formed()
    cluster.fail[("w2", "docker_swarm.facts")] = "Cannot connect to the Docker daemon"
    ret = converge_run(cluster, {**LAYOUT, "answer_timeout": 120}, test=True)

    assert ret["result"] is False and "Not answering (left as they are): w2" in ret["comment"]
    assert facts_asks(cluster) == ["m1+m2+m3+w1+w2"]


def test_a_manager_not_answering_blocks_a_new_swarm():
    cluster = FakeCluster()
    cluster.minions["m3"].up = False
    ret = converge_run(cluster)

    assert ret["result"] is False and ret["changes"] == {}
    assert "cannot tell whether m3 (not answering) are in a swarm" in ret["comment"]
    assert cluster.changing_calls() == [] and cluster.cluster_id is None


def test_a_failing_join_reports_what_was_done_before_it():
    cluster = FakeCluster()
    cluster.fail[("w2", "docker_swarm.join")] = "no route to host"
    ret = converge_run(cluster)

    assert ret["result"] is False
    assert ret["comment"] == "w2: docker_swarm.join failed: no route to host"
    assert ret["changes"] == {"init": "m1", "join_managers": ["m2", "m3"], "join_workers": ["w1"]}
    assert sorted(cluster.view()) == ["m1", "m2", "m3", "w1"]
    assert ("m1", "docker_swarm.update_nodes") not in cluster.changing_calls()


def test_a_node_in_another_swarm_is_taken_over_only_with_force():
    cluster = formed()
    cluster.add_minion("w3")
    stranger = cluster.minions["w3"]
    stranger.state, stranger.node_id, stranger.cluster_id = "active", "x" * 25, "f" * 25
    conf = {**LAYOUT, "workers": [*WORKERS, "w3"]}

    refused = converge_run(cluster, conf)
    assert refused["result"] is False and refused["changes"] == {}
    assert "w3: already in another swarm (cluster ffffffffffff)" in refused["comment"]
    assert cluster.changing_calls() == []

    taken = converge_run(cluster, conf, force=True)
    assert taken["result"] is True, taken["comment"]
    assert taken["changes"]["leave"] == ["w3"] and taken["changes"]["join_workers"] == ["w3"]
    assert cluster.changing_calls()[:2] == [
        ("w3", "docker_swarm.leave"),
        ("w3", "docker_swarm.join"),
    ]
    assert cluster.view()["w3"] == ("worker", "ready", "active")


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"managers": ["m1", "m2"], "workers": WORKERS}, "armswarm:swarm:managers: 2 managers"),
        ({**LAYOUT, "workers": [*WORKERS, "ghost"]}, "ghost is not a known minion"),
        (
            {**LAYOUT, "nodes": {"w1": {"availability": "off"}}},
            "armswarm:swarm:nodes:w1:availability",
        ),
        ({**LAYOUT, "prune": "maybe"}, "armswarm:swarm:prune: must be true or false"),
        ({**LAYOUT, "force": "false"}, "armswarm:swarm:force: must be true or false"),
        (
            {**LAYOUT, "workers": {"tgt": "wx*", "tgt_type": "glob"}, "prune": True},
            "armswarm:swarm:workers: the target 'wx*' (glob) matches no minion, and prune is on",
        ),
        ({**LAYOUT, "workers": ["m3", *WORKERS]}, "m3 listed as manager and as worker"),
        (
            {**LAYOUT, "cluster": {"node_cert_expiry": 60}},
            "armswarm:swarm:cluster:node_cert_expiry: must be a whole number of seconds, "
            "at least 3600",
        ),
    ],
)
def test_a_bad_layout_is_refused_before_any_minion_call(conf, message):
    cluster = formed()
    before = copy.deepcopy(cluster.nodes)
    ret = converge_run(cluster, conf)

    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"].startswith("Invalid swarm layout, nothing changed:\n")
    assert message in ret["comment"]
    assert cluster.calls == [] and cluster.key_requests == [] and cluster.events == []
    assert cluster.nodes == before


def test_a_missing_layout_is_refused():
    cluster = FakeCluster()
    ret = converge_run(cluster, None)
    assert ret == {
        "name": "armswarm:swarm",
        "changes": {},
        "result": False,
        "comment": "pillar armswarm:swarm is missing or not a mapping",
    }
    assert cluster.calls == []


def test_a_force_argument_that_is_not_a_boolean_is_refused_before_any_call():
    # bool("false") is True: every node of another swarm would be made to leave it.
    cluster = FakeCluster()
    ret = converge_run(cluster, LAYOUT, force="false")
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == "force: must be true or false, not a string; nothing changed"
    assert cluster.calls == [] and cluster.events == []


# -- moving the manager role -------------------------------------------------------------------
MOVED = {"managers": ["m3", "w1", "w2"], "workers": ["m1", "m2"]}


def managers_of(cluster):
    return sorted(n["hostname"] for n in cluster.managers() if n["state"] == "ready")


def test_moving_the_manager_role_promotes_waits_then_demotes_in_the_same_cluster():
    cluster = formed()
    cluster_id = cluster.cluster_id
    predicted = converge_run(cluster, MOVED, test=True)
    assert predicted["result"] is None and cluster.changing_calls() == []
    ret = converge_run(cluster, MOVED)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == predicted["changes"]
    assert ret["changes"]["promote"] == ["w1", "w2"] and ret["changes"]["demote"] == ["m1", "m2"]
    # Each promotion settled (reachable) before the next step; demotions after all of them.
    roles = [(a[1], c[0]) for c in cluster.calls if c[1] == "docker_swarm.set_role" for a in [c[2]]]
    assert [r for r, _ in roles] == ["manager", "manager", "worker", "worker"]
    assert cluster.cluster_id == cluster_id and cluster.settling == set()
    assert managers_of(cluster) == ["m3", "w1", "w2"]
    assert all(n["reachability"] == "reachable" for n in cluster.managers())
    assert sorted(cluster.view()) == ALL
    again = converge_run(cluster, MOVED)
    assert again["result"] is True and again["changes"] == {}, again["comment"]

    # And back: m3 is the manager the run talks through the whole time.
    back = converge_run(cluster, LAYOUT)
    assert back["result"] is True, back["comment"]
    assert back["changes"]["promote"] == ["m1", "m2"] and back["changes"]["demote"] == ["w1", "w2"]
    assert managers_of(cluster) == MANAGERS and cluster.cluster_id == cluster_id
    assert converge_run(cluster, LAYOUT)["changes"] == {}


def test_a_stale_join_address_on_an_old_engine_rejoins_as_manager_instead_of_hanging():
    cluster = formed()
    cluster_id = cluster.cluster_id
    assert converge_run(cluster, MOVED)["result"] is True
    # m2 joined through m1, which is a worker now: a promotion would never settle on 20.10.
    assert cluster.minions["m2"].join_addr == f"{cluster.minions['m1'].addr}:{PORT}"
    moved = {"managers": ["m2", "m3", "w1"], "workers": ["m1", "w2"]}
    old_id = cluster.minions["m2"].node_id
    labels = dict(cluster.node_of("m2")["labels"])
    cluster.calls.clear()
    predicted = converge_run(cluster, moved, test=True)
    assert predicted["result"] is None and cluster.changing_calls() == []
    assert predicted["changes"]["rejoin_managers"] == ["m2"]
    assert "promote" not in predicted["changes"] and predicted["changes"]["demote"] == ["w2"]
    ret = converge_run(cluster, moved)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == predicted["changes"]
    assert managers_of(cluster) == ["m2", "m3", "w1"] and cluster.cluster_id == cluster_id
    assert all(n["reachability"] == "reachable" for n in cluster.managers())
    assert old_id not in cluster.nodes  # the old entry went
    assert cluster.node_of("m2")["labels"] == labels  # the new one got its labels back
    # It rejoined through a node that stays a manager, so the next move works too.
    assert cluster.minions["m2"].join_addr != f"{cluster.minions['w2'].addr}:{PORT}"
    assert converge_run(cluster, moved)["changes"] == {}
    assert converge_run(cluster, moved, test=True)["changes"] == {}
    back = converge_run(cluster, LAYOUT)
    assert back["result"] is True, back["comment"]
    assert managers_of(cluster) == MANAGERS and cluster.cluster_id == cluster_id


def test_a_rejoin_whose_join_fails_says_the_node_left():
    cluster = formed()
    assert converge_run(cluster, MOVED)["result"] is True
    moved = {"managers": ["m2", "m3", "w1"], "workers": ["m1", "w2"]}
    cluster.fail[("m2", "docker_swarm.join")] = "could not connect"
    ret = converge_run(cluster, moved)
    assert ret["result"] is False
    assert ret["changes"]["left_to_rejoin"] == ["m2"], ret["changes"]
    assert "could not connect" in ret["comment"]
    # Nothing after it: no demotion met a missing manager.
    assert managers_of(cluster) == ["m3", "w1", "w2"]
    del cluster.fail[("m2", "docker_swarm.join")]
    again = converge_run(cluster, moved)  # the node is out of the swarm now: it joins
    assert again["result"] is True, again["comment"]
    assert managers_of(cluster) == ["m2", "m3", "w1"]


def test_promotions_are_ordered_so_each_joins_through_a_live_manager():
    cluster = formed()
    assert converge_run(cluster, MOVED)["result"] is True
    # Back with m2 listed first: m2 joined through m1, which is promoted before it.
    back = {"managers": ["m2", "m1", "m3"], "workers": WORKERS}
    ret = converge_run(cluster, back)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["promote"] == ["m1", "m2"] and "rejoin_managers" not in ret["changes"]
    assert managers_of(cluster) == MANAGERS


def test_a_fixed_engine_is_promoted_in_place_whatever_its_join_address():
    cluster = formed()
    for minion in cluster.minions.values():
        minion.engine = "26.1.5+dfsg1"
    assert converge_run(cluster, MOVED)["result"] is True
    moved = {"managers": ["m2", "m3", "w1"], "workers": ["m1", "w2"]}
    old_id = cluster.minions["m2"].node_id
    ret = converge_run(cluster, moved)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["promote"] == ["m2"] and "rejoin_managers" not in ret["changes"]
    assert cluster.minions["m2"].node_id == old_id


def test_the_whole_manager_role_moves_to_nodes_that_are_no_managers_yet():
    one = {"managers": ["m1"], "workers": ["m2", "m3", *WORKERS]}
    cluster = formed(conf=one)
    cluster_id = cluster.cluster_id
    moved = {"managers": ["w1"], "workers": ["m1", "m2", "m3", "w2"]}
    ret = converge_run(cluster, moved)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["promote"] == ["w1"] and ret["changes"]["demote"] == ["m1"]
    set_role = [c for c in cluster.calls if c[1] == "docker_swarm.set_role"]
    # Promoted through the old manager, demoted through the new one.
    assert [(c[0], c[2][1]) for c in set_role] == [("m1", "manager"), ("w1", "worker")]
    assert managers_of(cluster) == ["w1"] and cluster.cluster_id == cluster_id
    assert converge_run(cluster, moved)["changes"] == {}


def test_a_promotion_that_does_not_settle_stops_before_any_demotion():
    cluster = formed()
    cluster.never_settles.add("w1")
    ret = converge_run(cluster, MOVED)

    assert ret["result"] is False
    assert "not settled" in ret["comment"] and "w1" in ret["comment"]
    assert not any(c[1] == "docker_swarm.set_role" and c[2][1] == "worker" for c in cluster.calls)
    assert {"m1", "m2", "m3"} <= set(managers_of(cluster))


def test_a_node_joins_with_its_availability_from_the_first_moment():
    conf = {**LAYOUT, "nodes": {"w2": {"availability": "drain"}, "m3": {"availability": "pause"}}}
    cluster = FakeCluster()
    predicted = converge_run(cluster, conf, test=True)
    ret = converge_run(cluster, conf)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == predicted["changes"]
    assert cluster.joined_with == {"m2": "active", "m3": "pause", "w1": "active", "w2": "drain"}
    assert "availability" not in ret["changes"]  # joined with it: nothing left to change
    assert sorted(ret["changes"]["labels"]) == ALL
    assert cluster.node_of("w2")["availability"] == "drain"
    assert converge_run(cluster, conf)["changes"] == {}


def test_a_label_dropped_from_pillar_is_removed_from_the_node_a_hand_set_one_stays():
    with_pool = {**LAYOUT, "nodes": {"w2": {"labels": {"pool": "db"}}}}
    cluster = formed(conf=with_pool)
    cluster.node_of("w2")["labels"]["rack"] = "r7"  # set by hand
    ret = converge_run(cluster, LAYOUT)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["labels"] == {
        "w2": "-pool armswarm.labels=armswarm.arch,armswarm.big-cores,armswarm.board,"
        "armswarm.cpus,armswarm.minion"
    }
    labels = cluster.node_of("w2")["labels"]
    assert "pool" not in labels and labels["rack"] == "r7"
    assert converge_run(cluster, LAYOUT)["changes"] == {}


def test_init_options_go_to_the_first_manager_and_the_cluster_spec_is_reconciled():
    conf = {
        **LAYOUT,
        "default_addr_pool": ["10.201.0.0/16"],
        "subnet_size": 26,
        "cluster": {"task_history_retention_limit": 2, "dispatcher_heartbeat_period": 9},
    }
    cluster = FakeCluster()
    predicted = converge_run(cluster, conf, test=True)
    ret = converge_run(cluster, conf)
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == predicted["changes"]
    assert cluster.init_options == {"default_addr_pool": ["10.201.0.0/16"], "subnet_size": 26}
    assert cluster.cluster_spec["task_history_retention_limit"] == 2
    assert converge_run(cluster, conf)["changes"] == {}
    # A spec change on a running swarm is made; an init-only one is reported, not made.
    conf["cluster"]["task_history_retention_limit"] = 4
    conf["subnet_size"] = 24
    conf["default_addr_pool"] = ["10.9.0.0/16"]
    ret = converge_run(cluster, conf)
    assert ret["changes"] == {"cluster": {"task_history_retention_limit": {"old": 2, "new": 4}}}
    assert "left as they are: default_addr_pool ['10.201.0.0/16']" in ret["comment"]


# -- what a person reads ------------------------------------------------------------------------
def highstate(ret) -> list[str]:
    """The state return as `salt-run state.orch` prints it (Salt's highstate outputter)."""
    opts = salt.config.master_config("/dev/null")
    opts["color"] = False
    chunk = {"__run_num__": 0, "duration": 1.0, "start_time": "x", "__id__": "armswarm:swarm"}
    key = "swarm_cluster_|-armswarm:swarm_|-armswarm:swarm_|-converged"
    data = {"master_master": {key: {**ret, **chunk, "__sls__": "swarm.init"}}}
    return salt.output.out_format(data, "highstate", opts).splitlines()


def changes_lines(lines, minion_id) -> list[str]:
    """The lines under ``minion_id:`` in the printed changes."""
    changes = lines[next(i for i, line in enumerate(lines) if "Changes:" in line) :]
    return [
        changes[i + 1].strip() for i, line in enumerate(changes) if line.strip() == f"{minion_id}:"
    ]


def test_the_highstate_outputter_prints_a_formation_in_a_few_readable_lines():
    cluster = FakeCluster()
    lines = highstate(converge_run(cluster))
    assert len(lines) <= 50, "\n".join(lines)
    for name in ALL:
        # Each node's labels in one line of the changes, by their full names.
        (changed,) = changes_lines(lines, name)
        labels = cluster.node_of(name)["labels"]
        assert sorted(changed.split()) == sorted(f"{k}={v}" for k, v in labels.items()), changed
        # The table: one row a node, without the bookkeeping labels and the prefix.
        (row,) = [line for line in lines if line.split()[:2] == [name, cluster.view()[name][0]]]
        assert row.endswith(f"board={labels['armswarm.board']} cpus=4"), row
        assert "armswarm." not in row
    assert "(labels shortened; in full: salt m1 docker_swarm.nodes)" in lines[12]

    again = highstate(converge_run(cluster))
    assert len(again) <= 25 and again[-8:] == [
        "",
        "Summary for master_master",
        "------------",
        "Succeeded: 1",
        "Failed:    0",
        "------------",
        "Total states run:     1",
        "Total run time:   1.000 ms",
    ], "\n".join(again)

    conf = {**LAYOUT, "nodes": {"w2": {"labels": {"pool": "db"}, "availability": "drain"}}}
    lines = highstate(converge_run(cluster, conf))
    assert len(lines) <= 35, "\n".join(lines)
    assert changes_lines(lines, "w2")[0] == "active -> drain"
    assert changes_lines(lines, "w2")[1].startswith("pool=db armswarm.labels=")


# -- autolock ----------------------------------------------------------------------------------
AUTOLOCK_ON = {**LAYOUT, "autolock": True}


def _cycle(cluster, conf, expected):
    """check -> apply -> re-apply -> check: the prediction is what the run does, then nothing."""
    cluster.calls.clear()
    predicted = converge_run(cluster, conf, test=True)
    assert predicted["result"] is None and predicted["changes"] == expected, predicted
    assert cluster.changing_calls() == []
    applied = converge_run(cluster, conf)
    assert applied["result"] is True and applied["changes"] == expected, applied["comment"]
    for test in (False, True):
        again = converge_run(cluster, conf, test=test)
        assert again["result"] is True and again["changes"] == {}, again
    return applied


def _kept_file(cluster):
    return Path(cluster.key_store().path("armswarm:swarm"))


def _assert_no_plaintext_unlock_key(cluster, *rets):
    for key in cluster.seen_keys:
        for where in (rets, cluster.calls, cluster.events, _kept_file(cluster).read_text()):
            assert key not in repr(where)


@pytest.fixture
def autolocked():
    cluster = formed()
    cluster.seen_keys = []
    applied = _cycle(
        cluster,
        AUTOLOCK_ON,
        {"autolock": {"old": False, "new": True}, "unlock_key": converge.KEY_KEPT},
    )
    cluster.seen_keys.append(cluster.unlock_key)
    cluster.applied = applied
    return cluster


def test_autolock_on_keeps_the_new_key_sealed_for_the_master(autolocked):
    cluster = autolocked
    assert cluster.autolock is True
    kept = _kept_file(cluster)
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.parent.stat().st_mode & 0o777 == 0o700
    store = cluster.key_store()
    record = store.kept("armswarm:swarm")
    assert record["cluster_id"] == cluster.cluster_id
    # What is kept opens, with the master's key only, to the engine's own key.
    assert join_tokens.unseal(record["sealed"], cluster.master_private, "salt-master") == (
        cluster.unlock_key
    )
    _assert_no_plaintext_unlock_key(cluster, cluster.applied)


def test_a_kept_key_of_another_cluster_or_a_rotated_key_is_kept_again(autolocked):
    cluster = autolocked
    cluster.unlock_key = f"SWMKEY-1-{secrets.token_hex(16)}"  # `docker swarm unlock-key --rotate`
    cluster.seen_keys.append(cluster.unlock_key)
    _cycle(cluster, AUTOLOCK_ON, {"unlock_key": converge.KEY_KEPT})
    record = cluster.key_store().kept("armswarm:swarm")
    assert join_tokens.unseal(record["sealed"], cluster.master_private, "salt-master") == (
        cluster.unlock_key
    )
    # Left out of the layout: autolock stays as it is, and so does the kept key.
    for test in (True, False):
        assert converge_run(cluster, LAYOUT, test=test)["changes"] == {}
    assert cluster.autolock is True and _kept_file(cluster).exists()


def test_a_locked_manager_is_unlocked_with_a_running_managers_key(autolocked):
    cluster = autolocked
    cluster.restart_engine("m2")
    assert cluster.swarm_state(cluster.minions["m2"])["state"] == "locked"
    applied = _cycle(cluster, AUTOLOCK_ON, {"unlock": ["m2"]})
    assert cluster.node_of("m2")["reachability"] == "reachable"
    assert cluster.swarm_state(cluster.minions["m2"])["is_manager"] is True
    # The key went to m2 sealed for m2 (the fake engine opens it with m2's key only).
    (unlock,) = [c for c in cluster.calls if c[1] == "docker_swarm.unlock"]
    assert unlock[0] == "m2" and join_tokens.is_sealed(unlock[3]["sealed_key"])
    _assert_no_plaintext_unlock_key(cluster, applied)


def test_all_managers_locked_are_unlocked_with_the_key_kept_on_the_master(autolocked):
    """The whole cluster powered up at once: no manager runs to give the key."""
    cluster = autolocked
    for name in MANAGERS:
        cluster.restart_engine(name)
    applied = _cycle(cluster, AUTOLOCK_ON, {"unlock": MANAGERS})
    assert all(cluster.node_of(m)["reachability"] == "reachable" for m in MANAGERS)
    _assert_no_plaintext_unlock_key(cluster, applied)


def test_a_locked_manager_without_any_key_is_an_error_naming_the_way_out(autolocked):
    cluster = autolocked
    cluster.key_store().drop("armswarm:swarm")
    for name in MANAGERS:
        cluster.restart_engine(name)
    cluster.calls.clear()
    for test in (True, False):
        ret = converge_run(cluster, AUTOLOCK_ON, test=test)
        assert ret["result"] is False and ret["changes"] == {}
        assert "m1: its swarm is locked (autolock) and no unlock key is at hand" in ret["comment"]
        assert "salt-run swarm_keys.unlock m1" in ret["comment"]
    assert cluster.changing_calls() == []


def test_autolock_off_drops_the_kept_key(autolocked):
    cluster = autolocked
    _cycle(
        cluster,
        {**LAYOUT, "autolock": False},
        {"autolock": {"old": True, "new": False}, "unlock_key": converge.KEY_DROPPED},
    )
    assert cluster.autolock is False and not _kept_file(cluster).exists()


def test_a_new_swarm_with_autolock_keeps_its_key():
    cluster = FakeCluster()
    predicted = converge_run(cluster, AUTOLOCK_ON, test=True)
    assert predicted["changes"]["autolock"] == {"old": False, "new": True}
    assert predicted["changes"]["unlock_key"] == converge.KEY_KEPT
    applied = converge_run(cluster, AUTOLOCK_ON)
    assert applied["result"] is True and applied["changes"] == predicted["changes"]
    assert cluster.autolock and cluster.key_store().matches(
        "armswarm:swarm",
        cluster.cluster_id,
        join_tokens.seal(cluster.unlock_key, cluster.master_public, "salt-master"),
    )
    assert converge_run(cluster, AUTOLOCK_ON)["changes"] == {}


@pytest.mark.parametrize("value", ["true", 1, [True]])
def test_autolock_must_be_a_boolean(value):
    cluster = formed()
    ret = converge_run(cluster, {**LAYOUT, "autolock": value})
    assert (
        ret["result"] is False
        and "armswarm:swarm:autolock: must be true or false" in (ret["comment"])
    )
    assert cluster.calls == [] and cluster.autolock is False
