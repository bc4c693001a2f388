"""Build a tree of images across the minions, in dependency order, into the cluster registry.

.. code-block:: bash

    salt-run imagebuild.plan source=salt://images      # the graph, order, critical path
    salt-run imagebuild.run source=salt://images       # build, push, report
    salt-run imagebuild.prune                          # retention, dry-run by default

Settings come from the master config, then from the pillar compiled for the master's id
(``armswarm:imagebuild`` and ``armswarm:registry``, see :mod:`armswarm_core.registry.registry_api`):

.. code-block:: yaml

    armswarm:
      imagebuild:
        source: salt://images      # or a directory on the master
        target: 'G@armnode:board:*'
        tgt_type: compound
        strategy: dynamic          # or static (a round-robin split, for comparison)
        retries: 2                 # transient failures (registry, network) per image
        max_context_mb: 32         # an image directory is sent to its node compressed
        probe_every: 10            # seconds between "still building?" checks of a job
        probe_timeout: 10          # unanswered this long twice in a row: the node is gone

Each image is tagged with the run's UTC date (``20261122``; a later run that day gets
``20261122.2`` …) and built on its parents' digests from this run. ``latest`` moves at the end
of the run, for each image that was built. Events ``armswarm/imagebuild/<run>/…`` report each
job's start and end; the report (JSON) and a timeline (SVG) are written under the master's
cache directory.
"""

import datetime
import json
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import salt.client
import salt.exceptions
import salt.fileclient
import salt.pillar
import salt.utils.event
from armswarm_core import ArmswarmError
from armswarm_core.build import build_dag, build_job, build_report, dispatch, scheduler
from armswarm_core.registry import registry_api, tag_retention
from armswarm_core.swarm import swarm_layout
from salt.utils.data import traverse_dict_and_list

log = logging.getLogger(__name__)

__virtualname__ = "imagebuild"
FACTS_TIMEOUT = 20
DURATION_WEIGHT = 0.5  # new measurement's weight in the remembered duration


def __virtual__():
    if not registry_api.HAS_REQUESTS:
        return False, "imagebuild: the requests package is not installed"
    return __virtualname__


# -- settings --------------------------------------------------------------------------------
def _pillar() -> dict:
    if "armswarm.pillar" not in __context__:
        pillar = salt.pillar.get_pillar(
            __opts__, {}, __opts__["id"], saltenv=__opts__.get("saltenv") or "base"
        ).compile_pillar()
        __context__["armswarm.pillar"] = pillar
    return __context__["armswarm.pillar"]


def _setting(key, value=None, default=None):
    if value is not None:
        return value
    for source in (__opts__, _pillar()):
        found = traverse_dict_and_list(source, f"armswarm:imagebuild:{key}", None)
        if found is not None:
            return found
    return default


def _registry_settings(host=None) -> registry_api.Settings:
    return registry_api.settings(__opts__, _pillar(), host=host)


def _state_dir() -> Path:
    path = Path(__opts__["cachedir"]) / "armswarm" / "imagebuild"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _durations() -> dict:
    try:
        return json.loads((_state_dir() / "durations.json").read_text())
    except (OSError, ValueError):
        return {}


def _remember(outcomes):
    durations = _durations()
    for outcome in outcomes.values():
        if outcome.status == scheduler.DONE and outcome.answer.get("seconds"):
            seconds = float(outcome.answer["seconds"])
            old = durations.get(outcome.image)
            durations[outcome.image] = round(
                seconds if not old else old + DURATION_WEIGHT * (seconds - old), 3
            )
    (_state_dir() / "durations.json").write_text(json.dumps(durations, indent=1, sort_keys=True))


def _source_dir(source) -> Path:
    """The image tree as a local directory (a ``salt://`` tree is fetched from the file
    server into the master's cache first, replacing what an earlier run fetched)."""
    if not source:
        raise ArmswarmError(
            "no source: pass source=salt://… or a directory, or set armswarm:imagebuild:source"
        )
    source = str(source)
    if not source.startswith("salt://"):
        return Path(source)
    path, _, query = source[len("salt://") :].partition("?")
    saltenv = query.split("saltenv=", 1)[1].split("&")[0] if "saltenv=" in query else "base"
    prefix = path.strip("/") + "/"
    dest = _state_dir() / "source"
    shutil.rmtree(dest, ignore_errors=True)
    client = salt.fileclient.FSClient(__opts__)
    try:
        files = [f for f in client.file_list(saltenv) if f.startswith(prefix)]
        if not files:
            raise ArmswarmError(f"{source}: no files on the master's file server")
        for name in files:
            cached = client.cache_file(f"salt://{name}", saltenv)
            target = dest / name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, target)
            if name.endswith(".sh"):
                target.chmod(0o755)  # the file server does not keep modes
    finally:
        client.destroy()
    return dest


