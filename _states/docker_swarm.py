"""States for one swarm node: initialised, joined, left, node configured, overlay network, stack.

For forming a whole cluster from pillar use the orchestration (``swarm_cluster.converged``,
``salt-run state.orch swarm_engine.init``); these states manage one node or one object each.

.. code-block:: yaml

    swarm-initialised:
      docker_swarm.initialised:
        - advertise_addr: 10.0.0.11

    node4-labels:
      docker_swarm.node_configured:
        - name: node4
        - labels: {rack: a, ssd: "yes"}
        - availability: active

    backend-net:
      docker_swarm.network_present:
        - attachable: true
"""

import os
import posixpath
import tempfile

from armswarm_core import ArmswarmError
from armswarm_core.common import docker_client, state_results
from armswarm_core.registry import registry_settings
from armswarm_core.swarm import join_tokens, networks, stacks, swarm_engine
from salt.utils.data import traverse_dict_and_list

__virtualname__ = "docker_swarm"


def __virtual__():
    return docker_client.virtual(__virtualname__)


def _client():
    return docker_client.connect(__opts__, __pillar__)


def initialised(name="swarm", advertise_addr=None, listen_addr=swarm_engine.DEFAULT_LISTEN):
    """
    This node is a manager of a swarm: a new one is created only when the node is in none.
    A node that is a worker elsewhere fails (use ``left`` first).
    """
    ret = state_results.new(name)
    try:
        engine = _client()
        current = swarm_engine.local_state(engine)
        if current["state"] == "active" and current["is_manager"]:
            return state_results.unchanged(
                ret, f"Already a manager of swarm {current['cluster_id']}"
            )
        if current["state"] != "inactive":
            return state_results.failed(
                ret,
                f"This node is {current['state']}"
                f"{' as a worker' if current['state'] == 'active' else ''} in a swarm:"
                " refusing to create another one",
            )
        ret["changes"] = {"swarm": {"old": "inactive", "new": "manager (new swarm)"}}
        if __opts__["test"]:
            return state_results.would_change(ret, "A new swarm would be initialised")
        new = swarm_engine.init(engine, advertise_addr=advertise_addr, listen_addr=listen_addr)
        return state_results.changed(ret, f"Initialised swarm {new['cluster_id']}")
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def joined(
    name,
    remote_addrs,
    sealed_token=None,
    join_token_pillar=None,
    advertise_addr=None,
    listen_addr=swarm_engine.DEFAULT_LISTEN,
):
    """
    This node is in the swarm managed at ``remote_addrs``. The token is either ``sealed_token``
    (made by ``docker_swarm.sealed_join_token`` for this minion) or read from the pillar key
    ``join_token_pillar``; it never appears in the state's return.
    """
    ret = state_results.new(name)
    try:
        engine = _client()
        current = swarm_engine.local_state(engine)
        if current["state"] == "active":
            wanted = {a if ":" in a else f"{a}:2377" for a in _addrs(remote_addrs)}
            if wanted & set(current["remote_managers"]) or not current["remote_managers"]:
                return state_results.unchanged(ret, "Already in the swarm")
            return state_results.failed(
                ret,
                f"In another swarm (managers {', '.join(current['remote_managers'])});"
                " leave it first",
            )
        if current["state"] != "inactive":
            return state_results.failed(
                ret, f"Swarm state is {current['state']}: fix it before joining"
            )
        token = _token(sealed_token, join_token_pillar)
        ret["changes"] = {"swarm": {"old": "inactive", "new": "joined"}}
        if __opts__["test"]:
            return state_results.would_change(
                ret, f"Would join the swarm at {', '.join(_addrs(remote_addrs))}"
            )
        new = swarm_engine.join(
            engine,
            _addrs(remote_addrs),
            token,
            advertise_addr=advertise_addr,
            listen_addr=listen_addr,
        )
        # The role comes from the token, unknown to test=True: keep the changes it predicted.
        return state_results.changed(
            ret, f"Joined the swarm as {'manager' if new['is_manager'] else 'worker'}"
        )
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def _addrs(remote_addrs):
    if isinstance(remote_addrs, str):
        remote_addrs = remote_addrs.split(",")
    return [a.strip() for a in remote_addrs if a and a.strip()]


