"""Speed-aware placement (``armswarm_core.build.scheduler``): each decision rule on a small
case worked out by hand, the lower bound, the fitted speeds, the timeline, and randomised
mixed-board workloads as properties that can fail."""

import heapq
import math
import random
import re
import statistics

import pytest
from armswarm_core.build import build_dag, build_report, build_run, scheduler

pytestmark = pytest.mark.unit


def _graph(edges: dict, **reqs):
    images = {
        name: build_dag.Image(name=name, path=None, parents=sorted(parents), **reqs.get(name, {}))
        for name, parents in edges.items()
    }
    return build_dag.Graph(images=images, order=build_dag._toposort(images))


def N(speed=1.0, arch="", **labels):
    return scheduler.Node(arch=arch, labels=labels, speed=speed)


def test_a_job_goes_where_it_finishes_first_whatever_the_names():
    graph = _graph({"big": []})
    for fast, slow in (("a", "z"), ("z", "a")):
        nodes = {fast: N(2.0), slow: N(1.0)}
        sched = scheduler.Scheduler(graph, {"big": 100}, nodes)
        assert sched.assign([slow, fast], now=0) == [("big", fast)]


def test_a_job_is_held_for_a_busy_faster_node_that_finishes_it_sooner():
    # "long" (120) runs on the fast node (4×) until 30 s. "next" (80) would end at 80 on the
    # free slow node but at 30 + 20 = 50 on the fast one: it waits for it, and the slow node
    # takes "small" meanwhile.
    graph = _graph({"long": [], "next": [], "small": []})
    costs = {"long": 120, "next": 80, "small": 5}
    sched = scheduler.Scheduler(graph, costs, {"fast": N(4.0), "slow": N(1.0)})
    assert sched.assign(["fast"], now=0) == [("long", "fast")]
    assert sched.assign(["slow"], now=0) == [("small", "slow")]
    sched.finished("small", ok=True)
    assert sched.assign(["slow"], now=5) == []  # still worth waiting for the fast node
    sched.finished("long", ok=True)
    assert sched.assign(["fast", "slow"], now=30) == [("next", "fast")]
    # with nothing faster busy, the free node takes it rather than idle
    sched = scheduler.Scheduler(graph, costs, {"slow": N(1.0), "slow2": N(1.0)})
    assert sched.assign(["slow2"], now=0) == [("long", "slow2")]
    assert sched.assign(["slow"], now=0) == [("next", "slow")]


def test_scarce_nodes_are_kept_for_what_only_they_can_build():
    # one armv7l node; "v7" jobs need it, "any" jobs can go anywhere and rank higher
    edges = {f"any{i}": [] for i in range(3)}
    edges.update({f"v7_{i}": [] for i in range(3)})
    reqs = {f"v7_{i}": {"arch": ["armv7l"]} for i in range(3)}
    graph = _graph(edges, **reqs)
    costs = {**{f"any{i}": 50 for i in range(3)}, **{f"v7_{i}": 30 for i in range(3)}}
    nodes = {"hc1": N(1.0, "armv7l"), "rock": N(1.15, "aarch64"), "pi": N(0.8, "aarch64")}
    sched = scheduler.Scheduler(graph, costs, nodes)
    placed = dict((node, job) for job, node in sched.assign(["hc1", "rock", "pi"], now=0))
    assert placed["hc1"].startswith("v7_")
    assert placed["rock"].startswith("any") and placed["pi"].startswith("any")
    # once the armv7l work is gone the HC1 takes anything
    graph = _graph({"any0": [], "any1": []})
    sched = scheduler.Scheduler(graph, {"any0": 50, "any1": 50}, nodes)
    assert {n for _, n in sched.assign(["hc1", "rock"], now=0)} == {"hc1", "rock"}


def test_parent_locality_breaks_ties_between_equal_nodes():
    graph = _graph({"base": [], "child": ["base"]})
    for builder in ("n1", "n2", "n3"):
        sched = scheduler.Scheduler(graph, {}, {"n1": N(), "n2": N(), "n3": N()})
        assert sched.assign([builder], now=0) == [("base", builder)]
        sched.finished("base", ok=True)
        assert sched.assign(["n1", "n2", "n3"], now=60) == [("child", builder)]


