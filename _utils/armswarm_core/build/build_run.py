"""One image build run, its plan, and registry retention, behind a transport.

The runner (``_runners/imagebuild.py``) reads the settings and supplies a *transport*; this
module holds every decision. The transport does what needs Salt:

``fetch(source) -> Path``
    a ``salt://`` tree as a local directory (copied from the master's file server).
``node_facts(target, tgt_type) -> {minion: grains}``
    the answers of the build nodes to ``grains.item cpuarch num_cpus armnode``.
``listen()``, ``close()``
    start listening to job returns (before the first job), stop (after the last).
``fire(data, tag)``
    an event on the master's bus.
``say(message)``
    a progress line.
``start``, ``probe``, ``events``
    the dispatcher's (see :mod:`armswarm_core.build.dispatch`).
``serve(run_id, {image: bytes}) -> {image: {"source", "sha256"}}``, ``withdraw(run_id)``
    put the run's build contexts where the nodes fetch them (the master's file server, see
    :mod:`armswarm_core.build.build_contexts`), and remove them when the run ends: a job names
    its context and the context's SHA-256, it does not carry it.
``garbage_collect(node) -> return``
    the registry's garbage collection on its node (``prune`` only): Salt's full return of
    ``docker_registry.garbage_collect`` on that node, or None when it did not answer.

The *registry* is a :class:`armswarm_core.registry.registry_api.Registry` (``tags`` and
``retag`` for a run; ``catalog``, ``tag_digests``, ``delete`` and ``untag`` for retention).
"""

import contextlib
import datetime
import fcntl
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.build import (
    build_dag,
    build_job,
    build_report,
    build_settings,
    dispatch,
    scheduler,
)
from armswarm_core.common import architectures, files
from armswarm_core.registry import tag_retention
from armswarm_core.swarm import swarm_layout

log = logging.getLogger(__name__)

DURATION_WEIGHT = 0.5  # new measurement's weight in the remembered duration
# Defaults of the settings (armswarm:imagebuild:…), for callers that pass none.
TARGET = build_settings.DEFAULTS["target"]
TGT_TYPE = build_settings.DEFAULTS["tgt_type"]
STRATEGY = build_settings.DEFAULTS["strategy"]
RETRIES = build_settings.DEFAULTS["retries"]
MAX_CONTEXT_MB = build_settings.DEFAULTS["max_context_mb"]


@dataclass
class Settings:
    """What a plan or a run needs, read by the caller (arguments, master config, pillar).
    Numbers may come as strings from the command line: they are converted where used."""

    state_dir: Path  # the master's cache: durations, fetched trees, reports
    source: str | None = None
    target: str = TARGET
    tgt_type: str = TGT_TYPE
    strategy: str = STRATEGY
    registry_host: str | None = None
    tag_format: str = tag_retention.DEFAULT_TAG_FORMAT
    layout_nodes: dict = field(default_factory=dict)  # armswarm:swarm:nodes
    nodes: int | str | None = None  # plan: N identical nodes instead of asking the minions
    retries: int | str = RETRIES
    tag: str | None = None
    move_latest: bool = True
    probe_every: float | str = dispatch.PROBE_EVERY
    probe_timeout: float | str = dispatch.PROBE_TIMEOUT
    max_context_mb: float | str = MAX_CONTEXT_MB
    build_args: dict = field(default_factory=dict)  # armswarm:imagebuild:build_args
    registry_aliases: list = field(default_factory=list)  # …:registry_aliases
    speeds: dict = field(default_factory=dict)  # …:speeds, minion id or board → speed
    platforms: list | None = None  # armswarm:imagebuild:platforms (None: the nodes')


# -- durations remembered between runs -------------------------------------------------------
# The history (``durations.json``): per job its recent measurements on their nodes, and the
# build and push seconds normalised to speed 1.0 (seconds × the speed of the node that built
# it). Node speeds are fitted from all of it: t = work / speed in log space.
HISTORY_VERSION = 2
SAMPLES = 6  # recent measurements kept per job
PRIOR_WEIGHT = 0.25  # a board default counts as a quarter of one measurement


def history(state_dir) -> dict:
    """The remembered history; an old file (``{image: seconds}``) reads as build seconds at
    speed 1.0."""
    try:
        data = json.loads((Path(state_dir) / "durations.json").read_text())
    except (OSError, ValueError):
        return {"version": HISTORY_VERSION, "jobs": {}}
    if not isinstance(data, dict):
        return {"version": HISTORY_VERSION, "jobs": {}}
    if data.get("version") != HISTORY_VERSION:
        jobs = {
            name: {"build": float(v), "push": 0.0, "samples": []}
            for name, v in data.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        }
        return {"version": HISTORY_VERSION, "jobs": jobs}
    data.setdefault("jobs", {})
    return data


def durations(state_dir) -> dict:
    """``{job: {"build": s, "push": s}}`` at speed 1.0, as remembered."""
    return {
        name: {"build": entry.get("build", 0.0), "push": entry.get("push", 0.0)}
        for name, entry in history(state_dir)["jobs"].items()
    }


