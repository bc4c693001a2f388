"""Pure swarm decisions: node reconciliation, quorum safety, sealed tokens."""

import pytest
import salt.crypt
import yaml
from armswarm_core import ArmswarmError
from armswarm_core.swarm import join_tokens, swarm_engine, swarm_layout


def _node(id_, role="worker", reach=None, labels=None, availability="active"):
    return {
        "id": id_,
        "hostname": id_,
        "role": role,
        "reachability": reach,
        "labels": labels or {},
        "availability": availability,
    }


def test_labels_merge_and_compare_as_strings():
    current = _node("n4", labels={"board": "sopine", "cpus": "4", "owner": "ops"})
    assert swarm_engine.node_changes(current, labels={"board": "sopine", "cpus": 4}) == {}
    changes = swarm_engine.node_changes(current, labels={"cpus": 8})
    assert changes == {
        "labels": {
            "old": current["labels"],
            "new": {"board": "sopine", "cpus": "8", "owner": "ops"},
        }
    }


def test_undeclared_labels_removed_only_when_asked():
    current = _node("n4", labels={"board": "sopine", "owner": "ops"})
    assert swarm_engine.node_changes(current, labels={"board": "sopine"}) == {}
    changes = swarm_engine.node_changes(
        current, labels={"board": "sopine"}, remove_undeclared_labels=True
    )
    assert changes["labels"]["new"] == {"board": "sopine"}


def test_availability_and_role_validated_before_anything():
    with pytest.raises(ArmswarmError, match="availability must be one of"):
        swarm_engine.node_changes(_node("n1"), availability="paused")
    with pytest.raises(ArmswarmError, match="role must be one of"):
        swarm_engine.node_changes(_node("n1"), role="leader")
    assert swarm_engine.node_changes(_node("n1"), role="manager") == {
        "role": {"old": "worker", "new": "manager"}
    }


@pytest.mark.parametrize(("managers", "needed"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum(managers, needed):
    assert swarm_engine.quorum(managers) == needed


def test_demotion_refused_below_quorum():
    nodes = [
        _node("m1", "manager", "reachable"),
        _node("m2", "manager", "reachable"),
        _node("m3", "manager", "unreachable"),
        _node("w1"),
    ]
    # Demoting m1 leaves m2 (reachable) and m3 (down): 1 of 2 reachable, quorum of 2 is 2.
    with pytest.raises(ArmswarmError, match="below quorum"):
        swarm_engine.check_demotion(nodes, nodes[0])
    # Demoting the unreachable one leaves two reachable managers: fine.
    swarm_engine.check_demotion(nodes, nodes[2])
    with pytest.raises(ArmswarmError, match="last manager"):
        swarm_engine.check_demotion([_node("m1", "manager", "reachable")], _node("m1", "manager"))
    swarm_engine.check_demotion(nodes, nodes[3])  # workers are never a quorum question


def test_normalise_node_from_engine_data():
    raw = {
        "ID": "abc",
        "Version": {"Index": 42},
        "Spec": {"Role": "manager", "Availability": "active", "Labels": {"board": "rockpro64"}},
        "Description": {"Hostname": "node2", "Engine": {"Labels": {}}},
        "Status": {"State": "ready", "Addr": "10.0.0.12"},
        "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "10.0.0.12:2377"},
    }
    node = swarm_engine.normalise_node(raw)
    assert node["hostname"] == "node2" and node["leader"] is True and node["version"] == 42
    assert node["labels"] == {"board": "rockpro64"}


def test_sealed_token_opens_only_for_its_minion():
    priv, pub = salt.crypt.gen_keys(2048)
    other_priv, _ = salt.crypt.gen_keys(2048)
    token = "SWMTKN-1-" + "x" * 50 + "-" + "y" * 25
    blob = join_tokens.seal(token, pub, "node4")
    assert "SWMTKN" not in blob and join_tokens.is_sealed(blob)
    assert join_tokens.unseal(blob, priv, "node4") == token
    with pytest.raises(ArmswarmError, match="another minion") as err:
        join_tokens.unseal(blob, other_priv, "node4")
    assert "SWMTKN" not in str(err.value)
    # The one-line base64 body of the PEM (what survives a YAML CLI argument) works too.
    body = "".join(line for line in pub.splitlines() if "-----" not in line)
    assert join_tokens.unseal(join_tokens.seal(token, body, "node4"), priv, "node4") == token


def test_sealed_token_is_bound_to_its_recipient():
    # Boards cloned from one image share the minion key: the id still tells them apart.
    priv, pub = salt.crypt.gen_keys(2048)
    blob = join_tokens.seal("SWMTKN-1-abc-def", pub, "node4")
    with pytest.raises(ArmswarmError, match="another minion"):
        join_tokens.unseal(blob, priv, "node5")
    with pytest.raises(ArmswarmError, match="recipient"):
        join_tokens.seal("x", pub, "")


def test_tampered_seal_is_refused():
    priv, pub = salt.crypt.gen_keys(2048)
    blob = join_tokens.seal("secret", pub, "node4")
    head, wrapped, body = blob.split(":")
    tampered = f"{head}:{wrapped}:{body[:-4]}AAAA"
    with pytest.raises(ArmswarmError):
        join_tokens.unseal(tampered, priv, "node4")


class _Api:
    """What swarm_engine.leave asks of docker's low-level client (pure logic, no daemon): a
    manager whose demotion the leader accepts but raft never follows."""

    def __init__(self):
        self.left = False
        self.spec = {"Role": "manager", "Availability": "active"}

    def nodes(self):
        def node(id_, leader):
            return {
                "ID": id_,
                "Spec": dict(self.spec) if id_ == "me" else {"Role": "manager"},
                "Description": {"Hostname": id_},
                "ManagerStatus": {"Leader": leader, "Reachability": "reachable"},
                "Version": {"Index": 1},
            }

        return [node("me", False), node("m2", True), node("m3", False)]

    def inspect_node(self, id_):
        return {"Spec": dict(self.spec), "Version": {"Index": 1}}

    def update_node(self, id_, version, spec):
        self.spec = spec

    def leave_swarm(self, force=False):
        self.left = True


class _Client:
    def __init__(self):
        self.api = _Api()

    def info(self):
        # Still a raft member: ControlAvailable stays true.
        return {
            "Swarm": {
                "LocalNodeState": "active",
                "NodeID": "me",
                "ControlAvailable": True,
                "Cluster": {"ID": "C1"},
            }
        }


def test_a_step_down_that_does_not_finish_stops_the_leave():
    client = _Client()
    with pytest.raises(ArmswarmError, match="still a manager .* not leaving"):
        swarm_engine.leave(client, force=True, timeout=0)
    assert client.api.spec["Role"] == "worker"  # the demotion was asked for
    assert client.api.left is False  # but no forced leave of a raft member


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("20.10.24+dfsg1", True),  # Debian 12
        ("26.1.3", True),
        ("26.1.4", False),
        ("26.1.5+dfsg1", False),  # Debian 13
        ("28.2.2", False),
        ("", True),
        (None, True),
        ("dev", True),
    ],
)
def test_engines_before_26_1_4_need_a_live_join_address_to_be_promoted(version, affected):
    assert swarm_engine.promotion_needs_live_join_addr(version) is affected


