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
import tempfile

from armswarm_core import ArmswarmError
from armswarm_core.common import docker_client, state_results
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
):
    """
    An overlay network exists with these settings. A network in use is never re-created: a
    difference is then an error naming what differs. Run on a manager.
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
):
    """
    Stack ``name`` runs the services of the compose file ``compose`` (a ``salt://`` path or a
    local path; ``template: jinja`` with ``context`` renders it first). Only services whose
    definition changed are updated (they roll out by their ``update_config``); ``prune``
    removes services no longer in the file. Registry credentials come from the pillar key
    ``registry_auth_pillar`` (``{registry or host, username, password}``) and never appear in the
    return. ``resolve_image`` (``always``, ``changed``, ``never``) is ``docker stack deploy
    --resolve-image``: ``never`` keeps the swarm from placing tasks by the image's platforms.
    Run on a manager.
    """
    ret = state_results.new(name)
    try:
        stacks.check_resolve_image(resolve_image)
        text = _compose_text(compose, template, context, saltenv)
        engine = _client()
        stamped, hashes = stacks.load_and_stamp(text)
        changes = stacks.plan(hashes, stacks.current(engine, name), prune)
        if not changes:
            return state_results.unchanged(
                ret, f"Stack {name} is up to date ({len(hashes)} services)"
            )
        ret["changes"] = changes
        if __opts__["test"]:
            return state_results.would_change(ret, f"Stack {name} would be deployed")
        auth = None
        if registry_auth_pillar:
            auth = traverse_dict_and_list(__pillar__, registry_auth_pillar, None)
            if not isinstance(auth, dict):
                raise ArmswarmError(f"pillar key {registry_auth_pillar} holds no registry auth")
        stacks.deploy(
            name,
            stamped,
            docker_client.engine_settings(__opts__, __pillar__)["base_url"],
            prune=prune,
            with_registry_auth=with_registry_auth,
            registry_auth=auth,
            timeout=timeout,
            resolve_image=resolve_image,
        )
        pending = {}
        if wait:
            rolled = changes.get("create", []) + changes.get("update", [])
            pending = stacks.wait_converged(engine, name, rolled, timeout=timeout)
        if pending:
            # Deployed all the same: the changes stand.
            return state_results.failed(
                ret,
                f"Stack {name} deployed, but not converged after {timeout}s: "
                + ", ".join(f"{s} ({state})" for s, state in sorted(pending.items())),
                changes,
            )
        return state_results.changed(ret, f"Stack {name} deployed")
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def _compose_text(compose, template, context, saltenv):
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
                    return fh.read()
        cached = __salt__["cp.cache_file"](compose, saltenv=saltenv)
        if not cached:
            raise ArmswarmError(f"{compose} is not in the file server")
        compose = cached
    elif template:
        raise ArmswarmError("template needs a salt:// compose file")
    try:
        with open(compose, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ArmswarmError(f"cannot read {compose}: {exc}") from exc
