"""Stacks: deploy a compose file with ``docker stack deploy``, predictably and idempotently.

The engine has no stack API (the CLI turns a compose file into services), so the plan is made
here: every service of the compose file gets a label with the hash of its definition, and a
service whose label already carries that hash is unchanged. ``test=True`` therefore predicts
exactly which services a deploy creates, updates or (with prune) removes.

The live services are compared with the compose file as well (image, replicas, environment,
labels, container labels, configs, secrets, mounts): a service changed or scaled by hand is
reported as drift and put back by the deploy. The compose file is read as the CLI reads it
(YAML 1.2 scalars as go-yaml v3 resolves them, env files by its ``kvfile`` rules); what the
CLI would refuse or run otherwise than the file says is refused before anything runs.

Files the compose file names relative to itself (``configs: {x: {file: ./site.conf}}``,
``secrets: {y: {file: …}}``, ``env_file:``) are read through a callback (the state fetches
them from ``salt://`` next to the compose file) and written beside the compose file the CLI
reads. Configs and secrets get a name with a hash of their content (``<stack>_<key>_<hash>``):
swarm objects cannot change in place, so a new content is a new object and a rolling update of
the services that use it; :func:`unused_objects` finds the old ones (a service's previous
definition, what a rollback returns to, still counts). A secret can come from a pillar key
(``x-pillar: armswarm:secrets:db``): only the key's name is in the compose file, the value
goes to a 0600 file in a private temporary directory and nowhere else; its name's suffix is
an HMAC of the value with a key the swarm keeps (:func:`naming_key`), not a hash of it.
"""

import base64
import contextlib
import copy
import hashlib
import hmac
import json
import math
import os
import re
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
# The CLI's label with the compose file's image (``docker stack deploy`` keeps the live image
# when it equals this label's value).
IMAGE_LABEL = "com.docker.stack.image"
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


def check_bool(value, key) -> bool:
    """``value`` when it is a boolean, else ArmswarmError naming ``key`` (``"false"`` from
    a pillar is no boolean: it would read as true)."""
    if not isinstance(value, bool):
        raise ArmswarmError(f"{key}: must be true or false, not {value!r} ({type(value).__name__})")
    return value


