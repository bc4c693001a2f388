"""The registry's settings, ``armswarm:registry``: one set for the registry node (container,
certificates, users) and for its clients (the image builds and the runner's API calls).

The defaults below are the only copy; the minion's (or master's) config and pillar are merged
over them key by key (:mod:`armswarm_core.common.config`), so the master config can say where
the registry is while pillar holds its users and storage.
"""

import difflib
import ipaddress
import re
from collections.abc import Mapping

from armswarm_core import ArmswarmError
from armswarm_core.common import config
from armswarm_core.registry import tag_retention

PILLAR = "armswarm:registry"
DEFAULTS = {
    # -- the registry node (salt/registry) ---------------------------------------------------
    "node": "",  # minion id of the registry node
    "host": "",  # host:port clients use (the formula's default: <node's first IPv4>:<port>)
    "image": "registry:2",
    "port": 5000,
    "storage": "/srv/registry",  # on the node's SSD
    "config_dir": "/etc/armswarm/registry",
    "ca_days": 3650,
    "cert_days": 825,
    "cert_renew_days": 30,
    "extra_sans": [],  # more DNS:/IP: entries for the certificate
    # The registry's users: {user: {password: …, right: pull|push|delete}} (``right`` default
    # pull); the short form {user: password} is a user with every right (``delete``).
    # Required unless allow_anonymous.
    "users": {},
    # How the registry checks them: ``htpasswd`` (basic auth, every user has every right) or
    # ``token`` (a token server beside the registry grants each user its right only).
    "auth": "htpasswd",
    "token_port": 5001,  # the token server's port, on the registry's address
    "token_ttl": 300,  # seconds a token is valid
    # bcrypt cost of the htpasswd hashes. The registry checks the hash on every request (each
    # blob of a push or pull): 2^12 rounds take ~0.3 s on x86 and seconds on a Cortex-A53, 2^5
    # (``htpasswd -B``'s default, Docker's registry docs) a few ms. The users are machine
    # credentials: give them long random passwords rather than a higher cost.
    "htpasswd_cost": 5,
    # Serve without authentication (anyone who reaches the port pulls, pushes and deletes):
    # only when asked for, never because users were left out.
    "allow_anonymous": False,
    # The address the registry's port is published on; empty: the address in ``host`` when it
    # is one of the node's, else the node's first address (never loopback or a docker bridge).
    "listen": "",
    # -- its clients (image builds, the imagebuild runner) -----------------------------------
    "url": "",  # the API; empty: https://<host>
    "ca_file": "",  # CA bundle for the API calls; empty: the system's
    "username": "",  # the credentials of every use without its own in ``clients``
    "password": "",
    # Credentials per use: ``pull`` for the nodes (stack deploys, --with-registry-auth),
    # ``push`` for the build nodes and the runner's tag moves and index puts, ``delete`` for
    # the runner's retention. An empty username falls back to username/password above.
    "clients": {use: {"username": "", "password": ""} for use in ("pull", "push", "delete")},
    "tag_format": tag_retention.DEFAULT_TAG_FORMAT,
    "keep": tag_retention.DEFAULT_KEEP,
}
# Never in a return: passwords of the registry's users and the client's own.
SECRETS = (
    "users:*",
    "password",
    "clients:pull:password",
    "clients:push:password",
    "clients:delete:password",
)
AUTH_MODES = ("htpasswd", "token")
# What each right may do; ``delete`` implies push because retention untags a tag that shares
# its manifest with a kept one by pushing a placeholder manifest (then deleting it), and it
# lists the catalog to find every repository.
RIGHTS = {
    "pull": ("pull",),
    "push": ("pull", "push"),
    "delete": ("pull", "push", "delete"),
}
USES = ("pull", "push", "delete")
_USER_KEYS = ("password", "right")


def users(conf: Mapping) -> dict:
    """``{name: (password, right)}`` of ``conf["users"]`` (checked by :func:`resolve`): the
    short form ``{name: password}`` has every right (``delete``)."""
    out = {}
    for name, entry in conf["users"].items():
        if isinstance(entry, str):
            out[name] = (entry, "delete")
        else:
            out[name] = (entry["password"], entry.get("right", "pull"))
    return out


def credentials(conf: Mapping, use: str) -> tuple[str, str]:
    """``(username, password)`` for ``use`` (pull, push, delete): ``clients:<use>``, else
    ``username``/``password``; empty strings when neither is set."""
    if use not in USES:
        raise ArmswarmError(f"registry credentials: use {use!r} is not one of {list(USES)}")
    own = conf["clients"][use]
    if own["username"]:
        return own["username"], own["password"]
    return conf["username"], conf["password"]


