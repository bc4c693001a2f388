"""Each worked example (docs/examples/<name>) deployed on the lab as its pillar says: the swarm
re-formed from the example's layout, its stacks deployed by ``state.orch swarm.deploy`` (a
second run changes nothing), its services running where their placement says, and the
example's armnode pillar accepted by ``state.apply armnode test=True``.

Minion ids of the examples are mapped onto lab nodes; images are the stand-ins the main job
built from ``salt://imagebuild/images``. Runs after the other lab tests (it re-forms the swarm)
and restores the lab's own swarm at the end."""

import json
import time

import pytest
import yaml

from armswarm import paths

pytestmark = pytest.mark.lab

EXAMPLES = paths.tree_root() / "docs" / "examples"
MANAGER_OF = {}
# What a lab node cannot do, by state id and the exact comment it fails with.
LAB_LIMITS = {
    # the node's root is the container's overlay, which no fstab lists
    "armnode-root-mount-options": "/etc/fstab has no entry for /",
}


def _pillar(lab, name, mapping):
    text = (EXAMPLES / name / "pillar.sls").read_text()
    for real, lab_id in sorted(mapping.items(), key=lambda item: -len(item[0])):
        text = text.replace(real, lab_id)
    pillar = yaml.safe_load(text)
    # The lab's registry (the example's own registry node is not deployed here).
    pillar["armswarm"]["registry"] = {"host": lab.registry}
    # The layout under its own key: a command-line pillar merges into the lab's, and the lab's
    # armswarm:swarm would add its own nodes.
    pillar["armswarm"]["examples"] = {name: pillar["armswarm"].pop("swarm")}
    pillar["swarm_layout"] = f"armswarm:examples:{name}"
    return pillar


def _layout(pillar):
    return pillar["armswarm"]["examples"][pillar["swarm_layout"].rsplit(":", 1)[-1]]


def _orch(lab, sls, pillar):
    proc = lab.run_salt(
        "salt-run", "--out=json", "state.orch", sls, f"pillar={json.dumps(pillar)}", check=False
    )
    data = json.loads(proc.stdout)["data"]
    (states,) = data.values()
    return states


def _leave_all(lab):
    for node in lab.node_names():
        lab.exec(node, ["docker", "swarm", "leave", "--force"])


def _form_and_deploy(lab, pillar):
    _leave_all(lab)
    manager = _layout(pillar)["managers"][0]
    formed = _orch(lab, "swarm.init", pillar)
    assert formed and all(s["result"] is True for s in formed.values()), formed
    deployed = _orch(lab, "swarm.deploy", pillar)
    (state,) = deployed.values()
    assert state["result"] is True, state["comment"]
    # The first deploy created the stacks on the manager.
    assert list(state["changes"]["ret"]) == [manager], state["changes"]
    again = _orch(lab, "swarm.deploy", pillar)
    (state,) = again.values()
    assert state["result"] is True, state["comment"]
    # salt.state reports changes only when there are some, and names each minion it ran on
    # in its comment: the manager answered, and its stacks were already deployed.
    assert state["changes"] == {}, state["changes"]
    assert f"No changes made to {manager}" in state["comment"], state["comment"]
    return manager


def _tasks(lab, manager, service, want, timeout=120):
    """``{node hostname: running task count}`` of ``service`` once ``want`` tasks run."""
    deadline = time.monotonic() + timeout
    while True:
        code, out = lab.exec(
            manager,
            [
                "docker",
                "service",
                "ps",
                service,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}} {{.CurrentState}}",
            ],
        )
        running = [line.split()[0] for line in out.splitlines() if " Running" in line]
        if code == 0 and len(running) == want:
            return {node: running.count(node) for node in running}
        assert time.monotonic() < deadline, f"{service}: {out}"
        time.sleep(2)


def _armnode_accepts(lab, pillar, targets):
    _accepts(lab, pillar, targets, "armnode")


def _accepts(lab, pillar, targets, sls):
    argv = [
        "-L",
        ",".join(targets),
        "state.apply",
        sls,
        "test=True",
        f"pillar={json.dumps(pillar)}",
        "--timeout=120",
    ]
    rets = lab.salt_json(*argv, check=False)
    for node in targets:
        states = rets[node]
        assert isinstance(states, dict), states
        failed = [
            s["__id__"]
            for s in states.values()
            if s["result"] is False and LAB_LIMITS.get(s["__id__"]) != s["comment"]
        ]
        assert not failed, (node, failed)