def _load(source, registry_host):
    return build_dag.load(
        _source_dir(source),
        registry_host,
        build_args=_setting("build_args"),
        aliases=_setting("registry_aliases"),
    )


# -- nodes -----------------------------------------------------------------------------------
def _nodes(local, target, tgt_type) -> dict:
    """Answering build nodes with their architecture and placement labels (the labels the
    swarm orchestration gives them: from grains and ``armswarm:swarm:nodes``)."""
    facts = local.cmd(
        target,
        "grains.item",
        ["cpuarch", "num_cpus", "armnode"],
        tgt_type=tgt_type,
        timeout=FACTS_TIMEOUT,
    )
    layout_nodes = traverse_dict_and_list(_pillar(), "armswarm:swarm:nodes", {}) or {}
    nodes = {}
    for minion_id, grains in sorted(facts.items()):
        if not isinstance(grains, dict):
            continue
        labels = {swarm_layout.MINION_LABEL: minion_id, **swarm_layout.grain_labels(grains)}
        labels.update((layout_nodes.get(minion_id) or {}).get("labels") or {})
        nodes[minion_id] = scheduler.Node(arch=grains.get("cpuarch", ""), labels=labels)
    if not nodes:
        raise ArmswarmError(f"no minion matching {target!r} answered")
    return nodes


# -- the transport: Salt publish and the master event bus ------------------------------------
PUBLISH_TIMEOUT = 15  # seconds for the master to accept a publish (not the job's duration)


class _SaltTransport:
    def __init__(self, local, event):
        self.local = local
        self.event = event
        self.jids: dict = {}

    def _publish(self, node, fun, arg=(), kwarg=None):
        try:
            pub = self.local.run_job(
                [node], fun, list(arg), tgt_type="list", kwarg=kwarg, timeout=PUBLISH_TIMEOUT
            )
        except salt.exceptions.SaltClientError as exc:
            # A busy or restarting master: not the node's fault, the dispatcher tries again.
            raise dispatch.PublishFailed(f"publishing {fun} to {node} failed: {exc}") from exc
        if not pub or node not in (pub.get("minions") or []):
            return None
        self.jids[pub["jid"]] = node
        return pub["jid"]

    def start(self, node, image, kwargs):
        return self._publish(node, "imagebuild.build", kwarg=kwargs)

    def probe(self, node, jid):
        return self._publish(node, "saltutil.find_job", [jid])

    def events(self, wait):
        out = []
        data = self.event.get_event(wait=wait, tag="salt/job/", full=True, match_type="startswith")
        while data:
            parts = data["tag"].split("/")
            if len(parts) == 5 and parts[3] == "ret" and parts[2] in self.jids:
                out.append((parts[2], parts[4], data["data"]))
            data = self.event.get_event(
                wait=0.01, tag="salt/job/", full=True, match_type="startswith"
            )
        return out


def _failure(exc) -> dict:
    """A clear error as the return, and a failing exit code (salt-run exits with a returned
    dict's ``retcode``)."""
    _say(f"error: {exc}")
    __context__["retcode"] = 1  # what an orchestration's salt.runner state reads
    return {"error": str(exc), "retcode": 1}


def _say(message):
    """A progress line: in the log, and on salt-run's stderr (stdout keeps the return, so
    ``--out=json`` stays parseable). Other consumers follow the ``armswarm/imagebuild``
    events."""
    log.info("imagebuild: %s", message)
    if __opts__.get("__cli") == "salt-run" and not __opts__.get("quiet"):
        print(message, file=sys.stderr, flush=True)


