"""Pure logic of the image builds: Dockerfile references, the graph, scheduling, tags, retention,
and the dispatcher's failure handling (driven by a simulated transport)."""

import base64
import datetime
import hashlib
import io
import tarfile
import textwrap

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.build import build_dag, build_job, dispatch, dockerfile, scheduler
from armswarm_core.registry import registry_api, tag_retention

pytestmark = pytest.mark.unit

REG = "reg.lan:5000"


def _digest(image: str) -> str:
    """A build's answer: a real sha256 digest (the dispatcher refuses anything else)."""
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


# -- Dockerfile ------------------------------------------------------------------------------
def test_references_skip_stages_and_expand_args():
    text = textwrap.dedent(
        """\
        # escape=\\
        ARG BASE=base
        ARG TAG
        FROM --platform=linux/arm64 ${BASE}:${TAG:-latest} AS build
        RUN --mount=type=cache,from=cachebox,target=/c make
        FROM reg.lan:5000/runtime
        COPY --from=build /out /out
        COPY --from=0 /x /x
        COPY --from=tools:1.2 \\
             /opt/tools /opt/tools
        FROM build
        """
    )
    parsed = dockerfile.parse(text)
    assert parsed.stages == ["build", None, None]
    assert [(r.kind, r.value) for r in parsed.references] == [
        ("from", "base:latest"),
        ("mount", "cachebox"),
        ("from", "reg.lan:5000/runtime"),
        ("copy", "tools:1.2"),
    ]
    assert parsed.references[3].lines == (8, 9)
    assert dockerfile.parse(text, {"BASE": "other"}).references[0].value == "other:latest"


@pytest.mark.parametrize(
    ("ref", "repo"),
    [
        ("base", "base"),
        ("base:2026", "base"),
        ("reg.lan:5000/armv7h/arch:20250101", "armv7h/arch"),
        ("reg.lan:5000/base@sha256:abc", "base"),
        ("other.lan/base", "other.lan/base"),
    ],
)
def test_repository(ref, repo):
    assert dockerfile.repository(ref, REG) == repo


def test_pin_rewrites_only_named_images_and_keeps_the_rest():
    text = (
        "FROM base AS b\nRUN true \\\n  && echo hi\nFROM debian:12\n"
        "COPY --from=tools:1 \\\n  /a /a\n"
    )
    pins = {"base": f"{REG}/base@sha256:1", "tools": f"{REG}/tools@sha256:2"}
    pinned = dockerfile.pin(text, pins, REG)
    assert pinned == (
        f"FROM {REG}/base@sha256:1 AS b\nRUN true \\\n  && echo hi\nFROM debian:12\n"
        f"COPY --from={REG}/tools@sha256:2 \\\n  /a /a\n"
    )


@pytest.mark.parametrize("text", ["RUN true\n", "", "ARG X\nFROM ${X}\n"])
def test_bad_dockerfiles(text):
    with pytest.raises(ArmswarmError):
        dockerfile.parse(text)


# -- the graph -------------------------------------------------------------------------------
def _tree(tmp_path, files: dict):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_graph_from_a_tree(tmp_path):
    root = _tree(
        tmp_path,
        {
            "base/build.sh": "true",
            "a/Dockerfile": f"FROM {REG}/base:latest\n",
            "b/Dockerfile": "FROM base AS s\nFROM a\nCOPY --from=s / /\n",
            "ext/Dockerfile": "FROM debian:bookworm\n",
            "nested/img/Dockerfile": "FROM b\n",
            "nested/img/sub/Dockerfile": "FROM nothing-this-is-context\n",
        },
    )
    graph = build_dag.load(root, REG)
    assert graph.order == ["base", "ext", "a", "b", "nested/img"]
    assert graph.images["b"].parents == ["a", "base"]
    assert graph.images["base"].script == "build.sh"
    assert graph.depth() == 4
    assert graph.descendants("a") == {"b", "nested/img"}
    assert graph.critical_path({"base": 1, "ext": 9}) == ["base", "a", "b", "nested/img"]


