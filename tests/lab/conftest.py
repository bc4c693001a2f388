"""The lab cluster as a session fixture: the same code as `armswarm-lab up` / `down`.

Set ARMSWARM_LAB_KEEP=1 to leave the test lab running after the session (faster re-runs), and
ARMSWARM_TEST_LAB / ARMSWARM_TEST_LAB_SUBNET to use another lab.
"""

import json
import os

import pytest

from armswarm.lab.cluster import Lab

# Overridable so a developer can run the lab tests beside a CI run on the same machine.
TEST_LAB = os.environ.get("ARMSWARM_TEST_LAB", "armswarm-test")
TEST_SUBNET = os.environ.get("ARMSWARM_TEST_LAB_SUBNET", "10.77.9.0/24")


def _progress(message):
    print(f"[lab] {message}", flush=True)


def swarm_table(lab, manager="node1") -> dict:
    """``{hostname: {"role", "state", "labels"}}`` as the engine on ``manager`` lists the swarm
    (docker itself, not the module under test)."""
    code, out = lab.exec(
        manager,
        [
            "sh",
            "-c",
            "docker node inspect --format '{{json .}}' $(docker node ls -q)",
        ],
    )
    if code != 0:
        return {}
    table = {}
    for line in out.splitlines():
        node = json.loads(line)
        table[node["Description"]["Hostname"]] = {
            "role": node["Spec"]["Role"],
            "state": node["Status"]["State"],
            "labels": node["Spec"].get("Labels") or {},
        }
    return table


@pytest.fixture(scope="session")
def lab():
    lab = Lab(name=TEST_LAB, subnet=TEST_SUBNET, progress=_progress)
    fresh = not lab.is_up()
    lab.up()
    # The swarm exactly as `up`'s main job formed it, read before any test changes it; None
    # for a kept lab (ARMSWARM_LAB_KEEP), where this session's `up` ran no main job.
    lab.swarm_formed_by_up = swarm_table(lab) if fresh else None
    if not fresh:
        lab.sync()  # a kept lab runs the modules of this checkout (see Lab.sync); a fresh
        # one's main job synced them already
    yield lab
    if not os.environ.get("ARMSWARM_LAB_KEEP"):
        lab.down()


def pytest_collection_modifyitems(config, items):
    # The lifecycle test takes the session's lab down and up again: run it last.
    # The examples re-form the swarm (and restore it): just before that.
    order = {"test_examples": 1, "test_lifecycle": 2}
    items.sort(key=lambda item: order.get(item.module.__name__.rsplit(".", 1)[-1], 0))
