"""Each worked example (docs/examples/<name>) deployed on the lab as its pillar says: the swarm
re-formed from the example's layout, its stacks deployed by ``state.orch swarm.deploy`` (a
second run changes nothing), its services running where their placement says, and the
example's armnode pillar accepted by ``state.apply armnode test=True``.

Minion ids of the examples are mapped onto lab nodes. The services run ARM code: the stand-in
images of ``salt://imagebuild/images`` are built here for linux/arm/v7 (on node1, the HC1) and
linux/arm64 (on node2) with the tree's own base ``build.sh`` and Dockerfiles, pushed as one
tag over both platforms (a manifest list), and each board's task reports the board's
``uname -m``. The lab's engines are x86 and report amd64 to the swarm, so the stacks deploy
with ``resolve_image: never`` and every node has pulled its board's variant of the tag first
(what the engine of a real board pulls by itself; docs/lab.rst). Runs after the other lab tests
(it re-forms the swarm) and restores the lab's own swarm at the end."""

import json
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import PLATFORM_OF, board_machine, build_base, put_index

from armswarm import paths

pytestmark = pytest.mark.lab

EXAMPLES = paths.tree_root() / "docs" / "examples"
MANAGER_OF = {}
# What a lab node cannot do, by state id and the exact comment it fails with.
LAB_LIMITS = {
    # the node's root is the container's overlay, which no fstab lists
    "armnode-root-mount-options": "/etc/fstab has no entry for /",
}


TREE = paths.tree_root() / "salt" / "imagebuild" / "images"
ARM_TAG = "arm"
# The stand-ins the examples' stacks use, and what each is built from in the tree.
STAND_INS = ("runtime", "worker", "web", "queue", "monitor")
PUSHED = ("web", "worker", "queue", "monitor")
BUILDERS = {"linux/arm/v7": "node1", "linux/arm64": "node2"}
DEBARCH = {"armv7l": "armhf", "aarch64": "arm64"}


def _build_stand_ins(lab, node, platform, errors):
    try:
        build_base(lab, node, platform, "base")
        container = lab.client.containers.get(lab.container_name(lab.node(node)))
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "tree.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(TREE, arcname="example-tree")
            container.put_archive("/root", archive.read_bytes())
        suffix = platform.rsplit("/", 1)[-1] if platform.count("/") == 2 else "arm64"
        for name in STAND_INS:
            # FROM base / runtime / worker: this node's images of this platform, built just now
            code, out = lab.exec(
                node, ["docker", "build", "-q", "-t", name, f"/root/example-tree/{name}"]
            )
            assert code == 0, (node, name, out)
        for name in PUSHED:
            ref = f"{lab.registry}/{name}:{ARM_TAG}-{suffix}"
            for argv in (["docker", "tag", name, ref], ["docker", "push", ref]):
                code, out = lab.exec(node, argv)
                assert code == 0, (node, argv, out)
    except BaseException as exc:  # noqa: BLE001 - reported by the fixture's thread join
        errors.append(exc)


