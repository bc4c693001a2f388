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
``garbage_collect(node) -> return``
    the registry's garbage collection on its node (``prune`` only): Salt's full return of
    ``docker_registry.garbage_collect`` on that node, or None when it did not answer.

The *registry* is a :class:`armswarm_core.registry.registry_api.Registry` (``tags`` and
``retag`` for a run; ``catalog``, ``tag_digests``, ``delete`` and ``untag`` for retention).
"""

import datetime
import json
import logging
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
    platforms: list | None = None  # armswarm:imagebuild:platforms (None: the nodes')


# -- durations remembered between runs -------------------------------------------------------
def durations(state_dir) -> dict:
    try:
        return json.loads((Path(state_dir) / "durations.json").read_text())
    except (OSError, ValueError):
        return {}


def remember(state_dir, outcomes):
    """Blend each built image's measured seconds into its remembered duration."""
    state_dir = Path(state_dir)
    known = durations(state_dir)
    for outcome in outcomes.values():
        if outcome.status == scheduler.DONE and outcome.answer.get("seconds"):
            seconds = float(outcome.answer["seconds"])
            old = known.get(outcome.image)
            known[outcome.image] = round(
                seconds if not old else old + DURATION_WEIGHT * (seconds - old), 3
            )
    state_dir.mkdir(parents=True, exist_ok=True)
    files.write(state_dir / "durations.json", json.dumps(known, indent=1, sort_keys=True))


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
        board = grains.get("armnode") if isinstance(grains.get("armnode"), dict) else {}
        arch = architectures.canonical(board.get("arch") or grains.get("cpuarch", ""))
        pool[minion_id] = scheduler.Node(
            arch=arch, labels=labels, platform=architectures.oci_platform(arch) or ""
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


def lower_bound(jobs, durations: dict, eligible: dict) -> float:
    """No schedule is shorter: the critical path, and for every set S of nodes the work of
    the jobs only S can build (a platform's jobs on that platform's nodes) over the size of
    S. With identical nodes this is max(critical path, work / nodes)."""
    levels = jobs.bottom_levels(durations)
    bound = max(levels.values(), default=0.0)
    work = {k: build_dag.duration_of(k, durations) for k in jobs.order}
    sets = {frozenset(nodes) for nodes in eligible.values() if nodes}
    # the unions of eligible sets (few: one per platform and label combination)
    closed = set(sets)
    frontier = set(sets)
    while frontier and len(closed) < 4096:
        new = {a | b for a in frontier for b in sets} - closed
        closed |= new
        frontier = new
    for nodes in closed:
        total = sum(work[k] for k, e in eligible.items() if e and set(e) <= nodes)
        bound = max(bound, total / len(nodes))
    return bound


# -- the plan --------------------------------------------------------------------------------
def plan(settings: Settings, transport) -> dict:
    """What a run would do: the graph, the order by depth, the critical path and the
    schedule expected on the nodes (asked through ``transport``, or ``settings.nodes``
    identical ones)."""
    graph = _load(settings, transport)
    if settings.nodes:
        pool = {f"node{i + 1}": scheduler.Node() for i in range(int(settings.nodes))}
        platforms, jobs = _jobs(graph, None, settings)
        # identical nodes: drop placement requirements from the estimate
        for image in [*graph.images.values(), *jobs.images.values()]:
            image.arch, image.labels, image.platform = [], {}, None
    else:
        pool = _discover(settings, transport)
        platforms, jobs = _jobs(graph, pool, settings)
    known = job_durations(jobs, durations(settings.state_dir))
    sched = scheduler.Scheduler(jobs, known, pool, settings.strategy)
    simulated = scheduler.simulate(jobs, known, pool, settings.strategy)
    levels = {}
    depth = {}
    for name in jobs.order:
        depth[name] = 1 + max((depth[p] for p in jobs.images[name].parents), default=0)
        levels.setdefault(depth[name], []).append(name)
    critical = jobs.critical_path(known)

    def seconds(names):
        return round(sum(build_dag.duration_of(n, known) for n in names), 1)

    def able(name, platform):
        return sched.eligible[build_dag.job_name(name, platform, platforms[name])]

    return {
        "images": {
            name: {
                "parents": image.parents,
                "children": graph.children(name),
                "built_by": image.script or image.dockerfile,
                "expected_seconds": build_dag.duration_of(name, known),
                # each platform and the nodes that can build it
                "platforms": {str(p): able(name, p) for p in platforms[name]},
                **({"arch": image.arch} if image.arch else {}),
                **({"labels": image.labels} if image.labels else {}),
            }
            for name, image in graph.images.items()
        },
        "jobs": {
            key: {"image": job.image_name, "platform": job.platform, "nodes": sched.eligible[key]}
            for key, job in jobs.images.items()
        },
        "order": {f"depth {d}": names for d, names in sorted(levels.items())},
        # what the tree holds but does not build, and why; symlinked directories
        "skipped": graph.skipped,
        "aliases": graph.aliases,
        "critical_path": critical,
        "critical_path_seconds": seconds(critical),
        "total_work_seconds": seconds(jobs.order),
        "nodes": sorted(pool),
        "node_platforms": {n: node.platform or None for n, node in sorted(pool.items())},
        "lower_bound_seconds": round(lower_bound(jobs, known, sched.eligible), 1),
        "expected_makespan_seconds": round(simulated["makespan"], 1),
        "expected_schedule": {
            name: f"{node} {start:.0f}–{end:.0f} s"
            for name, (node, start, end) in sorted(
                simulated["jobs"].items(), key=lambda item: item[1][1]
            )
        },
    }


# -- the run ---------------------------------------------------------------------------------
def push_tag(job, tag: str) -> str:
    """The tag a job pushes: the dated tag for an image of one platform, ``<tag>-<platform>``
    for one platform of several (the index goes under the dated tag)."""
    return tag_retention.platform_tag(tag, job.platform) if job.name != job.image_name else tag


def job_kwargs(spec, context: str, host: str, tag: str, digests: dict) -> dict:
    """The arguments of the node's ``imagebuild.build`` for job ``spec``: pinned to the
    digests its parents' jobs (of its platform) got in this run (``digests``: job → digest)."""
    parents = {digests_key: digests.get(digests_key) for digests_key in spec.parents}
    by_image = {_image_of(p): d for p, d in parents.items()}
    return {
        "image": spec.image_name,
        "ref": f"{host}/{spec.image_name}:{push_tag(spec, tag)}",
        "context": context,
        "dockerfile": spec.dockerfile,
        "script": spec.script,
        "pins": spec.pins(by_image, host),
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
        contexts[name] = build_job.pack(graph.images[name].path)
        if len(contexts[name]) * 3 / 4 > max_bytes:  # base64 → bytes
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
    platforms, jobs = _jobs(graph, pool, settings)
    known = job_durations(jobs, durations(settings.state_dir))
    sched = scheduler.Scheduler(jobs, known, pool, settings.strategy)
    existing = set()
    for name in graph.order:
        # a platform tag (20261201-linux-arm64) takes its run's tag too
        existing.update(tag_retention.run_of(t) for t in registry.tags(name))
    tag = settings.tag or tag_retention.run_tag(existing, fmt=settings.tag_format)
    if tag in existing:
        raise ArmswarmError(f"tag {tag} is already published: dated tags are never overwritten")
    contexts = _contexts(graph, settings.max_context_mb)

    run_id = f"{tag}-{uuid.uuid4().hex[:6]}"
    prefix = f"armswarm/imagebuild/{run_id}"
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
                jobs.images[job], contexts[jobs.images[job].image_name], host, tag, digests
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
                )
            except OSError as exc:  # never hide the error that stopped the run
                log.error("imagebuild: cannot write the report of run %s: %s", run_id, exc)
    published = publish(registry, graph, jobs, platforms, outcomes, tag)
    if settings.move_latest:
        latest = move_latest(registry, graph, jobs, platforms, outcomes, tag, published)
    else:
        latest = {}
    remember(settings.state_dir, outcomes)
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
        "images": images,
        # per image: what its dated tag holds (a manifest, or an index over the platforms
        # that built, with the missing ones named)
        "published": published or {},
        "report": str(directory / "report.json"),
        "timeline": str(directory / "timeline.svg"),
    }
    files.write(directory / "report.json", json.dumps(report, indent=1))
    files.write(directory / "timeline.svg", build_report.svg(report))
    last = state_dir / "last"
    if last.is_symlink() or last.exists():
        last.unlink()
    os.symlink(directory, last)
    return report


