"""A whole image build run, its plan and retention (``armswarm_core.build.build_run``) on a
simulated cluster: fake nodes that build on a fake clock and push into an in-memory registry.
The image tree, the build contexts, the durations file and the report are real files."""

import hashlib
import json
import os
import random
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.build import build_contexts, build_job, build_run
from armswarm_core.registry import tag_retention

pytestmark = pytest.mark.unit

HOST = "reg.lan:5000"
TAG = "20261122"


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


class FakeRegistry:
    """The part of the registry API a run and retention use, over ``{repo: {tag: digest}}``."""

    def __init__(self, repos=None, broken_retag=()):
        self.repos = {repo: dict(tags) for repo, tags in (repos or {}).items()}
        self.broken_retag = set(broken_retag)
        self.pushes = []  # (repo, tag, digest), as the nodes push
        self.retags = []  # (repo, source, tag)
        self.deleted = []  # (repo, digest)
        self.untagged = []  # (repo, tag)
        self.indexes = {}  # index digest → {platform: manifest digest}
        self.broken_index = set()

    def put_index(self, repo, tags, manifests):
        if repo in self.broken_index:
            raise ArmswarmError(f"registry PUT {repo}/manifests/{tags[0]}: HTTP 500")
        for digest in manifests.values():
            assert digest in self.repos[repo].values(), f"{repo}: {digest} was not pushed"
        text = json.dumps(sorted(manifests.items()))
        digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        self.indexes[digest] = dict(manifests)
        for tag in tags:
            self.repos[repo][tag] = digest
        return digest

    def index_children(self, repo, digest):
        return sorted(self.indexes.get(digest, {}).values())

    def push(self, repo, tag, digest):
        self.pushes.append((repo, tag, digest))
        self.repos.setdefault(repo, {})[tag] = digest

    def tags(self, repo):
        return sorted(self.repos.get(repo, {}))

    def retag(self, repo, source, tag):
        if repo in self.broken_retag or source not in self.repos.get(repo, {}):
            raise ArmswarmError(f"registry PUT {repo}/manifests/{tag}: HTTP 500")
        self.retags.append((repo, source, tag))
        self.repos[repo][tag] = self.repos[repo][source]
        return self.repos[repo][tag]

    def catalog(self):
        return sorted(self.repos)

    def tag_digests(self, repo):
        return dict(self.repos.get(repo, {}))

    def delete(self, repo, digest):
        self.deleted.append((repo, digest))
        self.repos[repo] = {t: d for t, d in self.repos[repo].items() if d != digest}

    def untag(self, repo, tag):
        self.untagged.append((repo, tag))
        del self.repos[repo][tag]


def built_digest(image, pins) -> str:
    """What a node's build yields: a function of the image and the parents it was pinned to,
    so a child built on the wrong parent gets another digest."""
    text = image + "|" + ",".join(f"{k}={v}" for k, v in sorted(pins.items()))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class FakeCluster:
    """The transport: build nodes answering on a fake clock, Salt's events recorded.

    ``seconds``: image → build time; ``fail``: images whose build fails; ``transient``:
    image → transient failures before it succeeds; ``dies``: node → time it stops answering
    (jobs and probes); ``interrupt_after``: image whose answer is followed by Ctrl-C."""

    def __init__(
        self,
        clock,
        registry,
        facts,
        context_dir,
        tree=None,
        seconds=None,
        fail=(),
        transient=None,
        dies=None,
        interrupt_after=None,
        push_seconds=None,
    ):
        self.clock = clock
        self.push_seconds = dict(push_seconds or {})  # image → last seconds of its job: push
        self.registry = registry
        self.facts = facts
        self.tree = tree
        self.seconds = seconds or {}
        self.fail = set(fail)
        self.transient = dict(transient or {})
        self.dies = dict(dies or {})
        self.interrupt_after = interrupt_after
        self.pending = []  # (due, jid, node, ret, push)
        self.jobs = {}  # jid → (node, image, kwargs) of every build started
        self.asked = []  # (target, tgt_type)
        self.fetched = []
        self.fired = []  # (tag, data)
        self.said = []
        self.listening = False
        self.closed = False
        self.gc = []
        self.gc_answer = None
        self.n = 0
        # the master's file_roots:armswarm_contexts: real files, served by real code
        self.context_dir = Path(context_dir)
        self.context_dir.mkdir(parents=True, exist_ok=True)
        self.served = {}  # run → {image: reference} while it is served
        self.withdrawn = []
        self.contexts = {}  # jid → the context bytes its node fetched and checked

    def _alive(self, node, at):
        return at < self.dies.get(node, float("inf"))

    def _jid(self):
        self.n += 1
        return f"j{self.n}"

    # -- build_run's side
    def fetch(self, source):
        self.fetched.append(source)
        return self.tree

    def node_facts(self, target, tgt_type):
        self.asked.append((target, tgt_type))
        return self.facts

    def listen(self):
        self.listening, self.closed = True, False

    def close(self):
        self.closed = True

    def fire(self, data, tag):
        assert self.listening and not self.closed
        self.fired.append((tag, data))

    def say(self, message):
        self.said.append(message)

    def garbage_collect(self, node):
        self.gc.append(node)
        return self.gc_answer

    def serve(self, run_id, contexts):
        self.served[run_id] = build_contexts.serve(self.context_dir, run_id, contexts)
        return self.served[run_id]

    def withdraw(self, run_id):
        build_contexts.withdraw(self.context_dir, run_id)
        self.withdrawn.append(run_id)

    def fetch_context(self, kwargs) -> bytes:
        """What the node does: fetch the named context from the file server, check its hash."""
        url = urlsplit(kwargs["context_source"])
        assert url.scheme == "salt" and url.query == f"saltenv={build_contexts.SALTENV}"
        data = (self.context_dir / url.netloc / url.path.lstrip("/")).read_bytes()
        return build_job.verified(data, kwargs["context_sha256"])

    # -- the dispatcher's side
    def start(self, node, image, kwargs):
        jid = self._jid()
        self.jobs[jid] = (node, image, kwargs)
        self.contexts[jid] = self.fetch_context(kwargs)
        now = self.clock.now
        due = now + self.seconds.get(image, 1)
        push = None
        if self.transient.get(image):
            self.transient[image] -= 1
            answer = {"status": "failed", "transient": True, "error": "push: connection refused"}
            if image in self.push_seconds:  # built, then the push failed
                built = {"built": True}
                self.pending.append((due - self.push_seconds[image], jid, node, built, None))
        elif image in self.fail:
            answer = {
                "status": "failed",
                "transient": False,
                "error": "The command '/bin/sh -c false' returned a non-zero code: 1",
                "log": ["Step 2/2 : RUN false", "returned a non-zero code: 1"],
            }
        else:
            repo, _, tag = kwargs["ref"].rpartition(":")
            digest = built_digest(image, kwargs["pins"])
            answer = {"status": "ok", "digest": digest, "seconds": due - now, "push_tries": 1}
            push = (repo[len(HOST) + 1 :], tag, digest)
            if image in self.push_seconds:
                pushing = self.push_seconds[image]
                answer["build_seconds"], answer["push_seconds"] = due - now - pushing, pushing
                built = {"built": True}
                self.pending.append((due - pushing, jid, node, built, None))
        self.pending.append((due, jid, node, {"return": answer, "success": True}, push))
        return jid

    def probe(self, node, jid):
        probe = self._jid()
        if self._alive(node, self.clock.now):
            running = any(p[1] == jid for p in self.pending)
            self.pending.append(
                (self.clock.now, probe, node, {"return": {"jid": jid} if running else {}}, None)
            )
        return probe

    def events(self, wait):
        if self.interrupt_after == "now":
            raise KeyboardInterrupt
        self.clock.now += wait
        due = [p for p in self.pending if p[0] <= self.clock.now]
        self.pending = [p for p in self.pending if p[0] > self.clock.now]
        out = []
        for when, jid, node, ret, push in due:
            if not self._alive(node, when):
                continue  # a dead node neither pushes nor answers
            if push:
                self.registry.push(*push)
            out.append((jid, node, ret))
        if self.interrupt_after and any(
            self.jobs.get(jid, (None, None))[1] == self.interrupt_after for jid, _, _ in out
        ):
            self.interrupt_after = "now"  # Ctrl-C once the answer is taken in
        return out

    def started(self, image):
        return [(node, kwargs) for node, name, kwargs in self.jobs.values() if name == image]


