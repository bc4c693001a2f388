"""Multi-platform builds: the platform vocabulary, each image's platforms (own, inherited,
tree default, filtered by ``arch:``), the graph of jobs per (image, platform), the automatic
platform build arguments, the image index, retention that understands indexes, the check of
the built image's platform, and a whole run on a simulated cluster of armv7 and arm64 nodes."""

import json

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.build import build_dag, build_job, build_run, build_settings, scheduler
from armswarm_core.common import architectures
from armswarm_core.registry import registry_api, tag_retention
from test_build_run import HOST, Clock, FakeCluster, FakeRegistry, built_digest, tree

pytestmark = pytest.mark.unit

V7, ARM64 = "linux/arm/v7", "linux/arm64"


# -- the vocabulary ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given, expected",
    [
        ("linux/arm/v7", V7),
        ("linux/arm", V7),  # containerd's default variant for arm
        ("LINUX/ARM64", ARM64),
        ("linux/arm64/v8", ARM64),
        (" linux/aarch64 ", ARM64),
        ("linux/amd64", "linux/amd64"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/arm/v9", None),
        ("arm64", None),  # an architecture, not a platform
        ("windows/amd64", None),
        (7, None),
    ],
)
def test_platform_spellings(given, expected):
    assert architectures.platform(given) == expected


def test_buildkits_automatic_platform_arguments():
    # BuildKit's documented values: variant empty for arm64 and amd64
    assert architectures.build_args(V7, "linux/amd64") == {
        "TARGETPLATFORM": "linux/arm/v7",
        "TARGETOS": "linux",
        "TARGETARCH": "arm",
        "TARGETVARIANT": "v7",
        "BUILDPLATFORM": "linux/amd64",
        "BUILDOS": "linux",
        "BUILDARCH": "amd64",
        "BUILDVARIANT": "",
    }
    args = architectures.build_args("linux/arm64/v8")
    assert args["TARGETARCH"] == "arm64" and args["TARGETVARIANT"] == ""
    assert args["BUILDPLATFORM"] == "linux/arm64"  # unknown build platform: the target's


@pytest.mark.parametrize(
    "platform, config, ok",
    [
        (V7, ("arm", "v7", "linux"), True),
        (V7, ("arm", "", "linux"), True),  # an arm image without variant is v7
        (V7, ("arm", "v6", "linux"), False),
        (V7, ("amd64", "", "linux"), False),  # docker import ignores --platform
        (ARM64, ("arm64", "v8", "linux"), True),
        (ARM64, ("arm64", "", "linux"), True),
        (ARM64, ("arm", "v7", "linux"), False),
        (ARM64, ("arm64", "", "windows"), False),
        ("linux/amd64", ("amd64", "", ""), True),
    ],
)
def test_the_built_images_config_against_the_platform_asked_for(platform, config, ok):
    assert architectures.matches(platform, *config) is ok


# -- an image's platforms -----------------------------------------------------------------------
def nodes(**platforms):
    out = {}
    for name, platform in platforms.items():
        arch = architectures.arch_of_platform(platform)
        board = "odroid-hc1" if arch == "armv7" else "rockpro64"
        out[name] = scheduler.Node(
            arch=arch, labels={"armswarm.board": board, "node": name}, platform=platform
        )
    return out


MIXED = {"hc1": V7, "rock": ARM64, "pine": ARM64}


def load(tmp_path, files):
    return build_dag.load(tree(tmp_path / "t", files))


def test_platforms_are_inherited_defaulted_and_filtered_by_arch(tmp_path):
    graph = load(
        tmp_path,
        {
            "base/Dockerfile": "FROM scratch\n",
            "app/Dockerfile": "FROM base\n",  # inherits both
            "only64/Dockerfile": "FROM base\n",
            "only64/image.yaml": "platforms: [linux/arm64/v8]\n",  # another spelling
            "child64/Dockerfile": "FROM only64\nCOPY --from=app / /\n",  # what both have
            "hc1/Dockerfile": "FROM app\n",
            "hc1/image.yaml": "arch: [armhf]\n",  # arch: filters the inherited list
            "pinned/Dockerfile": "FROM base\n",
            # an inherited list is narrowed to where its labels let it build
            "pinned/image.yaml": "labels: {armswarm.board: odroid-hc1}\n",
        },
    )
    platforms = build_dag.resolve_platforms(graph, nodes(**MIXED))
    assert platforms == {
        "base": [V7, ARM64],
        "app": [V7, ARM64],
        "only64": [ARM64],
        "child64": [ARM64],
        "hc1": [V7],
        "pinned": [V7],
    }
    # the tree default replaces "every platform of the nodes" for roots; hc1's arch: then
    # leaves it nothing
    with pytest.raises(ArmswarmError, match=r"hc1 \(hc1/image.yaml\): arch \['armhf'\] leaves"):
        build_dag.resolve_platforms(graph, nodes(**MIXED), default=["linux/arm64"])


