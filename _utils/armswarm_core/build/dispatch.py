"""The build dispatcher: hands scheduled images to nodes, watches them, collects answers.

It talks to nodes through a *transport* (the runner's is Salt's publish and event bus):

``start(node, image, kwargs) -> jid | None``
    publish a build job; None when the master says the node is not connected (no
    minion took the job).
``probe(node, jid) -> probe id | None``
    ask the node whether job ``jid`` still runs (Salt's ``saltutil.find_job``).
``events(wait) -> [(jid, node, ret)]``
    job answers (``ret``: Salt's return event data) and probe answers, waiting at most
    ``wait`` seconds for the first; ``ret`` ``{"built": True}`` says job ``jid`` has built its
    image and is pushing it (the node is free, a child may start there on the local image).

``start`` and ``probe`` raise :class:`PublishFailed` when the master could not send the job
at all: a start is then tried again shortly, a probe at its next turn; neither counts against
the image or the node.

Failure handling: a failed image skips its descendants only; a *transient* failure (registry,
network) is retried with backoff; a node that stops answering probes is dropped and its job
is started again on another node; a job running past its image's timeout fails.

Costs per wake-up: one probe per busy node every ``probe_every`` seconds (a node runs one job
at a time), and a job carries only its parents' digests.
"""

import re
import time
from dataclasses import dataclass, field

from armswarm_core.build import scheduler

PROBE_EVERY = 10.0  # seconds between "is it still running?" probes of one job
PROBE_TIMEOUT = 20.0  # a probe unanswered this long is a miss (a board busy building answers late)
PROBE_MISSES = 2  # misses in a row before a node counts as gone
RETRY_DELAY = 5.0  # first backoff after a transient failure; doubles per try
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")  # what a build may answer as its image
TIMEOUT_MARGIN = 60.0  # a job's timeout is its image's plus this, for start-up and push


class PublishFailed(Exception):
    """The master could not publish a job (busy, restarting): nobody's fault, try again."""


@dataclass
class Attempt:
    image: str
    node: str
    jid: str
    started: float
    last_probe: float = 0.0
    probe_jid: str | None = None
    probe_sent: float = 0.0
    misses: int = 0
    built: bool = False  # the image is built, the push runs: the node may take another job


@dataclass
class Outcome:
    """What happened to one image in this run."""

    image: str
    status: str = scheduler.WAITING
    node: str | None = None
    start: float | None = None
    end: float | None = None
    digest: str | None = None
    error: str | None = None
    attempts: list = field(default_factory=list)  # (node, start, end, status) per try
    answer: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {
            "image": self.image,
            "status": self.status,
            "node": self.node,
            "start": self.start,
            "end": self.end,
            "seconds": round(self.end - self.start, 3) if self.start and self.end else None,
            "digest": self.digest,
            "attempts": [
                {"node": n, "start": s, "end": e, "status": st} for n, s, e, st in self.attempts
            ],
        }
        if self.error:
            out["error"] = self.error
        return out