# -- public functions ------------------------------------------------------------------------
def _plan(source=None, target=None, tgt_type=None, nodes=None, strategy=None):
    source = _setting("source", source)
    try:
        host = _registry_settings().host
    except ArmswarmError:
        host = None
    graph = _load(source, host)
    durations = _durations()
    if nodes:
        pool = {f"node{i + 1}": scheduler.Node() for i in range(int(nodes))}
        # identical nodes: drop placement requirements from the estimate
        for image in graph.images.values():
            image.arch, image.labels = [], {}
    else:
        local = salt.client.get_local_client(__opts__["conf_file"])
        pool = _nodes(
            local, _setting("target", target, "*"), _setting("tgt_type", tgt_type, "glob")
        )
    simulated = scheduler.simulate(
        graph, durations, pool, _setting("strategy", strategy, "dynamic")
    )
    levels = {}
    depth = {}
    for name in graph.order:
        depth[name] = 1 + max((depth[p] for p in graph.images[name].parents), default=0)
        levels.setdefault(depth[name], []).append(name)
    critical = graph.critical_path(durations)

    def seconds(names):
        return round(sum(build_dag.duration_of(n, durations) for n in names), 1)

    return {
        "images": {
            name: {
                "parents": image.parents,
                "children": graph.children(name),
                "built_by": image.script or image.dockerfile,
                "expected_seconds": build_dag.duration_of(name, durations),
                **({"arch": image.arch} if image.arch else {}),
                **({"labels": image.labels} if image.labels else {}),
            }
            for name, image in graph.images.items()
        },
        "order": {f"depth {d}": names for d, names in sorted(levels.items())},
        "critical_path": critical,
        "critical_path_seconds": seconds(critical),
        "total_work_seconds": seconds(graph.order),
        "nodes": sorted(pool),
        "lower_bound_seconds": round(scheduler.lower_bound(graph, durations, len(pool)), 1),
        "expected_makespan_seconds": round(simulated["makespan"], 1),
        "expected_schedule": {
            name: f"{node} {start:.0f}–{end:.0f} s"
            for name, (node, start, end) in sorted(
                simulated["jobs"].items(), key=lambda item: item[1][1]
            )
        },
    }


def _run(
    source=None,
    target=None,
    tgt_type=None,
    strategy=None,
    retries=None,
    tag=None,
    move_latest=True,
    probe_every=None,
    probe_timeout=None,
):
    reg_conf = _registry_settings()
    graph = _load(_setting("source", source), reg_conf.host)
    local = salt.client.get_local_client(__opts__["conf_file"])
    target = _setting("target", target, "*")
    pool = _nodes(local, target, _setting("tgt_type", tgt_type, "glob"))
    plan_ = scheduler.Scheduler(
        graph, _durations(), pool, _setting("strategy", strategy, "dynamic")
    )
    api = registry_api.Registry(reg_conf)
    existing = set()
    for name in graph.order:
        existing.update(api.tags(name))
    tag = tag or tag_retention.run_tag(existing, fmt=reg_conf.tag_format)
    if tag in existing:
        raise ArmswarmError(f"tag {tag} is already published: dated tags are never overwritten")
    max_bytes = float(_setting("max_context_mb", None, 32)) * 2**20
    contexts = {}
    for name in graph.order:
        contexts[name] = build_job.pack(graph.images[name].path)
        if len(contexts[name]) * 3 / 4 > max_bytes:
            raise ArmswarmError(
                f"{name}: build context is larger than armswarm:imagebuild:max_context_mb"
            )

    run_id = f"{tag}-{uuid.uuid4().hex[:6]}"
    event = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True)
    prefix = f"armswarm/imagebuild/{run_id}"
    started = time.time()

    def progress(kind, **data):
        event.fire_event({"run": run_id, **data}, f"{prefix}/job/{kind}")
        details = " ".join(f"{k}={v}" for k, v in data.items() if k != "error")
        if data.get("error"):
            details += f" error={str(data['error'])[:300]}"
        _say(f"[{time.time() - started:6.1f}s] {kind:9} {details}")

    def job_kwargs(image, node, digests):
        spec = graph.images[image]
        return {
            "image": image,
            "ref": f"{reg_conf.host}/{image}:{tag}",
            "context": contexts[image],
            "dockerfile": spec.dockerfile,
            "script": spec.script,
            "pins": spec.pins(digests, reg_conf.host),
            "build_args": spec.build_args,
            "registry_host": reg_conf.host,
            "timeout": spec.timeout,
        }

    event.fire_event(
        {"run": run_id, "tag": tag, "images": graph.order, "nodes": sorted(pool)},
        f"{prefix}/start",
    )
    _say(f"run {run_id}: {len(graph.order)} images on {len(pool)} nodes, tag {tag}")
    transport = _SaltTransport(local, event)
    dispatcher = dispatch.Dispatcher(
        plan_,
        transport,
        job_kwargs,
        retries=int(_setting("retries", retries, 2)),
        progress=progress,
        probe_every=float(_setting("probe_every", probe_every, dispatch.PROBE_EVERY)),
        probe_timeout=float(_setting("probe_timeout", probe_timeout, dispatch.PROBE_TIMEOUT)),
    )
    outcomes = None
    try:
        outcomes = dispatcher.run()
    finally:
        event.destroy()
        if outcomes is None:  # interrupted or crashed: keep the report of what was done
            try:
                _write_report(
                    run_id,
                    tag,
                    started,
                    graph,
                    dispatcher.outcomes,
                    {},
                    dispatcher.lost_nodes,
                    True,
                )
            except OSError as exc:  # never hide the error that stopped the run
                log.error("imagebuild: cannot write the report of run %s: %s", run_id, exc)
    latest = _move_latest(api, graph, outcomes, tag) if move_latest else {}
    _remember(outcomes)
    report = _write_report(run_id, tag, started, graph, outcomes, latest, dispatcher.lost_nodes)
    for line in build_report.table(report):
        _say(line)
    failed = [o.image for o in outcomes.values() if o.status != scheduler.DONE]
    # salt-run exits with a returned dict's "retcode"
    report["retcode"] = 1 if failed or not all(latest.values()) else 0
    if report["retcode"]:
        __context__["retcode"] = 1  # what an orchestration's salt.runner state reads
    return report


