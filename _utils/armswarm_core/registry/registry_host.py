"""The cluster registry as a container on one node: its configuration, its container, its
users, and garbage collection with the registry read-only.

``armswarm:registry`` (every key and its default:
:mod:`armswarm_core.registry.registry_settings`), e.g.:

.. code-block:: yaml

    armswarm:
      registry:
        node: node1                 # the minion that runs it
        host: registry.lan:5000     # the name clients use (certificate SAN)
        image: registry:2           # the lab builds its own image
        port: 5000
        storage: /srv/registry      # on the node's SSD
        users: {builder: secret}    # htpasswd basic auth (required ...
        allow_anonymous: false      # ... unless this is true)

The registry is closed by default: without ``users`` it is not deployed unless
``allow_anonymous: true``. Its port is published on one address of the node (``listen``, by
default the one in ``host``), never on every interface. The container sees only the files it
serves (``config.yml``, ``tls.crt``, ``tls.key``, ``htpasswd``), never the CA's private key.
A new container is started before the old one is removed; when it does not serve, it is
removed and the old one runs again.
"""

import hashlib
import ipaddress
import json
import os
import time
from pathlib import Path

import yaml

from armswarm_core import ArmswarmError
from armswarm_core.common import addresses, password_hashes
from armswarm_core.registry import registry_settings, registry_token

CONTAINER = "armswarm-registry"
IN_CONTAINER = "/etc/docker/registry"  # where registry images read their configuration
DATA = "/var/lib/registry"
BINARY = "/bin/registry"
HASH_LABEL = "io.armswarm.registry.spec"
PREVIOUS = "-previous"  # suffix of the container kept stopped while its replacement starts
SERVED_FILES = ("config.yml", "tls.crt", "tls.key", "htpasswd")  # all the container sees
# In token mode it gets the token signer's certificate instead of the htpasswd (never the
# signing key: the token server beside it holds that).
TOKEN_SERVED_FILES = ("config.yml", "tls.crt", "tls.key", "token.crt")


def served_files(conf: dict) -> tuple:
    """The files of ``config_dir`` the container gets (one bind mount each, read-only)."""
    return TOKEN_SERVED_FILES if conf.get("auth") == "token" else SERVED_FILES


def settings(opts=None, pillar=None, name: str = CONTAINER, **overrides) -> dict:
    """Deployment settings (:func:`armswarm_core.registry.registry_settings.settings`, with
    ``overrides`` from the state's arguments); errors name the pillar key. ``name`` is the
    container's name (the state's name)."""
    out = registry_settings.settings(opts, pillar, **overrides)
    out["name"] = name
    return out


def placement(conf: dict, ip4_interfaces) -> dict:
    """``{"host", "listen", "addresses"}``: the name clients use (``host``, default
    ``<first address>:<port>``) and the address the port is published on (``listen``, default
    the address in ``host`` when it is one of this node's, else the first address)."""
    reachable = addresses.node_addresses(ip4_interfaces)
    host = conf["host"] or (f"{reachable[0]}:{conf['port']}" if reachable else "")
    listen = conf["listen"]
    if not listen:
        name = host.rsplit(":", 1)[0].strip("[]")
        listen = name if name in reachable else (reachable[0] if reachable else "")
    return {"host": host, "listen": listen, "addresses": reachable}


def check_access(conf: dict):
    """A registry without users is open to anyone who reaches it: only when asked for."""
    if not conf["users"] and not conf["allow_anonymous"]:
        raise ArmswarmError(
            "armswarm:registry:users is empty: the registry would let anyone push and delete; "
            "set users, or allow_anonymous: true for an open registry"
        )


