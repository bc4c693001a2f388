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
from armswarm_core.common import files
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
    """Answering build nodes (``facts``: minion → grains) with their architecture and
    placement labels (the labels the swarm orchestration gives them: from grains and
    ``armswarm:swarm:nodes``)."""
    pool = {}
    for minion_id, grains in sorted(facts.items()):
        if not isinstance(grains, dict):
            continue  # no answer: Salt's "Minion did not return" string
        labels = {swarm_layout.MINION_LABEL: minion_id, **swarm_layout.grain_labels(grains)}
        labels.update((layout_nodes.get(minion_id) or {}).get("labels") or {})
        pool[minion_id] = scheduler.Node(arch=grains.get("cpuarch", ""), labels=labels)
    if not pool:
        raise ArmswarmError(f"no minion matching {target!r} answered")
    return pool


def _discover(settings, transport) -> dict:
    facts = transport.node_facts(settings.target, settings.tgt_type)
    return nodes(facts, settings.layout_nodes or {}, settings.target)


# -- the plan --------------------------------------------------------------------------------
def plan(settings: Settings, transport) -> dict:
    """What a run would do: the graph, the order by depth, the critical path and the
    schedule expected on the nodes (asked through ``transport``, or ``settings.nodes``
    identical ones)."""
    graph = _load(settings, transport)
    known = durations(settings.state_dir)
    if settings.nodes:
        pool = {f"node{i + 1}": scheduler.Node() for i in range(int(settings.nodes))}
        # identical nodes: drop placement requirements from the estimate
        for image in graph.images.values():
            image.arch, image.labels = [], {}
    else:
        pool = _discover(settings, transport)
    simulated = scheduler.simulate(graph, known, pool, settings.strategy)
    levels = {}
    depth = {}
    for name in graph.order:
        depth[name] = 1 + max((depth[p] for p in graph.images[name].parents), default=0)
        levels.setdefault(depth[name], []).append(name)
    critical = graph.critical_path(known)

    def seconds(names):
        return round(sum(build_dag.duration_of(n, known) for n in names), 1)

    return {
        "images": {
            name: {
                "parents": image.parents,
                "children": graph.children(name),
                "built_by": image.script or image.dockerfile,
                "expected_seconds": build_dag.duration_of(name, known),
                **({"arch": image.arch} if image.arch else {}),
                **({"labels": image.labels} if image.labels else {}),
            }
            for name, image in graph.images.items()
        },
        "order": {f"depth {d}": names for d, names in sorted(levels.items())},
        # what the tree holds but does not build, and why; symlinked directories
        "skipped": graph.skipped,
        "aliases": graph.aliases,
        "critical_path": critical,
        "critical_path_seconds": seconds(critical),
        "total_work_seconds": seconds(graph.order),
        "nodes": sorted(pool),
        "lower_bound_seconds": round(scheduler.lower_bound(graph, known, len(pool)), 1),
        "expected_makespan_seconds": round(simulated["makespan"], 1),
        "expected_schedule": {
            name: f"{node} {start:.0f}–{end:.0f} s"
            for name, (node, start, end) in sorted(
                simulated["jobs"].items(), key=lambda item: item[1][1]
            )
        },
    }


# -- the run ---------------------------------------------------------------------------------
def job_kwargs(spec, context: str, host: str, tag: str, digests: dict) -> dict:
    """The arguments of the node's ``imagebuild.build`` for image ``spec``: pinned to the
    digests its parents got in this run."""
    return {
        "image": spec.name,
        "ref": f"{host}/{spec.name}:{tag}",
        "context": context,
        "dockerfile": spec.dockerfile,
        "script": spec.script,
        "pins": spec.pins(digests, host),
        "build_args": spec.build_args,
        "registry_host": host,
        "timeout": spec.timeout,
    }


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
    """Build the tree on the nodes, push, move ``latest``, write the report and return it
    (``retcode`` 1 when an image failed or was skipped, or ``latest`` could not move)."""
    host = settings.registry_host
    graph = _load(settings, transport)
    pool = _discover(settings, transport)
    sched = scheduler.Scheduler(graph, durations(settings.state_dir), pool, settings.strategy)
    existing = set()
    for name in graph.order:
        existing.update(registry.tags(name))
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
            {"run": run_id, "tag": tag, "images": graph.order, "nodes": sorted(pool)},
            f"{prefix}/start",
        )
        transport.say(f"run {run_id}: {len(graph.order)} images on {len(pool)} nodes, tag {tag}")
        dispatcher = dispatch.Dispatcher(
            sched,
            transport,
            lambda image, node, digests: job_kwargs(
                graph.images[image], contexts[image], host, tag, digests
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
                    graph,
                    dispatcher.outcomes,
                    {},
                    dispatcher.lost_nodes,
                    True,
                )
            except OSError as exc:  # never hide the error that stopped the run
                log.error("imagebuild: cannot write the report of run %s: %s", run_id, exc)
    latest = move_latest(registry, graph, outcomes, tag) if settings.move_latest else {}
    remember(settings.state_dir, outcomes)
    report = write_report(
        settings.state_dir,
        run_id,
        tag,
        started,
        clock(),
        graph,
        outcomes,
        latest,
        dispatcher.lost_nodes,
    )
    for line in build_report.table(report):
        transport.say(line)
    failed = [o.image for o in outcomes.values() if o.status != scheduler.DONE]
    # salt-run exits with a returned dict's "retcode"
    report["retcode"] = 1 if failed or not all(latest.values()) else 0
    return report


def move_latest(registry, graph, outcomes, tag) -> dict:
    """``latest`` → this run's image, for images built with all their ancestors."""
    moved = {}
    for name in graph.order:
        built = outcomes[name].status == scheduler.DONE
        if built and all(outcomes[a].status == scheduler.DONE for a in graph.ancestors(name)):
            try:
                registry.retag(name, tag, tag_retention.LATEST)
                moved[name] = True
            except ArmswarmError as exc:
                log.error("imagebuild: cannot move %s:latest: %s", name, exc)
                moved[name] = False
    return moved


def write_report(
    state_dir, run_id, tag, started, ended, graph, outcomes, latest, lost_nodes, interrupted=False
) -> dict:
    """The run's report as JSON and its timeline as SVG under ``runs/<run>/``; ``last``
    points to it."""
    state_dir = Path(state_dir)
    directory = state_dir / "runs" / run_id
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    for name in graph.order:
        item = outcomes[name].as_dict()
        item["latest_moved"] = latest.get(name, False)
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
        plan_ = tag_retention.retention(tags, keep, tag_format)
        entry = {
            "kept": plan_["keep"],
            "deleted": [t for t, _ in plan_["delete"]],
            "untagged": [t for t, _ in plan_["untag"]],
        }
        if not dry_run:
            done = set()
            for _, digest in plan_["delete"]:
                if digest not in done:
                    registry.delete(repo, digest)
                    done.add(digest)
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