@pytest.mark.parametrize(
    ("addr", "host"),
    [
        ("10.0.0.2:2377", "10.0.0.2"),
        ("10.0.0.2", "10.0.0.2"),
        ("[fd00::2]:2377", "fd00::2"),
        ("fd00::2", "fd00::2"),
        ("", None),
        (None, None),
    ],
)
def test_addr_host(addr, host):
    assert swarm_engine.addr_host(addr) == host


def test_an_ipv6_host_goes_in_brackets_and_listens_on_every_ipv6_address():
    assert swarm_engine.host_port("10.0.0.2", 2377) == "10.0.0.2:2377"
    assert swarm_engine.host_port("fd00::2", 2377) == "[fd00::2]:2377"
    for host in ("fd00::2", "10.0.0.2"):  # what addr_host reads back
        assert swarm_engine.addr_host(swarm_engine.host_port(host, 2377)) == host
    assert swarm_engine.listen_addr_for("fd00::2", 2377) == "[::]:2377"
    assert swarm_engine.listen_addr_for("10.0.0.2", 4000) == "0.0.0.0:4000"
    assert swarm_engine.listen_addr_for(None, 2377) == swarm_engine.DEFAULT_LISTEN


@pytest.mark.parametrize(
    ("given", "addr"),
    [
        ("10.0.0.2:2377", "10.0.0.2"),
        ("10.0.0.2", "10.0.0.2"),
        ("[2001:DB8::0011]:2377", "2001:db8::11"),
        ("[2001:db8::11]", "2001:db8::11"),
        ("2001:db8::11", "2001:db8::11"),
    ],
)
def test_a_pillar_advertise_addr_is_read_without_port_in_canonical_form(given, addr):
    layout, errors, _ = swarm_layout.parse_layout(
        {"managers": ["m1"], "nodes": {"m1": {"advertise_addr": given}}}
    )
    assert errors == []
    assert swarm_layout.advertise_addr("m1", layout, {}) == addr


class _Info:
    def __init__(self, root):
        self.root = root

    def info(self):
        return {"DockerRootDir": str(self.root)}


def test_the_join_address_is_read_from_the_engines_state_file(tmp_path):
    (tmp_path / "swarm").mkdir()
    # As dockerd 20.10 writes it for a node that joined through 10.0.0.11.
    (tmp_path / "swarm" / "docker-state.json").write_text(
        '{"LocalAddr":"10.0.0.12","RemoteAddr":"10.0.0.11:2377","ListenAddr":"0.0.0.0:2377",'
        '"AdvertiseAddr":"10.0.0.12:2377","DataPathAddr":"","DefaultAddressPool":[],'
        '"SubnetSize":24,"DataPathPort":4789,"JoinInProgress":false}'
    )
    assert swarm_engine.recorded_join_addr(_Info(tmp_path)) == "10.0.0.11:2377"
    # The node that initialised the swarm has none; no swarm, or a damaged file: None.
    (tmp_path / "swarm" / "docker-state.json").write_text('{"RemoteAddr":""}')
    assert swarm_engine.recorded_join_addr(_Info(tmp_path)) is None
    (tmp_path / "swarm" / "docker-state.json").write_text("{not json")
    assert swarm_engine.recorded_join_addr(_Info(tmp_path)) is None
    assert swarm_engine.recorded_join_addr(_Info(tmp_path / "nowhere")) is None


def test_an_unquoted_ipv6_address_yaml_read_as_a_number_is_refused_saying_so():
    conf = yaml.safe_load("managers: [m1]\nnodes: {m1: {advertise_addr: 2001:1:2:3:4:5:6:7}}")
    assert isinstance(conf["nodes"]["m1"]["advertise_addr"], int)  # YAML 1.1, base 60
    _, errors, _ = swarm_layout.parse_layout(conf)
    assert len(errors) == 1 and "armswarm:swarm:nodes:m1:advertise_addr" in errors[0]
    assert "quote it" in errors[0], errors