def test_cycle_and_missing_parents_are_reported_together(tmp_path):
    root = _tree(
        tmp_path,
        {
            "a/Dockerfile": "FROM b\n",
            "b/Dockerfile": "FROM a\n",
            "c/Dockerfile": f"FROM {REG}/gone\n",
            "d/build.sh": "",
            "d/image.yaml": "depends: [nope]\ncolour: red\n",
            "Bad_Name/Dockerfile": "FROM a\n",
        },
    )
    with pytest.raises(ArmswarmError) as err:
        build_dag.load(root, REG)
    text = str(err.value)
    assert "gone is in the cluster registry but not in the tree" in text
    assert "depends on nope" in text and "unknown keys colour" in text and "Bad_Name" in text
    (tmp_path / "c/Dockerfile").write_text("FROM a\n")
    (tmp_path / "d/image.yaml").write_text("")
    (tmp_path / "Bad_Name/Dockerfile").unlink()
    with pytest.raises(ArmswarmError, match="dependency cycle a -> b -> a"):
        build_dag.load(root, REG)


# -- scheduling ------------------------------------------------------------------------------
def _graph(edges: dict, **reqs):
    images = {
        name: build_dag.Image(name=name, path=None, parents=sorted(parents), **reqs.get(name, {}))
        for name, parents in edges.items()
    }
    return build_dag.Graph(images=images, order=build_dag._toposort(images))


def test_longest_path_first_beats_a_static_split():
    # One long chain and many short leaves: the chain must start first.
    edges = {"root": [], "c1": ["root"], "c2": ["c1"], "c3": ["c2"]}
    edges.update({f"leaf{i}": ["root"] for i in range(6)})
    graph = _graph(edges)
    durations = {"root": 1, "c1": 5, "c2": 5, "c3": 5, **{f"leaf{i}": 2 for i in range(6)}}
    nodes = {"n1": {}, "n2": {}}
    dynamic = scheduler.simulate(graph, durations, nodes)["makespan"]
    static = scheduler.simulate(graph, durations, nodes, "static")["makespan"]
    bound = scheduler.lower_bound(graph, durations, 2)
    assert dynamic == bound == 16
    assert static > dynamic


def test_requirements_and_lost_nodes():
    graph = _graph({"base": [], "arm": ["base"]}, arm={"arch": ["aarch64"]})
    nodes = {"x": {"arch": "x86_64"}, "a": {"arch": "arm64"}}
    sched = scheduler.Scheduler(graph, {}, nodes)
    assert sched.assign(["x", "a"]) == [("base", "x")]
    sched.finished("base", ok=True)
    assert sched.assign(["x"]) == []
    assert sched.node_lost("a") == ["arm"]
    with pytest.raises(ArmswarmError, match="no build node matches"):
        scheduler.Scheduler(graph, {}, {"x": {"arch": "x86_64"}})


def test_a_failure_skips_descendants_only():
    graph = _graph({"base": [], "a": ["base"], "a1": ["a"], "b": ["base"]})
    sched = scheduler.Scheduler(graph, {}, {"n": {}})
    sched.assign(["n"])
    sched.finished("base", ok=True)
    ((image, _),) = sched.assign(["n"])
    assert image == "a"  # longer remaining path than b
    assert sched.finished("a", ok=False) == ["a1"]
    assert sched.assign(["n"]) == [("b", "n")]


# -- tags and retention ----------------------------------------------------------------------
def test_run_tag_never_reuses_a_published_tag():
    day = datetime.datetime(2026, 11, 22, 23, 59)
    assert tag_retention.run_tag(["20261121", "latest"], day) == "20261122"
    assert tag_retention.run_tag(["20261122", "20261122.2"], day) == "20261122.3"
    assert tag_retention.run_tag([], day, "%Y-%m-%d") == "2026-11-22"


def made(tags, fmt=tag_retention.DEFAULT_TAG_FORMAT) -> dict:
    """A ledger that says the runner made every dated tag of ``tags``."""
    out = {}
    for tag in tags:
        if tag_retention.dated_key(tag, fmt):
            out.setdefault(tag_retention.run_of(tag), []).append(tag)
    return out


def test_retention_keeps_shared_digests():
    tags = {
        "20261101": "sha256:a",
        "20261102": "sha256:b",
        "20261102.2": "sha256:c",
        "20261103": "sha256:d",
        "20261104": "sha256:e",
        "latest": "sha256:b",  # an old dated tag shares latest's digest
        "stable": "sha256:a",
    }
    plan = tag_retention.retention(tags, keep=2, made=made(tags))
    assert plan["keep"] == ["20261103", "20261104", "latest", "stable"]
    assert plan["delete"] == [("20261102.2", "sha256:c")]
    assert plan["untag"] == [("20261101", "sha256:a"), ("20261102", "sha256:b")]