def fit_speeds(jobs: dict, prior: dict, fixed: dict) -> dict:
    """Node speeds from the measurements ``jobs[job]["samples"]`` (``[node, build, push]``):
    least squares of log(seconds) = log(work) − log(speed), each node pulled towards its
    ``prior`` by a quarter of a measurement, ``fixed`` nodes held. The fitted speeds keep the
    priors' geometric mean (the scale of ``expected_seconds`` hints)."""
    obs = []  # (job, node, log seconds)
    for name, entry in jobs.items():
        for sample in entry.get("samples") or []:
            node, seconds = sample[0], float(sample[1]) + float(sample[2])
            if seconds > 0.05:  # too short to say anything about a node's speed
                obs.append((name, node, math.log(seconds)))
    nodes = {n for _, n, _ in obs} | set(prior) | set(fixed)
    logp = {n: math.log(fixed.get(n) or prior.get(n) or 1.0) for n in nodes}
    speed = dict(logp)
    for _ in range(500):  # alternating least squares: stops when the speeds settle
        before = speed
        work_sum, work_n = {}, {}
        for job, node, t in obs:
            work_sum[job] = work_sum.get(job, 0.0) + t + speed[node]
            work_n[job] = work_n.get(job, 0) + 1
        work = {j: work_sum[j] / work_n[j] for j in work_sum}
        acc = {n: PRIOR_WEIGHT * logp[n] for n in nodes}  # the prior's pseudo-measurement
        cnt = dict.fromkeys(nodes, PRIOR_WEIGHT)
        for job, node, t in obs:
            acc[node] += work[job] - t
            cnt[node] += 1
        speed = {n: (logp[n] if n in fixed else acc[n] / cnt[n]) for n in nodes}
        free = [n for n in nodes if n not in fixed]
        if free and not fixed:
            shift = sum(logp[n] - speed[n] for n in free) / len(free)
            speed = {n: v + shift for n, v in speed.items()}
        if all(abs(speed[n] - before[n]) < 1e-6 for n in nodes):
            break
    # only nodes something was measured on (or held): the others keep their defaults
    measured = {n for _, n, _ in obs} | set(fixed)
    return {n: round(math.exp(v), 3) for n, v in speed.items() if n in measured}


def remember(state_dir, outcomes, speeds=None, prior=None, fixed=None):
    """Add each built job's measured build and push seconds to the history, refit the node
    speeds, and store each job's cost at speed 1.0 (the newest measurement weighs half)."""
    state_dir = Path(state_dir)
    data = history(state_dir)
    jobs = data["jobs"]
    for outcome in outcomes.values():
        answer = outcome.answer
        if outcome.status != scheduler.DONE or answer.get("seconds") is None:
            continue
        total = float(answer["seconds"])
        push = float(answer.get("push_seconds") or 0.0)
        build = float(answer.get("build_seconds", total - push))
        entry = jobs.setdefault(outcome.image, {"build": None, "push": None, "samples": []})
        entry.setdefault("samples", []).append([outcome.node, round(build, 3), round(push, 3)])
        del entry["samples"][:-SAMPLES]
    prior = {**(data.get("priors") or {}), **(prior or speeds or {})}
    fitted = fit_speeds(jobs, prior, fixed or {})
    data["priors"] = prior
    known = {**fitted, **(fixed or {})}
    for entry in jobs.values():
        samples = entry.get("samples") or []
        if not samples:
            continue  # an old file's value, never measured since
        build = push = None
        for node, measured_build, measured_push in samples:  # oldest first: newest weighs half
            scale = known.get(node, 1.0)
            b, p = float(measured_build) * scale, float(measured_push) * scale
            build = b if build is None else build + DURATION_WEIGHT * (b - build)
            push = p if push is None else push + DURATION_WEIGHT * (p - push)
        entry["build"], entry["push"] = round(build, 3), round(push, 3)
    data["speeds"] = fitted
    data["version"] = HISTORY_VERSION
    state_dir.mkdir(parents=True, exist_ok=True)
    files.write(state_dir / "durations.json", json.dumps(data, indent=1, sort_keys=True))


def _median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def estimates(graph, known: dict) -> dict:
    """Every job's ``{"build", "push", "source"}`` at speed 1.0: remembered (a measured 0
    stays 0), else the image's ``expected_seconds``, else the median of the remembered jobs
    (:data:`build_dag.DEFAULT_DURATION` when nothing is known)."""
    builds = [v["build"] for v in known.values() if v.get("build") is not None]
    pushes = [v["push"] for v in known.values() if v.get("push") is not None]
    build_guess = _median(builds)
    push_guess = _median(pushes) or 0.0
    # push seconds per build second, for a hint that gives only the total
    share = push_guess / (build_guess + push_guess) if build_guess else 0.0
    out = {}
    for name in graph.order:
        image = graph.images[name]
        hint = getattr(image, "expected_seconds", None)
        if name in known and known[name].get("build") is not None:
            value = known[name]
            out[name] = {"build": value["build"], "push": value.get("push") or 0.0}
            out[name]["source"] = "measured"
        elif hint is not None:
            out[name] = {"build": hint * (1 - share), "push": hint * share, "source": "hint"}
        elif build_guess is not None:
            out[name] = {"build": build_guess, "push": push_guess, "source": "median"}
        else:
            out[name] = {
                "build": build_dag.DEFAULT_DURATION,
                "push": 0.0,
                "source": "default",
            }
    return out