def _move_latest(api, graph, outcomes, tag) -> dict:
    """``latest`` → this run's image, for images built with all their ancestors."""
    moved = {}
    for name in graph.order:
        built = outcomes[name].status == scheduler.DONE
        if built and all(outcomes[a].status == scheduler.DONE for a in graph.ancestors(name)):
            try:
                api.retag(name, tag, tag_retention.LATEST)
                moved[name] = True
            except ArmswarmError as exc:
                log.error("imagebuild: cannot move %s:latest: %s", name, exc)
                moved[name] = False
    return moved


def _write_report(
    run_id, tag, started, graph, outcomes, latest, lost_nodes, interrupted=False
) -> dict:
    directory = _state_dir() / "runs" / run_id
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
        "seconds": round(time.time() - started, 3),
        "counts": counts,
        "lost_nodes": lost_nodes,
        "interrupted": interrupted,
        "images": images,
        "report": str(directory / "report.json"),
        "timeline": str(directory / "timeline.svg"),
    }
    (directory / "report.json").write_text(json.dumps(report, indent=1))
    (directory / "timeline.svg").write_text(build_report.svg(report))
    last = _state_dir() / "last"
    if last.is_symlink() or last.exists():
        last.unlink()
    os.symlink(directory, last)
    return report


def _prune(keep=None, dry_run=True, repositories=None, gc=True):
    conf = _registry_settings()
    keep = int(keep) if keep is not None else conf.keep
    if keep < 1:
        raise ArmswarmError("keep must be ≥ 1")
    api = registry_api.Registry(conf)
    repos = ([repositories] if isinstance(repositories, str) else repositories) or api.catalog()
    result = {"dry_run": bool(dry_run), "keep": keep, "repositories": {}}
    for repo in repos:
        tags = api.tag_digests(repo)
        plan_ = tag_retention.retention(tags, keep, conf.tag_format)
        entry = {
            "kept": plan_["keep"],
            "deleted": [t for t, _ in plan_["delete"]],
            "untagged": [t for t, _ in plan_["untag"]],
        }
        if not dry_run:
            done = set()
            for _, digest in plan_["delete"]:
                if digest not in done:
                    api.delete(repo, digest)
                    done.add(digest)
            for tag_, _ in plan_["untag"]:
                api.untag(repo, tag_)
        if entry["deleted"] or entry["untagged"]:
            _say(
                f"{repo}: {'would remove' if dry_run else 'removed'} "
                f"{len(entry['deleted']) + len(entry['untagged'])} tags"
            )
        result["repositories"][repo] = entry
    result["garbage_collection"] = _collect(dry_run, gc, result)
    return result