def test_retention_deletes_only_the_tags_the_runner_made():
    tags = {
        "20261101": "sha256:a",  # armswarm's, and a hand-pushed tag shares its digest
        "20261102": "sha256:b",
        "20261102-linux-arm64": "sha256:x",  # pushed by hand into an armswarm run's name
        "20261103": "sha256:c",
        "20240101": "sha256:a",  # pushed by hand, looks dated
        "20301231": "sha256:f",  # pushed by hand, newer than every run: does not count
        "latest": "sha256:c",
    }
    ledger = {
        "20261101": ["20261101"],
        "20261102": ["20261102"],
        "20261103": ["20261103"],
        "20261001": ["20261001", "20261001-linux-arm64"],  # deleted by hand since
        "20261201": ["20261201"],  # a run still pushing: newer than what the registry has
    }
    plan = tag_retention.retention(tags, keep=1, made=ledger)
    assert plan["delete"] == [("20261102", "sha256:b")]
    # the hand-pushed 20240101 holds sha256:a: armswarm's old tag on it is only untagged
    assert plan["untag"] == [("20261101", "sha256:a")]
    assert plan["foreign"] == ["20240101", "20261102-linux-arm64", "20301231"]
    assert plan["keep"] == [
        "20240101",
        "20261102-linux-arm64",
        "20261103",
        "20301231",
        "latest",
    ]
    assert plan["forget"] == ["20261001"]
    # no ledger (a registry from before it): nothing is deleted, every dated tag is listed
    before = tag_retention.retention(tags, keep=1, made={})
    assert before["delete"] == before["untag"] == before["forget"] == []
    assert before["keep"] == sorted(tags)
    assert before["foreign"] == sorted(set(tags) - {"latest"})


def test_adopting_runs_takes_their_platform_tags_and_refuses_guesses():
    tags = ["20260101", "20260101-linux-arm64", "20260102", "v1", "latest"]
    assert tag_retention.adopt(tags, ["20260101", "20260102"]) == {
        "20260101": ["20260101", "20260101-linux-arm64"],
        "20260102": ["20260102"],
    }
    with pytest.raises(ArmswarmError, match="20260103: no such tag"):
        tag_retention.adopt(tags, ["20260103"])
    for wrong in ("v1", "latest", "20260101-linux-arm64"):
        with pytest.raises(ArmswarmError, match=f"{wrong}: not a run tag in the format %Y%m%d"):
            tag_retention.adopt(tags, [wrong])


# -- the dispatcher, on a simulated cluster ---------------------------------------------------
class FakeTransport:
    """Nodes that finish each job after its duration; some fail, some die."""

    def __init__(
        self,
        clock,
        durations,
        fail=(),
        transient=None,
        dead=(),
        connected=None,
        vanish=(),
        raises=(),
        publish_fails=0,
    ):
        self.clock = clock
        self.durations = durations
        self.fail = set(fail)
        self.transient = dict(transient or {})  # image → transient failures before success
        self.dead = set(dead)  # nodes that accept jobs and never answer
        self.connected = connected
        self.vanish = set(vanish)  # nodes that answer probes but lose every job
        self.raises = set(raises)  # nodes whose module raises (Salt: success False)
        self.publish_fails = publish_fails  # publishes that fail before the master is back
        self.pending = []  # (due, jid, node, ret)
        self.n = 0
        self.started = []

    def _jid(self):
        self.n += 1
        return f"j{self.n}"

    def _publish(self):
        if self.publish_fails:
            self.publish_fails -= 1
            raise dispatch.PublishFailed("master busy")

    def start(self, node, image, kwargs):
        self._publish()
        if self.connected is not None and node not in self.connected:
            return None
        jid = self._jid()
        self.started.append((image, node, kwargs["pins"]))
        if node in self.dead or node in self.vanish:
            return jid
        if node in self.raises:
            ret = {"return": "Traceback ...\n\nConnectionError: dockerd", "success": False}
            self.pending.append((self.clock.now + 1, jid, node, ret))
            return jid
        if self.transient.get(image):
            self.transient[image] -= 1
            answer = {"status": "failed", "transient": True, "error": "push: connection refused"}
        elif image in self.fail:
            answer = {"status": "failed", "transient": False, "error": "RUN false"}
        else:
            answer = {"status": "ok", "digest": _digest(image), "seconds": 1}
        due = self.clock.now + self.durations.get(image, 1)
        self.pending.append((due, jid, node, {"return": answer, "success": True}))
        return jid

    def probe(self, node, jid):
        self._publish()
        probe = self._jid()
        if node not in self.dead:
            running = any(j == jid for _, j, _, _ in self.pending)
            answer = {"return": {"jid": jid} if running else {}}
            self.pending.append((self.clock.now, probe, node, answer))
        return probe

    def events(self, wait):
        self.clock.now += wait
        due = [p for p in self.pending if p[0] <= self.clock.now]
        self.pending = [p for p in self.pending if p[0] > self.clock.now]
        return [(jid, node, ret) for _, jid, node, ret in due]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _dispatch(graph, nodes, transport, clock, **kwargs):
    sched = scheduler.Scheduler(graph, {}, nodes)
    dispatcher = dispatch.Dispatcher(
        sched,
        transport,
        lambda image, node, digests: {"pins": digests},
        clock=clock,
        retry_delay=1,
        **kwargs,
    )
    return dispatcher, dispatcher.run()


