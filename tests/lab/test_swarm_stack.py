"""Stack and overlay-network states on the lab swarm: check → apply → re-apply → check, and a
rolling update when an image tag changes. Images come from the lab registry (no pulls)."""

import io
import json
import tarfile

import pytest

STACK_SLS = "salt://swarm/stacks/demo.yml"


def _image_tar(page: str) -> bytes:
    """A busybox root filesystem serving ``page`` (Debian's static busybox; nothing is pulled)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "httpd", "wget", "sleep", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        data = page.encode()
        info = tarfile.TarInfo("www/index.html")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _wrap(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(lab):
    node1 = lab.client.containers.get(lab.container_name(lab.node("node1")))
    repo = f"{lab.registry}/armswarm/busybox"
    for tag in ("v1", "v2"):
        node1.put_archive("/root", _wrap(f"{tag}.tar", _image_tar(f"demo {tag}\n")))
        for argv in (
            ["docker", "import", f"/root/{tag}.tar", f"{repo}:{tag}"],
            ["docker", "push", f"{repo}:{tag}"],
        ):
            code, out = lab.exec("node1", argv)
            assert code == 0, out
    yield repo
    lab.exec("node1", ["docker", "stack", "rm", "demo"])
    lab.exec("node1", ["docker", "network", "rm", "armswarm-test-net"])


def state_single(lab, fun, *args, test=False):
    argv = ["node1", "state.single", fun, *args, "--timeout=400"]
    if test:
        argv.append("test=True")
    ret = lab.salt_json(*argv)["node1"]
    assert isinstance(ret, dict), ret
    (result,) = ret.values()
    return result


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
        lab, "docker_swarm.stack_deployed", "name=broken", "compose=salt://swarm/init.sls"
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
