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
        users: {builder: secret}    # htpasswd basic auth; omit for none
"""

import hashlib
import json
import os
import time
from pathlib import Path

import yaml

from armswarm_core import ArmswarmError
from armswarm_core.common import password_hashes
from armswarm_core.registry import registry_settings

CONTAINER = "armswarm-registry"
IN_CONTAINER = "/etc/docker/registry"  # where registry images read their configuration
DATA = "/var/lib/registry"
BINARY = "/bin/registry"
HASH_LABEL = "io.armswarm.registry.spec"


def settings(opts=None, pillar=None, name: str = CONTAINER, **overrides) -> dict:
    """Deployment settings (:func:`armswarm_core.registry.registry_settings.settings`, with
    ``overrides`` from the state's arguments); errors name the pillar key. ``name`` is the
    container's name (the state's name)."""
    out = registry_settings.settings(opts, pillar, **overrides)
    out["name"] = name
    return out


def config_document(conf: dict, readonly: bool = False) -> dict:
    """The registry's config.yml: filesystem storage, deletes enabled, TLS, optional auth."""
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
    if conf["users"]:
        doc["auth"] = {
            "htpasswd": {"realm": "armswarm-registry", "path": f"{IN_CONTAINER}/htpasswd"}
        }
    return doc


def render_config(conf: dict, readonly: bool = False) -> str:
    return yaml.safe_dump(config_document(conf, readonly), sort_keys=True)


# -- htpasswd ---------------------------------------------------------------------------------
def _bcrypt(password: str, salt_from: str | None = None) -> str:
    # bcrypt (what the registry's htpasswd accepts) through the system's libcrypt: no extra
    # package on the boards, and no Python ``crypt`` module (Python 3.13 has none).
    try:
        return password_hashes.hash_password(password, "bcrypt", salt=salt_from, rounds=12)
    except ArmswarmError as exc:
        raise ArmswarmError(f"cannot write htpasswd: {exc}") from None


def htpasswd(users: dict, current: str = "") -> tuple:
    """``(text, changed user names)``: users whose current hash still matches their password
    keep it, so re-applying changes nothing; passwords never appear in the result."""
    existing = {}
    for line in current.splitlines():
        name, sep, hashed = line.partition(":")
        if sep:
            existing[name] = hashed
    lines, changed = [], []
    for name in sorted(users):
        old = existing.get(name)
        if old and old.startswith("$2") and _bcrypt(users[name], old) == old:
            lines.append(f"{name}:{old}")
        else:
            lines.append(f"{name}:{_bcrypt(users[name])}")
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
        json.dumps({k: conf[k] for k in ("image", "port", "storage")}, sort_keys=True).encode()
    )
    for name in ("config.yml", "tls.crt", "tls.key", "htpasswd"):
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
    return {
        "image": conf["image"],
        "name": conf["name"],
        "detach": True,
        "restart_policy": {"Name": "always"},
        "ports": {f"{conf['port']}/tcp": conf["port"]},
        "volumes": {
            conf["storage"]: {"bind": DATA, "mode": "rw"},
            conf["config_dir"]: {"bind": IN_CONTAINER, "mode": "ro"},
        },
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
    return {
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


def replace(client, conf: dict, spec: str, readonly: bool = False):
    """(Re)create the container from ``conf``; storage is a bind mount, so data stays."""
    import docker.errors  # noqa: PLC0415

    ensure_image(client, conf["image"])
    try:
        client.containers.get(conf["name"]).remove(force=True)
    except docker.errors.NotFound:
        pass
    try:
        client.containers.run(**container_kwargs(conf, spec, readonly))
    except docker.errors.DockerException as exc:
        raise ArmswarmError(f"cannot start the registry container: {exc}") from exc


def wait_serving(port: int, timeout: float = 30):
    """Until the registry accepts TCP connections on ``port`` (TLS makes HTTP checks need
    the CA; a connection is enough to know it listens)."""
    import socket  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise ArmswarmError(f"the registry does not listen on port {port} after {timeout} s")


def disk_usage(path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def garbage_collect(client, conf: dict, dry_run: bool = False) -> dict:
    """Free the blobs no manifest uses: the registry goes read-only (pulls keep working,
    pushes wait), ``registry garbage-collect`` runs in it, then it is writable again."""
    state = current(client, conf)
    if not state or state["status"] != "running":
        raise ArmswarmError(f"the registry container {conf['name']} is not running")
    spec = state["spec"]
    # Recreate it from the image it runs, whatever the pillar says now.
    conf = {**conf, "image": state["image"] or conf["image"]}
    before = disk_usage(conf["storage"])
    replace(client, conf, spec, readonly=True)
    try:
        wait_serving(conf["port"])
        argv = [BINARY, "garbage-collect", *(["--dry-run"] if dry_run else [])]
        argv.append(f"{IN_CONTAINER}/config.yml")
        code, output = client.containers.get(conf["name"]).exec_run(argv)
        text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
    finally:
        replace(client, conf, spec, readonly=False)
        wait_serving(conf["port"])
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