def speeds(pool: dict, state_dir, overrides: dict) -> dict:
    """``{node: (speed, source)}``: ``armswarm:imagebuild:speeds`` by minion id, then by
    board; else measured from the history; else the board's default; else 1.0."""
    fitted = history(state_dir).get("speeds") or {}
    out = {}
    for name, node in pool.items():
        if name in overrides:
            out[name] = (float(overrides[name]), "pillar (node)")
        elif node.board and node.board in overrides:
            out[name] = (float(overrides[node.board]), "pillar (board)")
        elif name in fitted:
            out[name] = (float(fitted[name]), "measured")
        elif node.board in build_settings.BOARD_SPEEDS:
            out[name] = (build_settings.BOARD_SPEEDS[node.board], "board default")
        else:
            out[name] = (1.0, "default")
    return out


def _with_speeds(pool, state_dir, overrides):
    table = speeds(pool, state_dir, overrides)
    for name, node in pool.items():
        node.speed = table[name][0]
    return table


def _fixed(pool, overrides) -> dict:
    return {
        n: float(overrides.get(n, overrides.get(node.board)))
        for n, node in pool.items()
        if n in overrides or (node.board and node.board in overrides)
    }


def _prior(pool) -> dict:
    return {n: build_settings.BOARD_SPEEDS.get(node.board, 1.0) for n, node in pool.items()}


# -- the tree and the nodes ------------------------------------------------------------------
def _load(settings, transport):
    source = settings.source
    if not source:
        raise ArmswarmError(
            "no source: pass source=salt://… or a directory, or set armswarm:imagebuild:source"
        )
    source = str(source)
    root = transport.fetch(source) if source.startswith("salt://") else Path(source)
    return build_dag.load(
        root,
        settings.registry_host,
        build_args=settings.build_args,
        aliases=settings.registry_aliases,
    )


def nodes(facts: dict, layout_nodes: dict, target) -> dict:
    """Answering build nodes (``facts``: minion → grains) with their architecture, platform
    and placement labels (the labels the swarm orchestration gives them: from grains and
    ``armswarm:swarm:nodes``). The architecture and platform are the board's (the
    ``armnode`` grain's ``arch``: an HC1 is linux/arm/v7, a RockPro64 linux/arm64, a Pi on a
    32-bit OS linux/arm/v7), ``cpuarch`` only when the grain has none."""
    pool = {}
    for minion_id, grains in sorted(facts.items()):
        if not isinstance(grains, dict):
            continue  # no answer: Salt's "Minion did not return" string
        labels = {swarm_layout.MINION_LABEL: minion_id, **swarm_layout.grain_labels(grains)}
        labels.update((layout_nodes.get(minion_id) or {}).get("labels") or {})
        armnode = grains.get("armnode") if isinstance(grains.get("armnode"), dict) else {}
        arch = architectures.canonical(armnode.get("arch") or grains.get("cpuarch", ""))
        pool[minion_id] = scheduler.Node(
            arch=arch,
            labels=labels,
            board=armnode.get("board") or "",
            platform=architectures.oci_platform(arch) or "",
        )
    if not pool:
        raise ArmswarmError(f"no minion matching {target!r} answered")
    return pool


def _discover(settings, transport) -> dict:
    facts = transport.node_facts(settings.target, settings.tgt_type)
    return nodes(facts, settings.layout_nodes or {}, settings.target)


def _jobs(graph, pool, settings):
    """``(platforms, jobs)``: each image's platforms on these nodes (``pool`` None: nodes of
    any platform) and the graph of jobs, one per (image, platform)."""
    platforms = build_dag.resolve_platforms(graph, pool, settings.platforms)
    return platforms, build_dag.expand(graph, platforms)


def job_durations(jobs, known: dict) -> dict:
    """Each job's remembered seconds: its own (``web@linux/arm64``), else its image's."""
    out = {}
    for key, job in jobs.images.items():
        value = known.get(key) or known.get(job.image_name)
        if value:
            out[key] = value
    return out