def grains(arch="aarch64", board="rockpro64"):
    return {"cpuarch": arch, "num_cpus": 6, "armnode": {"board": board}}


def tree(root: Path, files: dict) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# base → a → a1, base → b → b1: three levels
THREE_LEVELS = {
    "base/Dockerfile": "FROM debian:12\n",
    "a/Dockerfile": "FROM base\n",
    "b/Dockerfile": f"FROM {HOST}/base:latest\n",
    "a1/Dockerfile": "FROM a\nCOPY --from=base /etc/os-release /\n",
    "b1/Dockerfile": "FROM b\n",
}
THREE_LEVELS_IMAGES = ["a", "a1", "b", "b1", "base"]


@pytest.fixture
def env(tmp_path):
    """A tree, a state directory, two nodes, a registry where ``a`` has an older ``latest``."""
    clock = Clock()
    registry = FakeRegistry({"a": {"20261101": "sha256:old", "latest": "sha256:old"}})
    cluster = FakeCluster(
        clock,
        registry,
        {"n1": grains(), "n2": grains(), "n3": "Minion did not return. [No response]"},
        tmp_path / "contexts",
        seconds={"base": 4, "a": 6, "b": 3, "a1": 5, "b1": 2},
    )
    root = tree(tmp_path / "images", THREE_LEVELS)
    settings = build_run.Settings(
        state_dir=tmp_path / "state",
        source=str(root),
        registry_host=HOST,
        tag=TAG,
        probe_every=2,
        probe_timeout=2,
    )
    return clock, registry, cluster, settings


def run(env, **changes):
    clock, registry, cluster, settings = env
    for key, value in changes.items():
        setattr(settings, key, value)
    return build_run.run(settings, cluster, registry, clock=clock)


def by_image(report):
    return {item["image"]: item for item in report["images"]}


def test_a_three_level_tree_builds_in_dependency_order_on_both_nodes(env):
    _, registry, cluster, settings = env
    report = run(env)
    images = by_image(report)
    assert report["retcode"] == 0 and report["tag"] == TAG
    assert {name: item["status"] for name, item in images.items()} == dict.fromkeys(
        ["base", "a", "b", "a1", "b1"], "done"
    )
    assert cluster.asked == [("*", "glob")]
    # The silent minion got nothing; both answering nodes built something.
    assert {node for node, _, _ in cluster.jobs.values()} == {"n1", "n2"}
    for name, parents in {"a": ["base"], "b": ["base"], "a1": ["a", "base"], "b1": ["b"]}.items():
        for parent in parents:
            assert images[name]["start"] >= images[parent]["end"], (name, parent)
    # Each child was built on this run's parents, as pushed, never on latest.
    pushed = {repo: digest for repo, tag, digest in registry.pushes if tag == TAG}
    ((_, kwargs),) = cluster.started("a1")
    assert kwargs["ref"] == f"{HOST}/a1:{TAG}"
    for parent in ("base", "a"):
        assert kwargs["pins"][parent] == f"{HOST}/{parent}@{pushed[parent]}"
    assert "a1" not in kwargs["pins"]
    assert kwargs["registry_host"] == HOST and kwargs["dockerfile"] == "Dockerfile"
    assert pushed["a1"] == built_digest("a1", kwargs["pins"])
    for name, item in images.items():
        assert item["digest"] == pushed[name]
        assert registry.repos[name]["latest"] == pushed[name]
        assert item["latest_moved"] is True
    # Events and progress: the run's start, one start and one done per image, the table.
    tags = [tag for tag, _ in cluster.fired]
    run_id = report["run"]
    assert tags[0] == f"armswarm/imagebuild/{run_id}/start"
    assert sorted(t.rsplit("/", 1)[1] for t in tags[1:]) == ["done"] * 5 + ["start"] * 5
    assert cluster.said[0] == f"run {run_id}: 5 images on 2 nodes, tag {TAG}"
    header = ["image", "status", "node", "start", "end", "seconds", "digest"]
    assert cluster.said[-6].split() == header
    assert cluster.closed
    # The report on disk is the one returned (without the exit code), and last points to it.
    on_disk = json.loads(Path(report["report"]).read_text())
    assert on_disk == {k: v for k, v in report.items() if k != "retcode"}
    assert (settings.state_dir / "last" / "report.json").exists()
    assert Path(report["timeline"]).read_text().startswith("<svg")


