"""The cluster registry on its node: users, configuration, container, CA in the mine.

Used by ``salt/registry/init.sls``; the settings are ``armswarm:registry`` in the minion
config and pillar (:mod:`armswarm_core.registry.registry_settings`). TLS files (``ca.crt``,
``tls.crt``, ``tls.key``) are made by Salt's ``x509`` states in the formula, before these run.

.. code-block:: yaml

    armswarm-registry:
      docker_registry.running: []
"""

from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.common import docker_client, files, state_results
from armswarm_core.registry import registry_host

__virtualname__ = "docker_registry"
MINE_KEY = "armswarm_registry_ca"


def __virtual__():
    return docker_client.virtual(__virtualname__)


def _conf(overrides, name=registry_host.CONTAINER):
    return registry_host.settings(__opts__, __pillar__, name, **overrides)


def _keep_files(directory: Path, modes: dict):
    """The files the running registry was made with, as they are now; returns what puts them
    back (a file that did not exist is removed again)."""
    kept = {}
    for name in modes:
        try:
            kept[name] = (directory / name).read_bytes()
        except FileNotFoundError:
            kept[name] = None

    def restore():
        for name, data in kept.items():
            if data is None:
                (directory / name).unlink(missing_ok=True)
            else:
                files.write(directory / name, data, modes[name])

    return restore


def running(
    name="armswarm-registry",
    image=None,
    port=None,
    storage=None,
    users=None,
    listen=None,
    allow_anonymous=None,
):
    """
    The registry container runs with the current configuration: ``config.yml`` (filesystem
    storage under ``storage``, deletes enabled, TLS, htpasswd auth) and ``htpasswd`` are
    written to ``config_dir``, and the container is (re)created when any of its inputs
    changed (settings, configuration, certificate, users). Without ``users`` the state fails
    before anything changes, unless ``allow_anonymous`` is true. The port is published on
    ``listen`` only (default: the address in ``host``, else the node's first address that is
    not loopback or a docker bridge). A new container starts before the old one is removed;
    when it does not serve, the old one runs again and the state fails. Arguments override
    pillar ``armswarm:registry``. Passwords never appear in changes or comments.
    """
    ret = state_results.new(name)
    try:
        conf = _conf(
            {
                "image": image,
                "port": port,
                "storage": storage,
                "users": users,
                "listen": listen,
                "allow_anonymous": allow_anonymous,
            },
            name,
        )
        conf["listen"] = registry_host.placement(conf, __grains__.get("ip4_interfaces"))["listen"]
        if not conf["listen"]:
            raise ArmswarmError(
                "armswarm:registry:listen: this node has no address other nodes can reach"
            )
        config_dir = Path(conf["config_dir"])
        for needed in ("tls.crt", "tls.key"):
            if not (config_dir / needed).is_file() and not __opts__["test"]:
                raise ArmswarmError(f"{config_dir / needed} is missing (made by the x509 states)")
        text = registry_host.render_config(conf)
        current_users = (
            (config_dir / "htpasswd").read_text() if (config_dir / "htpasswd").is_file() else ""
        )
        users_text, users_changed = registry_host.htpasswd(
            conf["users"], current_users, conf["htpasswd_cost"]
        )
        config_changes = (config_dir / "config.yml").is_file() is False or (
            (config_dir / "config.yml").read_text() != text
        )
        engine = docker_client.connect(__opts__, __pillar__)
        before = registry_host.current(engine, conf)
        changes = {}
        if config_changes:
            changes["config"] = str(config_dir / "config.yml")
        if users_changed:
            changes["users"] = users_changed
        writes_users = bool(users_text or current_users)
        # The spec of the files as they will be once written: the same in test mode and apply.
        pending = {
            "config.yml": text.encode(),
            "htpasswd": users_text.encode() if writes_users else None,
        }
        spec = registry_host.spec_hash(conf, config_dir, pending)
        if __opts__["test"]:
            if before is None or before["status"] != "running" or before["spec"] != spec:
                changes["container"] = "would be (re)created" if before else "would be created"
            if changes:
                return state_results.would_change(ret, "The registry would be updated", changes)
            return state_results.unchanged(ret, "The registry is up to date")
        Path(conf["storage"]).mkdir(parents=True, exist_ok=True)
        restore = _keep_files(config_dir, {"config.yml": 0o644, "htpasswd": 0o640})
        # Only files whose text differs: an unchanged one keeps its mtime (and mode).
        if config_changes:
            files.write(config_dir / "config.yml", text, 0o644)
        if writes_users and users_text != current_users:
            files.write(config_dir / "htpasswd", users_text, 0o640)
        if before and before["status"] == "running" and before["spec"] == spec:
            if not changes:
                return state_results.unchanged(
                    ret, f"The registry runs on {conf['listen']}:{conf['port']} as configured"
                )
        registry_host.replace(engine, conf, spec, restore=restore)
        changes["container"] = {
            "old": before and {k: before[k] for k in ("id", "status", "spec")},
            "new": {
                "spec": spec,
                "image": conf["image"],
                "listen": conf["listen"],
                "port": conf["port"],
            },
        }
        return state_results.changed(
            ret, f"The registry runs on {conf['listen']}:{conf['port']}", changes
        )
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)


def ca_published(name=MINE_KEY):
    """
    The registry's CA certificate is in the Salt mine under ``name`` (read by every node's
    ``armnode`` formula to trust the registry). Sent only when the mine has another value.
    """
    ret = state_results.new(name)
    try:
        path = Path(_conf({})["config_dir"]) / "ca.crt"
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)
    pem = path.read_text() if path.is_file() else None
    if pem is None and not __opts__["test"]:
        return state_results.failed(ret, f"{path} does not exist")
    if pem is None:  # test mode: the x509 states earlier in this run would make it
        return state_results.would_change(
            ret, f"{path} does not exist yet: the CA would be sent once it does", {"mine": name}
        )
    mined = (__salt__["mine.get"](__opts__["id"], name) or {}).get(__opts__["id"])
    if mined == pem:
        return state_results.unchanged(ret, "The CA is in the mine")
    ret["changes"] = {"mine": name}
    if __opts__["test"]:
        return state_results.would_change(ret, "The CA would be sent to the mine")
    if not __salt__["mine.send"](name, mine_function="docker_registry.ca_cert"):
        return state_results.failed(ret, "mine.send failed")
    return state_results.changed(ret, "The CA was sent to the mine")
