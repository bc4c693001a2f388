"""Which job builds on which node, and when: list scheduling over the dependency graph on
nodes of different speeds.

The scheduler is generic over named *jobs* (an image, or one platform of an image): each has
parents (``graph.images[job].parents``), a cost and a set of nodes that may build it (from the
image's arch/labels, or given as ``eligible``). Costs are seconds at speed 1.0, as
``{"build": s, "push": s}`` or one number; a node of speed 2 takes half as long.

``dynamic`` (the default) is HEFT-like list scheduling:

* priority: the upward rank, a job's cost at the mean speed of its eligible nodes plus the
  longest rank of its children (longest remaining path first);
* each ready job goes to the eligible node where it would *finish* earliest; when that is a
  busy node (faster, so it finishes sooner even after its current job), the job is held for
  it and free nodes go to the next jobs;
* nodes that are the only ones able to build some jobs (a platform, a label) are kept for
  them while those jobs' remaining work per speed there is at least the flexible work's per
  speed elsewhere: the bound of the busier class is what sets the makespan;
* ties: a node that built a parent (its layers are there), then one where the job has not
  failed yet;
* push off the critical path: once a job is *built* (:meth:`Scheduler.built`) its node is
  free while the push runs, and a child whose other parents are done starts on that node
  from the local image; a child on another node waits for the push. A child that finishes
  before its parent's push stays ``built`` until the parent is done, and goes back to waiting
  (:meth:`Scheduler.revoke`) when that push fails.

``fifo`` gives the first free node the first ready job in topological order (what a naive
script or ``buildx bake`` does); ``static`` splits the jobs round-robin before the run, as the
original scripts did. Both exist to be measured against.

Each decision costs O((D + K) log n) for D distinct eligibility sets and K kinds of node (same
speed, same eligibility): a run is O((n + e) log n) for a fixed cluster.
"""

import bisect
import heapq
import math
import random
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
BUILT = "built"  # built on its node, its push still running (or done before its parent's)

STRATEGIES = ("dynamic", "static", "fifo")
OVERDUE = 0.1  # a busy node past its expected end: assumed free after this share of its job
MAX_HOLDS = 3  # jobs held for busy faster nodes per decision round (bounds a round's work)


@dataclass
class Node:
    arch: str = ""
    labels: dict = field(default_factory=dict)
    speed: float = 1.0  # relative: 2.0 builds in half the time of 1.0
    board: str = ""  # what it is, for the plan and the timeline
    platform: str = ""  # linux/arm64 …: the jobs of a platform build only on its nodes


def cost(name: str, durations: dict) -> tuple:
    """``(build, push)`` seconds at speed 1.0 of ``name`` in ``durations`` (a number is all
    build; unknown is :data:`build_dag.DEFAULT_DURATION`; a measured 0 stays 0)."""
    value = durations.get(name)
    if value is None:
        return (build_dag.DEFAULT_DURATION, 0.0)
    if isinstance(value, dict):
        return (float(value.get("build") or 0.0), float(value.get("push") or 0.0))
    if isinstance(value, (tuple, list)):
        return (float(value[0]), float(value[1]))
    return (float(value), 0.0)


def _parents_children(graph):
    parents = {name: list(graph.images[name].parents) for name in graph.order}
    children = {name: [] for name in graph.order}
    for name in graph.order:
        for parent in parents[name]:
            children[parent].append(name)
    return parents, children


def _as_nodes(nodes) -> dict:
    return {name: (n if isinstance(n, Node) else Node(**n)) for name, n in nodes.items()}


def eligibility(graph, nodes: dict) -> dict:
    """``{job: frozenset of node names}`` from each job's platform, arch and labels (asked once
    per distinct requirement: trees of thousands share a few)."""
    seen, out = {}, {}
    for name in graph.order:
        image = graph.images[name]
        key = (
            getattr(image, "platform", "") or "",
            tuple(getattr(image, "arch", None) or ()),
            tuple(sorted((getattr(image, "labels", None) or {}).items())),
        )
        if key not in seen:
            seen[key] = frozenset(
                n
                for n, node in nodes.items()
                if image.eligible(node.arch, node.labels, node.platform)
            )
        out[name] = seen[key]
    return out


