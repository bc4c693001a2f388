"""salt/swarm/deploy.sls rendered by Salt's Jinja renderer: which manager it deploys from, with
``managers`` as a list or as a ``{tgt, tgt_type}`` target like the rest of the layout. The
master's answers to ``saltutil.cmd`` are given as data (what each minion's
``docker_swarm.state`` returned); what is tested is the SLS's choice."""

from pathlib import Path

import pytest
import salt.config
import yaml
from salt.utils.data import traverse_dict_and_list
from salt.utils.templates import render_jinja_tmpl

pytestmark = pytest.mark.functional

SLS = Path(__file__).resolve().parents[2] / "salt" / "swarm" / "deploy.sls"
LEADER = {"state": "active", "is_manager": True, "cluster_id": "c1"}
CLUSTER = ["node1", "node2", "node3", "node4", "node5"]


def render(managers, live, matches=None):
    """(the rendered states, the saltutil.cmd calls); ``live``: {minion: its swarm state}
    for the minions that answer; ``matches``: what the master's target expands to."""
    pillar = {"armswarm": {"swarm": {"managers": managers}, "stacks": {}}}
    calls = []

    def cmd(tgt, fun, tgt_type="glob", timeout=None):
        calls.append((tgt, fun, tgt_type))
        named = tgt if tgt_type == "list" else matches or []
        return {m: {"ret": live[m], "retcode": 0} for m in named if m in live}

    funcs = {
        "pillar.get": lambda key, default="": traverse_dict_and_list(pillar, key, default, ":"),
        "saltutil.cmd": cmd,
    }
    opts = salt.config.minion_config(None)
    text = render_jinja_tmpl(
        SLS.read_text(),
        {"salt": funcs, "opts": opts, "saltenv": "base", "pillar": pillar, "grains": {}},
    )
    return yaml.safe_load(text), calls


def _deployed_from(states):
    (sid,) = states
    assert sid == "armswarm-stacks-deployed", states
    return dict(i for d in states[sid]["salt.state"] for i in d.items())["tgt"]


def test_a_list_is_asked_in_its_order_and_the_first_live_manager_deploys():
    live = {"node2": LEADER, "node3": LEADER}
    states, calls = render(["node1", "node3", "node2"], live)
    assert calls == [(["node1", "node3", "node2"], "docker_swarm.state", "list")]
    assert _deployed_from(states) == "node3"


def test_a_target_is_expanded_by_the_master_and_tried_in_minion_id_order():
    live = {m: LEADER for m in CLUSTER} | {"node1": {"state": "inactive"}}
    managers = {"tgt": "G@armswarm:role:manager", "tgt_type": "compound"}
    states, calls = render(managers, live, matches=["node3", "node1", "node2"])
    assert calls == [("G@armswarm:role:manager", "docker_swarm.state", "compound")]
    assert _deployed_from(states) == "node2"
    # tgt_type defaults to compound, as in swarm.init
    _states, calls = render({"tgt": "node[1-3]"}, live, matches=["node2"])
    assert calls == [("node[1-3]", "docker_swarm.state", "compound")]


def test_a_target_no_manager_of_answers_fails_naming_it():
    states, _calls = render({"tgt": "node[7-9]", "tgt_type": "glob"}, {"node1": LEADER})
    (sid,) = states
    name = dict(i for d in states[sid]["test.fail_without_changes"] for i in d.items())["name"]
    assert name == (
        "no manager of armswarm:swarm (glob target node[7-9]) answers as a manager of a "
        "swarm with a leader"
    )


@pytest.mark.parametrize(
    "managers",
    ["node1", {"tgt": ["node1"]}, {"tgt": "node1", "tgt_typ": "glob"}, [], ["node1", 3]],
)
def test_anything_else_asks_nobody_and_fails(managers):
    states, calls = render(managers, {"node1": LEADER})
    assert calls == []
    assert list(states) == ["armswarm-stacks-no-manager"]
