"""Stacks: deploy a compose file with ``docker stack deploy``, predictably and idempotently.

The engine has no stack API (the CLI turns a compose file into services), so the plan is made
here: every service of the compose file gets a label with the hash of its definition, and a
service whose label already carries that hash is unchanged. ``test=True`` therefore predicts
exactly which services a deploy creates, updates or (with prune) removes.
"""

import copy
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

import yaml

from armswarm_core import ArmswarmError

HASH_LABEL = "io.armswarm.stack.hash"
NAMESPACE_LABEL = "com.docker.stack.namespace"


def load(text: str) -> dict:
    try:
        compose = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ArmswarmError(f"the compose file is not valid YAML: {exc}") from exc
    if not isinstance(compose, dict) or not isinstance(compose.get("services"), dict):
        raise ArmswarmError("the compose file has no services")
    return compose


def load_and_stamp(text: str) -> tuple[dict, dict]:
    return stamp(load(text))


def _labels_dict(labels) -> dict:
    if isinstance(labels, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in labels)
    return dict(labels or {})


def stamp(compose: dict) -> tuple[dict, dict]:
    """``(compose with hash labels, {service: hash})``. The hash covers the service and the
    top-level networks, configs and secrets it refers to."""
    stamped = copy.deepcopy(compose)
    hashes = {}
    for name, definition in (compose.get("services") or {}).items():
        service = definition or {}
        refs = {}
        for kind in ("networks", "configs", "secrets"):
            used = service.get(kind) or []
            used = (
                list(used)
                if isinstance(used, dict)
                else [u if isinstance(u, str) else u.get("source") for u in used]
            )
            refs[kind] = {u: (compose.get(kind) or {}).get(u) for u in used}
        blob = json.dumps({"service": service, "refs": refs}, sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
        hashes[name] = digest
        target = stamped["services"].setdefault(name, {}) or {}
        stamped["services"][name] = target
        deploy = target.setdefault("deploy", {})
        labels = _labels_dict(deploy.get("labels"))
        labels[HASH_LABEL] = digest
        deploy["labels"] = labels
    return stamped, hashes


def current(client, stack: str) -> dict:
    """``{service: {"id", "hash", "image"}}`` for the stack's services in the swarm."""
    services = client.api.services(filters={"label": f"{NAMESPACE_LABEL}={stack}"})
    out = {}
    for service in services:
        spec = service.get("Spec") or {}
        short = spec.get("Name", "")[len(stack) + 1 :]
        out[short] = {
            "id": service.get("ID"),
            "hash": (spec.get("Labels") or {}).get(HASH_LABEL),
            "image": ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image"),
        }
    return out


def plan(hashes: dict, existing: dict, prune: bool) -> dict:
    """What a deploy does: ``{"create": [...], "update": [...], "remove": [...]}`` (non-empty)."""
    out = {
        "create": sorted(s for s in hashes if s not in existing),
        "update": sorted(s for s in hashes if s in existing and existing[s]["hash"] != hashes[s]),
        "remove": sorted(s for s in existing if s not in hashes) if prune else [],
    }
    return {k: v for k, v in out.items() if v}


def deploy(
    stack: str,
    compose: dict,
    base_url: str | None,
    prune=False,
    with_registry_auth=True,
    registry_auth=None,
    timeout=300,
):
    """Run ``docker stack deploy`` with the stamped compose file (and a throw-away docker
    config holding the registry login, when given)."""
    cli = shutil.which("docker")
    if not cli:
        raise ArmswarmError(
            "the docker CLI is needed for stack deploys (package docker.io/docker-ce-cli)"
        )
    with tempfile.TemporaryDirectory(prefix="armswarm-stack-") as tmp:
        env = {**os.environ, "DOCKER_CONFIG": os.path.join(tmp, "config")}
        if base_url and not base_url.startswith("unix://"):
            env["DOCKER_HOST"] = base_url
        if registry_auth:
            _login(cli, env, registry_auth)
        path = os.path.join(tmp, "compose.yml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(compose, fh, sort_keys=False)
        argv = [cli, "stack", "deploy", "--compose-file", path]
        if with_registry_auth:
            argv.append("--with-registry-auth")
        if prune:
            argv.append("--prune")
        argv.append(stack)
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise ArmswarmError(
                f"docker stack deploy {stack} failed: {(proc.stderr or proc.stdout).strip()}"
            )
        return proc.stdout


def _login(cli, env, auth: dict):
    missing = [k for k in ("registry", "username", "password") if not auth.get(k)]
    if missing:
        raise ArmswarmError(f"registry auth needs {', '.join(missing)}")
    # The password goes through stdin: never on a command line, in a log or a return.
    proc = subprocess.run(
        [
            cli,
            "login",
            "--username",
            str(auth["username"]),
            "--password-stdin",
            str(auth["registry"]),
        ],
        input=str(auth["password"]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ArmswarmError(
            f"docker login to {auth['registry']} failed for user {auth['username']}"
        )


def wait_converged(client, stack: str, services: list, timeout: float = 300) -> dict:
    """Wait until the named services finished their rolling update and run their replicas;
    return ``{service: state}`` for the ones that did not."""
    deadline = time.monotonic() + timeout
    pending = {}
    while time.monotonic() < deadline:
        pending = {}
        for name in services:
            full = f"{stack}_{name}"
            matches = [
                s for s in client.api.services(filters={"name": full}) if s["Spec"]["Name"] == full
            ]
            if not matches:
                pending[name] = "missing"
                continue
            service = matches[0]
            update = (service.get("UpdateStatus") or {}).get("State")
            if update in ("updating", "rollback_started", "paused", "rollback_paused"):
                pending[name] = f"update {update}"
                continue
            mode = service["Spec"].get("Mode") or {}
            wanted = (mode.get("Replicated") or {}).get("Replicas")
            if wanted is None:
                continue
            tasks = client.api.tasks(filters={"service": full, "desired-state": "running"})
            running = sum(1 for t in tasks if (t.get("Status") or {}).get("State") == "running")
            if running < wanted:
                pending[name] = f"{running}/{wanted} running"
        if not pending:
            return {}
        time.sleep(2)
    return pending
