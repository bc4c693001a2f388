"""A stack with a config, a secret from pillar and an env file, all named relative to the
compose file on salt:// (salt/swarm/stacks/site/): check -> apply -> re-apply -> check; a new
config file and a new secret value roll the service out and the old objects go; a service
changed or scaled by hand (replicas, environment, image, labels, mounts) is reported and put
back; a task that cannot be placed says why.
What the containers see is read inside them."""

import base64
import json

import pytest
from helpers import apply_stacks, busybox_rootfs, push_image

COMPOSE = "salt://swarm/stacks/site/site.yml"
STACK = "site"
APPLETS = ("sh", "httpd", "cat", "echo", "wget", "sleep")  # demo.yml needs wget, sleep
SECRET_KEY = "armswarm:test_site:token"


@pytest.fixture(scope="module")
def image(lab):
    repo = f"{lab.registry}/armswarm/busybox"
    rootfs = busybox_rootfs(APPLETS, {"www/index.html": "image page\n"})
    push_image(lab, "node1", f"{repo}:site", rootfs)
    lab.exec("node1", ["docker", "stack", "rm", STACK])
    yield repo
    lab.exec("node1", ["docker", "stack", "rm", STACK])


def deploy(lab, page="one", color="green", token="s3cret-value-1", test=False, **extra):
    """The stack through salt/swarm/stacks.sls (as swarm.deploy runs it on a manager), with
    the secret's value in the pillar of this run."""
    stack = {
        "compose": COMPOSE,
        "context": {
            "tag": "site",
            "page": page,
            "color": color,
            "token_pillar": SECRET_KEY,
            "constraint": extra.pop("constraint", ""),
        },
        **extra,
    }
    pillar = {
        "armswarm": {
            "registry": {"host": lab.registry},
            "stacks": {STACK: stack},
            "test_site": {"token": token},
        }
    }
    result = apply_stacks(lab, pillar, test=test, timeout=400)
    assert token not in json.dumps(result)  # the secret is never in a return
    return result


def docker(lab, *argv):
    code, out = lab.exec("node1", ["docker", *argv])
    assert code == 0, out
    return out.strip()


def stack_objects(lab, kind):
    out = docker(
        lab,
        kind,
        "ls",
        "--filter",
        f"label=com.docker.stack.namespace={STACK}",
        "--format",
        "{{.Name}}",
    )
    return sorted(out.splitlines())


def inside(lab, *command) -> set:
    """What each running task's container says (``sh -c`` command), one answer per task."""
    answers = []
    for node in lab.node_names():
        code, out = lab.exec(
            node,
            ["sh", "-c", f"docker ps -q --filter label=com.docker.swarm.service.name={STACK}_web"],
        )
        for cid in out.split():
            code, said = lab.exec(node, ["docker", "exec", cid, "sh", "-c", " ".join(command)])
            assert code == 0, said
            answers.append(said.strip())
    return answers


def cycle(lab, expected_changes, **kwargs):
    predicted = deploy(lab, test=True, **kwargs)
    assert predicted["result"] is None, predicted["comment"]
    assert predicted["changes"] == expected_changes, predicted["changes"]
    applied = deploy(lab, **kwargs)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"] == predicted["changes"]
    for test in (False, True):
        again = deploy(lab, test=test, **kwargs)
        assert again["result"] is True and again["changes"] == {}, again["comment"]
    return applied


def test_configs_secrets_env_files_come_along_and_changes_roll_out(lab, image):
    cycle(lab, {"create": ["web"]})
    (config,) = stack_objects(lab, "config")
    (secret,) = stack_objects(lab, "secret")
    assert config.startswith("site_page_") and secret.startswith("site_token_")
    data = json.loads(docker(lab, "config", "inspect", config, "--format", "{{json .Spec.Data}}"))
    with open("salt/swarm/stacks/site/page-one.html", "rb") as fh:
        assert base64.b64decode(data) == fh.read()
    seen = inside(lab, "cat /www/index.html /run/secrets/token; echo; echo $SITE_MODE $SITE_COLOR")
    assert len(seen) == 2
    assert set(seen) == {"<h1>page one</h1>\ns3cret-value-1\nblue green"}

    # A new config file (the context picks it) and a new secret value: new objects, a rolling
    # update; the old objects stay while the service's previous definition (what a rollback
    # returns to) names them.
    cycle(lab, {"update": ["web"]}, page="two", token="s3cret-value-2")
    configs, secrets = stack_objects(lab, "config"), stack_objects(lab, "secret")
    assert len(configs) == len(secrets) == 2 and config in configs and secret in secrets
    (config2,) = set(configs) - {config}
    (secret2,) = set(secrets) - {secret}
    seen = inside(lab, "cat /www/index.html /run/secrets/token")
    assert seen == ["<h1>page two</h1>\ns3cret-value-2"] * 2

    # An environment-only change: every task runs it when the state returns; the first objects
    # are now in no definition of the service and go.
    cycle(
        lab,
        {"update": ["web"], "remove_objects": {"configs": [config], "secrets": [secret]}},
        page="two",
        token="s3cret-value-2",
        color="red",
    )
    assert inside(lab, "echo $SITE_COLOR") == ["red", "red"]
    assert stack_objects(lab, "config") == [config2]
    assert stack_objects(lab, "secret") == [secret2]