# -- the plan --------------------------------------------------------------------------------
def plan(settings: Settings, transport) -> dict:
    """What a run would do: the graph, the order by depth, the node speeds, the critical
    path, the lower bound and the schedule expected on the nodes (asked through
    ``transport``, or ``settings.nodes`` identical ones)."""
    graph = _load(settings, transport)
    if settings.nodes:
        pool = {f"node{i + 1}": scheduler.Node() for i in range(int(settings.nodes))}
        platforms, jobs = _jobs(graph, None, settings)
        # identical nodes: drop placement requirements from the estimate
        for image in [*graph.images.values(), *jobs.images.values()]:
            image.arch, image.labels, image.platform = [], {}, None
        table = {n: (1.0, "identical") for n in pool}
    else:
        pool = _discover(settings, transport)
        platforms, jobs = _jobs(graph, pool, settings)
        table = _with_speeds(pool, settings.state_dir, settings.speeds or {})
    known = estimates(jobs, job_durations(jobs, durations(settings.state_dir)))
    eligible = scheduler.eligibility(jobs, pool)
    decide = _decide(jobs, known, pool, settings.strategy)
    simulated = scheduler.simulate(jobs, decide, pool, settings.strategy, actual=known)
    bound, parts = scheduler.lower_bound(jobs, known, pool, eligible=eligible, detail=True)
    children = {name: [] for name in graph.order}
    for name in graph.order:
        for parent in set(graph.images[name].parents):
            children[parent].append(name)
    levels, depth = {}, {}
    for name in jobs.order:
        depth[name] = 1 + max((depth[p] for p in jobs.images[name].parents), default=0)
        levels.setdefault(depth[name], []).append(name)
    critical = scheduler.critical_path(jobs, known, pool, eligible=eligible)

    def seconds(names):
        return round(sum(build_dag.duration_of(n, known) for n in names), 1)

    makespan = simulated["makespan"]

    def able(name, platform):
        return sorted(eligible[build_dag.job_name(name, platform, platforms[name])])

    def image_jobs(name):
        return [build_dag.job_name(name, p, platforms[name]) for p in platforms[name]]

    return {
        "images": {
            name: {
                "parents": image.parents,
                "children": sorted(children[name]),
                "built_by": image.script or image.dockerfile,
                # the longest of its platforms' jobs, at speed 1.0
                "expected_seconds": round(
                    max(build_dag.duration_of(j, known) for j in image_jobs(name)), 3
                ),
                "estimate": known[image_jobs(name)[0]]["source"],
                # each platform and the nodes that can build it
                "platforms": {str(p): able(name, p) for p in platforms[name]},
                **({"arch": image.arch} if image.arch else {}),
                **({"labels": image.labels} if image.labels else {}),
            }
            for name, image in graph.images.items()
        },
        "jobs": {
            key: {"image": job.image_name, "platform": job.platform, "nodes": sorted(eligible[key])}
            for key, job in jobs.images.items()
        },
        "order": {f"depth {d}": names for d, names in sorted(levels.items())},
        # what the tree holds but does not build, and why; symlinked directories
        "skipped": graph.skipped,
        "aliases": graph.aliases,
        "critical_path": critical,
        # at the fastest speed of the nodes that may build each job
        "critical_path_seconds": round(parts["critical_path"], 1),
        "total_work_seconds": seconds(jobs.order),  # at speed 1.0
        "nodes": sorted(pool),
        "node_platforms": {n: node.platform or None for n, node in sorted(pool.items())},
        "speeds": {
            name: {"speed": speed, "source": source, **_board(pool[name])}
            for name, (speed, source) in sorted(table.items())
        },
        "lower_bound_seconds": round(bound, 1),
        "lower_bound": {
            "critical_path_seconds": round(parts["critical_path"], 1),
            "work_seconds": round(parts["work"], 1),
            "work_binds_on": parts["binding_nodes"],
        },
        "expected_makespan_seconds": round(makespan, 1),
        "expected_over_bound": round(makespan / bound, 3) if bound else 1.0,
        "expected_schedule": {
            name: f"{node} {start:.0f}–{end:.0f} s"
            for name, (node, start, end) in sorted(
                simulated["jobs"].items(), key=lambda item: item[1][1]
            )
        },
    }


def _decide(graph, known, pool, strategy) -> dict:
    """The costs the scheduler decides on (the baselines take the estimates as they are)."""
    if strategy != "dynamic":
        return known
    return scheduler.tuned(graph, known, pool)


def _board(node) -> dict:
    pairs = (("board", node.board), ("arch", node.arch), ("platform", node.platform))
    return {k: v for k, v in pairs if v}


# -- the run ---------------------------------------------------------------------------------
def push_tag(job, tag: str) -> str:
    """The tag a job pushes: the dated tag for an image of one platform, ``<tag>-<platform>``
    for one platform of several (the index goes under the dated tag)."""
    return tag_retention.platform_tag(tag, job.platform) if job.name != job.image_name else tag