def _token(sealed_token, join_token_pillar):
    if sealed_token:
        try:
            with open(os.path.join(__opts__["pki_dir"], "minion.pem"), "rb") as fh:
                return join_tokens.unseal(sealed_token, fh.read(), __opts__["id"])
        except OSError as exc:
            raise ArmswarmError(f"cannot read this minion's key: {exc}") from exc
    if join_token_pillar:
        # Read pillar directly: Salt 3008's pillar.get redacts values unless unmasked.
        token = traverse_dict_and_list(__pillar__, join_token_pillar, None)
        if token:
            return str(token)
        raise ArmswarmError(f"pillar key {join_token_pillar} has no join token")
    raise ArmswarmError("a join token is needed: sealed_token or join_token_pillar")


def left(name="swarm", force=False):
    """This node is in no swarm. A manager needs ``force: true``."""
    ret = state_results.new(name)
    try:
        engine = _client()
        current = swarm_engine.local_state(engine)
        if current["state"] == "inactive":
            return state_results.unchanged(ret, "Not in a swarm")
        if current["is_manager"] and not force:
            return state_results.failed(
                ret, "This node is a manager: leaving may cost quorum; set force: true"
            )
        ret["changes"] = {"swarm": {"old": current["state"], "new": "inactive"}}
        if __opts__["test"]:
            return state_results.would_change(ret, "Would leave the swarm")
        swarm_engine.leave(engine, force=force)
        return state_results.changed(ret, "Left the swarm")
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def node_configured(
    name, labels=None, availability=None, role=None, remove_undeclared_labels=False
):
    """
    Swarm node ``name`` (hostname or ID) has these labels, availability and role. Run on a
    manager. Undeclared labels are kept unless ``remove_undeclared_labels``; a demotion that
    would lose quorum fails before anything changes.
    """
    ret = state_results.new(name)
    try:
        engine = _client()
        changes = swarm_engine.update_node(
            engine,
            name,
            labels=labels,
            availability=availability,
            role=role,
            remove_undeclared_labels=remove_undeclared_labels,
            test=True,
        )
        if not changes:
            return state_results.unchanged(ret, f"Node {name} is configured")
        if changes.get("role", {}).get("new") == "worker":
            swarm_engine.check_demotion(
                swarm_engine.nodes(engine), swarm_engine.find_node(engine, name)
            )
        ret["changes"] = changes
        if __opts__["test"]:
            return state_results.would_change(ret, f"Node {name} would be updated")
        swarm_engine.update_node(
            engine,
            name,
            labels=labels,
            availability=availability,
            role=role,
            remove_undeclared_labels=remove_undeclared_labels,
        )
        return state_results.changed(ret, f"Node {name} updated")
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def network_present(
    name,
    driver="overlay",
    attachable=False,
    internal=False,
    subnet=None,
    gateway=None,
    encrypted=False,
    labels=None,
    mtu=None,
    enable_ipv6=False,
    subnet6=None,
):
    """
    An overlay network exists with these settings (``mtu``: the driver's MTU; ``encrypted``:
    IPsec on the data path; ``enable_ipv6`` with ``subnet6``). A network in use is never
    re-created: a difference is then an error naming what differs. Run on a manager.
    """
    ret = state_results.new(name)
    try:
        engine = _client()
        desired = networks.desired(
            driver=driver,
            attachable=attachable,
            internal=internal,
            subnet=subnet,
            gateway=gateway,
            encrypted=encrypted,
            labels=labels,
            mtu=mtu,
            enable_ipv6=enable_ipv6,
            subnet6=subnet6,
        )
        current = networks.current(engine, name)
        diff = networks.diff(current, desired)
        if current and not diff:
            return state_results.unchanged(ret, f"Network {name} is as specified")
        if current and networks.in_use(engine, name):
            return state_results.failed(
                ret,
                f"Network {name} differs ({', '.join(sorted(diff))}) but is in use;"
                " networks cannot be changed in place: detach its services first",
            )
        ret["changes"] = {"network": {"old": current, "new": desired}}
        if __opts__["test"]:
            return state_results.would_change(
                ret, f"Network {name} would be {'re-created' if current else 'created'}"
            )
        if current:
            networks.remove(engine, name)
        networks.create(engine, name, desired)
        return state_results.changed(
            ret, f"Network {name} {'re-created' if current else 'created'}"
        )
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def network_absent(name):
    """
    No network called ``name`` exists. A network still in use is not removed: the state fails
    naming it. Run on a manager.
    """
    ret = state_results.new(name)
    try:
        engine = _client()
        current = networks.current(engine, name)
        if current is None:
            return state_results.unchanged(ret, f"Network {name} is absent")
        if networks.in_use(engine, name):
            return state_results.failed(ret, f"Network {name} is in use: detach its services first")
        ret["changes"] = {"network": {"old": current, "new": None}}
        if __opts__["test"]:
            return state_results.would_change(ret, f"Network {name} would be removed")
        networks.remove(engine, name)
        return state_results.changed(ret, f"Network {name} removed")
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def stack_deployed(
    name,
    compose,
    template=None,
    context=None,
    prune=False,
    with_registry_auth=True,
    registry_auth_pillar=None,
    wait=True,
    timeout=300,
    saltenv="base",
    resolve_image=stacks.RESOLVE_IMAGE_DEFAULT,
    force=False,
):
    """
    Stack ``name`` runs the services of the compose file ``compose`` (a ``salt://`` path or a
    local path; ``template: jinja`` with ``context`` renders it first). Only services whose
    definition changed, or that were changed by hand (``drift``), are updated (they roll out by
    their ``update_config``); ``prune`` removes services no longer in the file.

    Files named relative to the compose file (configs, secrets, ``env_file``) come along from
    ``salt://`` next to it (not rendered). Configs and secrets are named by their content's
    hash: a change is a new object and a rolling update; the stack's configs and secrets no
    service uses any more are removed after the rollout. A secret with ``x-pillar: <key>``
    takes its value from that pillar key of this minion; the value never appears in a return.
    Registry credentials come from the pillar key ``registry_auth_pillar`` (``{registry or
    host, username, password}``); ``armswarm:registry`` means the registry's pull client
    (``clients:pull``, else ``username``/``password``, with ``host``; master config merged).
    ``force: true`` rolls every service out again even when nothing changed (a re-pushed tag):
    it always reports changes (``force``). The wait after a deploy checks every running task
    against the service's whole new definition and fails on a rollback or a paused update. A
    file that matches a service whose rollout is still under way (the engine rolling back to it
    after a failed update, or an update of a run without ``wait``) changes nothing; with
    ``wait`` the run waits for that rollout to finish. A paused update (the engine stopped it
    half way, its definition is already the new one) fails every later run too, changing
    nothing, until a run rolls the service out again (a changed file, or ``force: true`` once
    the cause is fixed). With ``prune`` off, services no longer in the file stay and the comment
    names them. ``resolve_image`` (``always``, ``changed``, ``never``) is ``docker stack deploy
    --resolve-image``: ``never`` keeps the swarm from placing tasks by the image's platforms. An
    image changed by hand is put back after the deploy (``docker service update --image``: the
    deploy alone keeps it). Run on a manager.
    """
    ret = state_results.new(name)
    done = {}  # what was made before a failure
    try:
        # Strictly typed, before anything is asked or run: "false" from a pillar is true.
        for key, value in (
            ("prune", prune),
            ("wait", wait),
            ("with_registry_auth", with_registry_auth),
            ("force", force),
        ):
            stacks.check_bool(value, key)
        stacks.check_timeout(timeout)
        stacks.check_resolve_image(resolve_image)
        text, base = _compose_text(compose, template, context, saltenv)
        engine = _client()
        bundled, files = stacks.bundle(
            name,
            stacks.load(text),
            lambda path, where: _compose_file(base, path, where, saltenv),
            _pillar_secret,
            # Made by the first deploy that needs it; test=True only reads it.
            lambda: stacks.naming_key(engine, create=not __opts__["test"]),
        )
        stamped, hashes = stacks.stamp(bundled)
        desired = stacks.desired_fields(name, bundled, files)
        existing = stacks.current(engine, name)
        changes = stacks.plan(hashes, existing, prune, desired)
        keep = stacks.object_names(bundled)
        forced = []
        if force:
            # The services the deploy does not roll anyway.
            rolling = set(changes.get("create", [])) | set(changes.get("update", []))
            forced = sorted(s for s in hashes if s in existing and s not in rolling)
        deploying = any(changes.get(k) for k in ("create", "update", "remove"))
        # An image changed by hand: the deploy keeps it (the file's image equals the service's
        # com.docker.stack.image label), a service update after it puts it back.
        images = {
            s: bundled["services"][s]["image"]
            for s, fields in sorted((changes.get("drift") or {}).items())
            if "image" in fields
        }
        # What each update does to the services' definitions: the CLI updates every service
        # of the file that exists (its definition before becomes its previous one); a service
        # updated twice (forced after the deploy) keeps nothing of what it had, nor does one
        # removed by prune.
        updating = {f"{name}_{s}" for s in hashes if s in existing} if deploying else set()
        twice = {f"{name}_{s}" for s in forced} if deploying else set()
        twice |= {f"{name}_{s}" for s in images}
        updating = (updating | {f"{name}_{s}" for s in forced}) - twice
        replacing = twice | {f"{name}_{s}" for s in changes.get("remove", [])}
        stale = stacks.unused_objects(engine, name, keep, updating, replacing)
        # Without wait the rollout still runs when the state returns: only what no service
        # used before this deploy goes now; what it frees is left for a later run.
        removable = stale if wait else stacks.unused_objects(engine, name, keep)
        left_over = stacks.subtract_objects(stale, removable)
        if removable:
            changes["remove_objects"] = removable
        if forced:
            changes["force"] = forced
        rolling = set(changes.get("create", [])) | set(changes.get("update", [])) | set(forced)
        stuck = stacks.stuck_updates(existing, rolling)
        stuck_note = (
            "; ".join(f"{name}_{s}: {why}" for s, why in stuck.items())
            + ": tasks of both definitions may run, or none; fix what made the new tasks fail,"
            " then apply again with force: true (or roll back: docker service rollback <service>)"
            if stuck
            else ""
        )
        kept = [] if prune else sorted(s for s in existing if s not in hashes)
        kept_note = f"; not in the file, kept (prune is off): {', '.join(kept)}" if kept else ""
        if not changes:
            if stuck:
                return state_results.failed(ret, f"Stack {name}: {stuck_note}{kept_note}")
            under_way = stacks.rolling_updates(existing, rolling)
            waited = bool(under_way) and wait and not __opts__["test"]
            if waited:
                # The file is what the engine rolls to (a rollback to it, say): done when
                # the rollout is, not before.
                pending = stacks.wait_converged(
                    engine,
                    name,
                    sorted(under_way),
                    timeout=timeout,
                    rolling_back=[s for s, st in under_way.items() if st == "rollback_started"],
                )
                if pending:
                    return state_results.failed(
                        ret,
                        f"Stack {name} matches the file, but its rollout under way did not"
                        f" finish in {timeout}s: "
                        + ", ".join(f"{s} ({state})" for s, state in sorted(pending.items())),
                    )
            rollout = ""
            if under_way:
                what = ", ".join(f"{name}_{s} ({state})" for s, state in under_way.items())
                rollout = (
                    f"; waited for the rollout under way: {what}"
                    if waited
                    else f"; rollout under way: {what}"
                )
            return state_results.unchanged(
                ret, f"Stack {name} is up to date ({len(hashes)} services){kept_note}{rollout}"
            )
        ret["changes"] = changes
        drifted = changes.get("drift") or {}
        note = "".join(
            f"\nChanged by hand, put back: {s} ({', '.join(f)})" for s, f in sorted(drifted.items())
        )
        if left_over:
            note += "\nLeft for a later run (the rollout may still need them, wait is false): " + (
                "; ".join(f"{kind} {', '.join(names)}" for kind, names in left_over.items())
            )
        if kept:
            note += f"\nNot in the file, kept (prune is off): {', '.join(kept)}"
        if stuck:
            note += f"\nStill failing: {stuck_note}"
        if __opts__["test"]:
            if stuck:
                return state_results.failed(ret, f"Stack {name} would be deployed{note}", changes)
            return state_results.would_change(ret, f"Stack {name} would be deployed{note}")
        rolled = changes.get("create", []) + changes.get("update", [])
        base_url = docker_client.engine_settings(__opts__, __pillar__)["base_url"]
        auth = None
        if registry_auth_pillar == registry_settings.PILLAR:
            # the registry's own settings: its pull client (the nodes only pull)
            conf = registry_settings.settings(__opts__, __pillar__)
            username, password = registry_settings.credentials(conf, "pull")
            if not conf["host"] or not username:
                raise ArmswarmError(
                    f"{registry_auth_pillar}: no host or pull credentials (clients:pull, or "
                    "username/password)"
                )
            auth = {"registry": conf["host"], "username": username, "password": password}
        elif registry_auth_pillar:
            auth = traverse_dict_and_list(__pillar__, registry_auth_pillar, None)
            if not isinstance(auth, dict):
                raise ArmswarmError(f"pillar key {registry_auth_pillar} holds no registry auth")
        if rolled or changes.get("remove"):
            stacks.deploy(
                name,
                stamped,
                base_url,
                prune=prune,
                with_registry_auth=with_registry_auth,
                registry_auth=auth,
                timeout=timeout,
                files=files,
                resolve_image=resolve_image,
            )
            done = {k: v for k, v in changes.items() if k != "remove_objects"}
        if images:
            stacks.set_images(
                name,
                images,
                base_url,
                with_registry_auth=with_registry_auth,
                registry_auth=auth,
                timeout=timeout,
                resolve_image=resolve_image,
            )
        if forced:
            stacks.force_update(name, forced, base_url, timeout=timeout)
            rolled = rolled + forced
            done["force"] = forced
        pending = {}
        if wait and rolled:
            pending = stacks.wait_converged(engine, name, rolled, timeout=timeout)
        if pending:
            # Deployed all the same: the changes stand.
            return state_results.failed(
                ret,
                f"Stack {name} deployed, but not converged after {timeout}s: "
                + ", ".join(f"{s} ({state})" for s, state in sorted(pending.items())),
                changes,
            )
        # Only now: the old tasks that used them are gone (with wait), and from what the
        # swarm shows after the deploy, so that what is removed is what was predicted.
        unused = stacks.unused_objects(engine, name, keep)
        if not wait:
            unused = {k: [n for n in v if n in removable.get(k, [])] for k, v in unused.items()}
            unused = {k: v for k, v in unused.items() if v}
        if unused:
            stacks.remove_objects(engine, name, unused)
            changes["remove_objects"] = unused
        else:
            changes.pop("remove_objects", None)
        if stuck:
            return state_results.failed(ret, f"Stack {name} deployed{note}", changes)
        return state_results.changed(ret, f"Stack {name} deployed{note}")
    except ArmswarmError as exc:
        return state_results.failed(ret, exc, done)


