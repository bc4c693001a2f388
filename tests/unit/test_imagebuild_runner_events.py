"""The runner's reading of the master event bus: a node's "built" event counts only when the
master authenticated it as the node that was given the job."""

import importlib.util

import pytest
from armswarm_core import ArmswarmError

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


class _Local:
    """Salt's LocalClient as the runner uses it: what was published, to whom."""

    def __init__(self):
        self.published = []

    def run_job(self, tgt, fun, arg, tgt_type, kwarg, timeout):
        self.published.append((tgt, tgt_type, fun, arg, kwarg))
        return {"jid": "123", "minions": list(tgt)}


def test_a_job_is_published_to_its_one_node_by_id_with_its_context_by_reference(tmp_path):
    runner = _runner()
    runner.__opts__ = {"file_roots": {"armswarm_contexts": [str(tmp_path / "contexts")]}}
    transport = runner._SaltTransport()
    transport._local = _Local()
    served = transport.serve("20261201-abc123", {"web": b"the context"})
    path = tmp_path / "contexts" / "20261201-abc123" / f"{served['web']['sha256']}.tar.gz"
    assert path.read_bytes() == b"the context"
    kwargs = {"image": "web", "context_source": served["web"]["source"]}
    assert transport.start("node*", "web", kwargs) == "123"
    # a list of exactly one minion id: a glob-looking id matches only itself
    assert transport._local.published == [(["node*"], "list", "imagebuild.build", [], kwargs)]
    transport.withdraw("20261201-abc123")
    assert not path.parent.exists()


def test_without_the_contexts_environment_the_runner_refuses_to_serve(tmp_path):
    runner = _runner()
    runner.__opts__ = {"file_roots": {"base": [str(tmp_path)]}}
    with pytest.raises(ArmswarmError, match="the master serves no file_roots:armswarm_contexts"):
        runner._SaltTransport().serve("r1", {"web": b"x"})
    runner._SaltTransport().withdraw("r1")  # nothing served, nothing to remove: no second error