def job_kwargs(spec, context: dict, host: str, tag: str, digests: dict, jobs=None) -> dict:
    """The arguments of the node's ``imagebuild.build`` for job ``spec``: its context by
    reference (``context``: ``{"source", "sha256"}`` as served, never the bytes), pinned to the
    digests its parents' jobs (of its platform) got in this run (``digests``: parent job →
    digest, its parents' only). A parent whose digest is None is still pushing from this
    node: the child builds on its local tag (``jobs``: the run's jobs, for that tag)."""
    by_image, local = {}, {}
    for parent in spec.parents:
        if parent not in digests:
            continue
        image = _image_of(parent)
        if digests[parent] is None:
            parent_job = jobs.images.get(parent) if jobs is not None else None
            local[image] = f"{host}/{image}:{push_tag(parent_job, tag) if parent_job else tag}"
        else:
            by_image[image] = digests[parent]
    pins = spec.pins(by_image, host)
    for image, ref in local.items():
        pins[image] = ref
        pins.update({alias: ref for alias, p in spec.spelled.items() if p == image})
    return {
        "image": spec.image_name,
        "ref": f"{host}/{spec.image_name}:{push_tag(spec, tag)}",
        "context_source": context["source"],
        "context_sha256": context["sha256"],
        "dockerfile": spec.dockerfile,
        "script": spec.script,
        "pins": pins,
        "build_args": spec.build_args,
        "registry_host": host,
        "timeout": spec.timeout,
        "platform": spec.platform,
    }


def _image_of(job: str) -> str:
    return job.split("@", 1)[0]


def _contexts(graph, max_context_mb) -> dict:
    max_bytes = float(max_context_mb) * 2**20
    contexts = {}
    for name in graph.order:
        contexts[name] = build_job.pack_bytes(graph.images[name].path)
        if len(contexts[name]) > max_bytes:
            raise ArmswarmError(
                f"{name}: build context is larger than armswarm:imagebuild:max_context_mb"
            )
    return contexts


def run(settings: Settings, transport, registry, clock=time.time) -> dict:
    """Build the tree on the nodes (one job per image and platform), push, put the image
    indexes of multi-platform images, move ``latest``, write the report and return it
    (``retcode`` 1 when a job failed or was skipped, or a tag could not be put)."""
    host = settings.registry_host
    graph = _load(settings, transport)
    pool = _discover(settings, transport)
    overrides = settings.speeds or {}
    _with_speeds(pool, settings.state_dir, overrides)
    platforms, jobs = _jobs(graph, pool, settings)
    known = estimates(jobs, job_durations(jobs, durations(settings.state_dir)))
    sched = scheduler.Scheduler(
        jobs, _decide(jobs, known, pool, settings.strategy), pool, settings.strategy
    )
    existing = set()
    for name in graph.order:
        # a platform tag (20261201-linux-arm64) takes its run's tag too
        existing.update(tag_retention.run_of(t) for t in registry.tags(name))
    tag = settings.tag or tag_retention.run_tag(existing, fmt=settings.tag_format)
    if tag in existing:
        raise ArmswarmError(f"tag {tag} is already published: dated tags are never overwritten")
    contexts = _contexts(graph, settings.max_context_mb)
    # Before any push: every tag this run may make is the runner's (retention deletes no other).
    record(settings.state_dir, run_tags(graph, jobs, platforms, tag))

    run_id = f"{tag}-{uuid.uuid4().hex[:6]}"
    prefix = f"armswarm/imagebuild/{run_id}"
    try:
        served = transport.serve(run_id, contexts)
    except BaseException:
        transport.withdraw(run_id)  # what was written before the failure
        raise
    transport.listen()
    started = clock()

    def progress(kind, **data):
        transport.fire({"run": run_id, **data}, f"{prefix}/job/{kind}")
        details = " ".join(f"{k}={v}" for k, v in data.items() if k != "error")
        if data.get("error"):
            details += f" error={str(data['error'])[:300]}"
        transport.say(f"[{clock() - started:6.1f}s] {kind:9} {details}")

    dispatcher = None
    outcomes = None
    try:
        transport.fire(
            {
                "run": run_id,
                "tag": tag,
                "images": graph.order,
                "jobs": jobs.order,
                "platforms": {n: [str(p) for p in ps] for n, ps in platforms.items()},
                "nodes": sorted(pool),
            },
            f"{prefix}/start",
        )
        jobs_said = f" ({len(jobs.order)} jobs)" if len(jobs.order) != len(graph.order) else ""
        transport.say(
            f"run {run_id}: {len(graph.order)} images{jobs_said} on {len(pool)} nodes, tag {tag}"
        )
        dispatcher = dispatch.Dispatcher(
            sched,
            transport,
            lambda job, node, digests: job_kwargs(
                jobs.images[job], served[jobs.images[job].image_name], host, tag, digests, jobs
            ),
            retries=int(settings.retries),
            progress=progress,
            clock=clock,
            probe_every=float(settings.probe_every),
            probe_timeout=float(settings.probe_timeout),
        )
        outcomes = dispatcher.run()
    finally:
        transport.close()
        transport.withdraw(run_id)  # every job has ended: no node fetches a context any more
        if outcomes is None and dispatcher is not None:
            # interrupted or crashed: keep the report of what was done
            try:
                write_report(
                    settings.state_dir,
                    run_id,
                    tag,
                    started,
                    clock(),
                    jobs,
                    dispatcher.outcomes,
                    {},
                    dispatcher.lost_nodes,
                    True,
                    pool=pool,
                    durations=known,
                )
            except OSError as exc:  # never hide the error that stopped the run
                log.error("imagebuild: cannot write the report of run %s: %s", run_id, exc)
    published = publish(registry, graph, jobs, platforms, outcomes, tag)
    if settings.move_latest:
        latest = move_latest(registry, graph, jobs, platforms, outcomes, tag, published)
    else:
        latest = {}
    remember(
        settings.state_dir,
        outcomes,
        speeds={n: node.speed for n, node in pool.items()},
        prior=_prior(pool),
        fixed=_fixed(pool, overrides),
    )
    report = write_report(
        settings.state_dir,
        run_id,
        tag,
        started,
        clock(),
        jobs,
        outcomes,
        latest,
        dispatcher.lost_nodes,
        published=published,
        pool=pool,
        durations=known,
    )
    for line in build_report.table(report):
        transport.say(line)
    failed = [o.image for o in outcomes.values() if o.status != scheduler.DONE]
    broken = [n for n, p in published.items() if p.get("error")]
    # salt-run exits with a returned dict's "retcode"
    report["retcode"] = 1 if failed or broken or not all(latest.values()) else 0
    return report