class Scheduler:
    """Job states for one run. The caller asks :meth:`assign` for work whenever nodes are
    free and reports back with :meth:`finished`, :meth:`requeue` and :meth:`node_lost`."""

    def __init__(
        self, graph, durations: dict, nodes: dict, strategy: str = "dynamic", eligible=None
    ):
        if strategy not in STRATEGIES:
            raise ArmswarmError(f"strategy must be one of {', '.join(STRATEGIES)}")
        if not nodes:
            raise ArmswarmError("no build nodes")
        self.graph = graph
        self.strategy = strategy
        self.nodes = _as_nodes(nodes)
        for name, node in self.nodes.items():
            if isinstance(node.speed, bool) or not node.speed > 0:
                raise ArmswarmError(f"{name}: speed must be a number > 0, not {node.speed!r}")
        self.parents, self.children = _parents_children(graph)
        self.topo = {name: i for i, name in enumerate(graph.order)}
        self.costs = {name: cost(name, durations) for name in graph.order}
        given = eligibility(graph, self.nodes) if eligible is None else eligible
        self.eligible = {name: set(given[name]) & set(self.nodes) for name in graph.order}
        nowhere = sorted(name for name, nodes_ in self.eligible.items() if not nodes_)
        if nowhere:
            raise ArmswarmError(
                "no build node matches the arch/labels of: "
                + ", ".join(f"{n} {self._wants(n)}" for n in nowhere)
            )
        self.state = {name: WAITING for name in graph.order}
        self.open = len(graph.order)  # jobs not done, failed or skipped
        self.call = 0  # decision rounds, for bookings that last one round
        self.token: dict = {}  # node → token of its current job's entry in the end heaps
        self.missing = {name: len(set(self.parents[name])) for name in graph.order}
        self.where: dict = {}  # job → node it built (or builds) on
        self.failed_on: dict = {}  # job → nodes where a try failed: tried last next time
        self.running: dict = {}  # node → (job, expected end)
        self.local: dict = {}  # node → heap of children that may start there on a local parent
        self.on_local: dict = {}  # job → node where it started on a parent not yet pushed
        self.deferred: set = set()  # pushed, but a parent's push has not ended yet
        self.built_at: dict = {}  # job → when its build ended (its push began)
        self.started_at: dict = {}  # job → when it started (the scheduler's clock)
        # Without a caller's clock (assign without ``now``), time is what the expected
        # durations say: a job reported finished is taken to end when it was due.
        self.clocked = False
        self.now = 0.0
        self._index()
        self.queues = self._static_queues() if strategy == "static" else {}
        for name in graph.order:
            if not self.missing[name]:
                self._make_ready(name)

    def _wants(self, name):
        image = self.graph.images[name]
        arch = getattr(image, "arch", None) or "any"
        labels = getattr(image, "labels", None) or "any"
        return f"(arch {arch}, labels {labels})"

    # -- the index: eligibility classes, kinds of node, ranks ------------------------------
    def _index(self):
        """Group jobs by eligible set (classes) and nodes by speed and membership (kinds);
        recomputed when a node is lost."""
        sets = sorted({frozenset(e) for e in self.eligible.values() if e}, key=sorted)
        self.class_sets = sets
        class_id = {s: i for i, s in enumerate(sets)}
        self.class_of = {name: class_id.get(frozenset(e)) for name, e in self.eligible.items() if e}
        signature = {}
        for name in sorted(self.nodes):
            key = (self.nodes[name].speed, tuple(name in s for s in sets))
            signature.setdefault(key, []).append(name)
        self.kinds = [
            {"speed": key[0], "nodes": members, "classes": [i for i, m in enumerate(key[1]) if m]}
            for key, members in sorted(signature.items(), key=lambda kv: (-kv[0][0], kv[1]))
        ]
        self.kind_of = {n: k for k, kind in enumerate(self.kinds) for n in kind["nodes"]}
        self.class_kinds = [
            [k for k, kind in enumerate(self.kinds) if c in kind["classes"]]
            for c in range(len(sets))
        ]
        self.capacity = [sum(self.nodes[n].speed for n in s) for s in sets]
        self.subsets = [
            [q for q, other in enumerate(sets) if other < s] for s in sets
        ]  # strict subsets (as node sets) of each class
        self.supersets = [[r for r, other in enumerate(sets) if s <= other] for s in sets]
        # unstarted work (seconds at speed 1) of jobs whose set is within each class
        self.within = [0.0] * len(sets)
        for name, state in self.state.items():
            if state in (WAITING, READY) and name in self.class_of:
                for r in self.supersets[self.class_of[name]]:
                    self.within[r] += sum(self.costs[name])
        self.rank = self._ranks()
        self.ends = [[] for _ in self.kinds]  # per kind: (expected end, node, token) of busy
        for node, (_, end) in self.running.items():
            if node in self.kind_of:
                self.token[node] = token = ("job", self.token.get(node, ("job", 0))[1] + 1)
                heapq.heappush(self.ends[self.kind_of[node]], (end, node, token))
        self.heaps = [[] for _ in sets]
        for name, state in self.state.items():
            if state == READY and name in self.class_of:
                heapq.heappush(self.heaps[self.class_of[name]], self._key(name))

    def _ranks(self) -> dict:
        rank = {}
        mean = [c / len(s) for c, s in zip(self.capacity, self.class_sets, strict=True)]
        for name in reversed(self.graph.order):
            c = self.class_of.get(name)
            speed = mean[c] if c is not None else 1.0
            build, push = self.costs[name]
            # after the build: its push, or its children (one may start on the local image)
            below = max((rank[c] for c in self.children[name]), default=0.0)
            rank[name] = build / speed + max(push / speed, below)
        return rank

    def _key(self, name):
        if self.strategy == "fifo":
            return (self.topo[name], name)
        return (-self.rank[name], self.topo[name], name)

    def seconds(self, name: str, node: str) -> float:
        """Expected seconds of ``name`` on ``node`` (build and push at its speed)."""
        return sum(self.costs[name]) / self.nodes[node].speed

    @property
    def priority(self) -> dict:
        return self.rank

    # -- states ------------------------------------------------------------------------------
    def _make_ready(self, name):
        self.state[name] = READY
        if name in self.class_of:
            heapq.heappush(self.heaps[self.class_of[name]], self._key(name))

    def _static_queues(self) -> dict:
        queues = {n: [] for n in self.nodes}
        for turn, name in enumerate(self.graph.order):
            eligible = sorted(self.eligible[name])
            queues[eligible[turn % len(eligible)]].append(name)
        return queues

    def ready(self) -> list:
        return sorted((n for n, s in self.state.items() if s == READY), key=self._key)

    def _tick(self, name, push=True):
        if self.clocked or name not in self.started_at or name not in self.where:
            return
        build, pushing = self.costs[name]
        speed = self.nodes[self.where[name]].speed if self.where[name] in self.nodes else 1.0
        due = self.started_at[name] + (build + (pushing if push else 0.0)) / speed
        self.now = max(self.now, due)

    def _start(self, name, node, now):
        self.started_at[name] = now
        self.state[name] = RUNNING
        self.where[name] = node
        # the node is busy while it builds; the push runs beside its next job
        end = now + self.costs[name][0] / self.nodes[node].speed
        self.running[node] = (name, end)
        token = self.token[node] = ("job", self.token.get(node, ("job", 0))[1] + 1)
        if node in self.kind_of:
            heapq.heappush(self.ends[self.kind_of[node]], (end, node, token))
        if name in self.class_of:
            for r in self.supersets[self.class_of[name]]:
                self.within[r] -= sum(self.costs[name])

    def assign(self, free_nodes, now: float | None = None) -> list:
        """``[(job, node)]`` to start now on some of ``free_nodes``; marks them running.
        ``now`` (the caller's clock) lets it weigh busy nodes' expected ends."""
        if now is not None:
            self.now, self.clocked = now, True
        now = self.now
        free = [n for n in dict.fromkeys(free_nodes) if n in self.nodes]
        if self.strategy == "static":
            out = []
            for node in free:
                for name in self.queues[node]:
                    if self.state[name] == READY:
                        out.append((name, node))
                        self._start(name, node, now)
                        break
            return out
        if self.strategy == "fifo":
            return self._assign_fifo(free, now)
        return self._assign_dynamic(free, now)

    def _free_by_kind(self, free):
        by_kind = {}
        for node in free:
            self.running.pop(node, None)  # the caller says it is free
            by_kind.setdefault(self.kind_of[node], []).append(node)
        return by_kind

    def _pop_ready(self, c):
        heap = self.heaps[c]
        while heap:
            name = heap[0][-1]
            if self.state[name] == READY and self.class_of.get(name) == c:
                return heapq.heappop(heap)
            heapq.heappop(heap)  # stale: started, requeued under another key, or moved
        return None

    def _peek(self, c):
        heap = self.heaps[c]
        while heap:
            name = heap[0][-1]
            if self.state[name] == READY and self.class_of.get(name) == c:
                return heap[0]
            heapq.heappop(heap)
        return None

    def _assign_fifo(self, free, now):
        by_kind = self._free_by_kind(free)
        position = {n: i for i, n in enumerate(free)}
        out = []
        while True:
            best = None
            for c in range(len(self.class_sets)):
                if any(by_kind.get(k) for k in self.class_kinds[c]):
                    top = self._peek(c)
                    if top and (best is None or top < best[0]):
                        best = (top, c)
            if best is None:
                return out
            name = self._pop_ready(best[1])[-1]
            # the first free node in the caller's order
            node = min(
                (n for k in self.class_kinds[best[1]] for n in by_kind.get(k, [])),
                key=position.get,
            )
            by_kind[self.kind_of[node]].remove(node)
            out.append((name, node))
            self._start(name, node, now)

    def _valid(self, entry) -> bool:
        _, node, token = entry
        if node not in self.running:
            return False
        return token == self.token.get(node) or token == ("booked", self.call)

    def _next_end(self, k, now):
        """(when, node) the first busy node of kind ``k`` is expected free, or None."""
        heap = self.ends[k]
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        if not heap:
            return None
        end, node, _ = heap[0]
        if end <= now:  # overdue: it ends soon, by how much nobody knows
            end = now + OVERDUE * self.seconds(self.running[node][0], node)
        return end, node

    def _book(self, k, work, restore):
        """Book the first busy node of kind ``k`` for ``work`` more seconds, this round."""
        entry = heapq.heappop(self.ends[k])
        end, node, token = entry
        if token != ("booked", self.call):
            restore.append(entry)
        heapq.heappush(
            self.ends[k], (end + work / self.kinds[k]["speed"], node, ("booked", self.call))
        )

    def _reserved(self, c, k) -> bool:
        """Whether kind ``k`` is kept from jobs of class ``c`` for jobs that only a smaller
        set of nodes (holding ``k``) can build: that set's remaining work per speed is at
        least the flexible class's."""
        flexible = self.within[c] / self.capacity[c]
        for r in self.subsets[c]:
            if k in self.class_kinds[r] and self.within[r] > 0:
                if self.within[r] / self.capacity[r] >= flexible:
                    return True
        return False

    def _assign_dynamic(self, free, now):
        out = []
        free = list(free)
        self._start_local(free, now, out)
        by_kind = self._free_by_kind(free)
        free_set = set(free)
        self.call += 1
        held, restore = [], []
        holds_left = MAX_HOLDS
        avail = {}  # kind → (when its first node is free, busy?) this round

        def available(k):
            if k not in avail:
                if by_kind.get(k):
                    avail[k] = (now, False)
                else:
                    nxt = self._next_end(k, now)
                    avail[k] = (nxt[0], True) if nxt else None
            return avail[k]

        while True:
            best = None
            for c in range(len(self.class_sets)):
                if any(by_kind.get(k) for k in self.class_kinds[c]):
                    top = self._peek(c)
                    if top and (best is None or top < best[0]):
                        best = (top, c)
            if best is None:
                break
            c = best[1]
            name = self._pop_ready(c)[-1]
            work = sum(self.costs[name])
            parents_at = {self.where.get(p) for p in self.parents[name]}
            local_kinds = {self.kind_of.get(n) for n in parents_at if n in free_set}
            check = bool(self.subsets[c])
            choice = None
            for k in self.class_kinds[c]:
                slot = available(k)
                if slot is None or (slot[1] and holds_left <= 0):
                    continue
                finish = max(slot[0], now) + work / self.kinds[k]["speed"]
                key = (check and self._reserved(c, k), finish, slot[1], k not in local_kinds, k)
                if choice is None or key < choice:
                    choice = key
            k, busy = choice[4], choice[2]
            if busy:
                # Held for a busy node that finishes it sooner: book that node's time.
                self._book(k, self.costs[name][0], restore)
                avail.pop(k, None)
                held.append(name)
                holds_left -= 1
                continue
            tried = self.failed_on.get(name, ())
            node = min(by_kind[k], key=lambda n: (n in tried, n not in parents_at, n))
            by_kind[k].remove(node)
            if not by_kind[k]:
                avail.pop(k, None)
            free_set.discard(node)
            out.append((name, node))
            self._start(name, node, now)
        for entry in restore:
            if self._valid(entry):
                heapq.heappush(self.ends[self.kind_of[entry[1]]], entry)
        for name in held:
            heapq.heappush(self.heaps[self.class_of[name]], self._key(name))
        return out

    def built(self, name: str, now: float | None = None):
        """``name`` is built and its push runs: its node is free, and a child whose other
        parents are done may start there from the local image."""
        if self.state[name] != RUNNING:
            return
        self._tick(name, push=False)
        node = self.where[name]
        self.state[name] = BUILT
        self.built_at[name] = self.now if now is None else now
        if self.running.get(node, (None,))[0] == name:
            del self.running[node]
        if self.strategy == "dynamic":
            for child in self.children[name]:
                self._offer_local(child)

    def _local_node(self, name):
        """The one node where every parent of ``name`` that is not done was built, if any."""
        nodes = set()
        for parent in self.parents[name]:
            if self.state[parent] == DONE:
                continue
            if self.state[parent] != BUILT:
                return None
            nodes.add(self.where.get(parent))
        return nodes.pop() if len(nodes) == 1 else None

    def _offer_local(self, child):
        if self.state[child] != WAITING:
            return
        node = self._local_node(child)
        if node is not None and node in self.eligible[child]:
            heapq.heappush(self.local.setdefault(node, []), (*self._key(child), node))

    def local_parents(self, name: str) -> list:
        """Parents of ``name`` it builds on from its node's local image (not pushed yet)."""
        return [p for p in self.parents[name] if self.state[p] == BUILT]

    def _start_local(self, free, now, out):
        """Start children on their parent's node from the local image, when that finishes
        sooner than waiting for the push and building on the best other node."""
        if not self.local:
            return
        for node in [n for n in free if n in self.local]:
            heap = self.local[node]
            while heap:
                child = heapq.heappop(heap)[-2]
                if self.state[child] != WAITING or self._local_node(child) != node:
                    continue
                if self._local_pays(child, node, free, now):
                    self._start(child, node, now)
                    self.on_local[child] = node
                    out.append((child, node))
                    free.remove(node)
                    break
            if not heap:
                del self.local[node]

    def _local_pays(self, child, node, free, now) -> bool:
        work = sum(self.costs[child])
        here = now + work / self.nodes[node].speed
        pushed = max(
            (
                self.built_at.get(p, now) + self.costs[p][1] / self.nodes[node].speed
                for p in self.local_parents(child)
            ),
            default=now,
        )
        free_kinds = {self.kind_of[n] for n in free if n != node and n in self.kind_of}
        for k in self.class_kinds[self.class_of[child]]:
            if k in free_kinds:
                start = now
            else:
                nxt = self._next_end(k, now)
                if nxt is None:
                    continue
                start = nxt[0]
            if max(start, pushed) + work / self.kinds[k]["speed"] < here - 1e-9:
                return False
        return True

    def finished(self, name: str, ok: bool) -> list:
        """Record a result; returns the jobs skipped because of a failure (with those that
        had started on its local image)."""
        self._tick(name)
        node = self.where.get(name)
        if node is not None and self.running.get(node, (None,))[0] == name:
            del self.running[node]
        if not ok:
            self._close(name, FAILED)
            skipped = sorted(
                (
                    d
                    for d in self.descendants(name)
                    if self.state[d] in (WAITING, READY, RUNNING, BUILT)
                ),
                key=self.topo.get,
            )
            for child in skipped:
                self._unqueue(child)
                where = self.where.get(child)
                if where is not None and self.running.get(where, (None,))[0] == child:
                    del self.running[where]
                self._close(child, SKIPPED)
            return sorted(skipped)
        if self.missing[name]:
            # pushed before its parent: done once the parent is
            self.state[name] = BUILT
            self.deferred.add(name)
            if self.strategy == "dynamic":
                for child in self.children[name]:
                    self._offer_local(child)
            return []
        self._close(name, DONE)
        self.on_local.pop(name, None)
        for child in self.children[name]:
            self.missing[child] -= 1
            if not self.missing[child]:
                if self.state[child] == WAITING:
                    self._make_ready(child)
                elif child in self.deferred:
                    self.deferred.discard(child)
                    self.finished(child, ok=True)
        return []

    def revoke(self, name: str) -> list:
        """``name``'s push failed after it was built: the jobs that started on its local
        image (and theirs) go back to waiting; returns them (the caller drops their runs)."""
        reset = []
        for child in sorted(self.descendants(name), key=self.topo.get):
            if child in self.on_local or any(p in reset for p in self.parents[child]):
                if self.state[child] in (RUNNING, BUILT):
                    where = self.where.pop(child, None)
                    if where is not None and self.running.get(where, (None,))[0] == child:
                        del self.running[where]
                    self.on_local.pop(child, None)
                    self.deferred.discard(child)
                    self.state[child] = WAITING
                    if child in self.class_of:
                        for r in self.supersets[self.class_of[child]]:
                            self.within[r] += sum(self.costs[child])
                    reset.append(child)
        if self.state[name] == BUILT:
            self.state[name] = RUNNING
        return reset

    def _unqueue(self, name):
        if name in self.class_of and self.state[name] in (WAITING, READY):
            for r in self.supersets[self.class_of[name]]:
                self.within[r] -= sum(self.costs[name])

    def descendants(self, name) -> set:
        seen, todo = set(), list(self.children[name])
        while todo:
            child = todo.pop()
            if child not in seen:
                seen.add(child)
                todo.extend(self.children[child])
        return seen

    def requeue(self, name: str, failed_on: str | None = None):
        """Run ``name`` again later (a transient error, or its node went away); another node
        than ``failed_on`` is preferred when one is free."""
        node = self.where.pop(name, None)
        if node is not None and self.running.get(node, (None,))[0] == name:
            del self.running[node]
        if self.state[name] == RUNNING and name in self.class_of:
            for r in self.supersets[self.class_of[name]]:
                self.within[r] += sum(self.costs[name])
        self.on_local.pop(name, None)
        if self.missing[name]:
            # it had started on a parent's local image: it waits for that push again
            self.state[name] = WAITING
            self._offer_local(name)
        else:
            self._make_ready(name)
        if failed_on:
            self.failed_on.setdefault(name, set()).add(failed_on)

    def node_lost(self, node: str) -> list:
        """Stop using ``node``. Returns the jobs that now have nowhere to build, topmost
        only (the caller fails them with :meth:`finished`, which skips their descendants)."""
        self.nodes.pop(node, None)
        self.running.pop(node, None)
        stranded = set()
        for name, eligible in self.eligible.items():
            eligible.discard(node)
            if not eligible and self.state[name] in (WAITING, READY):
                stranded.add(name)
        if self.strategy == "static":
            orphans = self.queues.pop(node, [])
            for index, name in enumerate(orphans):
                eligible = sorted(self.eligible[name])
                if eligible:
                    self.queues[eligible[index % len(eligible)]].append(name)
        if self.nodes:
            self._index()
        return [
            n
            for n in self.graph.order
            if n in stranded and not any(p in stranded for p in self._ancestors(n))
        ]

    def _ancestors(self, name) -> set:
        seen, todo = set(), list(self.parents[name])
        while todo:
            parent = todo.pop()
            if parent not in seen:
                seen.add(parent)
                todo.extend(self.parents[parent])
        return seen

    def done(self) -> bool:
        return self.open == 0

    def _close(self, name, state):
        if self.state[name] not in (DONE, FAILED, SKIPPED):
            self.open -= 1
        self.state[name] = state

    def counts(self) -> dict:
        out = {}
        for state in self.state.values():
            out[state] = out.get(state, 0) + 1
        return out


