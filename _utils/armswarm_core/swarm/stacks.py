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

try:
    import docker.errors
except ImportError:  # pragma: no cover - client.missing_dependency() reports it
    docker = None


HASH_LABEL = "io.armswarm.stack.hash"
NAMESPACE_LABEL = "com.docker.stack.namespace"
# ``docker stack deploy --resolve-image``: "changed" (the default) does not roll services whose
# definition is unchanged just because a tag now points at another digest; "never" leaves the
# tag unresolved, so the swarm does not place tasks by the image's platforms (needed where the
# engines report another platform than the boards they stand for, as in the lab).
RESOLVE_IMAGE = ("always", "changed", "never")
RESOLVE_IMAGE_DEFAULT = "changed"


def check_resolve_image(value, key="resolve_image") -> str:
    """``value`` when it is one of :data:`RESOLVE_IMAGE`, else ArmswarmError naming ``key``."""
    if not isinstance(value, str) or value not in RESOLVE_IMAGE:
        raise ArmswarmError(
            f"{key} must be one of {', '.join(RESOLVE_IMAGE)}, not {value!r}"
            f" ({type(value).__name__})"
        )
    return value


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
        # The "h" keeps an all-digit digest from reading as a number when YAML is parsed.
        digest = "h" + hashlib.sha256(blob.encode()).hexdigest()[:16]
        hashes[name] = digest
        target = stamped["services"].setdefault(name, {}) or {}
        stamped["services"][name] = target
        deploy = target.get("deploy") or {}
        target["deploy"] = deploy
        labels = _labels_dict(deploy.get("labels"))
        labels[HASH_LABEL] = digest
        deploy["labels"] = labels
    return stamped, hashes


def current(client, stack: str) -> dict:
    """``{service: {"id", "hash", "image"}}`` for the stack's services in the swarm."""
    try:
        services = client.api.services(filters={"label": f"{NAMESPACE_LABEL}={stack}"})
    except docker.errors.APIError as exc:
        raise ArmswarmError(
            f"cannot list services (is this a manager?): {exc.explanation or exc}"
        ) from exc
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


def _cli_host(base_url: str | None) -> str | None:
    """DOCKER_HOST for the CLI when the engine is not the default socket."""
    if not base_url or base_url in ("unix://var/run/docker.sock", "unix:///var/run/docker.sock"):
        return None
    if base_url.startswith("unix://") and not base_url.startswith("unix:///"):
        return "unix:///" + base_url[len("unix://") :]
    return base_url


def deploy(
    stack: str,
    compose: dict,
    base_url: str | None,
    prune=False,
    with_registry_auth=True,
    registry_auth=None,
    timeout=300,
    resolve_image=RESOLVE_IMAGE_DEFAULT,
):
    """Run ``docker stack deploy`` with the stamped compose file.

    The file is written as JSON (valid YAML): a YAML 1.1 dump would leave strings such as
    ``"1e3"`` unquoted, and the CLI (YAML 1.2) would read them as numbers. With registry
    credentials, the login goes to a throw-away docker config (seeded with root's own, so
    other logins still work) through standard input.
    """
    check_resolve_image(resolve_image)
    cli = shutil.which("docker")
    if not cli:
        raise ArmswarmError(
            "the docker CLI is needed for stack deploys (package docker.io/docker-ce-cli)"
        )
    with tempfile.TemporaryDirectory(prefix="armswarm-stack-") as tmp:
        env = dict(os.environ)
        host = _cli_host(base_url)
        if host:
            env["DOCKER_HOST"] = host
        if registry_auth:
            config_dir = os.path.join(tmp, "config")
            os.makedirs(config_dir, mode=0o700)
            existing = os.path.join(
                os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json"
            )
            if os.path.isfile(existing):
                shutil.copy(existing, os.path.join(config_dir, "config.json"))
            env["DOCKER_CONFIG"] = config_dir
            _login(cli, env, registry_auth)
        path = os.path.join(tmp, "compose.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(compose, fh, default=str)
        argv = [cli, "stack", "deploy", "--compose-file", path, "--resolve-image", resolve_image]
        if with_registry_auth:
            argv.append("--with-registry-auth")
        if prune:
            argv.append("--prune")
        argv.append(stack)
        try:
            proc = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ArmswarmError(
                f"docker stack deploy {stack} did not finish in {timeout}s"
            ) from exc
        if proc.returncode != 0:
            raise ArmswarmError(
                f"docker stack deploy {stack} failed: {(proc.stderr or proc.stdout).strip()}"
            )
        return proc.stdout


def _login(cli, env, auth: dict):
    # armswarm:registry itself works: its "host" is the registry to log in to.
    auth = {"registry": auth.get("host"), **{k: v for k, v in auth.items() if v}}
    missing = [k for k in ("registry", "username", "password") if not auth.get(k)]
    if missing:
        raise ArmswarmError(f"registry auth needs {', '.join(missing)}")
    # The password goes through stdin: never on a command line, in a log or a return.
    try:
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
    except subprocess.TimeoutExpired as exc:
        raise ArmswarmError(f"docker login to {auth['registry']} timed out") from exc
    if proc.returncode != 0:
        raise ArmswarmError(
            f"docker login to {auth['registry']} failed for user {auth['username']}"
        )


FAILED_UPDATES = ("rollback_started", "rollback_paused", "rollback_completed", "paused")


def _service_state(client, stack: str, name: str) -> str | None:
    """None when the service runs its current definition on all replicas, else why not.

    Right after a deploy the engine resets the update status and the old tasks still run, so
    convergence is judged from the tasks: each running one must carry the service's current
    container spec.
    """
    full = f"{stack}_{name}"
    matches = [s for s in client.api.services(filters={"name": full}) if s["Spec"]["Name"] == full]
    if not matches:
        return "missing"
    service = matches[0]
    update = (service.get("UpdateStatus") or {}).get("State")
    if update in FAILED_UPDATES:
        raise ArmswarmError(
            f"service {full}: update {update}: "
            f"{(service.get('UpdateStatus') or {}).get('Message', '')}"
        )
    if update == "updating":
        return "updating"
    wanted_spec = (service["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}
    tasks = client.api.tasks(filters={"service": full, "desired-state": "running"})
    current = [
        t
        for t in tasks
        if (t.get("Status") or {}).get("State") == "running"
        and ((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Image")
        == wanted_spec.get("Image")
    ]
    mode = service["Spec"].get("Mode") or {}
    wanted = (mode.get("Replicated") or {}).get("Replicas")
    if wanted is None:  # global: every task the scheduler wants must run the current spec
        wanted = len(tasks)
    if len(current) < wanted or len(current) < len(tasks):
        return f"{len(current)}/{wanted} running the current definition"
    return None


def wait_converged(client, stack: str, services: list, timeout: float = 300) -> dict:
    """Wait until the named services run their current definition on every replica; return
    ``{service: state}`` for the ones that did not (a rolled-back update raises)."""
    deadline = time.monotonic() + timeout
    pending = {}
    try:
        while time.monotonic() < deadline:
            pending = {}
            for name in services:
                state = _service_state(client, stack, name)
                if state:
                    pending[name] = state
            if not pending:
                return {}
            time.sleep(2)
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"cannot follow the rollout: {exc.explanation or exc}") from exc
    return pending