def test_a_failed_image_skips_only_its_descendants_and_latest_moves_only_for_built(env):
    _, registry, cluster, _ = env
    cluster.fail = {"a"}
    report = run(env)
    images = by_image(report)
    assert {name: item["status"] for name, item in images.items()} == {
        "base": "done",
        "a": "failed",
        "a1": "skipped",
        "b": "done",
        "b1": "done",
    }
    assert report["retcode"] == 1 and report["counts"] == {"done": 3, "failed": 1, "skipped": 1}
    assert cluster.started("a1") == []  # never sent to a node
    assert "non-zero code" in images["a"]["error"] and images["a"]["log"][0].startswith("Step")
    assert images["a1"]["error"] == "skipped: a failed"
    assert sorted(repo for repo, _, _ in registry.pushes) == ["b", "b1", "base"]
    assert sorted(repo for repo, _, _ in registry.retags) == ["b", "b1", "base"]
    assert registry.repos["a"]["latest"] == "sha256:old"
    assert {n: i["latest_moved"] for n, i in images.items()} == {
        "base": True,
        "a": False,
        "a1": False,
        "b": True,
        "b1": True,
    }


def test_latest_that_cannot_move_fails_the_run(env):
    _, registry, _, _ = env
    registry.broken_retag = {"b1"}
    report = run(env)
    assert all(item["status"] == "done" for item in report["images"])
    assert by_image(report)["b1"]["latest_moved"] is False
    assert report["retcode"] == 1


def test_no_latest_moves_when_asked_not_to(env):
    _, registry, _, _ = env
    report = run(env, move_latest=False)
    assert report["retcode"] == 0 and registry.retags == []
    assert registry.repos["a"]["latest"] == "sha256:old"


def test_a_transient_failure_is_retried_on_the_other_node(env):
    _, registry, cluster, _ = env
    cluster.transient = {"b1": 1}
    cluster.seconds["a1"] = 1  # n1 is free again when b1 may run again
    report = run(env)
    b1 = by_image(report)["b1"]
    assert b1["status"] == "done" and report["retcode"] == 0
    (first, second) = b1["attempts"]
    assert first["status"] == "failed" and second["status"] == "ok"
    assert first["node"] != second["node"] == b1["node"]
    assert second["start"] >= first["end"] + 5  # the retry waits (backoff)
    assert any(tag.endswith("/job/retry") for tag, _ in cluster.fired)
    assert [repo for repo, _, _ in registry.pushes].count("b1") == 1


def test_transient_failures_beyond_retries_fail_the_image(env):
    _, registry, cluster, _ = env
    cluster.transient = {"b": 9}
    report = run(env, retries="1")  # from the command line: a string
    images = by_image(report)
    assert images["b"]["status"] == "failed" and "after 2 tries" in images["b"]["error"]
    assert images["b1"]["status"] == "skipped"
    assert [a["status"] for a in images["b"]["attempts"]] == ["failed", "failed"]


def test_a_node_that_vanishes_mid_run_has_its_job_built_on_the_other(env):
    clock, registry, cluster, _ = env
    # base (4 s) builds on n1, then a (6 s) follows it there (its parent's layers are on
    # n1); n1 stops answering one second into a.
    cluster.dies = {"n1": clock.now + 5}
    report = run(env)
    images = by_image(report)
    assert all(item["status"] == "done" for item in images.values()), report
    assert report["lost_nodes"] == ["n1"]
    assert images["base"]["node"] == "n1"
    assert [(a["node"], a["status"]) for a in images["a"]["attempts"]] == [
        ("n1", "lost"),
        ("n2", "ok"),
    ]
    # Everything after the loss went to n2, and a1 was built on the a that n2 pushed.
    assert {images[name]["node"] for name in ("a", "a1", "b", "b1")} == {"n2"}
    pushed = {repo: digest for repo, _, digest in registry.pushes}
    ((_, kwargs),) = cluster.started("a1")
    assert kwargs["pins"]["a"] == f"{HOST}/a@{pushed['a']}"
    assert registry.repos["a"]["latest"] == pushed["a"] == images["a"]["digest"]
    lost = [data for tag, data in cluster.fired if tag.endswith("/job/node-lost")]
    assert [d["node"] for d in lost] == ["n1"]
    assert any(tag.endswith("/job/requeue") for tag, _ in cluster.fired)


def test_a_node_that_vanishes_while_pushing_loses_the_child_built_on_its_local_image(env):
    clock, registry, cluster, _ = env
    cluster.seconds = {"base": 10, "a": 8, "b": 8, "a1": 1, "b1": 1}
    cluster.push_seconds = {"base": 6}
    # base is built on n1 at 4 s and pushes until 10 s; a child starts on its local image
    # there; n1 stops answering at 7 s, during both
    cluster.dies = {"n1": clock.now + 7}
    report = run(env)
    images = by_image(report)
    assert all(item["status"] == "done" for item in images.values()), report
    assert report["lost_nodes"] == ["n1"]
    assert images["base"]["attempts"][0]["node"] == "n1"
    early = [n for n in ("a", "b") if images[n]["attempts"][0]["node"] == "n1"]
    assert early, report
    for name in early:
        # lost with the node, not merely revoked by its parent's lost push
        assert images[name]["attempts"][0]["status"] == "lost"
        assert images[name]["attempts"][-1]["status"] == "ok"
        assert images[name]["attempts"][-1]["node"] == "n2"