def test_a_platform_its_parent_lacks_is_an_error_naming_both(tmp_path):
    graph = load(
        tmp_path,
        {
            "base/Dockerfile": "FROM scratch\n",
            "base/image.yaml": "platforms: [linux/arm64]\n",
            "web/Dockerfile": "FROM base\n",
            "web/image.yaml": "platforms: [linux/arm/v7, linux/arm64]\n",
        },
    )
    with pytest.raises(ArmswarmError) as err:
        build_dag.resolve_platforms(graph, nodes(**MIXED))
    assert (
        "web (web/image.yaml): platform linux/arm/v7 is not a platform of its parent base "
        "(base has linux/arm64)"
    ) in str(err.value)


def test_a_platform_no_build_node_has_is_an_error_naming_image_and_file(tmp_path):
    graph = load(
        tmp_path,
        {
            "base/Dockerfile": "FROM scratch\n",
            "base/image.yaml": "platforms: [linux/arm/v6, linux/arm64]\n",
        },
    )
    with pytest.raises(ArmswarmError) as err:
        build_dag.resolve_platforms(graph, nodes(**MIXED))
    assert (
        "base (base/image.yaml): no build node has platform linux/arm/v6 "
        "(the nodes have linux/arm/v7, linux/arm64)"
    ) in str(err.value)
    # written down, it must be buildable as written: labels that exclude it are an error
    graph = load(
        tmp_path / "2",
        {
            "db/Dockerfile": "FROM scratch\n",
            "db/image.yaml": "platforms: [linux/arm/v7]\nlabels: {armswarm.board: rockpro64}\n",
        },
    )
    with pytest.raises(ArmswarmError, match="no build node of platform linux/arm/v7 matches"):
        build_dag.resolve_platforms(graph, nodes(**MIXED))
    # the tree default is checked the same way, and named
    graph = load(tmp_path / "3", {"base/Dockerfile": "FROM scratch\n"})
    with pytest.raises(ArmswarmError, match="from armswarm:imagebuild:platforms: no build node"):
        build_dag.resolve_platforms(graph, nodes(**MIXED), default=["linux/amd64"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("platforms: linux/arm64\n", "platforms must be a non-empty list"),  # a scalar
        ("platforms: []\n", "platforms must be a non-empty list"),
        ("platforms: {linux/arm64: 1}\n", "platforms must be a non-empty list"),
        ("platforms: [linux/arm64, linux/sparc]\n", "'linux/sparc' is not a known platform"),
        ("platforms: [arm64]\n", "'arm64' is not a known platform"),
        ("platforms: [64]\n", "64 is not a known platform"),
    ],
)
def test_bad_platform_lists_are_plan_time_errors_naming_image_and_file(tmp_path, text, message):
    with pytest.raises(ArmswarmError) as err:
        load(tmp_path, {"web/Dockerfile": "FROM scratch\n", "web/image.yaml": text})
    assert "web (web/image.yaml): platforms" in str(err.value)
    assert message in str(err.value)


def test_the_tree_default_must_be_a_list_of_known_platforms(tmp_path):
    graph = load(tmp_path, {"base/Dockerfile": "FROM scratch\n"})
    for bad in ("linux/arm64", ["linux/arm64", "linux/mips"]):
        with pytest.raises(ArmswarmError, match="armswarm:imagebuild:platforms"):
            build_dag.resolve_platforms(graph, nodes(**MIXED), default=bad)


def test_nodes_without_a_known_platform_build_platform_less_jobs(tmp_path):
    graph = load(tmp_path, {"base/Dockerfile": "FROM scratch\n", "a/Dockerfile": "FROM base\n"})
    odd = {"n1": scheduler.Node(arch="mips")}
    assert build_dag.resolve_platforms(graph, odd) == {"base": [None], "a": [None]}
    jobs = build_dag.expand(graph, {"base": [None], "a": [None]})
    assert jobs.order == ["base", "a"] and jobs.images["a"].platform is None