def test_jobs_are_generic_names_with_their_own_eligible_sets():
    # what a per-platform expansion gives: names with "@", eligibility computed elsewhere
    graph = _graph({"web@arm64": [], "web@arm": [], "app@arm64": ["web@arm64"]})
    eligible = {"web@arm64": {"r1", "r2"}, "web@arm": {"h1"}, "app@arm64": {"r1", "r2"}}
    costs = {"web@arm64": {"build": 30, "push": 10}, "web@arm": 20, "app@arm64": 5}
    nodes = {"r1": N(1.15), "r2": N(0.5), "h1": N(1.0)}
    result = scheduler.simulate(graph, costs, nodes, eligible=eligible)
    where = {job: node for job, (node, _, _) in result["jobs"].items()}
    assert where == {"web@arm64": "r1", "web@arm": "h1", "app@arm64": "r1"}
    # app starts on r1 from the local image as web's push begins: web's push ends last
    assert result["jobs"]["app@arm64"][1] == pytest.approx(30 / 1.15)
    assert result["makespan"] == pytest.approx(40 / 1.15)
    bound = scheduler.lower_bound(graph, costs, nodes, eligible=eligible)
    assert bound == pytest.approx(40 / 1.15)
    sched = scheduler.Scheduler(graph, costs, nodes, eligible=eligible)
    assert sched.seconds("web@arm64", "r2") == 80


def test_a_child_starts_on_its_parents_node_while_the_push_runs_and_waits_elsewhere():
    graph = _graph({"base": [], "a": ["base"], "b": ["base"], "ab": ["a", "b"]})
    costs = {"base": {"build": 10, "push": 5}, "a": 20, "b": 20, "ab": 1}
    sched = scheduler.Scheduler(graph, costs, {"n1": N(), "n2": N()})
    assert sched.assign(["n1", "n2"], now=0) == [("base", "n1")]
    sched.built("base")  # n1 is free; base is pushing
    assert sched.local_parents("a") == ["base"]
    # one child starts on n1 from the local image; n2 has no copy of base: nothing there
    ((child, node),) = sched.assign(["n1", "n2"], now=10)
    assert node == "n1" and child in ("a", "b")
    other = "b" if child == "a" else "a"
    assert sched.state[other] == scheduler.WAITING
    sched.finished("base", ok=True)  # pushed: the other child may go anywhere
    assert sched.assign(["n2"], now=15) == [(other, "n2")]
    # a child pushed before a parent's push ended is done only with it
    sched.built(child)
    sched.finished(child, ok=True)
    assert sched.state[child] == scheduler.DONE  # base is done already


def test_a_failed_push_takes_back_what_started_on_the_local_image():
    graph = _graph({"base": [], "a": ["base"], "a1": ["a"]})
    sched = scheduler.Scheduler(graph, {}, {"n1": N()})
    sched.assign(["n1"], now=0)
    sched.built("base")
    assert sched.assign(["n1"], now=60) == [("a", "n1")]
    sched.built("a")
    sched.finished("a", ok=True)  # a pushed, base still pushing
    assert sched.state["a"] == scheduler.BUILT and not sched.done()
    assert sched.assign(["n1"], now=120) == [("a1", "n1")]  # on a's local image
    assert sched.revoke("base") == ["a", "a1"]
    assert sched.state["a"] == sched.state["a1"] == scheduler.WAITING
    sched.finished("base", ok=True)  # its retry pushed
    assert sched.assign(["n1"], now=200) == [("a", "n1")]
    # a push that fails for good skips what started on it
    sched = scheduler.Scheduler(graph, {}, {"n1": N()})
    sched.assign(["n1"], now=0)
    sched.built("base")
    sched.assign(["n1"], now=60)
    assert sched.finished("base", ok=False) == ["a", "a1"]
    assert sched.done()


def test_the_lower_bound_is_the_chain_at_the_fastest_speed_or_the_work_of_a_node_set():
    # aarch64-only work: 3 × 60 on nodes of 1.15 + 0.5 → 109.1 s; the HC1 alone could do the
    # rest; the chain a → b at the fastest eligible speed is 120 / 1.15
    edges = {"a": [], "b": ["a"], "x": [], "y": []}
    reqs = {k: {"arch": ["aarch64"]} for k in ("x", "y", "a", "b")}
    graph = _graph(edges, **reqs)
    costs = {"a": 60, "b": 60, "x": 60, "y": 0}
    nodes = {"rock": N(1.15, "aarch64"), "sopine": N(0.5, "aarch64"), "hc1": N(1.0, "armv7l")}
    bound, parts = scheduler.lower_bound(graph, costs, nodes, detail=True)
    assert parts["critical_path"] == pytest.approx(120 / 1.15)
    assert parts["work"] == pytest.approx(180 / 1.65)
    assert parts["binding_nodes"] == ["rock", "sopine"]
    assert bound == pytest.approx(180 / 1.65)
    # identical nodes, old style: max(chain, work / M)
    assert scheduler.lower_bound(graph, costs, 2) == 120
    # overlapping sets bind harder together: 2 × 100 on {p, q} and on {q, r}, speed 1 each
    graph = _graph({"pq1": [], "pq2": [], "qr1": [], "qr2": []})
    costs = dict.fromkeys(graph.order, 100)
    eligible = {"pq1": {"p", "q"}, "pq2": {"p", "q"}, "qr1": {"q", "r"}, "qr2": {"q", "r"}}
    eligible = {k: frozenset(v) for k, v in eligible.items()}
    nodes = {"p": N(), "q": N(), "r": N()}
    assert scheduler.lower_bound(graph, costs, nodes, eligible=eligible) == pytest.approx(400 / 3)