def test_dispatcher_pins_children_and_isolates_failures():
    clock = Clock()
    graph = _graph({"base": [], "a": ["base"], "a1": ["a"], "b": ["base"], "b1": ["b"]})
    transport = FakeTransport(clock, {}, fail={"a"}, transient={"b": 1})
    _, outcomes = _dispatch(graph, {"n1": {}, "n2": {}}, transport, clock)
    status = {name: o.status for name, o in outcomes.items()}
    assert status == {"base": "done", "a": "failed", "a1": "skipped", "b": "done", "b1": "done"}
    pins = {image: p for image, _, p in transport.started}
    assert pins["b1"] == {"b": _digest("b")}  # its own parent's only, not the whole run's
    assert [a[3] for a in outcomes["b"].attempts] == ["failed", "ok"]


def test_dispatcher_gives_up_on_persistent_transient_errors():
    clock = Clock()
    graph = _graph({"base": []})
    transport = FakeTransport(clock, {}, transient={"base": 99})
    _, outcomes = _dispatch(graph, {"n1": {}}, transport, clock, retries=2)
    assert outcomes["base"].status == "failed"
    assert "after 3 tries" in outcomes["base"].error


def test_a_dead_node_has_its_job_built_elsewhere():
    clock = Clock()
    graph = _graph({"base": [], "a": ["base"], "b": ["base"]})
    transport = FakeTransport(clock, {"a": 5, "b": 5}, dead={"n2"})
    dispatcher, outcomes = _dispatch(
        graph, {"n1": {}, "n2": {}}, transport, clock, probe_every=2, probe_timeout=2
    )
    assert all(o.status == "done" for o in outcomes.values())
    assert dispatcher.lost_nodes == ["n2"]
    lost = [o for o in outcomes.values() if any(a[3] == "lost" for a in o.attempts)]
    assert len(lost) == 1 and lost[0].node == "n1"


def test_no_node_left():
    clock = Clock()
    graph = _graph({"base": [], "a": ["base"]})
    transport = FakeTransport(clock, {}, connected=set())
    dispatcher, outcomes = _dispatch(graph, {"n1": {}}, transport, clock)
    assert {o.status for o in outcomes.values()} == {"failed", "skipped"}
    assert dispatcher.lost_nodes == ["n1"]


def test_a_node_that_loses_every_job_cannot_loop_forever():
    clock = Clock()
    graph = _graph({"base": []})
    transport = FakeTransport(clock, {}, vanish={"n1"})
    dispatcher, outcomes = _dispatch(
        graph, {"n1": {}}, transport, clock, retries=2, probe_every=2, probe_timeout=2
    )
    assert outcomes["base"].status == "failed"
    assert "vanished" in outcomes["base"].error and "after 3 tries" in outcomes["base"].error
    assert [a[3] for a in outcomes["base"].attempts] == ["vanished"] * 3
    assert dispatcher.lost_nodes == []  # it answered every probe: alive, just unreliable


def test_a_module_error_is_retried_and_then_built_elsewhere_or_failed():
    clock = Clock()
    graph = _graph({"base": []})
    transport = FakeTransport(clock, {}, raises={"n1"})
    _, outcomes = _dispatch(graph, {"n1": {}}, transport, clock, retries=1)
    assert outcomes["base"].status == "failed"
    assert outcomes["base"].error.startswith("n1: Traceback")
    assert "ConnectionError" not in outcomes["base"].error  # only the first paragraph
    clock = Clock()
    transport = FakeTransport(clock, {"base": 3}, raises={"n1"})
    _, outcomes = _dispatch(graph, {"n1": {}, "n2": {}}, transport, clock, retries=2)
    assert outcomes["base"].status == "done"
    assert "n2" in [a[0] for a in outcomes["base"].attempts]