def test_the_graph_of_jobs_has_one_job_per_image_and_platform(tmp_path):
    graph = load(
        tmp_path,
        {
            "base/Dockerfile": "FROM scratch\n",
            "web/Dockerfile": "FROM base\n",
            "arm/Dockerfile": "FROM base\n",
            "arm/image.yaml": "platforms: [linux/arm/v7]\n",
            "arm2/Dockerfile": "FROM arm\n",
        },
    )
    platforms = build_dag.resolve_platforms(graph, nodes(**MIXED))
    jobs = build_dag.expand(graph, platforms)
    assert sorted(jobs.images) == [
        "arm",
        "arm2",
        "base@linux/arm/v7",
        "base@linux/arm64",
        "web@linux/arm/v7",
        "web@linux/arm64",
    ]
    # each job FROM its parent's job of the same platform
    assert jobs.images["web@linux/arm64"].parents == ["base@linux/arm64"]
    assert jobs.images["arm"].parents == ["base@linux/arm/v7"]
    assert jobs.images["arm2"].parents == ["arm"]
    assert jobs.images["arm2"].image_name == "arm" + "2" and jobs.images["arm"].platform == V7
    # and only nodes of its platform may build it
    sched = scheduler.Scheduler(jobs, {}, nodes(**MIXED))
    assert sorted(sched.eligible["base@linux/arm/v7"]) == ["hc1"]
    assert sorted(sched.eligible["web@linux/arm64"]) == ["pine", "rock"]


def test_variants_inherit_their_directorys_platforms(tmp_path):
    graph = load(
        tmp_path,
        {
            "web/Dockerfile": "FROM scratch\n",
            "web/Dockerfile.slim": "FROM scratch\n",
            "web/image.yaml": "platforms: [linux/arm64]\nvariants: {slim: Dockerfile.slim}\n",
        },
    )
    assert graph.images["web-slim"].platforms == [ARM64]
    assert graph.images["web-slim"].file == "web/image.yaml"


def test_the_lower_bound_respects_which_nodes_build_which_platform(tmp_path):
    graph = load(tmp_path, {f"i{n}/Dockerfile": "FROM scratch\n" for n in range(4)})
    pool = nodes(**MIXED)  # one armv7 node, two arm64
    jobs = build_dag.expand(graph, build_dag.resolve_platforms(graph, pool))
    durations = dict.fromkeys(jobs.order, 10)
    sched = scheduler.Scheduler(jobs, durations, pool)
    # 80 s of work on 3 nodes is 26.7 s, but the 4 armv7 jobs (40 s) have one node
    assert scheduler.lower_bound(jobs, durations, pool, eligible=sched.eligible) == 40
    assert scheduler.lower_bound(jobs, durations, 3) == pytest.approx(80 / 3)
    simulated = scheduler.simulate(jobs, durations, pool)
    assert simulated["makespan"] >= 40


# -- the image index ---------------------------------------------------------------------------
def test_an_image_index_lists_each_platform_with_its_variant():
    body, media_type = registry_api.image_index(
        [
            (ARM64, registry_api.DOCKER_MANIFEST, 525, "sha256:" + "b" * 64),
            (V7, registry_api.DOCKER_MANIFEST, 527, "sha256:" + "a" * 64),
        ]
    )
    assert media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
    index = json.loads(body)
    assert index["schemaVersion"] == 2 and index["mediaType"] == media_type
    assert index["manifests"] == [
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 527,
            "digest": "sha256:" + "a" * 64,
            "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
        },
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 525,
            "digest": "sha256:" + "b" * 64,
            "platform": {"architecture": "arm64", "os": "linux"},
        },
    ]
    # OCI manifests get an OCI index
    _, oci = registry_api.image_index([(ARM64, registry_api.OCI_MANIFEST, 1, "sha256:c")])
    assert oci == "application/vnd.oci.image.index.v1+json"
    with pytest.raises(ArmswarmError):
        registry_api.image_index([])


# -- retention with indexes ----------------------------------------------------------------------
def test_platform_tags_belong_to_their_run():
    assert tag_retention.platform_tag("20261201.2", V7) == "20261201.2-linux-arm-v7"
    assert tag_retention.run_of("20261201.2-linux-arm-v7") == "20261201.2"
    assert tag_retention.run_of("20261201-linux-arm64") == "20261201"
    assert tag_retention.run_of("v1-linux-arm64x") == "v1-linux-arm64x"
    assert tag_retention.run_of("latest") == "latest"
    assert tag_retention.dated_key("20261201-linux-arm64") == tag_retention.dated_key("20261201")