def test_a_service_changed_or_scaled_by_hand_is_put_back(lab, image):
    now = {"page": "two", "token": "s3cret-value-2", "color": "red"}
    assert deploy(lab, **now)["changes"] == {}
    docker(lab, "service", "scale", "--detach", f"{STACK}_web=1")
    docker(lab, "service", "update", "--detach", "--env-add", "SITE_COLOR=hand", f"{STACK}_web")
    cycle(lab, {"update": ["web"], "drift": {"web": ["replicas", "env"]}}, **now)
    replicas = docker(
        lab, "service", "inspect", f"{STACK}_web", "--format", "{{.Spec.Mode.Replicated.Replicas}}"
    )
    assert replicas == "2"
    assert inside(lab, "echo $SITE_COLOR") == ["red", "red"]


def test_an_image_labels_and_mounts_changed_by_hand_are_put_back(lab, image):
    now = {"page": "two", "token": "s3cret-value-2", "color": "red"}
    assert deploy(lab, **now)["changes"] == {}
    # Another tag of the same image: the tasks start, only the definition differs.
    docker(lab, "tag", f"{image}:site", f"{image}:site-hand")
    docker(lab, "push", f"{image}:site-hand")
    docker(
        lab,
        "service",
        "update",
        "--detach",
        "--image",
        f"{image}:site-hand",
        "--label-add",
        "by=hand",
        "--mount-add",
        "type=tmpfs,target=/scratch",
        f"{STACK}_web",
    )
    cycle(lab, {"update": ["web"], "drift": {"web": ["image", "labels", "mounts"]}}, **now)
    spec = json.loads(docker(lab, "service", "inspect", f"{STACK}_web"))[0]["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"].split("@")[0] == f"{image}:site", container["Image"]
    assert "by" not in spec.get("Labels", {}) and not container.get("Mounts"), spec
    seen = inside(lab, "cat /proc/mounts")
    assert len(seen) == 2 and not any(" /scratch " in mounts for mounts in seen), seen


def test_a_task_that_cannot_be_placed_says_why(lab, image):
    now = {"page": "two", "token": "s3cret-value-2", "color": "red"}
    ret = deploy(lab, constraint="node.labels.armswarm.board == nosuchboard", timeout=25, **now)
    assert ret["result"] is False and ret["changes"]["update"] == ["web"]
    assert "not converged" in ret["comment"] and "no suitable node" in ret["comment"], ret[
        "comment"
    ]
    # The listing says so too, for the task that waits (on no node).
    (tasks,) = lab.salt_json("node1", "docker_swarm.tasks", f"service={STACK}_web").values()
    waiting = [t for t in tasks if t["desired"] == "running" and t["state"] == "pending"]
    assert waiting and all(t["node"] is None for t in waiting), tasks
    assert all("no suitable node" in t["error"] for t in waiting), waiting
    # Put back: the state's wait sees the rollout through.
    assert deploy(lab, **now)["result"] is True
    assert deploy(lab, **now)["changes"] == {}


def _running_task_ids(lab):
    out = docker(
        lab,
        "service",
        "ps",
        f"{STACK}_web",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.ID}}",
    )
    return set(out.split())


def test_force_rolls_out_again_with_nothing_changed(lab, image):
    now = {"page": "two", "token": "s3cret-value-2", "color": "red"}
    before = _running_task_ids(lab)
    assert len(before) == 2
    predicted = deploy(lab, force=True, test=True, **now)
    assert predicted["result"] is None and predicted["changes"] == {"force": ["web"]}
    applied = deploy(lab, force=True, **now)
    assert applied["result"] is True and applied["changes"] == {"force": ["web"]}, applied
    after = _running_task_ids(lab)
    assert len(after) == 2 and not after & before  # every task replaced
    assert deploy(lab, **now)["changes"] == {}


def test_the_secret_value_is_in_no_minion_log(lab, image):
    for node in lab.node_names():
        proc = lab.exec(node, ["grep", "-rl", "s3cret-value", "/var/log/salt"])
        assert proc[0] == 1, (node, proc[1])