def stack_absent(name, timeout=120):
    """
    Stack ``name`` is not in the swarm: its services are removed, then (once their tasks are
    gone) its networks, configs and secrets. When services of other stacks use its networks,
    configs or secrets the state fails naming them, before anything is removed. Run on a
    manager.
    """
    ret = state_results.new(name)
    try:
        stacks.check_timeout(timeout)
        engine = _client()
        contents = stacks.stack_contents(engine, name)
        if not contents:
            return state_results.unchanged(ret, f"Stack {name} is absent")
        # Checked first: the engine would refuse these only after the services are gone.
        users = stacks.outside_users(engine, name)
        if users:
            return state_results.failed(
                ret,
                f"Stack {name} cannot be removed whole, other services use its"
                f" {stacks.describe_users(users)}: nothing removed",
            )
        ret["changes"] = {"removed": contents}
        if __opts__["test"]:
            return state_results.would_change(ret, f"Stack {name} would be removed")
        stacks.remove_stack(engine, name, timeout=timeout)
        return state_results.changed(ret, f"Stack {name} removed")
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def _pillar_secret(key, where):
    value = traverse_dict_and_list(__pillar__, key, None)
    if not isinstance(value, str) or not value:
        # Never the value: only what it is.
        raise ArmswarmError(
            f"{where}: pillar key {key} must hold a non-empty string, not "
            f"{'nothing' if value is None else type(value).__name__}"
        )
    return value