def _jobs_of(name, platforms):
    return {p: build_dag.job_name(name, p, platforms[name]) for p in platforms[name]}


def publish(registry, graph, jobs, platforms, outcomes, tag) -> dict:
    """What this run put under each image's dated tag. An image of one platform: the
    manifest its job pushed. An image of several: an image index over the platforms that
    built, put once all its jobs have ended; when a platform failed or was skipped the dated
    tag holds the others (``missing`` names it, and ``latest`` stays), when none built there
    is no dated tag."""
    out = {}
    for name in graph.order:
        per = _jobs_of(name, platforms)
        status = {str(p): outcomes[job].status for p, job in per.items()}
        built = {p: outcomes[job].digest for p, job in per.items() if status[str(p)] == "done"}
        entry = {
            "tag": tag,
            "platforms": status,
            "missing": sorted(p for p, st in status.items() if st != scheduler.DONE),
        }
        if len(per) == 1:
            entry["kind"] = "manifest"
            entry["digest"] = next(iter(built.values()), None)
        elif built:
            entry["kind"] = "index"
            entry["manifests"] = {
                str(p): {"tag": tag_retention.platform_tag(tag, p), "digest": d}
                for p, d in sorted(built.items())
            }
            try:
                entry["digest"] = registry.put_index(name, [tag], built)
            except ArmswarmError as exc:
                log.error("imagebuild: cannot put the index %s:%s: %s", name, tag, exc)
                entry["digest"], entry["error"] = None, f"index {name}:{tag}: {exc}"
        else:
            entry["kind"], entry["digest"] = None, None
        out[name] = entry
    return out


def move_latest(registry, graph, jobs, platforms, outcomes, tag, published) -> dict:
    """``latest`` → this run's image, for images built on every platform, with all their
    ancestors (an index: the dated tag's index is put under ``latest`` too)."""
    moved = {}
    for name in graph.order:
        needed = [
            j for a in {name, *graph.ancestors(name)} for j in _jobs_of(a, platforms).values()
        ]
        if not all(outcomes[j].status == scheduler.DONE for j in needed):
            continue
        entry = published[name]
        try:
            if entry["kind"] == "index":
                if entry.get("error"):
                    raise ArmswarmError(entry["error"])
                built = {p: m["digest"] for p, m in entry["manifests"].items()}
                registry.put_index(name, [tag_retention.LATEST], built)
            else:
                registry.retag(name, tag, tag_retention.LATEST)
            moved[name] = True
        except ArmswarmError as exc:
            log.error("imagebuild: cannot move %s:latest: %s", name, exc)
            moved[name] = False
    return moved