def test_listing_stacks_services_and_tasks(lab, image):
    (ret,) = lab.salt_json("node1", "docker_swarm.stacks", "--timeout=60").values()
    assert ret[STACK] == {"services": 1, "running": 2, "wanted": 2}, ret
    (tasks,) = lab.salt_json(
        "node1", "docker_swarm.tasks", f"stack={STACK}", "--timeout=60"
    ).values()
    running = sorted(
        t["node"] for t in tasks if t["state"] == "running" and t["desired"] == "running"
    )
    # docker's own answer: the nodes of the running tasks
    out = docker(
        lab,
        "service",
        "ps",
        f"{STACK}_web",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.CurrentState}}",
    )
    assert running == sorted(line.split()[0] for line in out.splitlines() if "Running" in line)
    assert len(running) == 2 and set(running) <= set(lab.node_names())
    (services,) = lab.salt_json("node1", "docker_swarm.services", f"stack={STACK}").values()
    assert [(s["name"], s["replicas"], s["running"]) for s in services] == [(f"{STACK}_web", 2, 2)]


def test_deploy_runs_on_a_manager_that_answers(lab, image):
    """managers[0] (node1) does not answer: the orchestration deploys from node2."""
    pillar = {
        "armswarm": {
            "registry": {"host": lab.registry},
            "stacks": {
                "demo2": {"compose": "salt://swarm/stacks/demo.yml", "context": {"tag": "site"}}
            },
        }
    }
    code, out = lab.exec("node1", ["systemctl", "stop", "salt-minion"])
    assert code == 0, out
    try:
        proc = lab.run_salt(
            "salt-run",
            "--out=json",
            "state.orch",
            "swarm.deploy",
            f"pillar={json.dumps(pillar)}",
            check=False,
        )
        ((state,),) = [s.values() for s in json.loads(proc.stdout)["data"].values()]
        assert state["result"] is True, state["comment"]
        assert list(state["changes"]["ret"]) == ["node2"], state["changes"]
    finally:
        lab.exec("node1", ["systemctl", "start", "salt-minion"])
        lab.wait_minions()
    assert docker(
        lab,
        "service",
        "ls",
        "--filter",
        "label=com.docker.stack.namespace=demo2",
        "--format",
        "{{.Name}}",
    ).split() == ["demo2_client", "demo2_web"]
    lab.exec("node1", ["docker", "stack", "rm", "demo2"])


def test_stack_absent_check_apply_reapply(lab, image):
    def absent(test=False):
        argv = [
            "node1",
            "state.single",
            "docker_swarm.stack_absent",
            f"name={STACK}",
            "--timeout=200",
        ]
        (ret,) = lab.salt_json(*argv, *(["test=True"] if test else [])).values()
        (result,) = ret.values()
        return result

    predicted = absent(test=True)
    assert predicted["result"] is None
    removed = predicted["changes"]["removed"]
    assert removed["services"] == [f"{STACK}_web"] and removed["networks"] == [f"{STACK}_default"]
    assert len(removed["configs"]) == 1 and len(removed["secrets"]) == 1
    applied = absent()
    assert applied["result"] is True and applied["changes"] == predicted["changes"], applied
    for test in (False, True):
        again = absent(test=test)
        assert again["result"] is True and again["changes"] == {}, again["comment"]
    label = f"label=com.docker.stack.namespace={STACK}"
    for kind in ("service", "network", "config", "secret"):
        assert docker(lab, kind, "ls", "-q", "--filter", label) == "", kind


def test_overlay_network_options_and_network_absent(lab, image):
    def single(fun, *args, test=False):
        argv = ["node1", "state.single", fun, *args, "--timeout=120"]
        (ret,) = lab.salt_json(*argv, *(["test=True"] if test else []), check=False).values()
        (result,) = ret.values()
        return result

    args = ("name=armswarm-mtu-net", "mtu=1400", "encrypted=True", "attachable=True")
    predicted = single("docker_swarm.network_present", *args, test=True)
    assert predicted["result"] is None and predicted["changes"]["network"]["new"]["mtu"] == 1400
    assert single("docker_swarm.network_present", *args)["result"] is True
    for test in (False, True):
        again = single("docker_swarm.network_present", *args, test=test)
        assert again["result"] is True and again["changes"] == {}, again["comment"]
    options = json.loads(
        docker(lab, "network", "inspect", "armswarm-mtu-net", "--format", "{{json .Options}}")
    )
    assert options["com.docker.network.driver.mtu"] == "1400" and "encrypted" in options
    bad = single("docker_swarm.network_present", "name=armswarm-mtu-net", "mtu=yes")
    assert bad["result"] is False and "mtu: must be a whole number" in bad["comment"]

    predicted = single("docker_swarm.network_absent", "name=armswarm-mtu-net", test=True)
    assert predicted["result"] is None and predicted["changes"]["network"]["new"] is None
    assert single("docker_swarm.network_absent", "name=armswarm-mtu-net")["result"] is True
    for test in (False, True):
        again = single("docker_swarm.network_absent", "name=armswarm-mtu-net", test=test)
        assert again["result"] is True and again["changes"] == {}, again["comment"]
    code, _ = lab.exec("node1", ["docker", "network", "inspect", "armswarm-mtu-net"])
    assert code != 0