@pytest.fixture(scope="module", autouse=True)
def restore_lab_swarm(lab):
    yield
    for manager in set(MANAGER_OF.values()):
        for stack in ("apps", "home", "render", "compute", "releases"):
            lab.exec(manager, ["docker", "stack", "rm", stack])
    _leave_all(lab)
    lab.run_salt("salt-run", "state.orch", "swarm.init", check=False)


def test_hc1_rack(lab):
    mapping = {f"hc1-{i}": f"node{i}" for i in range(1, 5)}
    pillar = _pillar(lab, "hc1-rack", mapping)
    manager = MANAGER_OF["hc1"] = _form_and_deploy(lab, pillar)
    assert sorted(_tasks(lab, manager, "apps_files", 2).values()) == [1, 1]
    assert _tasks(lab, manager, "apps_broker", 1) == {"node4": 1}
    _armnode_accepts(lab, pillar, ["node1"])
    # The backup formula accepts the example's settings (the lab's share is elsewhere).
    pillar["armswarm"]["backup"]["target"]["path"] = "/mnt/armswarm-backup"
    _accepts(lab, pillar, ["node1"], "backup")


def test_rockpro64_single(lab):
    pillar = _pillar(lab, "rockpro64-single", {"rp64": "node2"})
    # The host paths the stack maps into its services.
    code, out = lab.exec(
        "node2", ["sh", "-c", "mkdir -p /srv/site /srv/jobs && echo hello > /srv/site/index.html"]
    )
    assert code == 0, out
    manager = MANAGER_OF["rp64"] = _form_and_deploy(lab, pillar)
    code, out = lab.exec("node2", ["docker", "node", "ls", "--format", "{{.Hostname}}"])
    assert out.split() == ["node2"]  # a one-node swarm
    assert _tasks(lab, manager, "home_site", 1) == {"node2": 1}
    assert _tasks(lab, manager, "home_jobs", 1) == {"node2": 1}
    code, out = lab.exec(
        "node2",
        [
            "sh",
            "-c",
            "docker exec $(docker ps -q -f label=com.docker.swarm.service.name=home_site) "
            "wget -q -O- http://127.0.0.1:8080/index.html",
        ],
    )
    assert out.strip() == "hello", out  # served from the host path
    _armnode_accepts(lab, pillar, ["node2"])


def test_sopine_pool_grows_by_pillar(lab):
    mapping = {f"sopine-{i}": f"node{i + 2}" for i in range(1, 4)}
    pillar = _pillar(lab, "sopine-pool", mapping)
    # Three boards of the seven in the lab (node3-5); the others are not there.
    swarm = _layout(pillar)
    swarm["workers"] = ["node4"]
    for missing in [f"sopine-{i}" for i in range(4, 8)]:
        swarm["nodes"].pop(missing)
    swarm["nodes"].pop("node5")
    manager = MANAGER_OF["sopine"] = _form_and_deploy(lab, pillar)
    assert _tasks(lab, manager, "render_render", 2) == {"node3": 1, "node4": 1}
    # Adding a board = adding it to pillar: it joins, is labelled, and gets a worker.
    swarm["workers"] = ["node4", "node5"]
    swarm["nodes"]["node5"] = {"labels": {"pool": "render"}}
    grown = _orch(lab, "swarm.init", pillar)
    assert all(s["result"] for s in grown.values()), grown
    assert _tasks(lab, manager, "render_render", 3) == {"node3": 1, "node4": 1, "node5": 1}


def test_mixed_compute_places_by_board(lab):
    mapping = {"rp64-1": "node2", "rp64-2": "node3", "sopine-1": "node4"}
    pillar = _pillar(lab, "mixed-compute", mapping)
    swarm = _layout(pillar)
    swarm["workers"] = ["node3", "node4"]  # the lab has two RockPro64 and one SOPINE
    manager = MANAGER_OF["mixed"] = _form_and_deploy(lab, pillar)
    assert _tasks(lab, manager, "compute_head", 1) == {"node2": 1}
    assert _tasks(lab, manager, "compute_heavy", 2) == {"node2": 1, "node3": 1}
    assert _tasks(lab, manager, "compute_light", 1) == {"node4": 1}


def test_web_replicated_on_arm64(lab):
    mapping = {f"arm-{i}": f"node{i}" for i in range(1, 6)}
    pillar = _pillar(lab, "web-arm", mapping)
    manager = MANAGER_OF["web"] = _form_and_deploy(lab, pillar)
    placed = _tasks(lab, manager, "releases_releases", 3)
    assert set(placed.values()) == {1}  # never two on one board
    assert "node1" not in placed  # the HC1 is 32-bit (armv7)
