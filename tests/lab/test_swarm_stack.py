"""Stack and overlay-network states on the lab swarm: check → apply → re-apply → check, and a
rolling update when an image tag changes. Images come from the lab registry (no pulls)."""

import json

import pytest
from helpers import busybox_rootfs, push_image, state_return

STACK_SLS = "salt://swarm/stacks/demo.yml"
APPLETS = ("sh", "httpd", "wget", "sleep", "cat")


@pytest.fixture(scope="module")
def images(lab):
    repo = f"{lab.registry}/armswarm/busybox"
    for tag in ("v1", "v2"):
        rootfs = busybox_rootfs(APPLETS, {"www/index.html": f"demo {tag}\n"})
        push_image(lab, "node1", f"{repo}:{tag}", rootfs)
    yield repo
    lab.exec("node1", ["docker", "stack", "rm", "demo"])
    lab.exec("node1", ["docker", "network", "rm", "armswarm-test-net"])


def state_single(lab, fun, *args, test=False, check=True):
    argv = ("state.single", fun, *args, "--timeout=400")
    return state_return(lab, "node1", *argv, test=test, check=check)


def deploy(lab, tag, test=False):
    context = json.dumps({"registry": lab.registry, "tag": tag})
    return state_single(
        lab,
        "docker_swarm.stack_deployed",
        "name=demo",
        f"compose={STACK_SLS}",
        "template=jinja",
        f"context={context}",
        test=test,
    )


def test_stack_check_apply_reapply_and_rolling_update(lab, images):
    predicted = deploy(lab, "v1", test=True)
    assert predicted["result"] is None
    assert predicted["changes"] == {"create": ["client", "web"]}
    applied = deploy(lab, "v1")
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"] == predicted["changes"]
    for test in (False, True):
        again = deploy(lab, "v1", test=test)
        assert again["result"] is True and again["changes"] == {}, again["comment"]

    predicted = deploy(lab, "v2", test=True)
    assert predicted["changes"] == {"update": ["client", "web"]}
    applied = deploy(lab, "v2")
    assert applied["result"] is True and applied["changes"] == predicted["changes"]
    code, out = lab.exec(
        "node1",
        [
            "docker",
            "service",
            "inspect",
            "demo_web",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        ],
    )
    assert code == 0 and out.strip().startswith(f"{images}:v2"), out
    code, out = lab.exec(
        "node1",
        [
            "docker",
            "service",
            "ps",
            "demo_web",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Image}} {{.CurrentState}}",
        ],
    )
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(":v2" in line and "Running" in line for line in lines), out
    assert deploy(lab, "v2")["changes"] == {}


def test_bad_compose_is_refused_before_anything(lab, images):
    ret = state_single(
        lab,
        "docker_swarm.stack_deployed",
        "name=broken",
        "compose=salt://armnode/pillar.example",  # YAML, but no services
        check=False,  # the state fails: salt exits non-zero
    )
    assert ret["result"] is False and "no services" in ret["comment"]


def test_overlay_network_check_apply_reapply(lab, images):
    args = (
        "name=armswarm-test-net",
        "attachable=True",
        "subnet=10.213.0.0/24",
        "labels={purpose: test}",
    )
    predicted = state_single(lab, "docker_swarm.network_present", *args, test=True)
    assert predicted["result"] is None and predicted["changes"]["network"]["old"] is None
    applied = state_single(lab, "docker_swarm.network_present", *args)
    assert applied["result"] is True and applied["changes"]
    for test in (False, True):
        again = state_single(lab, "docker_swarm.network_present", *args, test=test)
        assert again["result"] is True and again["changes"] == {}, again["comment"]