# -- retention -------------------------------------------------------------------------------
def prune(
    transport,
    registry,
    keep,
    tag_format=tag_retention.DEFAULT_TAG_FORMAT,
    dry_run=True,
    repositories=None,
    gc=True,
    registry_node=None,
) -> dict:
    """Delete all but the newest ``keep`` dated tags (in ``tag_format``) of each repository
    (every repository of the catalog unless ``repositories``), then collect garbage on
    ``registry_node``."""
    keep = int(keep)
    if keep < 1:
        raise ArmswarmError("keep must be ≥ 1")
    repos = (
        [repositories] if isinstance(repositories, str) else repositories
    ) or registry.catalog()
    result = {"dry_run": bool(dry_run), "keep": keep, "repositories": {}}
    for repo in repos:
        tags = registry.tag_digests(repo)
        # what each index references: a manifest a kept index holds is never deleted
        children = {
            d: registry.index_children(repo, d) for d in sorted(set(tags.values()) - {None})
        }
        plan_ = tag_retention.retention(
            tags, keep, tag_format, children={d: c for d, c in children.items() if c}
        )
        entry = {
            "kept": plan_["keep"],
            "deleted": [t for t, _ in plan_["delete"]],
            "untagged": [t for t, _ in plan_["untag"]],
            "orphans": plan_["orphans"],
        }
        if not dry_run:
            done = set()
            for _, digest in plan_["delete"]:
                if digest not in done:
                    registry.delete(repo, digest)
                    done.add(digest)
            # the manifests only deleted indexes held: after the indexes
            for digest in plan_["orphans"]:
                registry.delete(repo, digest)
            for tag_, _ in plan_["untag"]:
                registry.untag(repo, tag_)
        if entry["deleted"] or entry["untagged"]:
            transport.say(
                f"{repo}: {'would remove' if dry_run else 'removed'} "
                f"{len(entry['deleted']) + len(entry['untagged'])} tags"
            )
        result["repositories"][repo] = entry
    result["garbage_collection"] = _collect(transport, dry_run, gc, result, registry_node)
    return result


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