def _compose_file(base, path, where, saltenv):
    """The bytes of ``path`` as the compose file at ``base`` names it: relative to the compose
    file, on the file server for a ``salt://`` compose file; an absolute path is a file on
    this minion."""
    if os.path.isabs(path):
        local = path
    elif base.startswith("salt://"):
        root, _, query = base[len("salt://") :].partition("?")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(root), path))
        if joined.startswith("../") or joined == "..":
            raise ArmswarmError(f"{where}: {path} is outside the file server")
        source = f"salt://{joined}" + (f"?{query}" if query else "")
        local = __salt__["cp.cache_file"](source, saltenv=saltenv)
        if not local:
            raise ArmswarmError(f"{where}: {source} is not on the file server")
    else:
        local = os.path.join(os.path.dirname(base), path)
    try:
        with open(local, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ArmswarmError(f"{where}: cannot read {path}: {exc.strerror}") from exc


def _compose_text(compose, template, context, saltenv):
    """``(text, base)``: the compose file's text (rendered with ``template``) and where it
    is, for the files it names relative to itself."""
    if not isinstance(compose, str) or not compose:
        raise ArmswarmError("compose: must be a salt:// path or a local path")
    if compose.startswith("salt://"):
        if template:
            with tempfile.TemporaryDirectory(prefix="armswarm-compose-") as tmp:
                dest = os.path.join(tmp, "compose.yml")
                cached = __salt__["cp.get_template"](
                    compose, dest, template=template, context=context or {}, saltenv=saltenv
                )
                if not cached:
                    raise ArmswarmError(f"cannot render {compose}")
                with open(cached, encoding="utf-8") as fh:
                    return fh.read(), compose
        cached = __salt__["cp.cache_file"](compose, saltenv=saltenv)
        if not cached:
            raise ArmswarmError(f"{compose} is not in the file server")
        with open(cached, encoding="utf-8") as fh:
            return fh.read(), compose
    if template:
        raise ArmswarmError("template needs a salt:// compose file")
    try:
        with open(compose, encoding="utf-8") as fh:
            return fh.read(), os.path.abspath(compose)
    except OSError as exc:
        raise ArmswarmError(f"cannot read {compose}: {exc}") from exc