def test_retention_keeps_what_kept_indexes_reference_and_counts_runs_not_tags():
    tags = {
        # run 1: an index over two platform manifests
        "20261101": "sha256:i1",
        "20261101-linux-arm-v7": "sha256:m1a",
        "20261101-linux-arm64": "sha256:m1b",
        # run 2: arm64 rebuilt identically (the same manifest), armv7 new
        "20261102": "sha256:i2",
        "20261102-linux-arm-v7": "sha256:m2a",
        "20261102-linux-arm64": "sha256:m1b",
        # run 3, and latest on it
        "20261103": "sha256:i3",
        "20261103-linux-arm-v7": "sha256:m3a",
        "20261103-linux-arm64": "sha256:m3b",
        "latest": "sha256:i3",
        # an index whose manifests have no tags of their own
        "20261001": "sha256:ix",
    }
    children = {
        "sha256:i1": ["sha256:m1a", "sha256:m1b"],
        "sha256:i2": ["sha256:m2a", "sha256:m1b"],
        "sha256:i3": ["sha256:m3a", "sha256:m3b"],
        "sha256:ix": ["sha256:mx", "sha256:m3b"],
    }
    made = {tag_retention.run_of(t): [] for t in tags if t != "latest"}
    for tag in tags:
        if tag != "latest":
            made[tag_retention.run_of(tag)].append(tag)
    plan = tag_retention.retention(tags, keep=2, children=children, made=made)
    # two runs kept (with their platform tags), not two tags
    assert plan["keep"] == sorted(
        t for t in tags if t[:8] in ("20261102", "20261103") or t == "latest"
    )
    deleted = dict(plan["delete"])
    assert set(deleted) == {"20261001", "20261101", "20261101-linux-arm-v7"}
    # m1b is held by the kept index of run 2: its old tag is only untagged
    assert plan["untag"] == [("20261101-linux-arm64", "sha256:m1b")]
    # the foreign index's untagged manifest goes after it; m3b, held by kept i3, stays
    assert plan["orphans"] == ["sha256:mx"]
    # nothing a kept index references is deleted
    kept = {tags[t] for t in plan["keep"]}
    held = kept | {c for d in kept for c in children.get(d, [])}
    assert not held & (set(deleted.values()) | set(plan["orphans"]))


# -- the node's side: arguments and the platform check ------------------------------------------
class Images:
    def __init__(self, attrs):
        self.attrs = attrs

    def get(self, ref):
        return self


class Client:
    """The two answers of dockerd the platform check reads (pure logic under test)."""

    def __init__(self, attrs):
        self.images = Images(attrs)


def test_a_built_image_of_another_platform_is_not_pushed():
    job = build_job.Job(Client({"Architecture": "amd64", "Os": "linux"}), "r/x:1", platform=V7)
    with pytest.raises(ArmswarmError) as err:
        job.check_platform()
    assert "r/x:1 was built as linux/amd64, but linux/arm/v7 was asked for" in str(err.value)
    assert "not pushed" in job.lines[-1]
    ok = {"Architecture": "arm", "Variant": "v7", "Os": "linux"}
    build_job.Job(Client(ok), "r/x:1", platform=V7).check_platform()
    build_job.Job(Client({}), "r/x:1").check_platform()  # no platform asked: nothing to check


def test_only_declared_platform_arguments_reach_a_dockerfile():
    text = "ARG TARGETARCH\nFROM scratch\nARG TARGETVARIANT=none\nADD rootfs-${TARGETARCH}.tar /\n"
    declared = build_job.dockerfile.parse(text, {}).declared
    assert declared == {"TARGETARCH", "TARGETVARIANT"}


# -- a whole run ---------------------------------------------------------------------------------
def grains(board, arch):
    # the board's arch from the armnode grain, while cpuarch says the lab host's x86_64
    return {"cpuarch": "x86_64", "num_cpus": 4, "armnode": {"board": board, "arch": arch}}


@pytest.fixture
def mixed(tmp_path):
    clock = Clock()
    registry = FakeRegistry()
    facts = {
        "node1": grains("odroid-hc1", "armv7"),
        "node2": grains("rockpro64", "aarch64"),
        "node3": grains("sopine", "aarch64"),
    }
    cluster = FakeCluster(clock, registry, facts, tmp_path / "contexts", seconds={})
    root = tree(
        tmp_path / "images",
        {
            "base/Dockerfile": "FROM scratch\nADD rootfs.tar /\n",
            "web/Dockerfile": "ARG TARGETARCH\nFROM base\nRUN echo $TARGETARCH\n",
            "tool/Dockerfile": "FROM base\n",
            "tool/image.yaml": "platforms: [linux/arm64]\n",
        },
    )
    settings = build_run.Settings(
        state_dir=tmp_path / "state",
        source=str(root),
        registry_host=HOST,
        tag="20261201",
        probe_every=2,
        probe_timeout=2,
    )
    return clock, registry, cluster, settings