def test_images_go_only_where_their_arch_and_labels_allow(env, tmp_path):
    _, _, cluster, settings = env
    cluster.facts = {"n1": grains(), "n2": grains("armv7l", "odroid-hc1"), "n3": grains()}
    settings.layout_nodes = {"n3": {"labels": {"disk": "ssd"}}}
    root = tree(
        tmp_path / "placed",
        {
            "base/Dockerfile": "FROM debian:12\n",
            "arm32/Dockerfile": "FROM base\n",
            "arm32/image.yaml": "arch: [armhf]\n",  # another spelling of armv7l
            "db/Dockerfile": "FROM base\n",
            "db/image.yaml": "labels: {disk: ssd}\n",
            "hc1/Dockerfile": "FROM base\n",
            "hc1/image.yaml": "labels: {armswarm.board: odroid-hc1}\n",
        },
    )
    report = run(env, source=str(root))
    nodes = {name: item["node"] for name, item in by_image(report).items()}
    assert nodes["arm32"] == nodes["hc1"] == "n2" and nodes["db"] == "n3"
    cluster.facts = {"n1": grains()}
    with pytest.raises(ArmswarmError, match=r"arm32 \(arm32/image.yaml\): arch \['armhf'\] leaves"):
        run(env, source=str(root), tag="20261123")


def test_no_answering_node_is_a_clear_error(env):
    _, _, cluster, _ = env
    cluster.facts = {"n1": False, "n2": "Minion did not return."}
    with pytest.raises(ArmswarmError, match="no minion matching 'G@x:y' answered"):
        run(env, target="G@x:y", tgt_type="compound")
    assert cluster.asked == [("G@x:y", "compound")] and cluster.jobs == {}


# -- the plan ---------------------------------------------------------------------------------
def remembered(settings, durations):
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "durations.json").write_text(json.dumps(durations))


def test_the_plan_for_identical_nodes_has_its_lower_bound_and_builds_nothing(env):
    _, registry, cluster, settings = env
    remembered(settings, {"base": 10, "a": 20, "b": 5, "a1": 30, "b1": 5})
    settings.nodes = "2"
    plan = build_run.plan(settings, cluster)
    # critical path base → a → a1 = 60 s; all the work, 70 s, on 2 nodes is 35 s
    assert plan["critical_path"] == ["base", "a", "a1"]
    assert plan["critical_path_seconds"] == 60 and plan["total_work_seconds"] == 70
    assert plan["lower_bound_seconds"] == 60
    # a waits for base, a1 for a: the long chain sets the makespan on any number of nodes
    assert plan["expected_makespan_seconds"] == 60
    assert plan["order"] == {"depth 1": ["base"], "depth 2": ["a", "b"], "depth 3": ["a1", "b1"]}
    assert plan["nodes"] == ["node1", "node2"]
    assert plan["images"]["a1"]["parents"] == ["a", "base"]
    assert plan["images"]["base"]["children"] == ["a", "a1", "b"]
    assert plan["expected_schedule"]["a1"] == "node1 30–60 s"
    assert cluster.asked == [] and cluster.jobs == {} and registry.pushes == []

    settings.nodes = 1
    plan = build_run.plan(settings, cluster)
    assert plan["lower_bound_seconds"] == plan["expected_makespan_seconds"] == 70


def test_the_plan_places_images_on_the_answering_nodes(env, tmp_path):
    _, _, cluster, settings = env
    cluster.facts = {"n1": grains(), "n2": grains("armv7l"), "n3": "Minion did not return."}
    settings.speeds = {"rockpro64": 1}  # over the board default, for round numbers
    root = tree(
        tmp_path / "placed",
        {
            "base/Dockerfile": "FROM debian:12\n",
            "arm32/Dockerfile": "FROM base\n",
            "arm32/image.yaml": "arch: [armv7l]\n",
            "big/Dockerfile": "FROM base\n",
            "big/image.yaml": "arch: [aarch64]\n",
        },
    )
    settings.source = str(root)
    remembered(settings, {"base": 10, "arm32": 30, "big": 40})
    plan = build_run.plan(settings, cluster)
    assert cluster.asked == [("*", "glob")]
    assert plan["nodes"] == ["n1", "n2"]
    assert plan["images"]["arm32"]["arch"] == ["armv7l"]
    assert plan["expected_schedule"]["arm32"].startswith("n2 10–40")
    assert plan["expected_schedule"]["big"].startswith("n1 10–50")
    assert plan["expected_makespan_seconds"] == 50
    # 80 s of work over 2 nodes is 40 s, but the path base → big is 50 s
    assert plan["lower_bound_seconds"] == 50
    assert cluster.jobs == {}


def test_a_tree_on_the_file_server_is_fetched_through_the_transport(env):
    _, _, cluster, settings = env
    cluster.tree = Path(settings.source)
    settings.source = "salt://images?saltenv=dev"
    plan = build_run.plan(settings, cluster)
    assert cluster.fetched == ["salt://images?saltenv=dev"]
    assert plan["order"]["depth 1"] == ["base"]
    settings.source = None
    with pytest.raises(ArmswarmError, match="no source: pass source=salt://"):
        build_run.plan(settings, cluster)


