"""Stacks whose rollout goes wrong, and services that leave the compose file, through
salt/swarm/stacks.sls on node1 with a compose file on node1 itself (a local path): a service
removed from the file stays without ``prune`` and goes with it; an update whose new tasks fail
is rolled back by the engine (``failure_action: rollback``) or paused (``pause``, the engine's
default), and the state fails saying so; a paused update keeps failing the state until it is
rolled out again. What the engine shows is the witness: the service's definition, its update
status, its running tasks."""

import json
import time

import pytest
from helpers import apply_stacks, busybox_rootfs, push_image, tar_bytes

WORK = "/root/rollouts"
GOOD = "sleep 3600"
BAD = "exit 3"  # every new task fails at once

COMPOSE = """version: "3.8"
services:
  app:
    image: {image}
    command: ["sh", "-c", "{command}"]
    deploy:
      replicas: 1
      update_config:
        failure_action: {failure_action}
        monitor: 5s
        order: stop-first
      rollback_config:
        monitor: {rollback_monitor}
{side}"""

SIDE = """  side:
    image: {image}
    command: ["sh", "-c", "sleep 3600"]
"""


@pytest.fixture(scope="module")
def image(lab):
    ref = f"{lab.registry}/armswarm/busybox:rollouts"
    push_image(lab, "node1", ref, busybox_rootfs(("sh", "sleep")))
    yield ref
    for stack in ("pruned", "rolledback", "paused"):
        lab.exec("node1", ["docker", "stack", "rm", stack])


def write_compose(
    lab, stack, image, command=GOOD, failure_action="rollback", side=False, rollback_monitor="5s"
):
    """The compose file of ``stack`` on node1; returns its path there."""
    text = COMPOSE.format(
        image=image,
        command=command,
        failure_action=failure_action,
        rollback_monitor=rollback_monitor,
        side=SIDE.format(image=image) if side else "",
    )
    container = lab.client.containers.get(lab.container_name(lab.node("node1")))
    lab.exec("node1", ["mkdir", "-p", WORK])
    container.put_archive(WORK, tar_bytes({f"{stack}.yml": text.encode()}))
    return f"{WORK}/{stack}.yml"


def deploy(lab, stack, compose, test=False, **extra):
    pillar = {"armswarm": {"stacks": {stack: {"compose": compose, "timeout": 120, **extra}}}}
    return apply_stacks(lab, pillar, test=test)


def cycle(lab, stack, compose, expected_changes, **extra):
    predicted = deploy(lab, stack, compose, test=True, **extra)
    assert predicted["result"] is None, predicted["comment"]
    assert predicted["changes"] == expected_changes, predicted["changes"]
    applied = deploy(lab, stack, compose, **extra)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"] == predicted["changes"]
    for test in (False, True):
        again = deploy(lab, stack, compose, test=test, **extra)
        assert again["result"] is True and again["changes"] == {}, again["comment"]


def service(lab, stack, name="app") -> dict:
    code, out = lab.exec("node1", ["docker", "service", "inspect", f"{stack}_{name}"])
    assert code == 0, out
    return json.loads(out)[0]


def services(lab, stack) -> list:
    code, out = lab.exec(
        "node1",
        [
            "docker",
            "service",
            "ls",
            "--filter",
            f"label=com.docker.stack.namespace={stack}",
            "--format",
            "{{.Name}}",
        ],
    )
    assert code == 0, out
    return sorted(out.split())


def command(spec: dict) -> str:
    return spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"][-1]


def running_commands(lab, stack) -> list:
    """The command of each task the engine reports running, as its own spec says."""
    code, out = lab.exec(
        "node1",
        ["docker", "service", "ps", "-q", "--filter", "desired-state=running", f"{stack}_app"],
    )
    assert code == 0, out
    if not out.split():
        return []
    code, out = lab.exec("node1", ["docker", "inspect", *out.split()])
    assert code == 0, out
    return [
        t["Spec"]["ContainerSpec"]["Args"][-1]
        for t in json.loads(out)
        if t["Status"]["State"] == "running"
    ]


def wait_running(lab, stack, commands, timeout=90):
    """Until the tasks running are ``commands`` (the engine may report an update or rollback
    complete before the task it started runs)."""
    deadline = time.monotonic() + timeout
    while (seen := running_commands(lab, stack)) != commands:
        assert time.monotonic() < deadline, seen
        time.sleep(2)