# -- build contexts ----------------------------------------------------------------------------
def _context(*members) -> str:
    """A context like the runner's, from (name, kind, target-or-data) triples."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
                continue
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = value
            tar.addfile(info)
    return base64.b64encode(buf.getvalue()).decode()


def test_a_context_round_trips_with_links_inside(tmp_path):
    src = tmp_path / "src"
    (src / "conf").mkdir(parents=True)
    (src / "Dockerfile").write_text("FROM scratch\n")
    (src / "conf" / "a.conf").write_text("x=1\n")
    (src / "current").symlink_to("conf")
    dest = tmp_path / "dest"
    dest.mkdir()
    build_job._unpack(build_job.pack(src), dest)
    assert (dest / "Dockerfile").read_text() == "FROM scratch\n"
    assert (dest / "current" / "a.conf").read_text() == "x=1\n"
    dest2 = tmp_path / "dest2"
    dest2.mkdir()
    hard = _context(("a", "file", b"1"), ("sub/b", "link", "a"))
    build_job._unpack(hard, dest2)
    assert (dest2 / "sub" / "b").read_text() == "1"


@pytest.mark.parametrize(
    "members",
    [
        [("../evil", "file", b"x")],
        [("/etc/evil", "file", b"x")],
        [("up", "sym", "/etc")],
        [("up", "sym", "../..")],
        # each link alone stays inside, together they leave it: "here" is the build directory,
        # so "here/.." is its parent
        [("here", "sym", "."), ("out", "sym", "here/../x"), ("out/evil", "file", b"x")],
        [("h", "link", "../../etc/passwd")],
    ],
)
def test_a_context_cannot_write_outside_its_directory(tmp_path, members):
    dest = tmp_path / "build"
    dest.mkdir()
    with pytest.raises(ArmswarmError, match="refusing"):
        build_job._unpack(_context(*members), dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]
    assert list(dest.iterdir()) == []


def test_a_master_that_cannot_publish_for_a_while_costs_no_try_and_no_node():
    clock = Clock()
    graph = _graph({"base": [], "a": ["base"]})
    transport = FakeTransport(clock, {"base": 6, "a": 6}, publish_fails=5)
    dispatcher, outcomes = _dispatch(
        graph, {"n1": {}}, transport, clock, retries=0, probe_every=2, probe_timeout=2
    )
    assert {o.status for o in outcomes.values()} == {"done"}
    assert dispatcher.lost_nodes == [] and transport.publish_fails == 0


def test_registry_settings_merge_key_by_key():
    opts = {"armswarm": {"registry": {"host": "reg.lan:5000", "ca_file": "/etc/ca.crt"}}}
    pillar = {"armswarm": {"registry": {"username": "u", "password": "p", "keep": 3}}}
    conf = registry_api.settings(opts, pillar)
    assert (conf.host, conf.ca_file, conf.username, conf.password, conf.keep) == (
        "reg.lan:5000",
        "/etc/ca.crt",
        "u",
        "p",
        3,
    )
    # A key set in both: pillar wins (defaults < config < pillar).
    both = {"armswarm": {"registry": {"host": "other:5000"}}}
    assert registry_api.settings(opts, both).host == "other:5000"
    assert registry_api.settings(None, pillar, host="x:1").host == "x:1"
    with pytest.raises(ArmswarmError, match="host is not set"):
        registry_api.settings({}, {})


def test_dated_tags_with_a_dotted_format():
    fmt = "%Y.%m.%d"
    assert tag_retention.dated_key("2026.11.02", fmt) == (datetime.datetime(2026, 11, 2), 1)
    assert tag_retention.dated_key("2026.11.02.3", fmt) == (datetime.datetime(2026, 11, 2), 3)
    assert tag_retention.dated_key("latest", fmt) is None
    tags = {"2026.11.01": "sha256:a", "2026.11.02": "sha256:b", "2026.11.02.2": "sha256:c"}
    plan = tag_retention.retention(tags, keep=1, fmt=fmt, made=made(tags, fmt))
    assert plan["keep"] == ["2026.11.02.2"]
    assert sorted(plan["delete"]) == [("2026.11.01", "sha256:a"), ("2026.11.02", "sha256:b")]
