"""The armnode formula's settings: validation before any change."""

import re
from urllib.parse import urlparse

from armswarm_core import ArmswarmError
from armswarm_core.node import boot_files, cmdline, io_schedulers
from armswarm_core.node.mail import RELAYS

# crypt(3) prefixes: MD5, bcrypt, SHA-256, SHA-512, yescrypt, gost-yescrypt, scrypt.
_HASH = re.compile(r"^\$(1|2[abxy]?|5|6|y|gy|7)\$[^\s:]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _url_ok(url) -> bool:
    parsed = urlparse(str(url))
    if parsed.scheme == "file":
        return bool(parsed.path)
    return parsed.scheme in ("http", "https", "ftp") and bool(parsed.netloc)


def validate(settings: dict, boot_root: str = "/") -> list[str]:
    """Every problem, each naming its pillar key (values that may be secret are not shown)."""
    errors = []
    admin = settings.get("admin") or {}
    if not _USER.match(str(admin.get("name", ""))):
        errors.append(f"armnode:admin:name: {admin.get('name')!r} is not a valid user name")
    password = admin.get("password_hash") or ""
    if password and not _HASH.match(str(password)):
        errors.append(
            "armnode:admin:password_hash: this is not a crypt(3) hash (a plaintext "
            "password?); refusing it. Make one with: mkpasswd -m sha-512"
        )
    mirrors = settings.get("mirrors") or {}
    for key, value in mirrors.items():
        if key == "components":
            continue
        for url in value if isinstance(value, list) else [value]:
            if not _url_ok(url):
                errors.append(
                    f"armnode:mirrors:{key}: {url!r} is not a URL "
                    "(http://, https://, ftp:// or file://)"
                )
    try:
        io_schedulers.validate(settings.get("io_schedulers") or {})
    except ArmswarmError as exc:
        errors.append(f"armnode:io_schedulers: {exc}")
    kernel = settings.get("kernel_args") or {}
    # Lists as given: a string is not a list of arguments.
    present, absent = kernel.get("present") or [], kernel.get("absent") or []
    try:
        cmdline.validate(present, absent)
        if present or absent:
            boot_files.locate(boot_root)
    except ArmswarmError as exc:
        errors.append(f"armnode:kernel_args: {exc}")
    mail = settings.get("mail") or {}
    if mail.get("enabled"):
        if mail.get("relay") not in RELAYS:
            errors.append(
                f"armnode:mail:relay: {mail.get('relay')!r} is not one of {', '.join(RELAYS)}"
            )
        if not mail.get("host"):
            errors.append("armnode:mail:host: the relay host is required")
        if not str(mail.get("port", "")).isdigit():
            errors.append(f"armnode:mail:port: {mail.get('port')!r} is not a port")
        for key in ("from", "root_alias"):
            if mail.get(key) and not _EMAIL.match(str(mail[key])):
                errors.append(f"armnode:mail:{key}: {mail[key]!r} is not an e-mail address")
    tuning = settings.get("tuning") or {}
    governor = tuning.get("cpu_governor") or ""
    if governor and not re.match(r"^[a-z0-9_]+$", str(governor)):
        errors.append(f"armnode:tuning:cpu_governor: {governor!r} is not a governor name")
    for option in tuning.get("root_mount_options") or []:
        if not re.match(r"^[a-z0-9_=.-]+$", str(option)):
            errors.append(f"armnode:tuning:root_mount_options: {option!r} is not a mount option")
    irq_conf = tuning.get("irq_affinity") or {}
    if irq_conf.get("enabled"):
        try:
            re.compile(str(irq_conf.get("pattern") or ""))
        except re.error as exc:
            errors.append(f"armnode:tuning:irq_affinity:pattern: not a regular expression: {exc}")
    zram = tuning.get("zram") or {}
    if zram.get("enabled") and not 0 < int(zram.get("percent") or 0) <= 100:
        errors.append(f"armnode:tuning:zram:percent: {zram.get('percent')!r} is not 1-100")
    docker = settings.get("docker") or {}
    if not isinstance(docker.get("daemon", {}), dict):
        errors.append("armnode:docker:daemon: must be a mapping (daemon.json)")
    if docker.get("registry_ca") and not docker.get("registry"):
        errors.append("armnode:docker:registry: needed with registry_ca (host:port)")
    return errors