def test_a_service_removed_from_the_file_goes_only_with_prune(lab, image):
    stack = "pruned"
    both = write_compose(lab, stack, image, side=True)
    cycle(lab, stack, both, {"create": ["app", "side"]})
    assert services(lab, stack) == ["pruned_app", "pruned_side"]

    alone = write_compose(lab, stack, image)
    for test in (True, False):
        kept = deploy(lab, stack, alone, test=test)
        assert kept["result"] is True and kept["changes"] == {}, kept
        assert "not in the file, kept (prune is off): side" in kept["comment"], kept["comment"]
    assert services(lab, stack) == ["pruned_app", "pruned_side"]

    cycle(lab, stack, alone, {"remove": ["side"]}, prune=True)
    assert services(lab, stack) == ["pruned_app"]


def test_an_update_rolled_back_by_the_engine_fails_the_state(lab, image):
    stack = "rolledback"
    # The rollback watches its task for 30 s: long enough to put the file right meanwhile.
    slow = {"rollback_monitor": "30s"}
    cycle(lab, stack, write_compose(lab, stack, image, **slow), {"create": ["app"]})
    bad = write_compose(lab, stack, image, command=BAD, **slow)
    predicted = deploy(lab, stack, bad, test=True)
    assert predicted["result"] is None and predicted["changes"] == {"update": ["app"]}, predicted
    ret = deploy(lab, stack, bad)
    assert ret["result"] is False and ret["changes"] == {"update": ["app"]}, ret
    assert "update rollback" in ret["comment"], ret["comment"]
    live = service(lab, stack)
    # Mostly the rollback still runs here; on a loaded machine the engine has been seen to
    # finish it sooner than its 30 s monitor (CI: completed 14 s after it started).
    rolling = live["UpdateStatus"]["State"] == "rollback_started"
    assert rolling or live["UpdateStatus"]["State"] == "rollback_completed", live["UpdateStatus"]
    assert command(live) == GOOD  # the engine put the definition before back
    # The file put right at once is what the engine rolls back to: nothing to change, and the
    # run is done when the rollback is (the failed update's task may still be there).
    good = write_compose(lab, stack, image, **slow)
    checked = deploy(lab, stack, good, test=True)
    assert checked["result"] is True and checked["changes"] == {}, checked
    if rolling and "under way" in checked["comment"]:
        assert "rollout under way: rolledback_app (rollback_started)" in checked["comment"]
        ret = deploy(lab, stack, good)
        assert ret["result"] is True and ret["changes"] == {}, ret
        assert "waited for the rollout under way: rolledback_app" in ret["comment"], ret
    else:  # the rollback is over: nothing under way to report
        assert "under way" not in checked["comment"], checked["comment"]
    live = service(lab, stack)
    assert live["UpdateStatus"]["State"] == "rollback_completed", live["UpdateStatus"]
    # The engine may say the rollback is complete a moment before the task it restored runs
    # (CI: no running task yet right after "rollback_completed").
    wait_running(lab, stack, [GOOD])
    # The bad file (one path per stack: written again) would be tried again, says a check.
    bad = write_compose(lab, stack, image, command=BAD, **slow)
    again = deploy(lab, stack, bad, test=True)
    assert again["result"] is None and again["changes"] == {"update": ["app"]}, again
    # The file put right is what runs already: nothing to do, nothing under way.
    good = write_compose(lab, stack, image, **slow)
    for test in (True, False):
        ret = deploy(lab, stack, good, test=test)
        assert ret["result"] is True and ret["changes"] == {}, ret
        assert "under way" not in ret["comment"], ret["comment"]
    assert running_commands(lab, stack) == [GOOD]


def test_a_paused_update_fails_the_state_until_rolled_out_again(lab, image):
    stack = "paused"
    cycle(lab, stack, write_compose(lab, stack, image, failure_action="pause"), {"create": ["app"]})
    bad = write_compose(lab, stack, image, command=BAD, failure_action="pause")
    ret = deploy(lab, stack, bad)
    assert ret["result"] is False and ret["changes"] == {"update": ["app"]}, ret
    assert "update paused" in ret["comment"], ret["comment"]
    live = service(lab, stack)
    assert live["UpdateStatus"]["State"] == "paused", live["UpdateStatus"]
    assert command(live) == BAD  # the new definition stays, half rolled out
    # Nothing differs from the file, yet the service is not as wanted: the state keeps failing
    # (check and apply alike), changes nothing, and says how to go on.
    for test in (True, False):
        ret = deploy(lab, stack, bad, test=test)
        assert ret["result"] is False and ret["changes"] == {}, ret
        assert "paused_app: update paused" in ret["comment"], ret["comment"]
        assert "force: true" in ret["comment"], ret["comment"]
    assert service(lab, stack)["UpdateStatus"]["State"] == "paused"
    # The file put right rolls out again, and finishes.
    good = write_compose(lab, stack, image, failure_action="pause")
    cycle(lab, stack, good, {"update": ["app"]})
    live = service(lab, stack)
    assert live["UpdateStatus"]["State"] == "completed", live["UpdateStatus"]
    assert running_commands(lab, stack) == [GOOD]
