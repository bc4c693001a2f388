"""The runner's reading of the master event bus: a node's "built" event counts only when the
master authenticated it as the node that was given the job."""

import importlib.util

import pytest

from armswarm import paths

pytestmark = pytest.mark.unit


def _runner():
    spec = importlib.util.spec_from_file_location(
        "imagebuild_runner_under_test", paths.tree_root() / "_runners/imagebuild.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Bus:
    def __init__(self, events):
        self.events = list(events)

    def get_event(self, wait, tag, full):
        return self.events.pop(0) if self.events else None


def _built(sender, jid, claimed_node):
    # what the master fires for a minion's `event.send` (data as on the lab's bus)
    tag = f"armswarm/imagebuild/built/{jid}"
    load = {"id": sender, "cmd": "_minion_event", "tag": tag}
    load["data"] = {"jid": jid, "image": "base", "node": claimed_node}
    return {"tag": tag, "data": load}


def test_a_built_event_counts_only_from_the_node_given_the_job():
    runner = _runner()
    transport = runner._SaltTransport()
    transport.jids = {"111": "node1", "222": "node2"}
    transport.event = _Bus(
        [
            _built("node3", "111", "node1"),  # another minion claiming node1's job
            _built("node1", "222", "node2"),  # node1 claiming node2's
            _built("node1", "999", "node1"),  # a job nobody was given
            _built("node2", "222", "node2"),  # the real one
        ]
    )
    assert transport.events(0) == [("222", "node2", {"built": True})]


def test_a_built_event_without_its_body_is_ignored():
    runner = _runner()
    transport = runner._SaltTransport()
    transport.jids = {"111": "node1"}
    event = _built("node1", "111", "node1")
    event["data"]["data"] = "not a dict"
    transport.event = _Bus([event])
    assert transport.events(0) == []