def test_fifo_takes_the_first_free_node_in_topological_order():
    graph = _graph({"a": [], "b": [], "long": []})
    sched = scheduler.Scheduler(graph, {"long": 100}, {"n2": N(2.0), "n1": N(1.0)}, "fifo")
    assert sched.assign(["n1", "n2"], now=0) == [("a", "n1"), ("b", "n2")]


def test_node_speeds_are_fitted_from_jobs_that_ran_on_several_nodes():
    rng = random.Random(3)
    true = {"fast": 1.2, "mid": 0.8, "slow": 0.4}
    jobs = {}
    for i in range(40):
        cost = rng.uniform(20, 200)
        samples = []
        for node in rng.sample(sorted(true), 2):
            seconds = cost / true[node] * rng.lognormvariate(0, 0.05)
            samples.append([node, seconds * 0.9, seconds * 0.1])
        jobs[f"j{i}"] = {"samples": samples}
    prior = dict.fromkeys(true, 1.0)  # the priors know nothing; the gauge is their mean
    fitted = build_run.fit_speeds(jobs, prior, {})
    scale = math.exp(statistics.mean(math.log(v) for v in true.values()))
    for node, speed in true.items():
        assert fitted[node] == pytest.approx(speed / scale, rel=0.08)
    # a pillar speed holds its node and sets the scale for the others
    fitted = build_run.fit_speeds(jobs, prior, {"fast": 1.2})
    assert fitted["fast"] == 1.2
    assert fitted["slow"] == pytest.approx(0.4, rel=0.1)


def test_the_timeline_has_segments_failures_the_critical_path_and_the_whole_run():
    t0 = 1000.0
    report = {
        "title": "imagebuild x",
        "started_at": t0,
        "ended_at": t0 + 100,
        "nodes": {"n1": {"speed": 1.15, "board": "rockpro64", "arch": "aarch64"}},
        "images": [
            {
                "image": "base",
                "node": "n1",
                "start": t0,
                "end": t0 + 40,
                "parents": [],
                "pull_seconds": 5,
                "build_seconds": 30,
                "push_seconds": 5,
                "attempts": [{"node": "n1", "start": t0, "end": t0 + 40, "status": "ok"}],
            },
            {
                "image": "app",
                "node": "n1",
                "start": t0 + 40,
                "end": t0 + 99,
                "parents": ["base"],
                "attempts": [{"node": "n1", "start": t0 + 40, "end": t0 + 99, "status": "failed"}],
            },
        ],
    }
    report["critical_path"] = build_report.critical_chain(report)
    assert report["critical_path"] == ["base", "app"]
    text = build_report.svg(report, width=900)
    assert "n1 · rockpro64 · aarch64 · ×1.15" in text
    kinds = re.findall(r"<title>(\w+): (\w+) ([\d.]+) s</title>", text)
    assert kinds == [
        ("base", "pull", "5.0"),
        ("base", "build", "30.0"),
        ("base", "push", "5.0"),
        ("app", "failed", "59.0"),
    ]
    assert 'fill="#c0392b"' in text
    bars = re.findall(r'<rect x="([\d.]+)" y="\d+" width="([\d.]+)" height="20"', text)
    right = max(float(x) + float(w) for x, w in bars)
    assert right <= 900 - 20  # the last bar ends inside the picture
    assert text.count('stroke="#000" stroke-width="2"><title>base') == 3


# -- randomised mixed-board workloads, as properties -----------------------------------------
BOARDS = {"hc1": ("armv7l", 1.0), "rock": ("aarch64", 1.15), "sopine": ("aarch64", 0.5)}