def write_report(
    state_dir,
    run_id,
    tag,
    started,
    ended,
    graph,
    outcomes,
    latest,
    lost_nodes,
    interrupted=False,
    published=None,
    pool=None,
    durations=None,
) -> dict:
    """The run's report as JSON and its timeline as SVG under ``runs/<run>/``; ``last``
    points to it."""
    state_dir = Path(state_dir)
    directory = state_dir / "runs" / run_id
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    for name in graph.order:
        job = graph.images[name]
        item = outcomes[name].as_dict()
        item["image"], item["job"], item["platform"] = job.image_name, name, job.platform
        item["latest_moved"] = latest.get(job.image_name, False)
        item["push_tries"] = outcomes[name].answer.get("push_tries")
        # the node's own measure of the build and push (the rest is dispatch)
        item["node_seconds"] = outcomes[name].answer.get("seconds")
        for part in ("pull_seconds", "build_seconds", "push_seconds"):
            if outcomes[name].answer.get(part) is not None:
                item[part] = outcomes[name].answer[part]
        item["parents"] = list(graph.images[name].parents)
        if outcomes[name].status == scheduler.FAILED:
            item["log"] = outcomes[name].answer.get("log", [])[-15:]
        images.append(item)
    counts = {}
    for item in images:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    report = {
        "title": f"imagebuild {run_id}",
        "run": run_id,
        "tag": tag,
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(),
        "seconds": round(ended - started, 3),
        "counts": counts,
        "lost_nodes": lost_nodes,
        "interrupted": interrupted,
        "nodes": {
            name: {"speed": node.speed, **_board(node)} for name, node in (pool or {}).items()
        },
        "started_at": started,
        "ended_at": ended,
        "images": images,
        # per image: what its dated tag holds (a manifest, or an index over the platforms
        # that built, with the missing ones named)
        "published": published or {},
        "report": str(directory / "report.json"),
        "timeline": str(directory / "timeline.svg"),
    }
    report["critical_path"] = build_report.critical_chain(report)
    files.write(directory / "report.json", json.dumps(report, indent=1))
    files.write(directory / "timeline.svg", build_report.svg(report))
    last = state_dir / "last"
    if last.is_symlink() or last.exists():
        last.unlink()
    os.symlink(directory, last)
    return report


# -- retention -------------------------------------------------------------------------------
# The ledger (``ledger.json`` in the state directory): per repository, each run's tag and the
# tags that run pushed or put (its dated tag, its platform tags). Retention deletes only those:
# a tag that merely looks dated was not made here and stays.
LEDGER = "ledger.json"
LEDGER_VERSION = 1


def ledger(state_dir) -> dict:
    """``{repository: {run tag: [tags]}}`` as recorded; no file yet: empty. A file that cannot
    be read or is not a ledger is an error (retention then refuses rather than guess)."""
    path = Path(state_dir) / LEDGER
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ArmswarmError(f"{path}: cannot read the ledger of pushed tags: {exc}") from exc
    repos = data.get("repositories") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("version") != LEDGER_VERSION
        or not isinstance(repos, dict)
        or not all(
            isinstance(runs, dict)
            and all(
                isinstance(tags, list) and all(isinstance(t, str) for t in tags)
                for tags in runs.values()
            )
            for runs in repos.values()
        )
    ):
        raise ArmswarmError(
            f"{path}: not a ledger of pushed tags (version {LEDGER_VERSION}, "
            "repositories → run → tags)"
        )
    return repos