def _fastest(graph, nodes, eligible) -> dict:
    """Per job, the speed of the fastest node that may build it (once per distinct set)."""
    seen, out = {}, {}
    for name in graph.order:
        given = eligible[name]
        if id(given) not in seen:
            seen[id(given)] = max((nodes[n].speed for n in given if n in nodes), default=1.0)
        out[name] = seen[id(given)]
    return out


# -- bounds and the expected schedule --------------------------------------------------------
def lower_bound(graph, durations: dict, nodes, eligible=None, detail=False):
    """No schedule is shorter: max(the critical path with every job at the fastest speed of
    the nodes that may build it, each eligibility set's work divided by its nodes' speeds,
    plus the least time before any of that work can start and after it must end).
    ``nodes``: ``{name: Node}``, or a number of identical nodes of speed 1 that build
    anything. ``detail``: ``(bound, {"critical_path": s, "work": s, "binding": ...})``."""
    if isinstance(nodes, int) or isinstance(nodes, str):
        nodes = {f"node{i + 1}": Node() for i in range(max(int(nodes), 1))}
        eligible = {name: frozenset(nodes) for name in graph.order}
    nodes = _as_nodes(nodes)
    if eligible is None:
        eligible = eligibility(graph, nodes)
    parents, children = _parents_children(graph)
    fastest = _fastest(graph, nodes, eligible)
    path, head = {}, {}
    for name in reversed(graph.order):
        build, push = cost(name, durations)
        # after its build: its own push, or a child built on the same node from the local image
        path[name] = build / fastest[name] + max(
            [push / fastest[name], *(path[c] for c in children[name])]
        )
    for name in graph.order:  # the earliest a job can start: its parents built, at best
        head[name] = max(
            (head[p] + cost(p, durations)[0] / fastest[p] for p in parents[name]), default=0.0
        )
    chain = max(path.values(), default=0.0)
    # Jobs that only the nodes of set S can build need work(S) / speed(S) there, after the
    # first of them can start and before what must follow the last of them.
    groups, known = {}, {}
    for name in graph.order:
        given = eligible[name]
        if id(given) not in known:
            known[id(given)] = frozenset(n for n in given if n in nodes)
        group = groups.setdefault(known[id(given)], [0.0, math.inf, math.inf])
        build = cost(name, durations)[0]
        group[0] += build  # a node is taken while it builds; pushes run beside the next
        group[1] = min(group[1], head[name])
        group[2] = min(group[2], path[name] - build / fastest[name])
    sets = list(groups)
    candidates = set(sets) | {frozenset(nodes)}
    if len(sets) <= 40:  # overlapping sets: their union can bind harder than either
        candidates |= {a | b for i, a in enumerate(sets) for b in sets[i + 1 :]}
    best_work, binding = 0.0, None
    for s in candidates:
        speed = sum(nodes[n].speed for n in s)
        inside = [g for key, g in groups.items() if key <= s]
        if not speed or not inside:
            continue
        load = (
            min(g[1] for g in inside)
            + sum(g[0] for g in inside) / speed
            + min(g[2] for g in inside)
        )
        if load > best_work:
            best_work, binding = load, sorted(s)
    bound = max(chain, best_work)
    if detail:
        return bound, {"critical_path": chain, "work": best_work, "binding_nodes": binding}
    return bound