def _check_users(given) -> list[str]:
    problems = []
    for name, entry in given.items():
        where = f"{PILLAR}:users:{name}"
        if (
            not isinstance(name, str)
            or not name
            or ":" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)
        ):
            # A name is the start of an htpasswd line ("name:hash").
            problems.append(
                f"{PILLAR}:users: user names must be strings without ':' or control characters"
            )
            continue
        if isinstance(entry, str):
            continue
        if not isinstance(entry, Mapping):
            problems.append(
                f"{where}: must be a password or a mapping (password, right), not "
                f"{config.kind(entry)}"
            )
            continue
        for key in entry:
            if key not in _USER_KEYS:
                close = difflib.get_close_matches(str(key), _USER_KEYS, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{where}:{key}: unknown key{hint}")
        if not isinstance(entry.get("password"), str) or not entry.get("password"):
            problems.append(f"{where}:password must be a non-empty string")
        right = entry.get("right", "pull")
        if not isinstance(right, str) or right not in RIGHTS:
            problems.append(f"{where}:right must be one of {', '.join(RIGHTS)}")
    return problems


_TYPES = {"extra_sans": "strings"}
# ``host`` is a DNS name or an IP address (IPv6 in brackets) and an optional port: it is the
# certificate's SAN and a directory name under /etc/docker/certs.d.
_HOST = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")
_DNS = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _san_ok(san: str) -> bool:
    """``DNS:<name>`` or ``IP:<address>``: the SANs are joined with ", " into one
    subjectAltName value, where a comma in an entry would add another."""
    kind, _, value = san.partition(":")
    if kind == "DNS":
        return bool(_DNS.fullmatch(value))
    if kind == "IP":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    return False


def _check(conf: Mapping) -> tuple[dict, list[str]]:
    clean, problems = config.check(conf, DEFAULTS, PILLAR, types=_TYPES)
    problems += config.control_characters(clean, PILLAR)
    if clean["host"] and not _HOST.fullmatch(clean["host"]):
        problems.append(f"{PILLAR}:host must be a DNS name or an IP address and a port")
    for san in clean["extra_sans"]:
        if not _san_ok(san):
            problems.append(f"{PILLAR}:extra_sans: each entry is DNS:<name> or IP:<address>")
            break
    if not 0 < clean["port"] < 65536:
        problems.append(f"{PILLAR}:port must be a TCP port")
    for key in ("storage", "config_dir"):
        if not clean[key].startswith("/"):
            problems.append(f"{PILLAR}:{key} must be an absolute path")
    problems.extend(_check_users(clean["users"]))
    if clean["auth"] not in AUTH_MODES:
        problems.append(f"{PILLAR}:auth must be one of {', '.join(AUTH_MODES)}")
    elif clean["auth"] == "htpasswd" and not problems:
        limited = sorted(n for n, (_, right) in users(clean).items() if right != "delete")
        if limited:
            # htpasswd authenticates only: a pull user could push and delete
            problems.append(
                f"{PILLAR}:users:{limited[0]}:right needs {PILLAR}:auth: token (htpasswd "
                "gives every user every right)"
            )
    if not 0 < clean["token_port"] < 65536:
        problems.append(f"{PILLAR}:token_port must be a TCP port")
    elif clean["auth"] == "token" and clean["token_port"] == clean["port"]:
        problems.append(f"{PILLAR}:token_port must differ from {PILLAR}:port")
    if not 30 <= clean["token_ttl"] <= 86400:
        problems.append(f"{PILLAR}:token_ttl must be from 30 to 86400 seconds")
    if clean["listen"]:
        try:
            address = ipaddress.ip_address(clean["listen"])
        except ValueError:
            problems.append(f"{PILLAR}:listen must be an IP address of the registry node")
        else:
            if address.is_unspecified:  # 0.0.0.0 or :: is every interface
                problems.append(
                    f"{PILLAR}:listen {clean['listen']} is every interface: give the address "
                    "the nodes use (leave it out for the node's own)"
                )
    if not 4 <= clean["htpasswd_cost"] <= 31:
        problems.append(f"{PILLAR}:htpasswd_cost must be a bcrypt cost from 4 to 31")
    for key in ("ca_days", "cert_days", "cert_renew_days", "keep"):
        if clean[key] < 1:
            problems.append(f"{PILLAR}:{key} must be a whole number ≥ 1")
    return clean, problems


def resolve(opts=None, pillar=None, **overrides) -> tuple[dict, list[str]]:
    """``(settings, problems)``: :data:`DEFAULTS` < opts < pillar, key by key, then
    ``overrides`` (arguments of a state or runner; ``None`` ones are not set), each of which
    replaces its key whole (``users={…}`` is the whole list of users, ``users={}`` none)."""
    conf, problems = config.lookup(PILLAR, DEFAULTS, opts, pillar)
    conf.update({key: value for key, value in overrides.items() if value is not None})
    clean, more = _check(conf)
    return clean, problems + more


def settings(opts=None, pillar=None, strict=True, **overrides) -> dict:
    """The registry settings (:func:`resolve`); ArmswarmError naming every bad key unless
    ``strict`` is false."""
    conf, problems = resolve(opts, pillar, **overrides)
    if problems and strict:
        raise ArmswarmError("; ".join(problems))
    return conf


def masked(conf: Mapping) -> dict:
    """``conf`` without its passwords, for returns (a user's right stays visible)."""
    out = config.masked({k: v for k, v in conf.items() if k != "users"}, SECRETS)
    if "users" in conf:
        out["users"] = {
            name: {
                "password": config.SECRET,
                "right": entry.get("right", "pull") if isinstance(entry, Mapping) else "delete",
            }
            for name, entry in (conf["users"] or {}).items()
        }
    return out