def _workload(seed):
    rng = random.Random(seed)
    names = [f"m{i:02d}" for i in range(rng.randint(3, 8))]
    rng.shuffle(names)
    boards = sorted(BOARDS)
    nodes = {}
    for i, name in enumerate(names):
        board = boards[i % 3] if i < 3 else rng.choice(boards)
        nodes[name] = N(BOARDS[board][1] * rng.uniform(0.9, 1.1), BOARDS[board][0])
    edges, reqs, costs = {}, {}, {}
    for i in range(rng.randint(20, 80)):
        name = f"i{i:02d}"
        edges[name] = [] if i < 3 else [f"i{max(0, i - rng.randint(1, 15)):02d}"]
        if i < 3 and rng.random() < 0.5:
            reqs[name] = {"arch": [rng.choice(["aarch64", "armv7l"])]}
        elif edges[name] and edges[name][0] in reqs:
            reqs[name] = dict(reqs[edges[name][0]])
        costs[name] = {"build": rng.lognormvariate(math.log(60), 0.8), "push": 5.0}
    return _graph(edges, **reqs), costs, nodes


@pytest.mark.parametrize("seed", range(40))
def test_the_schedule_is_never_under_its_bound_nor_much_worse_than_fifo(seed):
    graph, costs, nodes = _workload(seed)
    bound = scheduler.lower_bound(graph, costs, nodes)
    spans = {
        s: scheduler.simulate(graph, costs, nodes, s)["makespan"] for s in scheduler.STRATEGIES
    }
    for strategy, span in spans.items():
        assert span >= bound - 1e-6, strategy
    assert spans["dynamic"] <= 1.10 * spans["fifo"]
    assert spans["dynamic"] <= 2.0 * bound  # list scheduling's guarantee, far from it here


def _loop_without_a_clock(graph, costs, nodes):
    """A caller that never passes ``now`` (the scheduler's first API): free nodes in, results
    out, time kept by the caller alone."""
    sched = scheduler.Scheduler(graph, costs, nodes)
    now, events, free = 0.0, [], sorted(nodes)
    while not sched.done():
        for name, node in sched.assign(free):
            free.remove(node)
            heapq.heappush(
                events, (now + sum(scheduler.cost(name, costs)) / nodes[node].speed, name, node)
            )
        now, name, node = heapq.heappop(events)
        free.append(node)
        sched.finished(name, ok=True)
    return now


@pytest.mark.parametrize("seed", range(200, 215))
def test_a_caller_without_a_clock_gets_the_same_quality(seed):
    graph, costs, nodes = _workload(seed)
    costs = {k: {"build": v["build"], "push": 0.0} for k, v in costs.items()}
    span = _loop_without_a_clock(graph, costs, nodes)
    bound = scheduler.lower_bound(graph, costs, nodes)
    fifo = scheduler.simulate(graph, costs, nodes, "fifo")["makespan"]
    clocked = scheduler.simulate(graph, costs, nodes)["makespan"]
    assert bound - 1e-6 <= span <= 1.10 * fifo
    assert span <= 1.05 * clocked


def test_a_job_requeued_while_its_parent_pushes_waits_for_the_push():
    graph = _graph({"base": [], "a": ["base"]})
    sched = scheduler.Scheduler(graph, {}, {"n1": N(), "n2": N()})
    sched.assign(["n1", "n2"], now=0)
    sched.built("base", 60)
    assert sched.assign(["n1", "n2"], now=60) == [("a", "n1")]
    sched.requeue("a", failed_on="n1")  # a transient failure of a's own build
    assert sched.state["a"] == scheduler.WAITING
    assert sched.assign(["n2"], now=61) == []  # n2 has no copy of base: wait for the push
    sched.finished("base", ok=True)
    assert sched.assign(["n2"], now=62) == [("a", "n2")]


@pytest.mark.parametrize("seed", range(300, 310))
def test_tuned_priorities_never_lose_on_the_estimates_and_are_repeatable(seed):
    graph, costs, nodes = _workload(seed)
    plain = scheduler.simulate(graph, costs, nodes)["makespan"]
    decide = scheduler.tuned(graph, costs, nodes)
    assert decide == scheduler.tuned(graph, costs, nodes)  # seeded: the same plan each time
    tuned = scheduler.simulate(graph, decide, nodes, actual=costs)["makespan"]
    assert tuned <= plain + 1e-9
    assert tuned >= scheduler.lower_bound(graph, costs, nodes) - 1e-6