def simulate(
    graph,
    durations: dict,
    nodes: dict,
    strategy="dynamic",
    overhead=0.0,
    actual=None,
    eligible=None,
    order=None,
    speeds=None,
) -> dict:
    """The schedule the dispatcher would produce if every job took its expected duration
    (or its ``actual`` one: the scheduler still sees ``durations``) at its node's speed, plus
    ``overhead`` per job: ``{"makespan", "jobs": {job: (node, start, end)}}``. ``order``: the
    order in which free nodes are offered (the minion ids' order by default); ``speeds``: the
    nodes' real speeds when they are not what the scheduler believes."""
    sched = Scheduler(graph, durations, nodes, strategy, eligible=eligible)
    truth = durations if actual is None else actual
    rank = {n: i for i, n in enumerate(order or sorted(sched.nodes))}
    now, jobs, events = 0.0, {}, []
    free = sorted(sched.nodes, key=rank.get)  # kept in the offering order
    seq = 0
    while not sched.done():
        started = sched.assign(free, now)
        if started:
            taken = {node for _, node in started}
            free = [n for n in free if n not in taken]
        for name, node in started:
            speed = (speeds or {}).get(node) or sched.nodes[node].speed
            build, push = cost(name, truth)
            built = now + build / speed + overhead
            end = built + push / speed
            jobs[name] = (node, now, end)
            seq += 1
            heapq.heappush(events, (built, 0, seq, name, node))
            heapq.heappush(events, (end, 1, seq, name, node))
        if not events:
            raise ArmswarmError("schedule stalled")  # pragma: no cover - a scheduler bug
        now = events[0][0]
        while events and events[0][0] <= now:
            _, kind, _, name, node = heapq.heappop(events)
            if kind == 0:
                sched.built(name, now)
                bisect.insort(free, node, key=rank.get)
            else:
                sched.finished(name, ok=True)
    return {"makespan": now, "jobs": jobs}


