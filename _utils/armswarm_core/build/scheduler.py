"""Which image builds on which node, and when: list scheduling over the dependency graph.

``dynamic`` (the default) gives a node that becomes free the ready image with the longest
remaining path (its duration plus its longest chain of descendants), which Graham's bound keeps
within ``2 - 1/M`` of the best schedule. ``static`` splits the images round-robin before the
run, as the original scripts did; it exists to be measured against.
"""

from dataclasses import dataclass, field

from armswarm_core import ArmswarmError
from armswarm_core.build import build_dag

WAITING, READY, RUNNING, DONE, FAILED, SKIPPED = (
    "waiting",
    "ready",
    "running",
    "done",
    "failed",
    "skipped",
)


STRATEGIES = ("dynamic", "static")


@dataclass
class Node:
    arch: str = ""
    labels: dict = field(default_factory=dict)
    platform: str = ""  # linux/arm64 …: the jobs of a platform build only on its nodes


class Scheduler:
    """Job states for one run. The caller asks :meth:`assign` for work whenever nodes are
    free and reports back with :meth:`finished`, :meth:`requeue` and :meth:`node_lost`."""

    def __init__(self, graph, durations: dict, nodes: dict, strategy: str = "dynamic"):
        if strategy not in STRATEGIES:
            raise ArmswarmError(f"strategy must be one of {', '.join(STRATEGIES)}")
        if not nodes:
            raise ArmswarmError("no build nodes")
        self.graph = graph
        self.strategy = strategy
        self.nodes = {name: (n if isinstance(n, Node) else Node(**n)) for name, n in nodes.items()}
        self.priority = graph.bottom_levels(durations)
        self.state = {name: WAITING for name in graph.order}
        self.where: dict = {}  # image → node it built (or builds) on
        self.failed_on: dict = {}  # image → nodes where a try failed: tried last next time
        self.eligible = {
            name: sorted(
                n
                for n, node in self.nodes.items()
                if graph.images[name].eligible(node.arch, node.labels, node.platform)
            )
            for name in graph.order
        }
        nowhere = sorted(name for name, eligible in self.eligible.items() if not eligible)
        if nowhere:
            raise ArmswarmError(
                "no build node matches the arch/labels of: "
                + ", ".join(f"{n} {self._wants(n)}" for n in nowhere)
            )
        self.queues = self._static_queues() if strategy == "static" else {}
        self._refresh()

    def _wants(self, name):
        image = self.graph.images[name]
        return f"(arch {image.arch or 'any'}, labels {image.labels or 'any'})"

    def _static_queues(self) -> dict:
        queues = {n: [] for n in self.nodes}
        turn = 0
        for name in self.graph.order:
            eligible = self.eligible[name]
            node = eligible[turn % len(eligible)]
            queues[node].append(name)
            turn += 1
        return queues

    def _refresh(self):
        for name, state in self.state.items():
            if state == WAITING and all(
                self.state[p] == DONE for p in self.graph.images[name].parents
            ):
                self.state[name] = READY

    def ready(self) -> list:
        return sorted(
            (n for n, s in self.state.items() if s == READY),
            key=lambda n: (-self.priority[n], n),
        )

    def assign(self, free_nodes) -> list:
        """``[(image, node)]`` to start now on some of ``free_nodes``; marks them running."""
        free = [n for n in free_nodes if n in self.nodes]
        out = []
        if self.strategy == "static":
            for node in free:
                for name in self.queues[node]:
                    if self.state[name] == READY:
                        out.append((name, node))
                        self._start(name, node)
                        break
            return out
        for name in self.ready():
            candidates = [n for n in free if n in self.eligible[name]]
            if not candidates:
                continue
            # A node that built a parent has its layers already: no pull.
            parents_at = {self.where.get(p) for p in self.graph.images[name].parents}
            tried = self.failed_on.get(name, ())
            node = min(candidates, key=lambda n: (n in tried, n not in parents_at, free.index(n)))
            free.remove(node)
            out.append((name, node))
            self._start(name, node)
        return out

    def _start(self, name, node):
        self.state[name] = RUNNING
        self.where[name] = node

    def finished(self, name: str, ok: bool) -> list:
        """Record a result; returns the images skipped because of a failure."""
        if not ok:
            self.state[name] = FAILED
            skipped = sorted(
                d for d in self.graph.descendants(name) if self.state[d] in (WAITING, READY)
            )
            for child in skipped:
                self.state[child] = SKIPPED
            return skipped
        self.state[name] = DONE
        self._refresh()
        return []

    def requeue(self, name: str, failed_on: str | None = None):
        """Run ``name`` again later (a transient error, or its node went away); another node
        than ``failed_on`` is preferred when one is free."""
        self.state[name] = READY
        self.where.pop(name, None)
        if failed_on:
            self.failed_on.setdefault(name, set()).add(failed_on)

    def node_lost(self, node: str) -> list:
        """Stop using ``node``. Returns the images that now have nowhere to build, topmost
        only (the caller fails them with :meth:`finished`, which skips their descendants)."""
        self.nodes.pop(node, None)
        stranded = set()
        for name, eligible in self.eligible.items():
            if node in eligible:
                eligible.remove(node)
            if not eligible and self.state[name] in (WAITING, READY):
                stranded.add(name)
        if self.strategy == "static":
            orphans = self.queues.pop(node, [])
            for index, name in enumerate(orphans):
                eligible = self.eligible[name]
                if eligible:
                    self.queues[eligible[index % len(eligible)]].append(name)
        return [
            n for n in self.graph.order if n in stranded and not self.graph.ancestors(n) & stranded
        ]

    def done(self) -> bool:
        return all(s in (DONE, FAILED, SKIPPED) for s in self.state.values())

    def counts(self) -> dict:
        out = {}
        for state in self.state.values():
            out[state] = out.get(state, 0) + 1
        return out


def lower_bound(graph, durations: dict, nodes: int) -> float:
    """No schedule on ``nodes`` identical nodes is shorter: max(critical path, work / nodes)."""
    levels = graph.bottom_levels(durations)
    work = sum(build_dag.duration_of(n, durations) for n in graph.order)
    return max(max(levels.values(), default=0.0), work / max(nodes, 1))


def simulate(graph, durations: dict, nodes: dict, strategy="dynamic", overhead=0.0) -> dict:
    """The schedule the dispatcher would produce if every build took its expected duration
    (plus ``overhead`` per job): ``{"makespan", "jobs": {image: (node, start, end)}}``."""
    sched = Scheduler(graph, durations, nodes, strategy)
    now, running, jobs = 0.0, {}, {}
    free = list(sched.nodes)
    while not sched.done():
        for name, node in sched.assign(free):
            free.remove(node)
            end = now + build_dag.duration_of(name, durations) + overhead
            running[name] = (node, end)
            jobs[name] = (node, now, end)
        if not running:
            raise ArmswarmError("schedule stalled")  # pragma: no cover - a scheduler bug
        name, (node, end) = min(running.items(), key=lambda item: (item[1][1], item[0]))
        now = end
        del running[name]
        free.append(node)
        sched.finished(name, ok=True)
    return {"makespan": now, "jobs": jobs}