@contextlib.contextmanager
def _ledger_lock(state_dir):
    """One writer of the ledger at a time (a run recording while retention removes)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".ledger.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_ledger(state_dir, repos):
    data = {"version": LEDGER_VERSION, "repositories": repos}
    files.write(Path(state_dir) / LEDGER, json.dumps(data, indent=1, sort_keys=True))


def record(state_dir, made: dict):
    """Add ``made`` (``{repository: {run tag: [tags]}}``) to the ledger (atomically: a
    reader sees the old ledger or the new one)."""
    with _ledger_lock(state_dir):
        repos = ledger(state_dir)
        for repo, runs in made.items():
            for run_tag, tags in runs.items():
                known = repos.setdefault(repo, {}).setdefault(run_tag, [])
                known[:] = sorted(set(known) | set(tags))
        _write_ledger(state_dir, repos)


def _unrecord(state_dir, repo, tags=(), runs=()):
    """Drop ``tags`` (deleted from ``repo``) and whole ``runs`` from the ledger."""
    tags, runs = set(tags), set(runs)
    if not tags and not runs:
        return
    with _ledger_lock(state_dir):
        repos = ledger(state_dir)
        entry = repos.get(repo) or {}
        for run_tag in list(entry):
            entry[run_tag] = [t for t in entry[run_tag] if t not in tags]
            if run_tag in runs or not entry[run_tag]:
                del entry[run_tag]
        if repo in repos and not entry:
            del repos[repo]
        _write_ledger(state_dir, repos)


def run_tags(graph, jobs, platforms, tag) -> dict:
    """What a run may push or put, per repository: ``{image: {tag: [tag, platform tags]}}``."""
    return {
        name: {
            tag: sorted(
                {tag, *(push_tag(jobs.images[j], tag) for j in _jobs_of(name, platforms).values())}
            )
        }
        for name in graph.order
    }


def adopt(registry, state_dir, repository, runs, tag_format=tag_retention.DEFAULT_TAG_FORMAT):
    """Record runs made before the ledger existed (``runs``: their run tags, named by the
    operator) as the runner's, with every tag of ``repository`` that belongs to them; retention
    then treats them like the runs it recorded. Returns what was added."""
    if not repository or not isinstance(repository, str):
        raise ArmswarmError("adopt: repository must be the name of one repository")
    if isinstance(runs, str):
        runs = [r.strip() for r in runs.split(",") if r.strip()]
    elif not isinstance(runs, list):
        runs = [runs]
    if not runs:
        raise ArmswarmError("adopt: runs must name the run tags to adopt (runs=20260101,20260102)")
    # salt-run reads runs=20260101 as a number: a whole number's digits are the tag
    runs = [str(r) if isinstance(r, int) and not isinstance(r, bool) else r for r in runs]
    for run_tag in runs:
        if not isinstance(run_tag, str):
            # 20261201.10 read as the number 20261201.1 would name another run: refused
            raise ArmswarmError(
                f"adopt: runs: {run_tag!r} is not a tag name; quote it (runs='\"20261201.2\"')"
            )
    added = tag_retention.adopt(registry.tags(repository), runs, tag_format)
    record(state_dir, {repository: added})
    return {"repository": repository, "adopted": added}


def prune(
    transport,
    registry,
    keep,
    tag_format=tag_retention.DEFAULT_TAG_FORMAT,
    dry_run=True,
    repositories=None,
    gc=True,
    registry_node=None,
    *,
    state_dir,
) -> dict:
    """Delete all but the newest ``keep`` runs' dated tags (in ``tag_format``) of each
    repository (every repository of the catalog unless ``repositories``), counting only the
    tags the ledger in ``state_dir`` says the runner made, then collect garbage on
    ``registry_node``. A tag leaves the ledger once the registry has deleted it."""
    keep = int(keep)
    if keep < 1:
        raise ArmswarmError("keep must be ≥ 1")
    if not isinstance(dry_run, bool):
        raise ArmswarmError(f"dry_run must be true or false, not {dry_run!r}")
    made = ledger(state_dir)  # an unreadable ledger stops retention before anything is read
    repos = (
        [repositories] if isinstance(repositories, str) else repositories
    ) or registry.catalog()
    result = {"dry_run": dry_run, "keep": keep, "repositories": {}}
    for repo in repos:
        tags = registry.tag_digests(repo)
        # what each index references: a manifest a kept index holds is never deleted
        children = {
            d: registry.index_children(repo, d) for d in sorted(set(tags.values()) - {None})
        }
        plan_ = tag_retention.retention(
            tags,
            keep,
            tag_format,
            children={d: c for d, c in children.items() if c},
            made=made.get(repo) or {},
        )
        entry = {
            "kept": plan_["keep"],
            "deleted": [t for t, _ in plan_["delete"]],
            "untagged": [t for t, _ in plan_["untag"]],
            "orphans": plan_["orphans"],
            # dated-looking tags the ledger does not hold: pushed by hand, or before it existed
            "kept_not_made_by_armswarm": plan_["foreign"],
        }
        if not dry_run:
            _apply(registry, state_dir, repo, plan_)
        if entry["deleted"] or entry["untagged"]:
            transport.say(
                f"{repo}: {'would remove' if dry_run else 'removed'} "
                f"{len(entry['deleted']) + len(entry['untagged'])} tags"
            )
        if plan_["foreign"]:
            transport.say(
                f"{repo}: kept {len(plan_['foreign'])} dated-looking tags not made by "
                f"armswarm: {', '.join(plan_['foreign'][:10])}"
                + (" …" if len(plan_["foreign"]) > 10 else "")
            )
        result["repositories"][repo] = entry
    result["garbage_collection"] = _collect(transport, dry_run, gc, result, registry_node)
    return result


def _apply(registry, state_dir, repo, plan_):
    """Delete and untag as planned; the ledger loses each tag once the registry has removed
    it (a failure half-way leaves the rest recorded, to be deleted by the next prune)."""
    removed = []
    done = set()
    try:
        for _, digest in plan_["delete"]:
            if digest not in done:
                registry.delete(repo, digest)
                done.add(digest)
                removed.extend(t for t, d in plan_["delete"] if d == digest)
        # the manifests only deleted indexes held: after the indexes
        for digest in plan_["orphans"]:
            registry.delete(repo, digest)
        for tag_, _ in plan_["untag"]:
            registry.untag(repo, tag_)
            removed.append(tag_)
    finally:
        _unrecord(state_dir, repo, tags=removed)
    _unrecord(state_dir, repo, runs=plan_["forget"])


def _collect(transport, dry_run, gc, result, node):
    """Run the registry's garbage collection on its node after real deletions."""
    removed = any(e["deleted"] or e["untagged"] for e in result["repositories"].values())
    if dry_run or not gc or not removed:
        return "not needed" if not removed else "skipped"
    if not node:
        return (
            "skipped: armswarm:registry:node is not set; run `registry garbage-collect` "
            "with the registry read-only"
        )
    ret = transport.garbage_collect(node)
    if not isinstance(ret, dict) or ret.get("retcode", 0) != 0:
        raise ArmswarmError(f"garbage collection on {node} failed: {ret and ret.get('ret')}")
    transport.say(f"garbage collection on {node}: {ret['ret']['freed_bytes']} bytes freed")
    return ret["ret"]