@pytest.fixture(scope="module")
def arm_images(lab):
    """The stand-ins as ``<registry>/<name>:arm`` over linux/arm/v7 and linux/arm64, each
    node holding its board's variant of the tag."""
    started = time.monotonic()
    errors = []
    threads = [
        threading.Thread(target=_build_stand_ins, args=(lab, node, platform, errors))
        for platform, node in BUILDERS.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for name in PUSHED:
        put_index(
            lab, name, ARM_TAG, {"linux/arm/v7": f"{ARM_TAG}-v7", "linux/arm64": f"{ARM_TAG}-arm64"}
        )
    for node in lab.node_names():
        platform = PLATFORM_OF[board_machine(lab, node)]
        for name in PUSHED:
            ref = f"{lab.registry}/{name}:{ARM_TAG}"
            code, out = lab.exec(node, ["docker", "pull", "--platform", platform, ref])
            assert code == 0, (node, ref, out)
    print(f"ARM stand-ins built, pushed and pulled in {time.monotonic() - started:.0f}s")
    return ARM_TAG


def _task_machines(lab, service):
    """``{node: [(uname -m, /etc/armswarm-arch)]}``: what each running task's own programs say."""
    found = {}
    for node in lab.node_names():
        code, out = lab.exec(
            node, ["docker", "ps", "-q", "-f", f"label=com.docker.swarm.service.name={service}"]
        )
        for cid in out.split():
            code, said = lab.exec(
                node,
                [
                    "docker",
                    "exec",
                    cid,
                    "sh",
                    "-c",
                    "uname -m; cat /etc/armswarm-arch 2>/dev/null || cat /etc/armswarm-base-arch",
                ],
            )
            assert code == 0, (node, said)
            found.setdefault(node, []).append(tuple(said.split()[-2:]))
    return found


def _assert_boards_run_their_platform(lab, service):
    found = _task_machines(lab, service)
    assert found, f"{service}: no task runs"
    for node, tasks in found.items():
        machine = board_machine(lab, node)
        assert tasks == [(machine, DEBARCH[machine])] * len(tasks), (service, node, tasks)
    return found


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
    # The ARM stand-ins, not resolved to a digest by the x86 engines (see the module's doc).
    for stack in pillar["armswarm"]["stacks"].values():
        stack["context"] = {**stack.get("context", {}), "tag": ARM_TAG}
        stack["resolve_image"] = "never"
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


def test_hc1_rack(lab, arm_images):
    mapping = {f"hc1-{i}": f"node{i}" for i in range(1, 5)}
    pillar = _pillar(lab, "hc1-rack", mapping)
    manager = MANAGER_OF["hc1"] = _form_and_deploy(lab, pillar)
    assert sorted(_tasks(lab, manager, "apps_files", 2).values()) == [1, 1]
    assert _tasks(lab, manager, "apps_broker", 1) == {"node4": 1}
    _assert_boards_run_their_platform(lab, "apps_broker")  # a SOPINE: aarch64
    # One tag, every board: scaled over the whole rack (one per board), the HC1's task runs
    # the arm/v7 variant (armv7l), the others the arm64 one.
    code, out = lab.exec(manager, ["docker", "service", "scale", "--detach", "apps_files=4"])
    assert code == 0, out
    assert _tasks(lab, manager, "apps_files", 4) == {f"node{i}": 1 for i in range(1, 5)}
    found = _assert_boards_run_their_platform(lab, "apps_files")
    assert found["node1"] == [("armv7l", "armhf")] and found["node2"] == [("aarch64", "arm64")]
    _armnode_accepts(lab, pillar, ["node1"])
    # The backup formula accepts the example's settings (the lab's share is elsewhere).
    pillar["armswarm"]["backup"]["target"]["path"] = "/mnt/armswarm-backup"
    _accepts(lab, pillar, ["node1"], "backup")


def test_rockpro64_single(lab, arm_images):
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
    assert _assert_boards_run_their_platform(lab, "home_site") == {"node2": [("aarch64", "arm64")]}
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


def test_sopine_pool_grows_by_pillar(lab, arm_images):
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
    _assert_boards_run_their_platform(lab, "render_render")


def test_mixed_compute_places_by_board(lab, arm_images):
    mapping = {"rp64-1": "node2", "rp64-2": "node3", "sopine-1": "node4"}
    pillar = _pillar(lab, "mixed-compute", mapping)
    swarm = _layout(pillar)
    swarm["workers"] = ["node3", "node4"]  # the lab has two RockPro64 and one SOPINE
    manager = MANAGER_OF["mixed"] = _form_and_deploy(lab, pillar)
    assert _tasks(lab, manager, "compute_head", 1) == {"node2": 1}
    assert _tasks(lab, manager, "compute_heavy", 2) == {"node2": 1, "node3": 1}
    assert _tasks(lab, manager, "compute_light", 1) == {"node4": 1}
    for service in ("compute_head", "compute_heavy", "compute_light"):
        _assert_boards_run_their_platform(lab, service)


def test_web_replicated_on_arm64(lab, arm_images):
    mapping = {f"arm-{i}": f"node{i}" for i in range(1, 6)}
    pillar = _pillar(lab, "web-arm", mapping)
    manager = MANAGER_OF["web"] = _form_and_deploy(lab, pillar)
    placed = _tasks(lab, manager, "releases_releases", 3)
    assert set(placed.values()) == {1}  # never two on one board
    assert "node1" not in placed  # the HC1 is 32-bit (armv7)
    _assert_boards_run_their_platform(lab, "releases_releases")
