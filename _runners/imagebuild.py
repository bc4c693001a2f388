"""Build a tree of images across the minions, in dependency order, into the cluster registry.

.. code-block:: bash

    salt-run imagebuild.plan source=salt://images      # the graph, order, critical path
    salt-run imagebuild.run source=salt://images       # build, push, report
    salt-run imagebuild.prune                          # retention, dry-run by default
    salt-run imagebuild.adopt web runs=20260101        # a run from before the ledger

Settings are ``armswarm:imagebuild`` and ``armswarm:registry`` (see
:mod:`armswarm_core.build.build_settings` and :mod:`armswarm_core.registry.registry_settings`):
the defaults < the master config < the pillar compiled for the master's id, key by key:

.. code-block:: yaml

    armswarm:
      imagebuild:
        source: salt://images      # or a directory on the master
        target: 'G@armnode:board:*'
        tgt_type: compound
        strategy: dynamic          # or fifo / static (naive baselines, for comparison)
        retries: 2                 # transient failures (registry, network) per image
        max_context_mb: 32         # an image directory is sent to its node compressed
        probe_every: 10            # seconds between "still building?" checks of a job
        probe_timeout: 10          # unanswered this long twice in a row: the node is gone
        speeds: {sopine: 0.45}     # relative build speed by board or minion id (else measured)
        platforms: [linux/arm/v7, linux/arm64]   # default: every platform of the nodes

Each image is built for its platforms (``platforms:`` in its ``image.yaml``, its parents', or the
tree default), one job per platform on a node whose board has it; a multi-platform image gets one
image index per tag. Each image is tagged with the run's UTC date (``20261122``; a later run that
day gets ``20261122.2`` …) and built on its parents' digests from this run. ``latest`` moves at the
end of the run, for each image that was built. Events ``armswarm/imagebuild/<run>/…`` report each
job's start and end; the report (JSON) and a timeline (SVG) are written under the master's cache
directory.

A job names its build context and the context's SHA-256; the master's file server serves the
context (``file_roots:armswarm_contexts`` of the master config, see
:mod:`armswarm_core.build.build_contexts`) to the one node the job is published to, which
refuses it when the hash differs. Neither the publication (which every minion receives) nor the
master's job cache holds the context.

This module only reads the settings and talks to Salt; what a plan, a run and retention
decide is in :mod:`armswarm_core.build.build_run`.
"""

import logging
import shutil
import sys
from pathlib import Path

import salt.client
import salt.exceptions
import salt.fileclient
import salt.loader
import salt.pillar
import salt.utils.event
from armswarm_core import ArmswarmError
from armswarm_core.build import build_contexts, build_run, build_settings, dispatch
from armswarm_core.registry import registry_api
from armswarm_core.swarm import swarm_layout
from salt.utils.data import traverse_dict_and_list

log = logging.getLogger(__name__)

__virtualname__ = "imagebuild"
FACTS_TIMEOUT = 20


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


def _setting(key, value=None):
    """An argument when given, else ``armswarm:imagebuild:<key>`` (``build_settings.DEFAULTS``
    < master config < pillar)."""
    if value is not None:
        return value
    return build_settings.settings(__opts__, _pillar())[key]


def _registry_settings(host=None, use="push") -> registry_api.Settings:
    # the push client moves latest and puts indexes; retention's deletes use the delete client
    return registry_api.settings(__opts__, _pillar(), use=use, host=host)