TUNE_SPREAD = 0.35  # log-normal spread of the perturbed costs tried by :func:`tuned`
TUNE_MAX = 24  # tries at most (small trees); none for trees of thousands


def tuned(graph, durations: dict, nodes: dict, eligible=None, seed=0) -> dict:
    """The costs the scheduler should decide on: ``durations`` itself, or a perturbation of
    it whose expected schedule (simulated with ``durations`` as the real costs) is shorter.
    List scheduling's priorities are a heuristic; a few seeded tries of other priorities,
    kept only when they beat it on the estimates, cost milliseconds on a tree of a hundred
    images. Deterministic (seeded); no tries on trees of thousands (the plan stays fast)."""
    tries = int(min(TUNE_MAX, 2e6 / max(len(graph.order), 1) ** 2))
    if tries < 1:
        return durations
    base = {name: cost(name, durations) for name in graph.order}
    best = simulate(graph, durations, nodes, eligible=eligible)["makespan"]
    chosen = durations
    rng = random.Random(seed)
    for _ in range(tries):
        trial = {}
        for name in graph.order:
            factor = rng.lognormvariate(0.0, TUNE_SPREAD)
            trial[name] = {"build": base[name][0] * factor, "push": base[name][1]}
        span = simulate(graph, trial, nodes, eligible=eligible, actual=durations)["makespan"]
        if span < best - 1e-9:
            best, chosen = span, trial
    return chosen


def critical_path(graph, durations: dict, nodes=None, eligible=None) -> list:
    """The chain of jobs that sets the bound: longest path at the fastest eligible speed."""
    nodes = _as_nodes(nodes) if nodes else None
    if nodes and eligible is None:
        eligible = eligibility(graph, nodes)
    parents, children = _parents_children(graph)
    fastest = _fastest(graph, nodes, eligible) if nodes else {}

    def speed(name):
        return fastest.get(name, 1.0)

    path = {}
    for name in reversed(graph.order):
        below = max((path[c] for c in children[name]), default=0.0)
        path[name] = sum(cost(name, durations)) / speed(name) + below
    roots = [n for n in graph.order if not parents[n]]
    if not roots:
        return []
    chain = [max(roots, key=lambda n: (path[n], n))]
    while children[chain[-1]]:
        chain.append(max(children[chain[-1]], key=lambda n: (path[n], n)))
    return chain


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