class Dispatcher:
    def __init__(
        self,
        scheduler,
        transport,
        job_kwargs,
        retries: int = 2,
        progress=None,
        clock=time.time,
        probe_every=PROBE_EVERY,
        probe_timeout=PROBE_TIMEOUT,
        retry_delay=RETRY_DELAY,
    ):
        self.sched = scheduler
        self.transport = transport
        self.job_kwargs = job_kwargs  # (job, node, its parents' digests) → kwargs of the job
        self.retries = retries
        self.progress = progress or (lambda kind, **data: None)
        self.clock = clock
        self.probe_every = probe_every
        self.probe_timeout = probe_timeout
        self.retry_delay = retry_delay
        self.running: dict = {}  # jid → Attempt
        self.held: dict = {}  # image → (time it may run again, node whose try failed)
        self.tries: dict = {}  # image → transient failures so far
        self.digests: dict = {}
        self.outcomes = {name: Outcome(name) for name in scheduler.graph.order}
        self.lost_nodes: list = []

    # -- helpers -----------------------------------------------------------------------------
    def _busy(self) -> set:
        return {a.node for a in self.running.values() if not a.built}

    def _drop_runs(self, image: str, now: float, status: str, lost_node: str | None = None):
        for jid, attempt in list(self.running.items()):
            if attempt.image == image:
                del self.running[jid]
                # a run on the node that went away was lost with it, whatever else happened
                self._close(attempt, "lost" if attempt.node == lost_node else status, now)

    def _revoke(self, image: str, now: float, lost_node: str | None = None):
        """``image`` will not be pushed as built: what started on its local image starts
        again once it is."""
        for child in self.sched.revoke(image):
            self._drop_runs(child, now, "revoked", lost_node)
            outcome = self.outcomes[child]
            outcome.status, outcome.digest, outcome.end = scheduler.WAITING, None, None
            self.digests.pop(child, None)
            self.progress("requeue", image=child, why=f"{image} is built again")

    def _close(self, attempt: Attempt, status: str, now: float):
        self.outcomes[attempt.image].attempts.append((attempt.node, attempt.started, now, status))

    def _fail(self, image: str, error: str, now: float):
        outcome = self.outcomes[image]
        outcome.status, outcome.error, outcome.end = scheduler.FAILED, error, now
        for child in self.sched.finished(image, ok=False):
            self._drop_runs(child, now, "skipped")
            self.outcomes[child].status = scheduler.SKIPPED
            self.outcomes[child].error = f"skipped: {image} failed"
            self.progress("skip", image=child, because=image)
        self.progress("fail", image=image, error=error)

    def _drop_node(self, node: str, now: float, why: str):
        if node in self.lost_nodes:
            return
        self.lost_nodes.append(node)
        self.progress("node-lost", node=node, why=why)
        for jid, attempt in list(self.running.items()):
            if attempt.node == node and jid in self.running:
                del self.running[jid]
                self._close(attempt, "lost", now)
                self._revoke(attempt.image, now, lost_node=node)
                self.sched.requeue(attempt.image)
                self.progress("requeue", image=attempt.image, node=node, why=why)
        for image in self.sched.node_lost(node):
            self._fail(image, f"no node left that can build it ({node} {why})", now)

    # -- the loop ----------------------------------------------------------------------------
    def _dispatch(self, now: float):
        for image, (until, node) in list(self.held.items()):
            if until <= now:
                del self.held[image]
                self.sched.requeue(image, failed_on=node)
        busy = self._busy()
        free = [n for n in self.sched.nodes if n not in busy]
        if not free:
            return
        for image, node in self.sched.assign(free, now):
            # only its own parents' digests: a job's data does not grow with the run; a parent
            # still pushing is None (the node has it: it built it)
            parents = self.sched.parents[image]
            digests = {p: self.digests[p] for p in parents if p in self.digests}
            digests.update(dict.fromkeys(self.sched.local_parents(image)))
            kwargs = self.job_kwargs(image, node, digests)
            try:
                jid = self.transport.start(node, image, kwargs)
            except PublishFailed as exc:
                self.held[image] = (self.clock() + self.retry_delay, None)
                self.progress("retry", image=image, after=self.retry_delay, error=str(exc))
                continue
            started = self.clock()
            if not jid:
                self.sched.requeue(image)
                self._drop_node(node, started, "is not connected")
                continue
            self.running[jid] = Attempt(image, node, jid, started, last_probe=started)
            outcome = self.outcomes[image]
            outcome.status, outcome.node = scheduler.RUNNING, node
            outcome.start = outcome.start or started
            self.progress("start", image=image, node=node, jid=jid)

    def _answer(self, jid, node, ret, now):
        attempt = self.running.get(jid)
        if attempt is None:
            for other in self.running.values():
                if other.probe_jid == jid:
                    # The node answered the probe: it is alive. An empty answer means the job
                    # is gone without a return (the minion restarted): start it again.
                    other.probe_jid, other.misses = None, 0
                    if isinstance(ret.get("return"), dict) and not ret["return"]:
                        if now - other.started > self.probe_every:
                            # Counted as a try: a node that keeps losing jobs must not loop.
                            del self.running[other.jid]
                            self._close(other, "vanished", now)
                            self._retry_or_fail(
                                other.image,
                                f"{other.node}: the job vanished without a return",
                                now,
                                other.node,
                            )
                    return
            return  # an answer to a job of an earlier attempt
        if node != attempt.node:
            # Only the node given the job answers it: another minion's return for this jid
            # (a replayed or forged one) neither finishes the job nor pins a child.
            self.progress("foreign-answer", image=attempt.image, node=node, jid=jid)
            return
        if ret.get("built"):
            if not attempt.built:
                attempt.built = True
                self.sched.built(attempt.image, now)
                self.progress("built", image=attempt.image, node=node)
            return None
        del self.running[jid]
        image = attempt.image
        outcome = self.outcomes[image]
        answer = ret.get("return")
        if not isinstance(answer, dict) or not ret.get("success", True):
            # The module raised (e.g. the node's dockerd is down): try another node.
            error = f"{node}: {str(answer).split(chr(10) * 2)[0][:500]}"
            self._close(attempt, "error", now)
            return self._retry_or_fail(image, error, now, node)
        outcome.answer = answer
        if answer.get("status") == "ok" and not _DIGEST.match(str(answer.get("digest") or "")):
            # The digest goes into the children's FROM lines: exactly a sha256, nothing else.
            answer = {
                **answer,
                "status": "failed",
                "transient": False,
                "error": f"{node}: the build answered no valid image digest",
            }
            outcome.answer = answer
        if answer.get("status") == "ok":
            self._close(attempt, "ok", now)
            outcome.status, outcome.end = scheduler.DONE, now
            outcome.node, outcome.digest = node, answer.get("digest")
            outcome.error = None
            self.digests[image] = answer.get("digest")
            self.sched.finished(image, ok=True)
            self.progress("done", image=image, node=node, digest=outcome.digest)
            return None
        self._close(attempt, "failed", now)
        if answer.get("transient"):
            return self._retry_or_fail(image, answer.get("error", "failed"), now, node)
        return self._fail(image, answer.get("error", "failed"), now)

    def _retry_or_fail(self, image, error, now, node=None):
        self._revoke(image, now)
        tries = self.tries.get(image, 0) + 1
        self.tries[image] = tries
        if tries > self.retries:
            return self._fail(image, f"{error} (after {tries} tries)", now)
        delay = self.retry_delay * 2 ** (tries - 1)
        self.held[image] = (now + delay, node)
        self.progress("retry", image=image, after=delay, error=error)
        return None

    def _watch(self, now):
        for attempt in list(self.running.values()):
            if attempt.jid not in self.running:
                continue
            image = self.sched.graph.images[attempt.image]
            if now - attempt.started > image.timeout + TIMEOUT_MARGIN:
                del self.running[attempt.jid]
                self._close(attempt, "timeout", now)
                self._fail(attempt.image, f"no answer within {image.timeout} s", now)
                continue
            if attempt.probe_jid and now - attempt.probe_sent > self.probe_timeout:
                attempt.probe_jid = None
                attempt.misses += 1
                if attempt.misses >= PROBE_MISSES:
                    self._drop_node(attempt.node, now, "stopped answering")
                    continue
            if not attempt.probe_jid and now - attempt.last_probe >= self.probe_every:
                attempt.last_probe = attempt.probe_sent = now
                try:
                    attempt.probe_jid = self.transport.probe(attempt.node, attempt.jid)
                except PublishFailed:
                    pass  # the master's trouble, not the node's: the next probe tries again

    def run(self) -> dict:
        """Build everything that can be built; returns ``{image: Outcome}``."""
        while not self.sched.done():
            now = self.clock()
            self._dispatch(now)
            if self.sched.done():
                break
            if not self.running and not self.held:
                # Nothing runs, nothing waits for a retry, yet work is left: every node able
                # to build it is gone.
                for image, state in self.sched.state.items():
                    if state in (scheduler.READY, scheduler.WAITING):
                        self._fail(image, "no build node left", now)
                break
            for jid, node, ret in self.transport.events(wait=0.5):
                self._answer(jid, node, ret, self.clock())
            self._watch(self.clock())
        return self.outcomes