def check_timeout(value, key="timeout") -> float:
    """``value`` when it is a positive number of seconds (a boolean is none), else
    ArmswarmError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ArmswarmError(
            f"{key}: must be a positive number of seconds, not {value!r} ({type(value).__name__})"
        )
    return value


# Where the files that come along with the compose file are written, beside it.
FILES_DIR = "files"
PILLAR_KEY = "x-pillar"


# -- reading the compose file as the docker CLI does ------------------------------------------
# The CLI (``docker stack deploy``) reads YAML with go-yaml v3: plain scalars resolve by YAML 1.2
# rules, not PyYAML's 1.1 ones. Read by 1.1, ``22:22`` (a port) is the number 1342, ``08`` and
# ``1e3`` strings (the CLI: 8 and 1000), ``yes``/``on``/``no`` booleans (the CLI: strings,
# ``NO:`` a key ``false``), ``0o440`` a string (the CLI: 288), a lone ``=`` an error; the JSON
# written for the CLI would carry the misreading. This loader resolves as go-yaml v3 does.
_YAML_BOOL = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
}
_YAML_NULL = ("", "~", "null", "Null", "NULL")
_YAML_SPECIAL_FLOAT = ".nan .NaN .NAN .inf .Inf .INF +.inf +.Inf +.INF -.inf -.Inf -.INF".split()
_GO_INT = re.compile(r"[-+]?(?:0[bB][01]+|0[oO][0-7]+|0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_YAML_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_GO_DOT_FLOAT = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?")
# Timestamps (``2024-01-01``) are strings here, kept as written: go-yaml makes a time of them
# that the CLI would print the Go way (``2024-01-01 00:00:00 +0000 UTC``).
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


def _go_yaml_scalar(text: str):
    """``(tag, value)`` of a plain scalar as go-yaml v3 resolves it."""
    if text in _YAML_BOOL:
        return "tag:yaml.org,2002:bool", _YAML_BOOL[text]
    if text in _YAML_NULL:
        return "tag:yaml.org,2002:null", None
    if text == "<<":
        return "tag:yaml.org,2002:merge", text
    if text in _YAML_SPECIAL_FLOAT:
        return _FLOAT_TAG, float(text.replace(".", "", 1))
    first = text[0]
    if first == "." and _GO_DOT_FLOAT.fullmatch(text):
        return _FLOAT_TAG, float(text)
    if first in "+-0123456789":
        plain = text.replace("_", "")
        if _GO_INT.fullmatch(plain):
            sign, digits = (-1, plain[1:]) if plain[0] == "-" else (1, plain.lstrip("+"))
            if digits[:2].lower() in ("0b", "0o", "0x"):
                value = sign * int(digits, 0)
            elif digits.startswith("0") and len(digits) > 1:
                value = sign * int(digits, 8)
            else:
                value = sign * int(digits)
            if -(2**63) <= value < 2**64:  # Go's int64, then uint64
                return _INT_TAG, value
        if _YAML_FLOAT.fullmatch(plain):
            value = float(plain)
            if value not in (float("inf"), float("-inf")):  # Go: out of range, a string
                return _FLOAT_TAG, value
    return "tag:yaml.org,2002:str", text


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with go-yaml v3's scalars, and its refusal of a key given twice
    in one mapping (merged keys ``<<`` may be overridden)."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0]:
            return _go_yaml_scalar(value)[0]
        return super().resolve(kind, value, implicit)

    def construct_document(self, node):
        _unique_keys(node, set())
        return super().construct_document(node)


def _construct_number(loader, node):
    value = loader.construct_scalar(node)
    tag, number = _go_yaml_scalar(value)
    if tag != node.tag:
        raise yaml.constructor.ConstructorError(
            None, None, f"{value!r} is no {node.tag.rsplit(':', 1)[-1]}", node.start_mark
        )
    return number


_ComposeLoader.add_constructor(_INT_TAG, _construct_number)
_ComposeLoader.add_constructor(_FLOAT_TAG, _construct_number)


def _unique_keys(node, seen: set) -> None:
    """go-yaml v3 refuses a mapping that names a key twice (a typo the CLI stops at; PyYAML
    would silently take the last one)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in keys:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"mapping key {key.value!r} already defined at line {keys[key.value]}",
                        key.start_mark,
                    )
                keys[key.value] = key.start_mark.line + 1
            _unique_keys(key, seen)
            _unique_keys(value, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _unique_keys(item, seen)


def _check_tree(value, path: str) -> None:
    """What the CLI cannot take, named by where it is: a key that is no string (go-yaml makes
    a mapping the CLI cannot read of it), a number that is no finite one."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ArmswarmError(
                    f"{path or 'the compose file'}: the key {key!r} is no string"
                    " (docker stack deploy refuses it): quote it"
                )
            _check_tree(item, f"{path}:{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_tree(item, f"{path}:{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ArmswarmError(f"{path}: {value} is no number docker stack deploy takes")


def load(text: str) -> dict:
    try:
        compose = yaml.load(text, Loader=_ComposeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ArmswarmError(f"the compose file is not valid YAML: {exc}") from exc
    if not isinstance(compose, dict) or not isinstance(compose.get("services"), dict):
        raise ArmswarmError("the compose file has no services")
    _check_tree(compose, "")
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


# -- files that come along with the compose file ----------------------------------------------
def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def _relative_file(path, where: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ArmswarmError(f"{where}: must be a file path, not {path!r}")
    if "$" in path:
        # The CLI would interpolate it, from its own environment, after the file was fetched.
        raise ArmswarmError(
            f"{where}: {path}: a path with a variable cannot be fetched from the file server"
            " (render the compose file with template: jinja instead)"
        )
    return path


# ``docker stack deploy`` (compose file format 3.x) knows ``name`` on configs and secrets from
# 3.5 on: an older ``version`` would make it refuse the names given here.
NAMES_VERSION = (3, 5)


def _raise_version(compose: dict) -> None:
    """A ``version`` 3.0 to 3.4 raised to 3.5 (each 3.x takes all that the earlier ones take)
    when configs or secrets have a ``name``; no version, ``3`` or a later one are the CLI's
    latest 3.x already, and any other the CLI refuses by itself."""
    if "version" not in compose or not any(
        isinstance(d, dict) and "name" in d
        for kind in ("configs", "secrets")
        for d in (compose.get(kind) or {}).values()
    ):
        return
    match = re.fullmatch(r"3\.([0-9]+)", str(compose["version"]))
    if match and (3, int(match.group(1))) < NAMES_VERSION:
        compose["version"] = ".".join(map(str, NAMES_VERSION))


_TRUE = ("y", "yes", "true", "on")
_FALSE = ("n", "no", "false", "off")


def external(definition, where: str = "") -> bool:
    """Whether a config or secret is external, as the CLI reads ``external`` (``true``, a
    mapping with a ``name``, or a string it casts: ``"yes"``, ``"false"``…)."""
    value = (definition or {}).get("external")
    if value is None or isinstance(value, (bool, dict)):
        return bool(value) or isinstance(value, dict)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ArmswarmError(f"{where}:external: must be true or false, not {value!r}")


# The engine's rule for config and secret names (swarmkit): at most 64 of [A-Za-z0-9_.-],
# beginning and ending with a letter or digit.
OBJECT_NAME_MAX = 64
_OBJECT_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_OBJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")
DIGEST_CHARS = 12


def check_object_name(name, where: str) -> str:
    """``name`` when the engine takes it as a config or secret name, else ArmswarmError."""
    if not isinstance(name, str) or len(name) > OBJECT_NAME_MAX or not _OBJECT_NAME.fullmatch(name):
        raise ArmswarmError(
            f"{where}: {name!r} is no swarm object name (at most {OBJECT_NAME_MAX} of"
            " A-Z a-z 0-9 _ . -, beginning and ending with a letter or digit)"
        )
    return name


def check_object_key(stack: str, key, where: str, generated=True) -> str:
    """``key`` (of ``configs:`` or ``secrets:``) when it is made of the characters the engine
    takes in a name and (``generated``: the object gets no name of its own)
    ``<stack>_<key>_<hash>`` is a name it takes, else ArmswarmError."""
    if not isinstance(key, str) or not _OBJECT_KEY.fullmatch(key):
        raise ArmswarmError(
            f"{where}: the key {key!r} must be made of A-Z a-z 0-9 _ . - (it names a swarm object)"
        )
    if not generated:
        return key
    example = f"{stack}_{key}_{'0' * DIGEST_CHARS}"
    if len(example) > OBJECT_NAME_MAX:
        raise ArmswarmError(
            f"{where}: the object's name {stack}_{key}_<hash> would be {len(example)} characters,"
            f" the engine takes at most {OBJECT_NAME_MAX}: use a shorter key"
        )
    check_object_name(example, f"{where}: the object's name")
    return key


# The key that names the secrets taken from pillar: ``<stack>_<key>_`` + HMAC-SHA256(key,
# value)[:12], not a plain hash of the value (a short unsalted hash of a password in every
# name, return and job cache would let anyone try guesses against it). The swarm keeps the key
# as a config (any manager can read it back; the deploy can run on any of them), created by
# the first deploy that needs it.
NAMING_KEY_CONFIG = "armswarm-object-naming-key"
NAMING_KEY_LABEL = "io.armswarm.object-naming-key"
# The name suffix a pillar secret gets in a prediction while the key does not exist yet: no
# digest (those are hex), so no collision with an existing object.
UNKNOWN_DIGEST = "newnamingkey"


def naming_key(client, create: bool) -> bytes | None:
    """The swarm's key for naming pillar secrets (:data:`NAMING_KEY_CONFIG`), made (32 random
    bytes) when it does not exist and ``create``; None when it does not exist and not
    ``create`` (test mode). Never logged or returned by the states."""
    for attempt in range(2):
        found = [
            c
            for c in _api(
                "cannot list configs", client.api.configs, filters={"name": NAMING_KEY_CONFIG}
            )
            if (c.get("Spec") or {}).get("Name") == NAMING_KEY_CONFIG
        ]
        if found:
            config = _api(
                f"cannot read config {NAMING_KEY_CONFIG}",
                client.api.inspect_config,
                found[0]["ID"],
            )
            key = base64.b64decode((config.get("Spec") or {}).get("Data") or "")
            if len(key) < 32:
                raise ArmswarmError(f"config {NAMING_KEY_CONFIG} holds no naming key")
            return key
        if not create:
            return None
        if attempt:
            break
        try:
            client.api.create_config(
                NAMING_KEY_CONFIG, os.urandom(32), labels={NAMING_KEY_LABEL: "1"}
            )
        except docker.errors.APIError as exc:
            # Another manager made it at the same moment: read that one.
            if "exists" not in str(exc.explanation or exc):
                raise ArmswarmError(
                    f"cannot create config {NAMING_KEY_CONFIG}: {exc.explanation or exc}"
                ) from exc
    raise ArmswarmError(f"config {NAMING_KEY_CONFIG} cannot be read back")


def _keyed_digest(key: bytes | None, data: bytes) -> str:
    if key is None:
        return UNKNOWN_DIGEST
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:DIGEST_CHARS]


def bundle(stack: str, compose: dict, read_file, read_pillar, naming_key=None) -> tuple[dict, dict]:
    """``(compose, files)``: the compose file with its configs, secrets and env files replaced
    by files of a bundle (``files``: relative path -> ``(bytes, mode)``, written beside the
    compose file by :func:`deploy`, named by their content's digest only), configs and
    secrets named ``<stack>_<key>_<digest>`` unless they carry their own ``name``.

    ``read_file(path, where)`` returns the bytes of a path the compose file names (relative
    to the compose file); ``read_pillar(key, where)`` the string at a pillar key. ``where``
    names the compose key for errors. A secret from pillar is named by an HMAC of its value
    with ``naming_key()`` (:func:`naming_key`; called only when there is such a secret, once;
    None: a prediction before the key exists, the name ends in :data:`UNKNOWN_DIGEST`);
    configs and file secrets by a plain hash of their content (that is on ``salt://``
    anyway). Every key is checked against the engine's name rule
    before anything is read. Only ``external`` objects are left as they are; one with its
    own ``name`` keeps it (a new content under the same name is refused by the engine: a
    name of one's own is for contents that never change).
    """
    out = copy.deepcopy(compose)
    files: dict = {}
    keys: list = []
    for kind in ("configs", "secrets"):
        objects = out.get(kind) or {}
        if not isinstance(objects, dict):
            raise ArmswarmError(f"{kind}: must be a mapping of names to definitions")
        for key, definition in objects.items():
            where = f"{kind}:{key}"
            if not isinstance(definition, dict):
                raise ArmswarmError(f"{where}: must be a mapping")
            is_external = external(definition, where)
            generated = "name" not in definition and not is_external
            check_object_key(stack, key, where, generated)
            name = definition.get("name")
            # An external object's name may come from the CLI's environment (``${VAR}``, as
            # the compose specification shows): nothing of it is made here.
            if "name" in definition and not (is_external and "$" in str(name)):
                check_object_name(name, f"{where}:name")
    _check_services(out)
    for kind in ("configs", "secrets"):
        for key, definition in (out.get(kind) or {}).items():
            where = f"{kind}:{key}"
            if external(definition, where):
                if PILLAR_KEY in definition or "file" in definition:
                    raise ArmswarmError(f"{where}: external takes no file or {PILLAR_KEY}")
                continue
            if PILLAR_KEY in definition:
                if kind != "secrets":
                    raise ArmswarmError(f"{where}:{PILLAR_KEY}: only secrets come from pillar")
                pillar_key = definition.pop(PILLAR_KEY)
                if not isinstance(pillar_key, str) or "file" in definition:
                    raise ArmswarmError(
                        f"{where}:{PILLAR_KEY}: must be one pillar key (a string), without file"
                    )
                value = read_pillar(pillar_key, f"{where}:{PILLAR_KEY}")
                data, mode = value.encode(), 0o600
                if not keys:
                    keys.append(naming_key() if naming_key else None)
                digest = _keyed_digest(keys[0], data)
            elif "file" in definition:
                path = _relative_file(definition["file"], f"{where}:file")
                data, mode = read_file(path, f"{where}:file"), 0o600 if kind == "secrets" else 0o644
                digest = _digest(data)
            else:
                raise ArmswarmError(
                    f"{where}: needs file, {PILLAR_KEY} (secrets) or external"
                    + (
                        f" (docker stack deploy takes no {', '.join(sorted(other))})"
                        if (other := {"content", "environment", "driver"} & set(definition))
                        else ""
                    )
                )
            # The file's name from the digest only: no key ever reaches a path.
            relative = f"{FILES_DIR}/{kind[:-1]}-{digest}"
            files[relative] = (data, mode)
            definition["file"] = f"./{relative}"
            definition.setdefault("name", f"{stack}_{key}_{digest}")
    for service_name, service in (out.get("services") or {}).items():
        if not isinstance(service, dict) or "env_file" not in service:
            continue
        where = f"services:{service_name}:env_file"
        given = service["env_file"]
        paths = [given] if isinstance(given, str) else given
        if not isinstance(paths, list):
            raise ArmswarmError(f"{where}: must be a path or a list of paths")
        written = []
        for index, path in enumerate(paths):
            if isinstance(path, dict):
                # docker compose's long syntax; the CLI's 3.x schema takes paths only.
                raise ArmswarmError(
                    f"{where}:{index}: docker stack deploy takes env files as paths only,"
                    f" not {sorted(path)} (docker compose's path/required form)"
                )
            data = read_file(_relative_file(path, f"{where}:{index}"), f"{where}:{index}")
            try:
                _env_entries(data)  # refused here, as the CLI would refuse it
            except ArmswarmError as exc:
                raise ArmswarmError(f"{where}:{index}: {path}: {exc}") from exc
            name = f"env-{_digest(data)}"
            files[f"{FILES_DIR}/{name}"] = (data, 0o600)
            written.append(f"./{FILES_DIR}/{name}")
        service["env_file"] = written
    _raise_version(out)
    return out, files


def _check_services(compose: dict) -> None:
    """What ``docker stack deploy`` would refuse, or run otherwise than the file says, refused
    before anything runs, naming the service and key."""
    for name, service in (compose.get("services") or {}).items():
        where = f"services:{name}"
        if not isinstance(service, dict):
            raise ArmswarmError(f"{where}: must be a mapping")
        image = service.get("image")
        if not isinstance(image, str) or not image.strip():
            raise ArmswarmError(
                f"{where}: needs an image"
                + (
                    " (docker stack deploy builds nothing: build is ignored)"
                    if "build" in service
                    else ""
                )
            )
        deploy_conf = service.get("deploy") or {}
        for key, given in (
            ("environment", service.get("environment")),
            ("labels", service.get("labels")),
            ("deploy:labels", deploy_conf.get("labels") if isinstance(deploy_conf, dict) else None),
        ):
            _check_pairs(given, f"{where}:{key}")
        for index, volume in enumerate(service.get("volumes") or []):
            if isinstance(volume, str):
                source = _volume_spec(volume)[0] if "$" not in volume else None
            elif isinstance(volume, dict) and volume.get("type") == "bind":
                source = volume.get("source")
            else:
                continue
            if isinstance(source, str) and source.startswith("."):
                # The CLI makes it absolute against the compose file's directory: here a
                # temporary one, gone after the deploy.
                raise ArmswarmError(
                    f"{where}:volumes:{index}: the bind mount source {source} is relative to"
                    " the compose file, which the deploy writes to a temporary directory:"
                    " give an absolute path on the nodes"
                )


def _check_pairs(given, where: str) -> None:
    """``environment`` and ``labels``: a mapping of strings, numbers or nothing, or a list of
    strings (the CLI's schema: it refuses a boolean, which YAML makes of ``true``)."""
    if given is None:
        return
    if isinstance(given, list):
        for index, item in enumerate(given):
            if not isinstance(item, str):
                raise ArmswarmError(
                    f"{where}:{index}: must be a string, not a {type(item).__name__}: quote it"
                )
        return
    if not isinstance(given, dict):
        raise ArmswarmError(f"{where}: must be a mapping or a list of KEY=value")
    for key, value in given.items():
        if isinstance(value, bool):
            raise ArmswarmError(
                f"{where}:{key}: {str(value).lower()} is a boolean, which docker stack deploy"
                f' refuses here: quote it ("{str(value).lower()}")'
            )
        if value is not None and not isinstance(value, (str, int, float)):
            raise ArmswarmError(
                f"{where}:{key}: must be a string or a number, not a {type(value).__name__}"
            )


def parse_env_file(data: bytes) -> dict:
    """The variables of an env file as the docker CLI reads it (its ``kvfile``): ``KEY=value``
    lines, the value as written (quotes, ``#`` and ``$`` included: no quoting, comment or
    interpolation in a value), ``#`` comment lines; a bare ``KEY`` (taken from the deploying
    environment) is left out. What the CLI refuses (no valid UTF-8, a key with a blank, as in
    ``export KEY=…``, or none) raises ArmswarmError."""
    return {key: value for key, value in _env_entries(data) if value is not None}


def env_file_bare(data: bytes) -> list:
    """The bare ``KEY`` lines of an env file: the CLI fills them from its own environment."""
    return [key for key, value in _env_entries(data) if value is None]


# Go's unicode.IsSpace: what the CLI strips from the start of an env file's line.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
_GO_SPACE += "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
# bufio.Scanner's limit on a line (the CLI's "token too long").
_ENV_LINE_MAX = 64 * 1024 - 1


def _env_entries(data: bytes) -> list:
    """``[(key, value or None)]`` of an env file, by the CLI's rules: lines end at ``\\n``
    (a ``\\r`` before it dropped), a BOM at the start dropped, leading blanks stripped."""
    out = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, scanned in enumerate(lines, 1):
        raw = scanned[:-1] if scanned.endswith(b"\r") else scanned
        if len(raw) > _ENV_LINE_MAX:
            raise ArmswarmError(f"line {number} is longer than the CLI reads ({_ENV_LINE_MAX})")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ArmswarmError(f"line {number} is no valid UTF-8") from None
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        line = text.lstrip(_GO_SPACE)
        if not line or line.startswith("#"):
            continue
        key, has_value, value = line.partition("=")
        if not key:
            raise ArmswarmError(f"line {number} has no variable name")
        if " " in key or "\t" in key:
            # Only a name is shown, never a line without = (it may be a value's).
            what = f"the variable {key!r}" if has_value else "a line without = that"
            raise ArmswarmError(
                f"line {number}: {what} contains blanks (the CLI refuses it;"
                " it reads no shell: no export, no spaces around =)"
            )
        if has_value and value[:1] in ("'", '"') and value[0] not in value[1:]:
            # docker compose's value over several lines: the CLI reads each line by itself
            # (the rest would become variables of their own).
            raise ArmswarmError(
                f"line {number}: the value of {key} opens a quote it does not close: the CLI"
                " reads no value over several lines (and keeps quotes as part of a value)"
            )
        out.append((key, value if has_value else None))
    return out


# -- what the swarm runs compared with what the compose file asks for --------------------------
def _cli_env_has(key: str) -> bool:
    """Whether the CLI's environment (this process's, with the engine's address and a docker
    config of its own) may have ``key``: the CLI gives an empty value that variable's."""
    return key in os.environ or key in ("DOCKER_HOST", "DOCKER_CONFIG")


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _env_of(service: dict, files: dict) -> dict | None:
    """The environment a service gets: its env files, then ``environment`` over them; None
    when it cannot be told here exactly: a value taken from the deploying environment (a bare
    ``KEY`` in an env file or in ``environment``, an empty value of a variable the CLI's
    environment has), interpolated (``$``, not ``$$``: in ``environment``; an env file's
    values are taken as written) or a float (the CLI writes ``1.0`` as ``1``)."""
    env = {}
    for path in _as_list(service.get("env_file")):
        if not isinstance(path, str):
            return None
        data = (files.get(path[2:] if path.startswith("./") else path) or (None,))[0]
        if data is None:
            return None
        try:
            entries = _env_entries(data)
        except ArmswarmError:
            return None
        for key, value in entries:
            if value is None:
                return None
            env[key] = value
    given = service.get("environment") or {}
    if isinstance(given, list):
        pairs = []
        for item in given:
            text = _cli_text(item)
            if text is None:
                return None
            pairs.append(text.split("=", 1) if "=" in text else (text, None))
    else:
        pairs = [(key, _cli_text(value)) for key, value in given.items()]
    for key, value in pairs:
        if value is None:
            return None
        env[str(key)] = value
    if any(value == "" and _cli_env_has(key) for key, value in env.items()):
        return None
    return env


def _uninterpolated(text: str) -> str | None:
    """``text`` as the CLI's interpolation leaves it when it names no variable (``$$`` is a
    ``$``), else None."""
    if "$" not in text:
        return text
    if re.fullmatch(r"(?:[^$]|\$\$)*", text):
        return text.replace("$$", "$")
    return None


def _cli_text(value, empty=None) -> str | None:
    """The CLI's text of a compose value in ``environment`` or ``labels`` (``empty`` for
    none); None when it cannot be told here (interpolated, a float)."""
    if value is None:
        return empty
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _uninterpolated(value)
    return None


def _knowable(value) -> bool:
    """Whether the CLI's text for a compose value can be told here: not a float (Go prints
    ``1.0`` as ``1``, ``1e20`` as ``1e+20``), nothing the CLI interpolates (``$``)."""
    if isinstance(value, float):
        return False
    return not (isinstance(value, str) and "$" in value)


def _scalar(value) -> str:
    if value is None:  # a label without value: the CLI gives ""
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _labels_of(given) -> dict | None:
    """The labels the CLI makes of ``labels`` or ``deploy.labels`` (a mapping or a list of
    ``KEY=value``, a bare ``KEY`` or no value an empty one), None when it cannot be told."""
    if isinstance(given, list):
        out = {}
        for item in given:
            text = _cli_text(item)
            if text is None:
                return None
            key, _, value = text.partition("=")
            out[key] = value
        return out
    out = {}
    for key, value in (given or {}).items():
        text = _cli_text(value, empty="")
        if text is None:
            return None
        out[str(key)] = text
    return out


def object_name(stack: str, key: str, definition) -> str:
    """The name the CLI gives the config or secret ``key``: its ``name``; for an external one
    the deprecated ``external: {name: …}``, else the key itself; else ``<stack>_<key>``."""
    definition = definition or {}
    if definition.get("name"):
        return definition["name"]
    ext = definition.get("external")
    if external(definition, key):
        if isinstance(ext, dict) and ext.get("name"):
            return ext["name"]
        return key
    return f"{stack}_{key}"


def _image(ref: str | None, digest=False) -> str | None:
    """An image reference with the tag docker adds (``:latest``), without the prefix it
    leaves out (``docker.io/library/``), without digest unless ``digest``."""
    if not ref:
        return ref
    ref, _, pinned = ref.partition("@")
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
    if ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return f"{ref}@{pinned}" if digest and pinned else ref


def _targets(items, default_target) -> list | None:
    """The (source, target) pairs of a service's configs or secrets; None when a target is
    interpolated."""
    out = []
    for item in items or []:
        if isinstance(item, str):
            out.append((item, default_target(item)))
        elif isinstance(item, dict):
            source = item.get("source")
            target = item.get("target") or default_target(source)
            if "$" in str(source) + str(target):
                return None
            out.append((source, target))
    return sorted(out)


def _is_windows_drive(buffer: str, char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer.isalpha()


def _volume_spec(spec: str) -> tuple:
    """``(source, target)`` of a volume's short syntax, as the CLI splits it (volumespec:
    ``[source:]target[:options]``, a Windows drive's colon not a separator)."""
    if len(spec) <= 2:
        return "", spec
    fields, buffer = [], ""
    for char in spec + "\0":
        if _is_windows_drive(buffer, char):
            buffer += char
        elif char in (":", "\0"):
            fields.append(buffer)
            buffer = ""
        else:
            buffer += char
    if len(fields) == 1:
        return "", fields[0]
    return fields[0], fields[1]


def _mount_targets(volumes) -> list | None:
    """The targets of a service's mounts; None when one is interpolated."""
    targets = []
    for volume in volumes or []:
        if isinstance(volume, str):
            if "$" in volume:
                return None
            targets.append(_volume_spec(volume)[1])
        elif isinstance(volume, dict):
            if "$" in str(volume.get("target")):
                return None
            targets.append(volume.get("target"))
    return sorted(t for t in targets if t)


def _replicas(deploy_conf: dict):
    """``deploy.replicas`` as the CLI makes it (a string cast to a number, missing: 1),
    ``"global"`` for the other modes; None when interpolated."""
    mode = deploy_conf.get("mode") or "replicated"
    if not isinstance(mode, str) or "$" in mode:
        return None
    if mode != "replicated":
        return "global"
    replicas = deploy_conf.get("replicas", 1)
    if isinstance(replicas, str):
        # interpolated, or a number in quotes (the CLI casts it, as strconv.Atoi)
        return int(replicas) if re.fullmatch(r"[-+]?[0-9]+", replicas) else None
    return replicas


def desired_fields(stack: str, compose: dict, files: dict) -> dict:
    """``{service: {field: value}}``: what each service of a bundled compose file must show
    in the swarm (only fields that can be told without the CLI; None means "not compared")."""
    out = {}
    objects = {
        kind: {k: object_name(stack, k, v) for k, v in (compose.get(kind) or {}).items()}
        for kind in ("configs", "secrets")
    }
    for name, definition in (compose.get("services") or {}).items():
        service = definition or {}
        deploy_conf = service.get("deploy") or {}
        labels = _labels_of(deploy_conf.get("labels"))
        if labels is not None:
            labels.pop(HASH_LABEL, None)
        image = service.get("image")
        fields = {
            "image": _image(image, digest=True) if _knowable(image) else None,
            "replicas": _replicas(deploy_conf),
            "env": _env_of(service, files),
            "labels": labels,
            "container_labels": _labels_of(service.get("labels")),
            "mounts": _mount_targets(service.get("volumes")),
        }
        # Without a target the CLI's file name is the source's (convertFileObject), for
        # configs as for secrets.
        for kind in ("configs", "secrets"):
            pairs = _targets(service.get(kind), lambda s: s)
            names = [(objects[kind].get(src, src), tgt) for src, tgt in pairs or []]
            # An external object named from the CLI's environment: not told here.
            unknown = pairs is None or any("$" in str(n) for n, _ in names)
            fields[kind] = None if unknown else names
        out[name] = fields
    return out


def live_fields(spec: dict) -> dict:
    """The same fields, read from a live service's spec."""
    task = spec.get("TaskTemplate") or {}
    container = task.get("ContainerSpec") or {}
    mode = spec.get("Mode") or {}
    labels = {
        k: v
        for k, v in (spec.get("Labels") or {}).items()
        if k not in (HASH_LABEL, NAMESPACE_LABEL, IMAGE_LABEL)
    }
    return {
        "image": _image(container.get("Image"), digest=True),
        "replicas": (
            (mode.get("Replicated") or {}).get("Replicas") if "Replicated" in mode else "global"
        ),
        "env": dict(e.split("=", 1) if "=" in e else (e, "") for e in container.get("Env") or []),
        "labels": labels,
        # The CLI gives the containers the stack's label too.
        "container_labels": {
            k: v for k, v in (container.get("Labels") or {}).items() if k != NAMESPACE_LABEL
        },
        "configs": sorted(
            (c.get("ConfigName"), (c.get("File") or {}).get("Name"))
            for c in container.get("Configs") or []
            if c.get("File")  # not a credential spec's runtime config
        ),
        "secrets": sorted(
            (c.get("SecretName"), (c.get("File") or {}).get("Name"))
            for c in container.get("Secrets") or []
        ),
        "mounts": sorted(m.get("Target") for m in container.get("Mounts") or []),
    }


def drift(desired: dict, live: dict) -> list:
    """The fields where a live service differs from what the compose file asks for."""
    differ = []
    for field, wanted in desired.items():
        if wanted is None:
            continue
        want, have = wanted, live.get(field)
        if field in ("configs", "secrets"):
            want, have = sorted(wanted), sorted(have or [])
        if field == "image" and have and "@" not in want:
            # The digest the engine pinned (resolve_image) is no drift of a tag.
            have = have.split("@", 1)[0]
        if want != have:
            differ.append(field)
    return differ


def current(client, stack: str) -> dict:
    """``{service: {"id", "hash", "image", "fields"}}`` for the stack's services in the swarm."""
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
            "fields": live_fields(spec),
            "update": dict(service.get("UpdateStatus") or {}),
        }
    return out


# An update the engine stopped half way and left there: the service's definition is already
# the new one, so a deploy sees nothing to do while tasks of both run (or none).
STUCK_UPDATES = ("paused", "rollback_paused")


def stuck_updates(existing: dict, rolling) -> dict:
    """``{service: why}`` for the services whose last update is paused and that this run does
    not roll out again (``rolling``: the services it creates, updates or forces)."""
    out = {}
    for name, service in sorted(existing.items()):
        update = service.get("update") or {}
        if update.get("State") in STUCK_UPDATES and name not in rolling:
            message = update.get("Message") or ""
            out[name] = f"update {update['State']}" + (f" ({message})" if message else "")
    return out


# A rollout the engine is still carrying out: the service's definition is already the one it
# goes to (for a rollback, the one before the failed update).
ROLLING_UPDATES = ("updating", "rollback_started")


def rolling_updates(existing: dict, rolling) -> dict:
    """``{service: state}`` for the services whose rollout is still under way and that this
    run does not roll out itself (``rolling``): a file put right while the engine rolls back
    to it matches at once, but the failed update's tasks may still run."""
    return {
        name: (service.get("update") or {})["State"]
        for name, service in sorted(existing.items())
        if (service.get("update") or {}).get("State") in ROLLING_UPDATES and name not in rolling
    }


def plan(hashes: dict, existing: dict, prune: bool, desired: dict | None = None) -> dict:
    """What a deploy does: ``{"create": [...], "update": [...], "remove": [...], "drift":
    {service: [fields]}}`` (only the non-empty keys). A service whose hash label matches but
    whose live fields differ from ``desired`` (:func:`desired_fields`) was changed by hand:
    it is in ``drift`` and in ``update`` (the deploy puts it back)."""
    drifted = {}
    for name, want in (desired or {}).items():
        if name in existing and existing[name]["hash"] == hashes.get(name):
            fields = drift(want, existing[name].get("fields") or {})
            if fields:
                drifted[name] = fields
    out = {
        "create": sorted(s for s in hashes if s not in existing),
        "update": sorted(
            s
            for s in hashes
            if s in existing and (existing[s]["hash"] != hashes[s] or s in drifted)
        ),
        "remove": sorted(s for s in existing if s not in hashes) if prune else [],
        "drift": drifted,
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
    files=None,
):
    """Run ``docker stack deploy`` with the stamped compose file, and the ``files`` of its
    bundle (:func:`bundle`) beside it in a private temporary directory (0700; secrets 0600),
    removed when the deploy ends.

    The file is written as JSON (valid YAML): a YAML 1.1 dump would leave strings such as
    ``"1e3"`` unquoted, and the CLI (YAML 1.2) would read them as numbers. With registry
    credentials, the login goes to a throw-away docker config (seeded with root's own, so
    other logins still work) through standard input.
    """
    check_resolve_image(resolve_image)
    with _cli(base_url, registry_auth) as (cli, env, tmp):
        for relative, (data, mode) in (files or {}).items():
            target = os.path.join(tmp, relative)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        path = os.path.join(tmp, "compose.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(compose, fh, default=str)
        argv = [cli, "stack", "deploy", "--compose-file", path, "--resolve-image", resolve_image]
        if with_registry_auth:
            argv.append("--with-registry-auth")
        if prune:
            argv.append("--prune")
        argv.append(stack)
        return _run_cli(argv, env, timeout, f"docker stack deploy {stack}")


def _run_cli(argv, env, timeout, what: str) -> str:
    """The docker CLI's output; a clear error saying ``what`` when it fails or hangs."""
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ArmswarmError(f"{what} did not finish in {timeout}s") from exc
    if proc.returncode != 0:
        raise ArmswarmError(f"{what} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


@contextlib.contextmanager
def _cli(base_url: str | None, registry_auth=None):
    """``(cli, env, tmp)``: the docker CLI, its environment (the engine's DOCKER_HOST; with
    registry credentials a throw-away docker config, seeded with root's own so other logins
    still work, logged in through standard input) and a private temporary directory (0700)
    removed afterwards."""
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
        yield cli, env, tmp


def set_images(
    stack: str,
    images: dict,
    base_url: str | None,
    with_registry_auth=True,
    registry_auth=None,
    timeout=300,
    resolve_image=RESOLVE_IMAGE_DEFAULT,
) -> None:
    """Give the named services of ``stack`` (``{service: image}``) the compose file's image
    again (``docker service update --image``): ``docker stack deploy`` keeps a live image
    changed by hand as long as the file's image equals its ``com.docker.stack.image`` label,
    so an image drift is only put back this way."""
    check_resolve_image(resolve_image)
    with _cli(base_url, registry_auth) as (cli, env, _):
        for name, image in sorted(images.items()):
            argv = [cli, "service", "update", "--image", str(image), "--detach", "--quiet"]
            if with_registry_auth:
                argv.append("--with-registry-auth")
            if resolve_image == "never":
                argv.append("--no-resolve-image")
            argv.append(f"{stack}_{name}")
            _run_cli(argv, env, timeout, f"putting the image of {stack}_{name} back")


def force_update(stack: str, services: list, base_url: str | None, timeout=300) -> None:
    """Roll the named services of ``stack`` out again with their definition unchanged
    (``docker service update --force``): what brings a re-pushed tag to the nodes when the
    definition did not change. Registry credentials stay those of the last deploy."""
    cli = shutil.which("docker")
    if not cli:
        raise ArmswarmError("the docker CLI is needed for stack deploys")
    env = dict(os.environ)
    host = _cli_host(base_url)
    if host:
        env["DOCKER_HOST"] = host
    for name in services:
        argv = [cli, "service", "update", "--force", "--detach", "--quiet", f"{stack}_{name}"]
        _run_cli(argv, env, timeout, f"forcing {stack}_{name}")


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
# Task states that will not become "running" by waiting.
_ENDED = ("complete", "shutdown", "failed", "rejected", "orphaned", "remove")


# What the engine leaves out of a task's copy of the task template, or adds to it (seen on
# docker 28: placement platforms): not compared, or no task would ever match.
_NOT_IN_TASKS = {"RestartPolicy", "Runtime"}
_NOT_IN_TASK_CONTAINERS = {"StopGracePeriod", "DNSConfig"}


def _comparable(spec: dict) -> dict:
    out = {k: v for k, v in (spec or {}).items() if k not in _NOT_IN_TASKS}
    container = out.get("ContainerSpec") or {}
    out["ContainerSpec"] = {k: v for k, v in container.items() if k not in _NOT_IN_TASK_CONTAINERS}
    # The engine adds the image's platforms to each task's placement.
    placement = {k: v for k, v in (out.get("Placement") or {}).items() if k != "Platforms"}
    out["Placement"] = placement
    return out


def _task_reason(task) -> str:
    status = task.get("Status") or {}
    return status.get("Err") or status.get("Message") or status.get("State") or "?"


def _service_state(client, stack: str, name: str, rollback_ok: bool = False) -> str | None:
    """None when the service runs its current definition on all replicas, else why not.

    Right after a deploy the engine resets the update status and the old tasks still run, so
    convergence is judged from the tasks: each running one must carry the service's whole
    current task template (an environment-only change leaves the image as it was), and
    there must be as many as the service asks for. Tasks that wait (``no suitable node …``)
    or fail say why.
    """
    full = f"{stack}_{name}"
    matches = [s for s in client.api.services(filters={"name": full}) if s["Spec"]["Name"] == full]
    if not matches:
        return "missing"
    service = matches[0]
    update = (service.get("UpdateStatus") or {}).get("State")
    if rollback_ok and update == "rollback_started":
        return "rolling back"  # to the definition wanted: wait for it to finish
    if update in FAILED_UPDATES and not (rollback_ok and update == "rollback_completed"):
        raise ArmswarmError(
            f"service {full}: update {update}: "
            f"{(service.get('UpdateStatus') or {}).get('Message', '')}"
        )
    template = _comparable(service["Spec"].get("TaskTemplate") or {})
    tasks = client.api.tasks(filters={"service": full})
    wanted_running = [t for t in tasks if t.get("DesiredState") == "running"]
    current = [
        t
        for t in wanted_running
        if (t.get("Status") or {}).get("State") == "running"
        and _comparable(t.get("Spec")) == template
    ]
    old = [
        t
        for t in tasks
        if (t.get("Status") or {}).get("State") == "running"
        and _comparable(t.get("Spec")) != template
    ]
    mode = service["Spec"].get("Mode") or {}
    wanted = (mode.get("Replicated") or {}).get("Replicas")
    if wanted is None:  # global: every task the scheduler wants must run the current spec
        wanted = len(wanted_running)
    if update != "updating" and len(current) >= wanted and not old:
        return None
    waiting = sorted(
        {
            _task_reason(t)
            for t in wanted_running
            if (t.get("Status") or {}).get("State") not in ("running", *_ENDED)
            and ((t.get("Status") or {}).get("Err") or t["Status"].get("State") == "pending")
        }
    )
    failed = sorted(
        {
            _task_reason(t)
            for t in tasks
            if (t.get("Status") or {}).get("State") in ("failed", "rejected")
            and _comparable(t.get("Spec")) == template
        }
    )
    detail = f"{len(current)}/{wanted} running the current definition"
    if old:
        detail += f", {len(old)} still on the old one"
    if waiting:
        detail += f"; waiting: {'; '.join(waiting)}"
    if failed:
        detail += f"; failed: {'; '.join(failed)}"
    return detail


def wait_converged(
    client, stack: str, services: list, timeout: float = 300, progress=None, rolling_back=()
) -> dict:
    """Wait until the named services run their current definition on every replica; return
    ``{service: state}`` for the ones that did not (a rolled-back or paused update raises,
    except that the rollback of those in ``rolling_back``, already rolling back to the
    definition wanted, is waited for). ``progress(pending)`` hears each change of what is
    still pending."""
    deadline = time.monotonic() + timeout
    pending: dict = {}
    said = None
    try:
        while time.monotonic() < deadline:
            pending = {}
            for name in services:
                state = _service_state(client, stack, name, name in rolling_back)
                if state:
                    pending[name] = state
            if not pending:
                return {}
            if progress and pending != said:
                progress(pending)
                said = dict(pending)
            time.sleep(2)
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"cannot follow the rollout: {exc.explanation or exc}") from exc
    return pending


# -- configs and secrets of earlier versions -----------------------------------------------------
def stack_objects(client, stack: str) -> dict:
    """``{"configs": {name: id}, "secrets": {name: id}}`` the stack created."""
    filters = {"label": f"{NAMESPACE_LABEL}={stack}"}
    try:
        return {
            "configs": {c["Spec"]["Name"]: c["ID"] for c in client.api.configs(filters=filters)},
            "secrets": {c["Spec"]["Name"]: c["ID"] for c in client.api.secrets(filters=filters)},
        }
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"cannot list configs and secrets: {exc.explanation or exc}") from exc


def _object_refs(spec: dict | None) -> dict:
    container = ((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return {
        "configs": {r.get("ConfigName") for r in container.get("Configs") or []},
        "secrets": {r.get("SecretName") for r in container.get("Secrets") or []},
    }


def unused_objects(client, stack: str, keep: dict, updating=(), replacing=()) -> dict:
    """The stack's configs and secrets that no service of the swarm uses and the compose file
    no longer names (``keep``: ``{"configs": [names], "secrets": [names]}``). What a service
    had before its last update (``PreviousSpec``: what ``failure_action: rollback`` and
    ``docker service rollback`` return to) counts as use too.

    For a prediction: the services (full names) in ``updating`` are about to be updated
    (their current definition becomes the previous one, the previous one goes); those in
    ``replacing`` are about to be removed or updated twice: nothing of theirs counts."""
    used: dict = {"configs": set(), "secrets": set()}
    try:
        services = client.api.services()
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"cannot list services: {exc.explanation or exc}") from exc
    for service in services:
        name = (service.get("Spec") or {}).get("Name")
        if name in replacing:
            continue
        specs = [service.get("Spec")]
        if name not in updating:
            specs.append(service.get("PreviousSpec"))
        for spec in specs:
            for kind, names in _object_refs(spec).items():
                used[kind] |= names
    objects = stack_objects(client, stack)
    out = {
        kind: sorted(n for n in objects[kind] if n not in used[kind] and n not in keep[kind])
        for kind in ("configs", "secrets")
    }
    return {k: v for k, v in out.items() if v}


def subtract_objects(names: dict, minus: dict) -> dict:
    """``names`` (``{kind: [names]}``) without those in ``minus``, only the non-empty kinds."""
    out = {k: [n for n in v if n not in (minus.get(k) or [])] for k, v in names.items()}
    return {k: v for k, v in out.items() if v}


def remove_objects(client, stack: str, names: dict) -> None:
    objects = stack_objects(client, stack)
    for kind, remove in (
        ("configs", client.api.remove_config),
        ("secrets", client.api.remove_secret),
    ):
        for name in names.get(kind) or []:
            if name in objects[kind]:
                try:
                    remove(objects[kind][name])
                except docker.errors.APIError as exc:
                    raise ArmswarmError(
                        f"removing {kind[:-1]} {name} failed: {exc.explanation or exc}"
                    ) from exc


def object_names(compose: dict) -> dict:
    """The config and secret names a bundled compose file asks for."""
    return {
        kind: sorted(
            object_name("", k, v)
            for k, v in (compose.get(kind) or {}).items()
            if (v or {}).get("name") or external(v, f"{kind}:{k}")
        )
        for kind in ("configs", "secrets")
    }


# -- listing and removing stacks -------------------------------------------------------------------
def _api(action, call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except docker.errors.APIError as exc:
        raise ArmswarmError(f"{action}: {exc.explanation or exc}") from exc


def _node_names(client) -> dict:
    return {
        n["ID"]: (n.get("Description") or {}).get("Hostname") or n["ID"][:12]
        for n in _api("cannot list nodes (is this a manager?)", client.api.nodes)
    }


def list_services(client, stack: str | None = None) -> list:
    """The services (of ``stack``, or all), each with its stack, image, mode, replicas
    running/wanted and update state."""
    filters = {"label": f"{NAMESPACE_LABEL}={stack}"} if stack else None
    services = _api("cannot list services", client.api.services, filters=filters)
    tasks = _api("cannot list tasks", client.api.tasks, filters={"desired-state": "running"})
    running: dict = {}
    for task in tasks:
        if (task.get("Status") or {}).get("State") == "running":
            running[task.get("ServiceID")] = running.get(task.get("ServiceID"), 0) + 1
    out = []
    for service in services:
        spec = service.get("Spec") or {}
        mode = spec.get("Mode") or {}
        out.append(
            {
                "name": spec.get("Name"),
                "stack": (spec.get("Labels") or {}).get(NAMESPACE_LABEL),
                "image": ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image"),
                "mode": "replicated" if "Replicated" in mode else "global",
                "replicas": (mode.get("Replicated") or {}).get("Replicas"),
                "running": running.get(service.get("ID"), 0),
                "update": (service.get("UpdateStatus") or {}).get("State"),
            }
        )
    return sorted(out, key=lambda s: s["name"] or "")


def list_stacks(client) -> dict:
    """``{stack: {"services": n, "running": tasks running, "wanted": replicas asked for}}``."""
    out: dict = {}
    for service in list_services(client):
        if not service["stack"]:
            continue
        entry = out.setdefault(service["stack"], {"services": 0, "running": 0, "wanted": 0})
        entry["services"] += 1
        entry["running"] += service["running"]
        entry["wanted"] += service["replicas"] or 0
    return out


def list_tasks(client, stack: str | None = None, service: str | None = None) -> list:
    """The tasks of a service (full name), of a stack, or all: service, slot, node hostname,
    desired and current state, and the error of the ones that failed or cannot be placed."""
    services = _api("cannot list services", client.api.services)
    names = {s["ID"]: (s.get("Spec") or {}).get("Name") for s in services}
    # A stack's tasks by its services (tasks carry no stack label of their own).
    wanted = {
        s["ID"]
        for s in services
        if (not stack or ((s.get("Spec") or {}).get("Labels") or {}).get(NAMESPACE_LABEL) == stack)
        and (not service or names[s["ID"]] == service)
    }
    tasks = [t for t in _api("cannot list tasks", client.api.tasks) if t.get("ServiceID") in wanted]
    nodes = _node_names(client)
    out = []
    for task in tasks:
        status = task.get("Status") or {}
        out.append(
            {
                "service": names.get(task.get("ServiceID"), task.get("ServiceID")),
                "slot": task.get("Slot"),
                "node": nodes.get(task.get("NodeID")) if task.get("NodeID") else None,
                "desired": task.get("DesiredState"),
                "state": status.get("State"),
                "error": status.get("Err") or None,
                "message": status.get("Message"),
                "since": status.get("Timestamp"),
            }
        )
    return sorted(out, key=lambda t: (t["service"] or "", t["slot"] or 0, t["since"] or ""))


def stack_contents(client, stack: str) -> dict:
    """What ``stack`` has in the swarm: ``{"services", "networks", "configs", "secrets"}``
    (names), only the non-empty ones."""
    filters = {"label": f"{NAMESPACE_LABEL}={stack}"}
    out = {
        "services": sorted(
            s["Spec"]["Name"]
            for s in _api("cannot list services", client.api.services, filters=filters)
        ),
        "networks": sorted(
            n["Name"] for n in _api("cannot list networks", client.api.networks, filters=filters)
        ),
        **{k: sorted(v) for k, v in stack_objects(client, stack).items()},
    }
    return {k: v for k, v in out.items() if v}


def outside_users(client, stack: str) -> dict:
    """``{"networks" | "configs" | "secrets": {name: [services]}}``: the stack's networks,
    configs and secrets that services of other stacks (or of none) use, only the non-empty
    kinds. The engine refuses to remove those, so the stack could not go whole."""
    filters = {"label": f"{NAMESPACE_LABEL}={stack}"}
    nets = {
        key: n["Name"]
        for n in _api("cannot list networks", client.api.networks, filters=filters)
        for key in (n.get("Id"), n.get("Name"))
        if key
    }
    objects = stack_objects(client, stack)
    ids = {kind: {v: k for k, v in objects[kind].items()} for kind in objects}
    out: dict = {"networks": {}, "configs": {}, "secrets": {}}
    for service in _api("cannot list services", client.api.services):
        spec = service.get("Spec") or {}
        if (spec.get("Labels") or {}).get(NAMESPACE_LABEL) == stack:
            continue
        task = spec.get("TaskTemplate") or {}
        container = task.get("ContainerSpec") or {}
        found = {
            "networks": {
                nets[n.get("Target")]
                for n in (task.get("Networks") or []) + (spec.get("Networks") or [])
                if n.get("Target") in nets
            },
            "configs": {
                ids["configs"].get(r.get("ConfigID")) or r.get("ConfigName")
                for r in container.get("Configs") or []
                if r.get("ConfigID") in ids["configs"] or r.get("ConfigName") in objects["configs"]
            },
            "secrets": {
                ids["secrets"].get(r.get("SecretID")) or r.get("SecretName")
                for r in container.get("Secrets") or []
                if r.get("SecretID") in ids["secrets"] or r.get("SecretName") in objects["secrets"]
            },
        }
        for kind, names in found.items():
            for name in names:
                out[kind].setdefault(name, []).append(spec.get("Name"))
    return {k: {n: sorted(u) for n, u in sorted(v.items())} for k, v in out.items() if v}


def describe_users(users: dict) -> str:
    return "; ".join(
        f"{kind[:-1]} {name} by {', '.join(services)}"
        for kind, named in users.items()
        for name, services in named.items()
    )


def remove_stack(client, stack: str, timeout: float = 120) -> dict:
    """Remove every service, network, config and secret of ``stack``: services first, then,
    once their tasks are gone (a network in use cannot go), the rest. Returns what was
    removed; raises when the tasks do not go within ``timeout``, and before anything is
    removed when services of other stacks use its networks, configs or secrets."""
    contents = stack_contents(client, stack)
    users = outside_users(client, stack)
    if users:
        raise ArmswarmError(
            f"stack {stack}: other services use its {describe_users(users)}: nothing removed"
        )
    filters = {"label": f"{NAMESPACE_LABEL}={stack}"}
    for service in _api("cannot list services", client.api.services, filters=filters):
        _api(
            f"removing service {service['Spec']['Name']}", client.api.remove_service, service["ID"]
        )
    deadline = time.monotonic() + timeout
    while True:
        left = [
            t
            for t in _api("cannot list tasks", client.api.tasks, filters=filters)
            if (t.get("Status") or {}).get("State") in ("running", "starting", "preparing")
        ]
        if not left:
            break
        if time.monotonic() >= deadline:
            raise ArmswarmError(
                f"stack {stack}: {len(left)} tasks still running after {timeout:g} s"
            )
        time.sleep(1)
    for network in _api("cannot list networks", client.api.networks, filters=filters):
        for attempt in range(10):
            try:
                client.api.remove_network(network["Id"])
                break
            except docker.errors.APIError as exc:
                # The containers of the removed tasks detach from it a moment later.
                if attempt == 9 or "in use" not in str(exc.explanation or exc):
                    raise ArmswarmError(
                        f"removing network {network['Name']}: {exc.explanation or exc}"
                    ) from exc
                time.sleep(2)
    remove_objects(client, stack, stack_objects(client, stack))
    return contents
