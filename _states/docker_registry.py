"""The cluster registry on its node: users, configuration, container, CA in the mine.

Used by ``salt/registry/init.sls``; the settings are ``armswarm:registry`` in the minion
config and pillar (:mod:`armswarm_core.registry.registry_settings`). TLS files (``ca.crt``,
``tls.crt``, ``tls.key``) are made by Salt's ``x509`` states in the formula, before these run.

.. code-block:: yaml

    armswarm-registry:
      docker_registry.running: []
"""

import socket
import sys
import time
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.common import docker_client, files, state_results
from armswarm_core.registry import registry_host, registry_settings, registry_token

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


def _systemctl(*args):
    return __salt__["cmd.run_all"](["systemctl", *args], python_shell=False, ignore_retcode=True)


def _token_active() -> bool:
    return _systemctl("is-active", registry_host.TOKEN_UNIT)["stdout"].strip() == "active"


def _read(path: Path):
    return path.read_bytes() if path.is_file() else None


def _token_server(conf, config_dir: Path, test: bool) -> dict:
    """The token server beside the registry (``auth: token``): its signing key (made once,
    0600, never mounted into the registry), users file (bcrypt, 0600), config and unit;
    restarted only when one of them or its code changed. Returns the changes (made, or
    predicted in test mode)."""
    changes = {}
    unit_path = Path(registry_host.TOKEN_UNIT_DIR) / registry_host.TOKEN_UNIT
    root = registry_host.code_root()
    unit = registry_host.token_unit(sys.executable, root, str(config_dir)).encode()
    config = registry_host.token_config(conf).encode()
    current_users = (
        (config_dir / "token-users").read_text() if (config_dir / "token-users").is_file() else ""
    )
    users_text, users_changed = registry_token.users_file(conf, current_users)
    if users_changed:
        changes["users"] = users_changed
    key, cert = _read(config_dir / "token.key"), _read(config_dir / "token.crt")
    if key is None or cert is None:
        changes["token_key"] = str(config_dir / "token.key")
        if not test:
            key, cert = registry_token.signing_pair()
            files.write(config_dir / "token.key", key, 0o600)
            files.write(config_dir / "token.crt", cert, 0o644)
    for path, data, mode in (
        (config_dir / "token.json", config, 0o644),
        (unit_path, unit, 0o644),
        (config_dir / "token-users", users_text.encode(), 0o600),
    ):
        if _read(path) != data:
            if path.name != "token-users":
                changes.setdefault("token_files", []).append(str(path))
            if not test:
                files.write(path, data, mode)
    contents = {
        "unit": unit,
        "token.json": config,
        "token-users": users_text.encode(),
        "token.key": key,
        "token.crt": cert,
        "tls.crt": _read(config_dir / "tls.crt"),
        "tls.key": _read(config_dir / "tls.key"),
    }
    spec = registry_host.token_spec(contents, root) if key is not None else None
    spec_file = config_dir / "token.spec"
    started = _read(spec_file)
    if spec is not None and started == spec.encode() and _token_active():
        return changes
    changes["token_server"] = f"would be (re)started on {conf['listen']}:{conf['token_port']}"
    if test:
        return changes
    if str(unit_path) in changes.get("token_files", []):
        _systemctl("daemon-reload")
    _systemctl("enable", registry_host.TOKEN_UNIT)
    out = _systemctl("restart", registry_host.TOKEN_UNIT)
    if out["retcode"] != 0:
        raise ArmswarmError(f"cannot start {registry_host.TOKEN_UNIT}: {out['stderr'][-300:]}")
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection((conf["listen"], conf["token_port"]), timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise ArmswarmError(
                    f"{registry_host.TOKEN_UNIT} does not listen on "
                    f"{conf['listen']}:{conf['token_port']} after 15 s (journalctl -u "
                    f"{registry_host.TOKEN_UNIT})"
                ) from None
            time.sleep(0.3)
    files.write(spec_file, spec.encode(), 0o600)
    changes["token_server"] = f"(re)started on {conf['listen']}:{conf['token_port']}"
    return changes


def _token_server_absent(config_dir: Path, test: bool) -> dict:
    """``auth: htpasswd``: no token server left running, no token users file."""
    unit_path = Path(registry_host.TOKEN_UNIT_DIR) / registry_host.TOKEN_UNIT
    if not unit_path.exists() and not (config_dir / "token-users").exists():
        return {}
    if not test:
        _systemctl("disable", "--now", registry_host.TOKEN_UNIT)
        unit_path.unlink(missing_ok=True)
        _systemctl("daemon-reload")
        for name in ("token-users", "token.spec"):
            (config_dir / name).unlink(missing_ok=True)
    return {"token_server": "would be removed" if test else "removed"}


def running(
    name="armswarm-registry",
    image=None,
    port=None,
    storage=None,
    users=None,
    listen=None,
    allow_anonymous=None,
    auth=None,
):
    """
    The registry container runs with the current configuration: ``config.yml`` (filesystem
    storage under ``storage``, deletes enabled, TLS, htpasswd or token auth) and, with
    ``auth: htpasswd``, ``htpasswd`` are written to ``config_dir``, and the container is
    (re)created when any of its inputs changed (settings, configuration, certificate, users).
    With ``auth: token`` the token server runs beside it (systemd unit
    ``armswarm-registry-token``, the minion's Python) with the users and their rights, and is
    restarted only when its configuration, users, keys or code changed; a change of users
    alone leaves the registry container as it is. Without ``users`` the state fails
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
                "auth": auth,
            },
            name,
        )
        placed = registry_host.placement(conf, __grains__.get("ip4_interfaces"))
        conf["listen"], conf["host"] = placed["listen"], placed["host"]
        if not conf["listen"]:
            raise ArmswarmError(
                "armswarm:registry:listen: this node has no address other nodes can reach"
            )
        config_dir = Path(conf["config_dir"])
        for needed in ("tls.crt", "tls.key"):
            if not (config_dir / needed).is_file() and not __opts__["test"]:
                raise ArmswarmError(f"{config_dir / needed} is missing (made by the x509 states)")
        text = registry_host.render_config(conf)
        token = conf["auth"] == "token" and bool(conf["users"])
        current_users = (
            (config_dir / "htpasswd").read_text() if (config_dir / "htpasswd").is_file() else ""
        )
        if token:  # the htpasswd stays as it is: the registry no longer reads it
            users_text, users_changed = current_users, []
        else:
            plain = {n: p for n, (p, _) in registry_settings.users(conf).items()}
            users_text, users_changed = registry_host.htpasswd(
                plain, current_users, conf["htpasswd_cost"]
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
        if token:
            # The token server first: the registry sends clients to it, and trusts its key.
            changes.update(_token_server(conf, config_dir, __opts__["test"]))
            if __opts__["test"] and "token_key" in changes:
                pending["token.crt"] = b"(a new certificate)"
        else:
            changes.update(_token_server_absent(config_dir, __opts__["test"]))
        spec = registry_host.spec_hash(conf, config_dir, pending)
        # A read-only registry (an interrupted garbage collection, or one whose writable
        # restart failed) is drift too: it refuses every push.
        serving = bool(before and before["status"] == "running" and before["spec"] == spec)
        as_configured = serving and not before["readonly"]
        if __opts__["test"]:
            if before is None:
                changes["container"] = "would be created"
            elif serving and before["readonly"]:
                changes["container"] = "would be made writable (it is read-only)"
            elif not as_configured:
                changes["container"] = "would be (re)created"
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
        if as_configured:
            if not changes or set(changes) <= {"users", "token_files", "token_server"}:
                if changes:  # users or the token server changed: the registry stays as it is
                    return state_results.changed(
                        ret, f"The registry's token server was updated on {conf['listen']}", changes
                    )
                return state_results.unchanged(
                    ret, f"The registry runs on {conf['listen']}:{conf['port']} as configured"
                )
        registry_host.replace(engine, conf, spec, restore=restore)
        changes["container"] = {
            "old": before and {k: before[k] for k in ("id", "status", "spec", "readonly")},
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