# -- durations remembered ----------------------------------------------------------------------
def test_durations_are_remembered_blended_and_used_by_the_next_plan(env):
    clock, _, cluster, settings = env
    settings.nodes = 2
    before = build_run.plan(settings, cluster)
    assert before["images"]["a1"]["expected_seconds"] == 60  # nothing known: the default
    assert before["images"]["a1"]["estimate"] == "default"
    report = run(env)
    history = json.loads((settings.state_dir / "durations.json").read_text())
    jobs = history["jobs"]
    where = {item["image"]: item["node"] for item in report["images"]}
    # each measurement with the node that made it, build and push apart
    assert jobs["base"]["samples"] == [[where["base"], 4.0, 0.0]]
    assert jobs["a"]["samples"] == [[where["a"], 6.0, 0.0]]
    # both nodes are RockPro64s (board default 1.15) and no image ran on both: the fit keeps
    # them at 1.15, and a job's cost at speed 1.0 is its seconds × 1.15
    assert history["speeds"] == {"n1": 1.15, "n2": 1.15}
    assert jobs["a"]["build"] == 6.9 and jobs["b1"]["build"] == 2.3
    after = build_run.plan(settings, cluster)
    assert after["images"]["a"]["expected_seconds"] == 6.9
    assert after["critical_path"] == ["base", "a", "a1"]
    assert after["critical_path_seconds"] == 17.2  # 4.6 + 6.9 + 5.75 on identical nodes
    assert after["lower_bound_seconds"] == 17.2
    # A second run: half-way to the new measure; an image that failed keeps its old one.
    cluster.seconds["a"] = 10
    cluster.fail = {"b"}
    clock.now += 100
    settings.nodes = None
    run(env, tag="20261122.2")
    history = json.loads((settings.state_dir / "durations.json").read_text())
    jobs = history["jobs"]
    assert [s[1] for s in jobs["a"]["samples"]] == [6.0, 10.0]
    assert len(jobs["b"]["samples"]) == 1 and jobs["b"]["build"] == 3.45
    speed = history["speeds"]
    first, second = (speed[n] * s for n, s, _ in jobs["a"]["samples"])
    assert jobs["a"]["build"] == pytest.approx(first + 0.5 * (second - first), abs=0.01)
    assert report["images"][0]["node_seconds"] == 4


def test_an_old_durations_file_reads_as_build_seconds_and_zero_stays_zero(env):
    _, _, cluster, settings = env
    remembered(settings, {"base": 0, "a": 20, "b": 5, "a1": 30, "b1": 5})
    settings.nodes = 1
    plan = build_run.plan(settings, cluster)
    assert plan["images"]["base"]["expected_seconds"] == 0  # measured 0 is not "unknown"
    assert plan["total_work_seconds"] == 60


def test_an_unknown_image_is_estimated_from_the_tree_and_its_hint(env):
    _, _, cluster, settings = env
    root = Path(settings.source)
    (root / "b1" / "image.yaml").write_text("expected_seconds: 42\n")
    remembered(settings, {"base": 10, "a": 20, "b": 40})
    settings.nodes = 2
    plan = build_run.plan(settings, cluster)
    images = plan["images"]
    assert (images["a1"]["expected_seconds"], images["a1"]["estimate"]) == (20, "median")
    assert (images["b1"]["expected_seconds"], images["b1"]["estimate"]) == (42, "hint")
    (root / "b1" / "image.yaml").write_text("expected_seconds: soon\n")
    with pytest.raises(ArmswarmError, match="b1: expected_seconds must be a number"):
        build_run.plan(settings, cluster)


def test_node_speeds_come_from_the_pillar_history_or_the_board(env):
    _, _, cluster, settings = env
    cluster.facts = {"n1": grains(board="sopine"), "n2": grains(), "n3": grains(board="x")}
    settings.speeds = {"n3": 3.0, "rockpro64": 2.0}
    plan = build_run.plan(settings, cluster)
    assert plan["speeds"] == {
        "n1": {
            "speed": 0.5,
            "source": "board default",
            "board": "sopine",
            "arch": "aarch64",
            "platform": "linux/arm64",
        },
        "n2": {
            "speed": 2.0,
            "source": "pillar (board)",
            "board": "rockpro64",
            "arch": "aarch64",
            "platform": "linux/arm64",
        },
        "n3": {
            "speed": 3.0,
            "source": "pillar (node)",
            "board": "x",
            "arch": "aarch64",
            "platform": "linux/arm64",
        },
    }
    # the lower bound is the chain at the fastest speed or the work over all speeds
    assert plan["lower_bound_seconds"] >= plan["total_work_seconds"] / 5.5 - 0.1
    assert plan["expected_makespan_seconds"] >= plan["lower_bound_seconds"]
    assert plan["expected_over_bound"] >= 1.0


def test_the_remembered_durations_order_the_work(env):
    _, _, cluster, settings = env
    # Remembered: the b branch is the long one; it starts first when base is done.
    remembered(settings, {"base": 1, "a": 1, "a1": 1, "b": 50, "b1": 50})
    cluster.seconds = {}
    report = run(env)
    starts = {name: item["start"] for name, item in by_image(report).items()}
    assert starts["b"] <= starts["a"]
    started = [image for _, image, _ in cluster.jobs.values()]
    assert started.index("b") < started.index("a")
    remembered(settings, {"base": 1, "a": 50, "a1": 50, "b": 1, "b1": 1})
    cluster.jobs.clear()
    run(env, tag="20261122.2")
    started = [image for _, image, _ in cluster.jobs.values()]
    assert started.index("a") < started.index("b")


# -- the report --------------------------------------------------------------------------------
def test_an_interrupted_run_still_writes_its_report(env):
    _, registry, cluster, settings = env
    cluster.interrupt_after = "base"
    with pytest.raises(KeyboardInterrupt):
        run(env)
    assert cluster.closed
    report = json.loads((settings.state_dir / "last" / "report.json").read_text())
    assert report["interrupted"] is True and report["tag"] == TAG
    images = by_image(report)
    assert images["base"]["status"] == "done"
    assert images["base"]["digest"] == registry.repos["base"][TAG]
    assert {images[n]["status"] for n in ("a", "b")} == {"running"}
    assert images["a1"]["status"] == "waiting" and images["a1"]["latest_moved"] is False
    assert (settings.state_dir / "last" / "timeline.svg").exists()
    # Nothing of an unfinished run moves latest or counts as a measured duration.
    assert registry.retags == []
    assert not (settings.state_dir / "durations.json").exists()
    # its contexts are no longer served
    assert cluster.withdrawn == list(cluster.served) and list(cluster.context_dir.iterdir()) == []