def config_document(conf: dict, readonly: bool = False) -> dict:
    """The registry's config.yml: filesystem storage, deletes enabled, TLS, htpasswd or token
    auth (``auth``; ArmswarmError without users, unless ``allow_anonymous``)."""
    check_access(conf)
    doc = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": DATA},
            "delete": {"enabled": True},
            "maintenance": {"readonly": {"enabled": bool(readonly)}},
        },
        "http": {
            "addr": f":{conf['port']}",
            "tls": {
                "certificate": f"{IN_CONTAINER}/tls.crt",
                "key": f"{IN_CONTAINER}/tls.key",
            },
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    if conf["users"] and conf.get("auth") == "token":
        doc["auth"] = {
            "token": {
                "realm": registry_token.realm(conf),
                "service": registry_token.SERVICE,
                "issuer": registry_token.ISSUER,
                "rootcertbundle": f"{IN_CONTAINER}/token.crt",
            }
        }
    elif conf["users"]:
        doc["auth"] = {
            "htpasswd": {"realm": "armswarm-registry", "path": f"{IN_CONTAINER}/htpasswd"}
        }
    return doc


def render_config(conf: dict, readonly: bool = False) -> str:
    return yaml.safe_dump(config_document(conf, readonly), sort_keys=True)


# -- htpasswd ---------------------------------------------------------------------------------
def _bcrypt(password: str, salt_from: str | None = None, cost: int | None = None) -> str:
    # bcrypt (what the registry's htpasswd accepts) through the system's libcrypt: no extra
    # package on the boards, and no Python ``crypt`` module (Python 3.13 has none).
    rounds = registry_settings.DEFAULTS["htpasswd_cost"] if cost is None else cost
    try:
        return password_hashes.hash_password(password, "bcrypt", salt=salt_from, rounds=rounds)
    except ArmswarmError as exc:
        raise ArmswarmError(f"cannot write htpasswd: {exc}") from None


def _bcrypt_cost(hashed: str) -> int | None:
    """The cost of a ``$2b$05$…`` hash, None for anything else."""
    parts = hashed.split("$")
    return int(parts[2]) if len(parts) > 3 and parts[1][:1] == "2" and parts[2].isdigit() else None


def htpasswd(users: dict, current: str = "", cost: int | None = None) -> tuple:
    """``(text, changed user names)``: users whose current hash still matches their password,
    at the configured ``cost`` (``armswarm:registry:htpasswd_cost``), keep it, so re-applying
    changes nothing; a hash of another cost is made again. Passwords never appear in the
    result."""
    cost = registry_settings.DEFAULTS["htpasswd_cost"] if cost is None else cost
    existing = {}
    for line in current.splitlines():
        name, sep, hashed = line.partition(":")
        if sep:
            existing[name] = hashed
    lines, changed = [], []
    for name in sorted(users):
        old = existing.get(name)
        if old and _bcrypt_cost(old) == cost and _bcrypt(users[name], old) == old:
            lines.append(f"{name}:{old}")
        else:
            lines.append(f"{name}:{_bcrypt(users[name], cost=cost)}")
            changed.append(name)
    changed.extend(sorted(set(existing) - set(users)))
    return ("\n".join(lines) + "\n") if lines else "", changed


# -- the container ----------------------------------------------------------------------------
def spec_hash(conf: dict, config_dir: Path, pending: dict | None = None) -> str:
    """What the container was created from: settings and the files it reads (config, TLS,
    users). A change in any of them means a new container. ``pending`` gives the contents
    (bytes, or None for absent) of files about to be written, for a prediction in test mode."""
    pending = pending or {}
    digest = hashlib.sha256(
        json.dumps(
            {k: conf.get(k) for k in ("image", "port", "storage", "listen")}, sort_keys=True
        ).encode()
    )
    for name in served_files(conf):
        path = config_dir / name
        data = pending[name] if name in pending else (path.read_bytes() if path.exists() else None)
        if data is not None:
            digest.update(name.encode() + data)
    return digest.hexdigest()[:32]


def container_kwargs(conf: dict, spec: str, readonly: bool = False) -> dict:
    env = {}
    if readonly:
        # Garbage collection needs writes to stop; pulls keep working.
        env["REGISTRY_STORAGE_MAINTENANCE_READONLY"] = '{"enabled": true}'
    if not conf.get("listen"):
        raise ArmswarmError("no address to publish the registry on (armswarm:registry:listen)")
    # One file at a time, read-only: the CA's private key next to them stays out of reach.
    volumes = {conf["storage"]: {"bind": DATA, "mode": "rw"}}
    for name in served_files(conf):
        path = Path(conf["config_dir"]) / name
        if path.is_file():
            volumes[str(path)] = {"bind": f"{IN_CONTAINER}/{name}", "mode": "ro"}
    return {
        "image": conf["image"],
        "name": conf["name"],
        "detach": True,
        "restart_policy": {"Name": "always"},
        "ports": {f"{conf['port']}/tcp": (conf["listen"], conf["port"])},
        "volumes": volumes,
        "environment": env,
        "labels": {HASH_LABEL: spec, "io.armswarm.registry.readonly": str(readonly).lower()},
    }


def current(client, conf: dict) -> dict | None:
    """The registry container's state, or None when there is none."""
    import docker.errors  # noqa: PLC0415 - only on nodes with the SDK

    try:
        container = client.containers.get(conf["name"])
    except docker.errors.NotFound:
        return None
    labels = container.labels or {}
    bindings = ((container.attrs.get("HostConfig") or {}).get("PortBindings") or {}).values()
    published = [b for bound in bindings for b in (bound or ())]
    return {
        "listen": published[0].get("HostIp") if published else None,
        "port": int(published[0]["HostPort"]) if published else None,
        "id": container.short_id,
        "status": container.status,
        "image": (container.attrs.get("Config") or {}).get("Image"),
        "spec": labels.get(HASH_LABEL),
        "readonly": labels.get("io.armswarm.registry.readonly") == "true",
    }


def ensure_image(client, image: str):
    import docker.errors  # noqa: PLC0415

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            client.images.pull(image)
        except docker.errors.DockerException as exc:
            raise ArmswarmError(
                f"registry image {image} is not here and cannot be pulled: {exc}"
            ) from exc


def _get(client, name):
    import docker.errors  # noqa: PLC0415

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def replace(
    client, conf: dict, spec: str, readonly: bool = False, timeout: float = 30, restore=None
):
    """(Re)create the container from ``conf``; storage is a bind mount, so data stays. The
    old container is stopped and kept (``<name>-previous``) until the new one serves; when
    the new one does not start or serve, it is removed and the old one runs again, after
    ``restore()`` put back the files it was made with (they are bind-mounted: it would
    otherwise start on the new ones)."""
    import docker.errors  # noqa: PLC0415

    ensure_image(client, conf["image"])
    name = conf["name"]
    old = _get(client, name)
    kept = _get(client, name + PREVIOUS)
    if old is None and kept is not None:
        old, kept = kept, None  # an interrupted replacement: the kept one is the last good one
    if kept is not None:
        kept.remove(force=True)
    old_was_running = False
    if old is not None:
        old.reload()
        old_was_running = old.status == "running"
        try:
            old.stop(timeout=10)  # frees the port; restart policy does not restart it
            if old.name != name + PREVIOUS:
                old.rename(name + PREVIOUS)
        except docker.errors.DockerException as exc:
            raise ArmswarmError(f"cannot stop the current registry container: {exc}") from exc
    try:
        try:
            client.containers.run(**container_kwargs(conf, spec, readonly))
        except docker.errors.DockerException as exc:
            raise ArmswarmError(f"cannot start the registry container: {exc}") from exc
        wait_serving(conf, timeout, client)
    except ArmswarmError as exc:
        failed = _get(client, name)
        if failed is not None:
            failed.remove(force=True)
        if restore is not None:
            restore()
        if old is None:
            raise
        old.rename(name)
        if old_was_running:
            old.start()
            wait_serving(conf, timeout, client)
        raise ArmswarmError(f"{exc}; the previous registry container runs again") from exc
    if old is not None:
        old.remove(force=True)


def wait_serving(conf: dict, timeout: float = 30, client=None):
    """Until the registry accepts TCP connections on its address and port (TLS makes HTTP
    checks need the CA; a connection is enough to know it listens). With ``client``, a
    container that exited meanwhile fails at once."""
    import socket  # noqa: PLC0415

    address, port = conf["listen"], conf["port"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=2):
                return
        except OSError:
            time.sleep(0.3)
        container = _get(client, conf["name"]) if client is not None else None
        if container is not None and container.status in ("exited", "dead"):
            raise ArmswarmError(f"the registry container exited: {container.logs(tail=5)!r}")
    raise ArmswarmError(f"the registry does not listen on {address}:{port} after {timeout} s")


def disk_usage(path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _specific(address) -> str:
    """``address`` unless it is empty or every interface (0.0.0.0, ::)."""
    try:
        return address if address and not ipaddress.ip_address(address).is_unspecified else ""
    except ValueError:
        return ""


def garbage_collect(client, conf: dict, dry_run: bool = False) -> dict:
    """Free the blobs no manifest uses: the registry goes read-only (pulls keep working,
    pushes wait), ``registry garbage-collect`` runs in it, then it is writable again."""
    state = current(client, conf)
    if not state or state["status"] != "running":
        raise ArmswarmError(f"the registry container {conf['name']} is not running")
    spec = state["spec"]
    # Recreate it from the image and address it runs with, whatever the pillar says now.
    conf = {
        **conf,
        "image": state["image"] or conf["image"],
        "listen": _specific(state["listen"]) or conf["listen"],
        "port": state["port"] or conf["port"],
    }
    if not _specific(conf["listen"]):
        # never re-publish on every interface (a container made before ``listen`` existed)
        raise ArmswarmError(
            f"the registry container {conf['name']} has no address to publish on: set "
            "armswarm:registry:listen (or host) and apply the registry state first"
        )
    before = disk_usage(conf["storage"])
    replace(client, conf, spec, readonly=True)
    try:
        argv = [BINARY, "garbage-collect", *(["--dry-run"] if dry_run else [])]
        argv.append(f"{IN_CONTAINER}/config.yml")
        code, output = client.containers.get(conf["name"]).exec_run(argv)
        text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
    finally:
        try:
            replace(client, conf, spec, readonly=False)
        except ArmswarmError as exc:
            # The rollback of a failed writable start is the read-only container: say so,
            # the registry state makes it writable again (it treats read-only as drift).
            raise ArmswarmError(
                f"the registry {conf['name']} stays read-only (pulls work, pushes are "
                f"refused): the writable one did not start: {exc}; apply the registry state "
                "to make it writable again"
            ) from exc
    if code != 0:
        raise ArmswarmError(f"registry garbage-collect exited {code}: {text[-500:]}")
    after = disk_usage(conf["storage"])
    lines = [line for line in text.splitlines() if line.strip()]
    return {
        "dry_run": dry_run,
        "bytes_before": before,
        "bytes_after": after,
        "freed_bytes": before - after,
        "blobs_eligible": sum("blob eligible for deletion" in line for line in lines),
        "output_tail": lines[-5:],
    }


# -- the token server (auth: token) -----------------------------------------------------------
TOKEN_UNIT = "armswarm-registry-token.service"
TOKEN_UNIT_DIR = "/etc/systemd/system"
# The core modules the token server runs: a change in one of them restarts it.
TOKEN_CODE = (
    "armswarm_core/__init__.py",
    "armswarm_core/common/__init__.py",
    "armswarm_core/common/config.py",
    "armswarm_core/common/password_hashes.py",
    "armswarm_core/registry/__init__.py",
    "armswarm_core/registry/registry_settings.py",
    "armswarm_core/registry/registry_token.py",
    "armswarm_core/registry/tag_retention.py",
)


def token_config(conf: dict) -> str:
    """The token server's config.json (paths and names, no secrets)."""
    document = registry_token.config_document(conf, conf["config_dir"])
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def token_unit(python: str, code_root: str, config_dir: str) -> str:
    """The systemd unit that runs the token server with the minion's Python (it has
    ``cryptography``: Salt needs it) over the core as Salt synced it."""
    return (
        "[Unit]\n"
        "Description=armswarm registry token server (per-user registry rights)\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        f'Environment="PYTHONPATH={code_root}"\n'
        f"ExecStart={python} -m armswarm_core.registry.registry_token "
        f"{config_dir}/token.json\n"
        "Restart=always\n"
        "RestartSec=2\n"
        "UMask=0077\n"
        "NoNewPrivileges=yes\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def token_spec(contents: dict, code_root: str) -> str:
    """What the running token server was started from: its unit, config, users, keys and
    certificates (``contents``: name → bytes) and its code. A change means a restart."""
    digest = hashlib.sha256()
    for name in sorted(contents):
        digest.update(name.encode() + b"\0" + (contents[name] or b"") + b"\0")
    for rel in TOKEN_CODE:
        path = Path(code_root) / rel
        digest.update(rel.encode() + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()[:32]


def code_root() -> str:
    """The directory that holds ``armswarm_core`` (Salt's extmods/utils, or site-packages)."""
    import armswarm_core  # noqa: PLC0415

    return str(Path(armswarm_core.__file__).resolve().parent.parent)
