"""The lab cluster as a session fixture: the same code as `armswarm-lab up` / `down`.

Set ARMSWARM_LAB_KEEP=1 to leave the test lab running after the session (faster re-runs), and
ARMSWARM_TEST_LAB / ARMSWARM_TEST_LAB_SUBNET to use another lab.
"""

import os

import pytest

from armswarm.lab.cluster import Lab

# Overridable so a developer can run the lab tests beside a CI run on the same machine.
TEST_LAB = os.environ.get("ARMSWARM_TEST_LAB", "armswarm-test")
TEST_SUBNET = os.environ.get("ARMSWARM_TEST_LAB_SUBNET", "10.77.9.0/24")


def _progress(message):
    print(f"[lab] {message}", flush=True)


@pytest.fixture(scope="session")
def lab():
    lab = Lab(name=TEST_LAB, subnet=TEST_SUBNET, progress=_progress)
    lab.up()
    lab.sync()  # a kept lab (ARMSWARM_LAB_KEEP) runs the modules of this checkout
    yield lab
    if not os.environ.get("ARMSWARM_LAB_KEEP"):
        lab.down()


def pytest_collection_modifyitems(config, items):
    # The lifecycle test takes the session's lab down and up again: run it last.
    # The examples re-form the swarm (and restore it): just before that.
    order = {"test_examples": 1, "test_lifecycle": 2}
    items.sort(key=lambda item: order.get(item.module.__name__.rsplit(".", 1)[-1], 0))
