"""Benchmark: image build scheduling on mixed-board clusters, against the physical lower bound.

    .venv/bin/python bench/imagebuild_schedule.py [--workloads 100] [--repetitions 3]

Workloads where the work, not the chain, binds: random trees of 30-160 images (a few roots,
children of one or two parents, build times log-normal around a minute, pushes about a tenth),
a third of the subtrees for one platform only (``aarch64``: RockPro64, SOPINE, Pi 4; or
``armv7l``: the HC1s), on 3-10 nodes of at least two board kinds whose real speeds are the
board table's ±10 %. Minion ids are shuffled, so a name says nothing about a board.

Each workload runs through the project's own code: :class:`armswarm_core.build.scheduler.
Scheduler` (via ``simulate``, with each job's real seconds drawn around its true cost) and the
history of :mod:`armswarm_core.build.build_run` (``remember`` after each run, ``estimates`` and
the fitted speeds before the next):

* ``no history``: the first run (every duration unknown, board-default speeds);
* ``history``: the third run (two runs remembered, speeds fitted from them);
* baselines on the same run: ``fifo`` (the first free node takes the first ready image in
  topological order: a naive script, ``buildx bake``) and ``static`` (round robin fixed before
  the run, as the original scripts did).

Every ratio is makespan / physical lower bound of that run (its real durations and speeds:
max(critical path at the fastest eligible node, each eligibility set's work over its nodes'
speeds)). Printed: median and p90 per repetition, then the median and spread over the
repetitions, and the time of ``scheduler + plan`` for 5,000 images on 200 nodes.
Targets (issue 16): history median ≤ 1.06, p90 ≤ 1.25; no history median ≤ 1.25; < 1 s at
5,000 images. Nothing is asserted.
"""

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_utils"))

from armswarm_core.build import build_dag, build_run, dispatch, scheduler  # noqa: E402

BOARDS = {  # board → (platform, speed of the board table)
    "odroid-hc1": ("armv7l", 1.0),
    "rockpro64": ("aarch64", 1.15),
    "sopine": ("aarch64", 0.5),
    "rpi4": ("aarch64", 0.8),
}


def workload(rng: random.Random):
    """(graph, true costs, nodes with their true speeds, eligible sets)."""
    while True:
        kinds = rng.sample(sorted(BOARDS), rng.randint(2, 4))
        count = {k: rng.randint(1, 3) for k in kinds}
        total = sum(count.values())
        if 3 <= total <= 10:
            break
    ids = [f"node{i + 1:02d}" for i in range(total)]
    rng.shuffle(ids)
    nodes, truth_speed = {}, {}
    for board in sorted(count):
        for _ in range(count[board]):
            name = ids.pop()
            platform, speed = BOARDS[board]
            truth_speed[name] = speed * rng.uniform(0.9, 1.1)
            nodes[name] = scheduler.Node(arch=platform, labels={}, board=board)
    platforms = sorted({n.arch for n in nodes.values()})
    n = rng.randint(30, 160)
    images, costs, platform_of = {}, {}, {}
    roots = rng.randint(2, 6)
    for i in range(n):
        name = f"img{i:03d}"
        if i < roots:
            parents = []
            platform_of[name] = rng.choice([None, None, *platforms])
        else:
            pick = max(0, i - rng.randint(1, 25))
            parents = [f"img{pick:03d}"]
            if rng.random() < 0.2 and i > 1:
                parents.append(f"img{rng.randrange(i):03d}")
            inherited = [platform_of[p] for p in parents if platform_of[p]]
            platform_of[name] = inherited[0] if inherited else None
            if platform_of[name] is None and rng.random() < 0.1:
                platform_of[name] = rng.choice(platforms)
        images[name] = build_dag.Image(name=name, path=None, parents=sorted(set(parents)))
        build = min(rng.lognormvariate(math.log(60), 0.9), 900)
        costs[name] = {"build": build, "push": build * rng.uniform(0.05, 0.15)}
    # a child of two parents of different platforms builds where both can
    eligible = {}
    for name in build_dag._toposort(images):
        wanted = platform_of[name]
        allowed = {n for n, node in nodes.items() if wanted is None or node.arch == wanted}
        for parent in images[name].parents:
            if platform_of[parent]:
                allowed &= {n for n, node in nodes.items() if node.arch == platform_of[parent]}
        if not allowed:
            allowed = {n for n, node in nodes.items() if node.arch == platform_of[name]} or set(
                nodes
            )
        eligible[name] = frozenset(allowed)
    graph = build_dag.Graph(images=images, order=build_dag._toposort(images))
    return graph, costs, nodes, truth_speed, eligible


def real_run(rng, costs, noise=0.1):
    """This run's real seconds at speed 1.0: the true cost, give or take."""
    out = {}
    for name, cost in costs.items():
        factor = rng.lognormvariate(0, noise)
        out[name] = {"build": cost["build"] * factor, "push": cost["push"] * factor}
    return out


def one_run(graph, nodes, eligible, estimates, truth, true_speed, strategy):
    """The real Scheduler deciding on the believed speeds (``nodes``) while the clock runs
    at the true ones and the real seconds."""
    result = scheduler.simulate(
        graph, estimates, nodes, strategy, actual=truth, eligible=eligible, speeds=true_speed
    )
    return result["makespan"], result["jobs"]