def jobs_of(report):
    return {item["job"]: item for item in report["images"]}


def test_a_run_builds_each_platform_on_its_nodes_and_puts_one_index_per_tag(mixed):
    clock, registry, cluster, settings = mixed
    report = build_run.run(settings, cluster, registry, clock=clock)
    assert report["retcode"] == 0
    jobs = jobs_of(report)
    assert sorted(jobs) == [
        "base@linux/arm/v7",
        "base@linux/arm64",
        "tool",
        "web@linux/arm/v7",
        "web@linux/arm64",
    ]
    assert jobs["base@linux/arm/v7"]["node"] == jobs["web@linux/arm/v7"]["node"] == "node1"
    assert jobs["base@linux/arm64"]["node"] in ("node2", "node3")
    assert (
        jobs["web@linux/arm64"]["platform"] == ARM64 and jobs["web@linux/arm64"]["image"] == "web"
    )
    started = {image: kwargs for node, image, kwargs in cluster.jobs.values()}
    # each job is built for its platform, FROM this run's same-platform digest of its parent
    for platform in (V7, ARM64):
        kwargs = started[f"web@{platform}"]
        assert kwargs["platform"] == platform and kwargs["image"] == "web"
        base_digest = jobs[f"base@{platform}"]["digest"]
        assert kwargs["pins"] == {"base": f"{HOST}/base@{base_digest}"}
        slug = platform.replace("/", "-")
        assert kwargs["ref"] == f"{HOST}/web:20261201-{slug}"
    assert started["tool"]["ref"] == f"{HOST}/tool:20261201"  # one platform: the dated tag
    assert started["tool"]["pins"] == {"base": f"{HOST}/base@{jobs['base@linux/arm64']['digest']}"}
    # one tag, every platform: the dated tag and latest are the same index
    for name in ("base", "web"):
        index = registry.repos[name]["20261201"]
        assert registry.repos[name]["latest"] == index
        assert registry.indexes[index] == {
            V7: jobs[f"{name}@linux/arm/v7"]["digest"],
            ARM64: jobs[f"{name}@linux/arm64"]["digest"],
        }
        assert report["published"][name]["kind"] == "index"
        assert report["published"][name]["missing"] == []
    # a single-platform image stays a single manifest
    assert registry.repos["tool"]["20261201"] == jobs["tool"]["digest"]
    assert registry.repos["tool"]["20261201"] not in registry.indexes
    assert report["published"]["tool"] == {
        "tag": "20261201",
        "platforms": {ARM64: "done"},
        "missing": [],
        "kind": "manifest",
        "digest": jobs["tool"]["digest"],
    }
    # the timeline names the platform of every job
    timeline = open(report["timeline"]).read()
    assert "web@linux/arm/v7" in timeline and "web@linux/arm64" in timeline
    # the ledger holds every tag the run made, per repository: what retention may delete
    both = ["20261201", "20261201-linux-arm-v7", "20261201-linux-arm64"]
    assert build_run.ledger(settings.state_dir) == {
        "base": {"20261201": both},
        "web": {"20261201": both},
        "tool": {"20261201": ["20261201"]},
    }
    for name in ("base", "web", "tool"):
        assert set(registry.repos[name]) - {"latest"} == set(
            build_run.ledger(settings.state_dir)[name]["20261201"]
        )


def test_a_failed_platform_skips_its_descendants_on_that_platform_only(mixed):
    clock, registry, cluster, settings = mixed
    cluster.fail = {"base@linux/arm/v7"}
    report = build_run.run(settings, cluster, registry, clock=clock)
    assert report["retcode"] == 1
    status = {k: v["status"] for k, v in jobs_of(report).items()}
    assert status == {
        "base@linux/arm/v7": "failed",
        "web@linux/arm/v7": "skipped",
        "base@linux/arm64": "done",
        "web@linux/arm64": "done",
        "tool": "done",
    }
    # the dated tag holds the platforms that built; latest does not move
    for name in ("base", "web"):
        published = report["published"][name]
        assert published["missing"] == [V7] and list(published["manifests"]) == [ARM64]
        assert registry.indexes[registry.repos[name]["20261201"]] == {
            ARM64: jobs_of(report)[f"{name}@linux/arm64"]["digest"]
        }
        assert "latest" not in registry.repos[name]
    # tool built on arm64, but its parent's latest stays: nor does its own move
    assert "latest" not in registry.repos["tool"] and report["published"]["tool"]["missing"] == []
    assert jobs_of(report)["web@linux/arm/v7"]["error"] == "skipped: base@linux/arm/v7 failed"


