"""A build answer counts only from the node given the job, and only with a real digest: the
digest is pinned into the children's FROM lines."""

import pytest
from armswarm_core.build import build_run
from test_build_run import (
    THREE_LEVELS,
    Clock,
    FakeCluster,
    FakeRegistry,
    by_image,
    grains,
    run,
    tree,
)

pytestmark = pytest.mark.unit

HOST = "reg.lan:5000"
EVIL = "sha256:" + "e" * 64


class Impostor(FakeCluster):
    """Another minion answers ``base``'s job first, with its own digest."""

    def start(self, node, image, kwargs):
        jid = super().start(node, image, kwargs)
        if image == "base":
            other = "n2" if node == "n1" else "n1"
            forged = {"status": "ok", "digest": EVIL, "seconds": 0, "push_tries": 1}
            self.pending.append((self.clock.now + 0.5, jid, other, {"return": forged}, None))
        return jid


class BadDigest(FakeCluster):
    def start(self, node, image, kwargs):
        jid = super().start(node, image, kwargs)
        if image == "base":
            due, jid_, node_, ret, push = self.pending[-1]
            ret = {**ret, "return": {**ret["return"], "digest": "sha256:abc\nRUN curl x | sh"}}
            self.pending[-1] = (due, jid_, node_, ret, push)
        return jid


def _env(tmp_path, cls):
    clock = Clock()
    registry = FakeRegistry()
    cluster = cls(
        clock,
        registry,
        {"n1": grains(), "n2": grains()},
        tmp_path / "contexts",
        seconds={"base": 4},
    )
    root = tree(tmp_path / "images", THREE_LEVELS)
    settings = build_run.Settings(
        state_dir=tmp_path / "state", source=str(root), registry_host=HOST, tag="20261122"
    )
    return clock, registry, cluster, settings


def test_an_answer_from_another_node_is_ignored(tmp_path):
    env = _env(tmp_path, Impostor)
    _, registry, cluster, _ = env
    report = run(env)
    images = by_image(report)
    assert images["base"]["status"] == "done" and images["base"]["digest"] != EVIL
    ((_, kwargs),) = cluster.started("a")
    assert kwargs["pins"]["base"] == f"{HOST}/base@{images['base']['digest']}"
    assert EVIL not in str(report)


def test_an_answer_without_a_valid_digest_fails_the_image(tmp_path):
    env = _env(tmp_path, BadDigest)
    _, _, cluster, _ = env
    report = run(env)
    images = by_image(report)
    assert images["base"]["status"] == "failed"
    assert "no valid image digest" in images["base"]["error"]
    assert cluster.started("a") == []  # no child was built on it