def outcomes_of(jobs, truth, true_speed):
    out = {}
    for name, (node, start, end) in jobs.items():
        outcome = dispatch.Outcome(name, status=scheduler.DONE, node=node, start=start, end=end)
        speed = true_speed[node]
        outcome.answer = {
            "seconds": end - start,
            "build_seconds": truth[name]["build"] / speed,
            "push_seconds": truth[name]["push"] / speed,
        }
        out[name] = outcome
    return out


def evaluate(seed: int) -> dict:
    rng = random.Random(seed)
    graph, costs, nodes, true_speed, eligible = workload(rng)
    physical = {n: scheduler.Node(arch=node.arch, speed=true_speed[n]) for n, node in nodes.items()}
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="armswarm-bench-") as tmp:
        state = Path(tmp)
        prior = {n: build_run.build_settings.BOARD_SPEEDS[node.board] for n, node in nodes.items()}
        for run in (1, 2, 3):
            truth = real_run(rng, costs)
            bound = scheduler.lower_bound(graph, truth, physical, eligible=eligible)
            table = build_run.speeds(nodes, state, {})
            for name, node in nodes.items():
                node.speed = table[name][0]
            estimates = build_run.estimates(graph, build_run.durations(state))
            decide = scheduler.tuned(graph, estimates, nodes, eligible=eligible)
            span, jobs = one_run(graph, nodes, eligible, decide, truth, true_speed, "dynamic")
            if run == 1:
                ratios["no history"] = span / bound
            if run == 3:
                ratios["history"] = span / bound
                for strategy in ("fifo", "static"):
                    other, _ = one_run(
                        graph, nodes, eligible, estimates, truth, true_speed, strategy
                    )
                    ratios[strategy] = other / bound
            build_run.remember(state, outcomes_of(jobs, truth, true_speed), prior=prior)
    return ratios


def p90(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(math.ceil(0.9 * len(values))) - 1)]


def scale_check(images=5000, nodes=200) -> float:
    rng = random.Random(5)
    graph_images = {}
    costs = {}
    for i in range(images):
        name = f"i{i}"
        parents = [] if i < 20 else [f"i{rng.randrange(max(0, i - 300), i)}"]
        graph_images[name] = build_dag.Image(name=name, path=None, parents=parents)
        costs[name] = {"build": rng.uniform(10, 200), "push": rng.uniform(1, 20)}
    graph = build_dag.Graph(images=graph_images, order=build_dag._toposort(graph_images))
    boards = sorted(BOARDS)
    pool = {
        f"n{i:03d}": scheduler.Node(
            arch=BOARDS[boards[i % 4]][0], speed=BOARDS[boards[i % 4]][1], board=boards[i % 4]
        )
        for i in range(nodes)
    }
    # CPU seconds of this process: on a shared machine wall time measures the neighbours
    started = time.process_time()
    scheduler.simulate(graph, costs, pool)
    scheduler.lower_bound(graph, costs, pool)
    scheduler.critical_path(graph, costs, pool)
    return time.process_time() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=100)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    labels = ("history", "no history", "fifo", "static")
    per_rep = {label: [] for label in labels}
    started = time.monotonic()
    for rep in range(args.repetitions):
        results = [evaluate(10_000 * (rep + 1) + i) for i in range(args.workloads)]
        line = [f"repetition {rep + 1}:"]
        for label in labels:
            values = [r[label] for r in results]
            per_rep[label].append((statistics.median(values), p90(values), max(values)))
            line.append(
                f"{label} median {per_rep[label][-1][0]:.3f} p90 {per_rep[label][-1][1]:.3f}"
            )
        print("  ".join(line), flush=True)
    print(
        f"\n{args.repetitions} × {args.workloads} mixed-board workloads "
        f"({time.monotonic() - started:.0f} s); makespan / physical lower bound:"
    )
    print(f"  {'':12} {'median':>8} {'spread':>15} {'p90':>8} {'spread':>15} {'worst':>7}")
    for label in labels:
        medians = [m for m, _, _ in per_rep[label]]
        p90s = [p for _, p, _ in per_rep[label]]
        worst = max(w for _, _, w in per_rep[label])
        print(
            f"  {label:12} {statistics.median(medians):8.3f} "
            f"{min(medians):7.3f}–{max(medians):.3f} {statistics.median(p90s):8.3f} "
            f"{min(p90s):7.3f}–{max(p90s):.3f} {worst:7.3f}"
        )
    fifo = statistics.median(m for m, _, _ in per_rep["fifo"])
    hist = statistics.median(m for m, _, _ in per_rep["history"])
    print(f"  fifo / history (medians) {fifo / hist:.3f}")
    print("targets: history median ≤ 1.06, p90 ≤ 1.25; no history median ≤ 1.25")
    seconds = min(scale_check() for _ in range(3))
    print(f"scheduler + plan, 5,000 images on 200 nodes: {seconds:.2f} CPU s (target < 1 s)")


if __name__ == "__main__":
    main()