def test_an_index_that_cannot_be_put_fails_the_run(mixed):
    clock, registry, cluster, settings = mixed
    registry.broken_index = {"web"}
    report = build_run.run(settings, cluster, registry, clock=clock)
    assert report["retcode"] == 1
    assert "HTTP 500" in report["published"]["web"]["error"]
    assert "latest" not in registry.repos["web"] and "latest" in registry.repos["base"]


def test_a_dated_tag_taken_by_platform_tags_is_not_reused(mixed):
    clock, registry, cluster, settings = mixed
    registry.repos = {"web": {"20261201-linux-arm64": "sha256:x"}}
    settings.tag = None
    settings.tag_format = "%Y%m%d"
    report = build_run.run(settings, cluster, registry, clock=clock)
    day = report["tag"].split(".")[0]
    assert report["tag"] != day or "20261201" != day


def test_the_plan_shows_platforms_and_which_nodes_build_each(mixed):
    _, _, cluster, settings = mixed
    plan = build_run.plan(settings, cluster)
    assert plan["images"]["base"]["platforms"] == {ARM64: ["node2", "node3"], V7: ["node1"]}
    assert plan["images"]["tool"]["platforms"] == {ARM64: ["node2", "node3"]}
    assert plan["jobs"]["web@linux/arm/v7"] == {
        "image": "web",
        "platform": V7,
        "nodes": ["node1"],
    }
    assert plan["node_platforms"] == {"node1": V7, "node2": ARM64, "node3": ARM64}
    # 5 jobs of 60 s; node1 alone builds base and web for armv7: 120 s at least
    assert plan["lower_bound_seconds"] == 120
    assert plan["expected_makespan_seconds"] >= plan["lower_bound_seconds"]
    assert cluster.jobs == {}


def test_a_child_built_on_the_wrong_platforms_parent_would_get_another_digest(mixed):
    # the fake nodes' digests depend on the pins: a mix-up of platforms cannot go unseen
    assert built_digest("web", {"base": "a"}) != built_digest("web", {"base": "b"})


@pytest.mark.parametrize(
    "value, message",
    [
        ("linux/arm64", "armswarm:imagebuild:platforms: must be a list"),
        (["linux/arm64", "linux/mips"], "'linux/mips' is not a known platform"),
        ([7], "armswarm:imagebuild:platforms: must be a list of strings"),
    ],
)
def test_the_pillars_platforms_are_checked_with_the_settings(value, message):
    pillar = {"armswarm": {"imagebuild": {"platforms": value}}}
    with pytest.raises(ArmswarmError, match=message):
        build_settings.settings(None, pillar)
    ok = {"armswarm": {"imagebuild": {"platforms": ["linux/arm/v7", "linux/arm64"]}}}
    assert build_settings.settings(None, ok)["platforms"] == ["linux/arm/v7", "linux/arm64"]
    assert build_settings.settings(None, None)["platforms"] == []


def test_a_plan_for_identical_nodes_expands_the_platforms_written_down(mixed):
    _, _, cluster, settings = mixed
    settings.nodes = 2
    plan = build_run.plan(settings, cluster)
    # tool's own list is kept; base and web have none, and nodes of any platform: one job each
    assert sorted(plan["jobs"]) == ["base", "tool", "web"]
    assert plan["images"]["tool"]["platforms"] == {ARM64: ["node1", "node2"]}
    assert cluster.asked == []
    settings.platforms = ["linux/arm/v7", "linux/arm64"]
    plan = build_run.plan(settings, cluster)
    assert sorted(plan["jobs"]) == [
        "base@linux/arm/v7",
        "base@linux/arm64",
        "tool",
        "web@linux/arm/v7",
        "web@linux/arm64",
    ]
    # 5 jobs of 60 s on 2 nodes of any platform: 150 s (the path base → web is 120 s)
    assert plan["lower_bound_seconds"] == 150