def _state_dir() -> Path:
    path = Path(__opts__["cachedir"]) / "armswarm" / "imagebuild"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _context_root() -> Path:
    path = build_contexts.root(__opts__.get("file_roots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _settings(source, target, tgt_type, strategy, **more) -> build_run.Settings:
    """The settings of a plan or a run: arguments first, then master config, then pillar."""
    return build_run.Settings(
        state_dir=_state_dir(),
        source=_setting("source", source),
        target=_setting("target", target),
        tgt_type=_setting("tgt_type", tgt_type),
        strategy=_setting("strategy", strategy),
        # the swarm layout's per-node labels, merged as the swarm orchestration merges them
        layout_nodes=(swarm_layout.layout_conf(__opts__, _pillar()) or {}).get("nodes") or {},
        build_args=_setting("build_args"),
        registry_aliases=_setting("registry_aliases"),
        speeds=_setting("speeds"),
        platforms=_setting("platforms") or None,
        **more,
    )


def _fetch(source) -> Path:
    """A ``salt://`` tree as a local directory: fetched from the file server into the
    master's cache, replacing what an earlier run fetched."""
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


# -- the transport: Salt publish and the master event bus ------------------------------------
PUBLISH_TIMEOUT = 15  # seconds for the master to accept a publish (not the job's duration)
BUILT_TAG = "armswarm/imagebuild/built/"  # + jid: a node's build is done, its push runs


class _SaltTransport:
    """What :mod:`armswarm_core.build.build_run` asks of Salt. The local client and the
    event bus are opened when first needed (a plan for ``nodes=N`` needs neither)."""

    def __init__(self):
        self._local = None
        self.event = None
        self.jids: dict = {}

    @property
    def local(self):
        if self._local is None:
            self._local = salt.client.get_local_client(__opts__["conf_file"])
        return self._local

    def fetch(self, source):
        return _fetch(source)

    def node_facts(self, target, tgt_type):
        return self.local.cmd(
            target,
            "grains.item",
            ["cpuarch", "num_cpus", "armnode"],
            tgt_type=tgt_type,
            timeout=FACTS_TIMEOUT,
        )

    def listen(self):
        self.event = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True)

    def close(self):
        if self.event is not None:
            self.event.destroy()
            self.event = None

    def fire(self, data, tag):
        self.event.fire_event(data, tag)

    def say(self, message):
        _say(message)

    def serve(self, run_id, contexts):
        # file_roots:armswarm_contexts of the master config: the master's file server serves
        # the contexts from there, each to the node that fetches it
        return build_contexts.serve(_context_root(), run_id, contexts)

    def withdraw(self, run_id):
        try:
            root = build_contexts.root(__opts__.get("file_roots"))
        except ArmswarmError:
            return  # nothing was served (serve said why)
        build_contexts.withdraw(root, run_id)

    def garbage_collect(self, node):
        rets = self.local.cmd(
            [node],
            "docker_registry.garbage_collect",
            tgt_type="list",
            timeout=300,
            full_return=True,
        )
        return rets.get(node)

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
        data = self.event.get_event(wait=wait, tag="", full=True)
        while data:
            parts = data["tag"].split("/")
            if data["tag"].startswith("salt/job/"):
                if len(parts) == 5 and parts[3] == "ret" and parts[2] in self.jids:
                    out.append((parts[2], parts[4], data["data"]))
            elif data["tag"].startswith(BUILT_TAG) and len(parts) == 4:
                out.extend(self._built(parts[3], data.get("data") or {}))
            data = self.event.get_event(wait=0.01, tag="", full=True)
        return out

    def _built(self, jid, load) -> list:
        """A node's ``event.send`` that its build is done: only from the node given the job.
        ``load["id"]`` is the sender as the master authenticated it (the minion's own data,
        under ``load["data"]``, could name any node)."""
        body = load.get("data")
        if not isinstance(body, dict) or jid not in self.jids:
            return []
        if load.get("id") != self.jids[jid] or body.get("jid") != jid:
            log.warning("imagebuild: a built event for job %s not from its node, ignored", jid)
            return []
        return [(jid, self.jids[jid], {"built": True})]


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


def _readable(ret):
    """On salt-run's command line, the return goes to the ``armswarm_imagebuild`` outputter
    (a table); ``--out=json`` and programmatic callers still get the full data."""
    if __opts__.get("__cli") == "salt-run" and "armswarm_imagebuild" in _outputters():
        return {"data": ret, "outputter": "armswarm_imagebuild"}
    return ret


def _outputters():
    # The outputter is there once saltutil.sync_all (or the entry point) brought _output/.
    try:
        return salt.loader.outputters(__opts__)
    except Exception:  # noqa: BLE001 - without it, Salt's nested output is the fallback
        return {}


# -- public functions ------------------------------------------------------------------------
def _plan(source=None, target=None, tgt_type=None, nodes=None, strategy=None):
    try:
        host = _registry_settings().host
    except ArmswarmError:
        host = None
    settings = _settings(source, target, tgt_type, strategy, registry_host=host, nodes=nodes)
    return build_run.plan(settings, _SaltTransport())


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
    settings = _settings(
        source,
        target,
        tgt_type,
        strategy,
        registry_host=reg_conf.host,
        tag_format=reg_conf.tag_format,
        retries=_setting("retries", retries),
        tag=tag,
        move_latest=move_latest,
        probe_every=_setting("probe_every", probe_every),
        probe_timeout=_setting("probe_timeout", probe_timeout),
        max_context_mb=_setting("max_context_mb", None),
    )
    report = build_run.run(settings, _SaltTransport(), registry_api.Registry(reg_conf))
    if report["retcode"]:
        __context__["retcode"] = 1  # what an orchestration's salt.runner state reads
    return report


def _registry_node():
    node = traverse_dict_and_list(__opts__, "armswarm:registry:node", None)
    return node or traverse_dict_and_list(_pillar(), "armswarm:registry:node", None)


def _prune(keep=None, dry_run=True, repositories=None, gc=True):
    conf = _registry_settings(use="delete")
    return build_run.prune(
        _SaltTransport(),
        registry_api.Registry(conf),
        conf.keep if keep is None else keep,
        tag_format=conf.tag_format,
        dry_run=dry_run,
        repositories=repositories,
        gc=gc,
        registry_node=_registry_node(),
        state_dir=_state_dir(),
    )


def plan(source=None, target=None, tgt_type=None, nodes=None, strategy=None):
    """
    Show what :func:`run` would do without building anything: each image's parents, its
    platforms and the nodes that can build each, the jobs (one per image and platform), the
    build order by depth, each node's speed and where it came from, the critical path, a lower
    bound of the makespan that respects which nodes build which platform and how fast they are,
    and the schedule expected on the answering build nodes with its ratio to the bound
    (``nodes=N`` estimates for N identical nodes instead of asking the minions). Durations are
    remembered from earlier runs, normalised by node speed; an image never built is estimated
    from its ``expected_seconds`` or the tree's measured images.

    CLI Example:

    .. code-block:: bash

        salt-run imagebuild.plan source=salt://images
        salt-run imagebuild.plan source=/srv/images nodes=4
    """
    try:
        return _readable(
            _plan(source=source, target=target, tgt_type=tgt_type, nodes=nodes, strategy=strategy)
        )
    except ArmswarmError as exc:
        return _readable(_failure(exc))


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
    Build every image of the tree ``source`` (``salt://…`` or a directory on the master) on the
    minions matched by ``target``, parents first, each on its parents' digests from this run, push
    it as ``<registry>/<image>:<date>`` (an image of several platforms: each as
    ``<date>-<platform>`` on a node of that platform, then one image index under ``<date>``), then
    move ``latest`` of every image that was built on all its platforms. A failed image skips only
    its descendants (on its platform); registry and network failures are retried; a node that stops
    answering has its job started again elsewhere.

    Returns the report: the run's tag, per image node, start, end, duration, digest and status,
    and the paths of the JSON report and the SVG timeline. The exit code is 1 when an image
    failed or was skipped.

    CLI Example:

    .. code-block:: bash

        salt-run imagebuild.run source=salt://images
        salt-run imagebuild.run source=/srv/images target='G@armnode:arch:aarch64' tgt_type=compound
    """
    try:
        report = _run(
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
        return _readable(_failure(exc))
    return _readable(report)


def prune(keep=None, dry_run=True, repositories=None, gc=True):
    """
    Registry retention: keep the newest ``keep`` runs' dated tags per repository (default
    ``armswarm:registry:keep``, 7), ``latest`` and every tag that is not dated. Only tags that
    :func:`run` made are ever deleted (it records them in ``ledger.json`` under the master's
    cache directory); a tag that only looks dated (pushed by hand, or before the ledger
    existed) is kept and listed under ``kept_not_made_by_armswarm`` (see :func:`adopt`). A
    digest that a kept tag also points to is never deleted: its old tag is only untagged.
    Dry-run unless ``dry_run=False``. After deleting, the registry's garbage collection runs on
    the registry node (``armswarm:registry:node``, with the registry read-only) unless
    ``gc=False``.

    CLI Example:

    .. code-block:: bash

        salt-run imagebuild.prune
        salt-run imagebuild.prune keep=3 dry_run=False
    """
    try:
        return _prune(keep=keep, dry_run=dry_run, repositories=repositories, gc=gc)
    except ArmswarmError as exc:
        return _failure(exc)


def adopt(repository, runs):
    """
    Hand runs that the ledger does not hold over to retention: runs pushed before armswarm
    recorded the tags it makes, which :func:`prune` otherwise keeps for good. ``runs`` names
    their run tags (a list, or comma-separated); each must be a dated tag of ``repository``,
    and its platform tags (``20260101-linux-arm64``) come with it. Nothing is deleted here:
    run :func:`prune` (dry-run first) afterwards.

    CLI Example:

    .. code-block:: bash

        salt-run imagebuild.adopt web runs=20260101,20260102
    """
    try:
        conf = _registry_settings(use="delete")  # part of retention: its client reads the tags
        return build_run.adopt(
            registry_api.Registry(conf), _state_dir(), repository, runs, conf.tag_format
        )
    except ArmswarmError as exc:
        return _failure(exc)