def test_a_report_that_cannot_be_written_does_not_hide_the_interruption(env):
    _, _, cluster, settings = env
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / "runs").write_text("a file where the runs directory belongs")
    cluster.interrupt_after = "base"
    with pytest.raises(KeyboardInterrupt):
        run(env)
    assert cluster.closed


# -- build contexts: served by hash, never in a job's arguments ------------------------------
def test_a_job_names_its_context_by_hash_and_carries_none_of_its_bytes(env):
    _, _, cluster, settings = env
    (Path(settings.source) / "b" / "blob").write_bytes(random.randbytes(4096))
    report = run(env)
    assert report["retcode"] == 0 and len(cluster.jobs) == 5
    (run_id,) = cluster.served
    for jid, (_, image, kwargs) in cluster.jobs.items():
        packed = build_job.pack_bytes(Path(settings.source) / image)
        assert "context" not in kwargs
        assert kwargs["context_sha256"] == hashlib.sha256(packed).hexdigest()
        assert kwargs["context_source"] == (
            f"salt://{run_id}/{kwargs['context_sha256']}.tar.gz?saltenv=armswarm_contexts"
        )
        # what Salt publishes to every minion and keeps in the job cache: small, no context
        text = json.dumps(kwargs)
        assert len(text) < 1000
        assert build_job.pack(Path(settings.source) / image)[:64] not in text
        # the node fetched the image's own directory, checked against the named hash
        assert cluster.contexts[jid] == packed
    # served while the run ran, gone once it ended
    assert cluster.withdrawn == [run_id] and list(cluster.context_dir.iterdir()) == []