def _collect(dry_run, gc, result):
    """Run the registry's garbage collection on its node after real deletions."""
    removed = any(e["deleted"] or e["untagged"] for e in result["repositories"].values())
    node = traverse_dict_and_list(__opts__, "armswarm:registry:node", None)
    node = node or traverse_dict_and_list(_pillar(), "armswarm:registry:node", None)
    if dry_run or not gc or not removed:
        return "not needed" if not removed else "skipped"
    if not node:
        return (
            "skipped: armswarm:registry:node is not set; run `registry garbage-collect` "
            "with the registry read-only"
        )
    local = salt.client.get_local_client(__opts__["conf_file"])
    rets = local.cmd(node, "docker_registry.garbage_collect", timeout=300, full_return=True)
    ret = rets.get(node)
    if not isinstance(ret, dict) or ret.get("retcode", 0) != 0:
        raise ArmswarmError(f"garbage collection on {node} failed: {ret and ret.get('ret')}")
    _say(f"garbage collection on {node}: {ret['ret']['freed_bytes']} bytes freed")
    return ret["ret"]


def plan(source=None, target=None, tgt_type=None, nodes=None, strategy=None):
    """
    Show what :func:`run` would do without building anything: each image's parents, the build
    order by depth, the critical path, and the schedule expected on the answering build nodes
    (``nodes=N`` estimates for N identical nodes instead of asking the minions). Durations are
    remembered from earlier runs (60 s for an image never built).

    CLI Example:

    .. code-block:: bash

        salt-run imagebuild.plan source=salt://images
        salt-run imagebuild.plan source=/srv/images nodes=4
    """
    try:
        return _plan(
            source=source, target=target, tgt_type=tgt_type, nodes=nodes, strategy=strategy
        )
    except ArmswarmError as exc:
        return _failure(exc)


def run(
    source=None,
    target=None,
    tgt_type=None,
    strategy=None,
    retries=None,
    tag=None,
    move_latest=True,
    probe_every=None,
    probe_timeout=None,
):
    """
    Build every image of the tree ``source`` (``salt://…`` or a directory on the master) on
    the minions matched by ``target``, parents first, each on its parents' digests from this
    run, push it as ``<registry>/<image>:<date>``, then move ``latest`` of every image that was
    built. A failed image skips only its descendants; registry and network failures are
    retried; a node that stops answering has its job started again elsewhere.

    Returns the report: the run's tag, per image node, start, end, duration, digest and status,
    and the paths of the JSON report and the SVG timeline. The exit code is 1 when an image
    failed or was skipped.

    CLI Example:

    .. code-block:: bash

        salt-run imagebuild.run source=salt://images
        salt-run imagebuild.run source=/srv/images target='G@cpuarch:aarch64' tgt_type=compound
    """
    try:
        return _run(
            source=source,
            target=target,
            tgt_type=tgt_type,
            strategy=strategy,
            retries=retries,
            tag=tag,
            move_latest=move_latest,
            probe_every=probe_every,
            probe_timeout=probe_timeout,
        )
    except ArmswarmError as exc:
        return _failure(exc)


def prune(keep=None, dry_run=True, repositories=None, gc=True):
    """
    Registry retention: keep the newest ``keep`` dated tags per repository (default
    ``armswarm:registry:keep``, 7), ``latest`` and every tag that is not dated. A digest that
    a kept tag also points to is never deleted: its old tag is only untagged. Dry-run unless
    ``dry_run=False``. After deleting, the registry's garbage collection runs on the registry
    node (``armswarm:registry:node``, with the registry read-only) unless ``gc=False``.

    CLI Example:

    .. code-block:: bash

        salt-run imagebuild.prune
        salt-run imagebuild.prune keep=3 dry_run=False
    """
    try:
        return _prune(keep=keep, dry_run=dry_run, repositories=repositories, gc=gc)
    except ArmswarmError as exc:
        return _failure(exc)