def test_a_context_that_is_not_the_one_named_is_refused(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    data = build_job.pack_bytes(tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    assert build_job.verified(data, digest) == data
    with pytest.raises(ArmswarmError, match=f"the job names {'0' * 64}: refused"):
        build_job.verified(data, "0" * 64)
    for wrong in (digest.upper(), digest[:-1], None, 7, "sha256:" + digest):
        with pytest.raises(ArmswarmError, match="context_sha256 must be 64 lowercase hex"):
            build_job.verified(data, wrong)


def test_the_master_must_serve_the_contexts_environment(tmp_path):
    for roots in (None, {}, {"base": ["/srv/salt"]}, {"armswarm_contexts": []}):
        with pytest.raises(
            ArmswarmError, match="the master serves no file_roots:armswarm_contexts"
        ):
            build_contexts.root(roots)
    assert build_contexts.root({"armswarm_contexts": [str(tmp_path)]}) == tmp_path
    served = build_contexts.serve(tmp_path, "r1", {"web": b"one", "db": b"one"})
    assert served["web"] == served["db"]  # one file per content
    assert [p.name for p in (tmp_path / "r1").iterdir()] == [
        hashlib.sha256(b"one").hexdigest() + ".tar.gz"
    ]
    with pytest.raises(ArmswarmError, match="not a run id"):
        build_contexts.serve(tmp_path, "../up", {"web": b"x"})
    # a directory a killed run left a day ago goes with the next run; a recent one stays
    build_contexts.serve(tmp_path, "r0", {"web": b"old"})
    os.utime(tmp_path / "r0", (0, 0))
    build_contexts.serve(tmp_path, "r2", {"web": b"two"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1", "r2"]
    build_contexts.withdraw(tmp_path, "r1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r2"]


# -- refused before anything is built ---------------------------------------------------------
def test_a_published_tag_is_never_reused(env):
    _, registry, cluster, _ = env
    registry.repos["b1"] = {TAG: "sha256:earlier"}
    with pytest.raises(ArmswarmError, match=f"tag {TAG} is already published"):
        run(env)
    assert cluster.jobs == {} and not cluster.listening
    report = run(env, tag=None)
    assert report["tag"] != TAG and registry.repos["b1"][TAG] == "sha256:earlier"
    assert report["tag"] in registry.repos["b1"]


def test_a_context_over_the_limit_is_refused(env, tmp_path):
    _, _, cluster, settings = env
    (Path(settings.source) / "b" / "blob").write_bytes(random.randbytes(2**21))  # 2 MiB
    with pytest.raises(ArmswarmError, match="b: build context is larger than"):
        run(env, max_context_mb="1")
    assert cluster.jobs == {}
    assert run(env, max_context_mb=4)["retcode"] == 0


# -- retention ---------------------------------------------------------------------------------
def made(repos) -> dict:
    """The ledger entries of every dated tag in ``{repo: {tag: digest}}``, as runs record."""
    out = {}
    for repo, tags in repos.items():
        for tag in tags:
            if tag_retention.dated_key(tag):
                out.setdefault(repo, {}).setdefault(tag_retention.run_of(tag), []).append(tag)
    return out


def prune(settings, cluster, registry, keep, **more):
    return build_run.prune(cluster, registry, keep, state_dir=settings.state_dir, **more)


def test_prune_dry_run_then_for_real_then_garbage_collection(env):
    _, _, cluster, settings = env
    tags = {"20261101": "sha256:1", "20261102": "sha256:2", "20261103": "sha256:3"}
    registry = FakeRegistry({"web": {**tags, "latest": "sha256:1"}, "db": {"20261101": "d"}})
    build_run.record(settings.state_dir, made(registry.repos))
    dry = prune(settings, cluster, registry, "1", registry_node="node1")
    assert dry["repositories"]["web"] == {
        "kept": ["20261103", "latest"],
        "deleted": ["20261102"],
        "untagged": ["20261101"],
        "orphans": [],
        "kept_not_made_by_armswarm": [],
    }
    assert dry["garbage_collection"] == "skipped"
    assert registry.deleted == registry.untagged == [] and cluster.gc == []
    assert cluster.said == ["web: would remove 2 tags"]
    assert build_run.ledger(settings.state_dir) == made(registry.repos)  # a dry run keeps it

    cluster.gc_answer = {"ret": {"freed_bytes": 123}, "retcode": 0}
    done = prune(settings, cluster, registry, 1, dry_run=False, registry_node="node1")
    assert registry.deleted == [("web", "sha256:2")]
    assert registry.untagged == [("web", "20261101")]
    assert registry.repos["web"] == {"20261103": "sha256:3", "latest": "sha256:1"}
    assert cluster.gc == ["node1"] and done["garbage_collection"] == {"freed_bytes": 123}
    assert cluster.said[-1] == "garbage collection on node1: 123 bytes freed"
    # what was deleted left the ledger
    assert build_run.ledger(settings.state_dir) == {
        "web": {"20261103": ["20261103"]},
        "db": {"20261101": ["20261101"]},
    }

    again = prune(settings, cluster, registry, 1, dry_run=False, registry_node="node1")
    assert again["garbage_collection"] == "not needed" and cluster.gc == ["node1"]


def test_prune_refuses_bad_keep_and_reports_a_failed_collection(env):
    _, _, cluster, settings = env
    registry = FakeRegistry({"web": {"20261101": "sha256:1", "20261102": "sha256:2"}})
    build_run.record(settings.state_dir, made(registry.repos))
    build_run.record(settings.state_dir, {"web": {"20261103": ["20261103"]}})  # a run to come
    with pytest.raises(ArmswarmError, match="keep must be"):
        prune(settings, cluster, registry, 0)
    with pytest.raises(ArmswarmError, match="dry_run must be true or false, not 'False'"):
        prune(settings, cluster, registry, 1, dry_run="False")
    unset = prune(settings, cluster, FakeRegistry(registry.repos), 1, dry_run=False)
    assert unset["garbage_collection"].startswith("skipped: armswarm:registry:node is not set")
    cluster.gc_answer = {"ret": "registry is not read-only", "retcode": 1}
    registry.repos["web"]["20261103"] = "sha256:3"
    with pytest.raises(ArmswarmError, match="garbage collection on node1 failed: registry is"):
        prune(
            settings, cluster, registry, 1, repositories="web", dry_run=False, registry_node="node1"
        )


def test_a_run_records_its_tags_and_prune_deletes_no_tag_it_did_not_make(env):
    _, registry, cluster, settings = env
    # before the run: "a" has 20261101 (not recorded: pushed before the ledger, or by hand)
    registry.repos["a"]["20240101"] = "sha256:hand"  # someone's own tag that looks dated
    first = run(env)
    assert first["retcode"] == 0
    ledger = json.loads((settings.state_dir / build_run.LEDGER).read_text())
    assert ledger["version"] == build_run.LEDGER_VERSION
    assert ledger["repositories"] == {name: {TAG: [TAG]} for name in THREE_LEVELS_IMAGES}
    assert [p.name for p in settings.state_dir.iterdir() if p.name.endswith(".tmp")] == []
    second = run(env, tag="20261123")
    assert second["retcode"] == 0

    done = prune(settings, cluster, registry, 1, dry_run=False)
    entry = done["repositories"]["a"]
    # the first run's (the second built the same image: its tag is only untagged); 20261101
    # and 20240101 were not made here
    assert entry["untagged"] == [TAG] and entry["deleted"] == []
    assert entry["kept_not_made_by_armswarm"] == ["20240101", "20261101"]
    assert sorted(registry.repos["a"]) == ["20240101", "20261101", "20261123", "latest"]
    for name in set(THREE_LEVELS_IMAGES) - {"a"}:
        assert sorted(registry.repos[name]) == ["20261123", "latest"]
    assert "a: kept 2 dated-looking tags not made by armswarm: 20240101, 20261101" in cluster.said
    assert build_run.ledger(settings.state_dir) == {
        name: {"20261123": ["20261123"]} for name in THREE_LEVELS_IMAGES
    }


def test_a_failed_delete_keeps_the_tags_it_did_not_remove_in_the_ledger(env):
    _, _, cluster, settings = env
    repos = {"web": {"20261101": "sha256:1", "20261102": "sha256:2", "20261103": "sha256:3"}}
    registry = FakeRegistry(repos)
    build_run.record(settings.state_dir, made(repos))
    real_delete = registry.delete

    def delete(repo, digest):
        if digest == "sha256:2":
            raise ArmswarmError("registry DELETE web/manifests/sha256:2: HTTP 500")
        real_delete(repo, digest)

    registry.delete = delete
    with pytest.raises(ArmswarmError, match="HTTP 500"):
        prune(settings, cluster, registry, 1, dry_run=False)
    # 20261101 is gone from the registry and from the ledger; 20261102 is still in both
    assert sorted(registry.repos["web"]) == ["20261102", "20261103"]
    assert build_run.ledger(settings.state_dir) == {
        "web": {"20261102": ["20261102"], "20261103": ["20261103"]}
    }
    registry.delete = real_delete
    prune(settings, cluster, registry, 1, dry_run=False)
    assert build_run.ledger(settings.state_dir) == {"web": {"20261103": ["20261103"]}}


def test_an_unreadable_ledger_stops_retention_and_the_run(env):
    _, registry, cluster, settings = env
    settings.state_dir.mkdir(parents=True)
    path = settings.state_dir / build_run.LEDGER
    for text in ("{not json", '{"version": 1, "repositories": {"a": {"20261101": "20261101"}}}'):
        path.write_text(text)
        with pytest.raises(ArmswarmError, match=f"{path}: "):
            prune(settings, cluster, registry, 1, dry_run=False)
        with pytest.raises(ArmswarmError, match=f"{path}: "):
            run(env)
    assert registry.deleted == registry.untagged == [] and cluster.jobs == {}


def test_adopted_runs_are_pruned_like_recorded_ones(env):
    _, _, cluster, settings = env
    tags = {
        "20260101": "sha256:i1",
        "20260101-linux-arm64": "sha256:m1",
        "20260102": "sha256:2",
        "20260103": "sha256:3",
        "20240101": "sha256:hand",
    }
    registry = FakeRegistry({"web": tags})
    assert prune(settings, cluster, registry, 1)["repositories"]["web"]["deleted"] == []
    added = build_run.adopt(registry, settings.state_dir, "web", "20260101,20260102")
    assert added == {
        "repository": "web",
        "adopted": {"20260101": ["20260101", "20260101-linux-arm64"], "20260102": ["20260102"]},
    }
    build_run.adopt(registry, settings.state_dir, "web", 20260103)  # as salt-run reads it
    with pytest.raises(ArmswarmError, match=r"runs: 20260104.1 is not a tag name; quote it"):
        build_run.adopt(registry, settings.state_dir, "web", 20260104.1)
    with pytest.raises(ArmswarmError, match="repository must be"):
        build_run.adopt(registry, settings.state_dir, ["web"], "20260101")
    done = prune(settings, cluster, registry, 1, dry_run=False)["repositories"]["web"]
    assert sorted(done["deleted"]) == ["20260101", "20260101-linux-arm64", "20260102"]
    assert done["kept_not_made_by_armswarm"] == ["20240101"]
    assert sorted(registry.repos["web"]) == ["20240101", "20260103"]


def test_aliases_tree_build_args_and_skipped_directories_reach_the_plan_and_the_nodes(
    env, tmp_path
):
    _, registry, cluster, settings = env
    root = tree(
        tmp_path / "aliased",
        {
            "armv7h/archlinux/build.sh": "#!/bin/sh\n",
            "web/Dockerfile": "ARG BASE\nFROM ${BASE}\n",
            "notes/README": "not an image\n",
        },
    )
    (root / "arch").symlink_to("armv7h/archlinux", target_is_directory=True)
    tree(root, {"tools/Dockerfile": "FROM arch\n"})
    settings.source = str(root)
    settings.build_args = {"BASE": f"{HOST}/armv7h/archlinux"}
    plan = build_run.plan(settings, cluster)
    assert plan["aliases"] == {"arch": "armv7h/archlinux"}
    assert "notes" in plan["skipped"]
    assert plan["images"]["web"]["parents"] == ["armv7h/archlinux"]
    assert plan["images"]["tools"]["parents"] == ["armv7h/archlinux"]

    report = run(env)
    assert report["retcode"] == 0
    base = registry.repos["armv7h/archlinux"][TAG]
    sent = {image: kwargs for _, image, kwargs in cluster.jobs.values()}
    # the node rewrites FROM arch (the alias) to this run's base, not the registry's latest
    assert sent["tools"]["pins"]["arch"] == f"{HOST}/armv7h/archlinux@{base}"
    assert sent["web"]["build_args"]["BASE"] == f"{HOST}/armv7h/archlinux"


def test_a_child_builds_on_its_parents_local_image_while_the_parent_pushes(env):
    clock, registry, cluster, settings = env
    cluster.seconds = {"base": 10, "a": 8, "b": 8, "a1": 1, "b1": 1}
    cluster.push_seconds = {"base": 6}
    report = run(env)
    items = by_image(report)
    assert all(i["status"] == "done" for i in items.values())
    jobs = {image: (node, kwargs) for node, image, kwargs in cluster.jobs.values()}
    base_node = items["base"]["node"]
    early = [n for n in ("a", "b") if items[n]["start"] < items["base"]["end"]]
    # exactly one child started on base's node before base's push ended, on its local tag
    assert len(early) == 1
    child = early[0]
    assert jobs[child][0] == base_node
    assert jobs[child][1]["pins"] == {"base": f"{HOST}/base:{TAG}"}
    assert items[child]["start"] == pytest.approx(items["base"]["start"] + 4, abs=1)
    # the other waited for the push and got the digest
    other = "b" if child == "a" else "a"
    assert items[other]["start"] >= items["base"]["end"]
    assert jobs[other][1]["pins"] == {"base": f"{HOST}/base@{registry.repos['base'][TAG]}"}
    assert items["base"]["push_seconds"] == 6 and items["base"]["build_seconds"] == 4


def test_a_failed_push_rebuilds_what_started_on_the_local_image(env):
    clock, registry, cluster, settings = env
    cluster.seconds = {"base": 10, "a": 8, "b": 8, "a1": 1, "b1": 1}
    cluster.push_seconds = {"base": 6}
    cluster.transient = {"base": 1}  # built, push refused once: the runner retries
    report = run(env)
    items = by_image(report)
    assert all(i["status"] == "done" for i in items.values())
    started = [(image, kwargs["pins"]) for _, image, kwargs in cluster.jobs.values()]
    # a child started on the first try's local tag, was revoked, and built again on the
    # pushed digest of the second try
    first_child = next(p for image, p in started if image in ("a", "b"))
    assert first_child == {"base": f"{HOST}/base:{TAG}"}
    final = {image: pins for image, pins in started}
    digest = registry.repos["base"][TAG]
    assert final["a"]["base"] in (f"{HOST}/base@{digest}", f"{HOST}/base:{TAG}")
    revoked = [a for item in items.values() for a in item["attempts"] if a["status"] == "revoked"]
    assert len(revoked) == 1
    assert [a["status"] for a in items["base"]["attempts"]] == ["failed", "ok"]
    # every child's final build started after the try of base it built on had finished building
    for name in ("a", "b"):
        assert items[name]["attempts"][-1]["start"] >= items["base"]["attempts"][1]["start"]


def test_a_context_packs_to_the_same_bytes_in_another_second(tmp_path, monkeypatch):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    first = build_job.pack_bytes(tmp_path)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)  # what gzip stamps by default
    assert build_job.pack_bytes(tmp_path) == first
