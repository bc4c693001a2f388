"""The armnode formula's settings: the layers, strict types, and validation before any change.

The layers, each merged key by key over the one before (:mod:`armswarm_core.common.config`):
:data:`DEFAULTS` < :data:`OS_FAMILY` (by the ``os_family`` grain; Debian — which covers Armbian,
Raspberry Pi OS and Ubuntu — when unknown) < :data:`BOARDS` (by the ``armnode:board`` grain) <
``armnode:lookup`` < ``armnode``, first from the minion config, then from pillar. ``board`` and
``boot_flavour`` come from the grain. Nothing here changes the pillar it reads.
"""

import difflib
import json
import re
from collections.abc import Mapping

from armswarm_core import ArmswarmError
from armswarm_core.common import config
from armswarm_core.node import apt_sources, boot_files, cmdline, io_schedulers, mail

PILLAR = "armnode"
# Every key of the formula (salt/armnode/pillar.example documents each one).
DEFAULTS = {
    "packages": ["lsof", "wget", "curl", "htop", "rsync", "less", "sudo", "ca-certificates"],
    # apt's Recommends for the packages above and the mail relay's (Debian family; pacman has
    # none). Off: the same package set on every image whatever its apt config (DietPi turns
    # them off, Raspberry Pi OS keeps them), and no MIME database, keyring tools or ICU on the
    # flash for a mail relay. Docker's package keeps its own (AppArmor's parser).
    "install_recommends": False,
    # Package mirrors; empty: the image's own sources stay.
    "mirrors": {},
    # name: content → /usr/local/sbin/<name> (mode 0755)
    "scripts": {},
    # Users images ship with; removed unless they are the admin or logged in.
    "default_users": ["alarm", "pi"],
    "remove_default_users": True,
    "admin": {
        "name": "admin",
        # A crypt(3) hash (mkpasswd -m sha-512); a plaintext password is refused. Empty: no
        # password (SSH keys only).
        "password_hash": "",
        "ssh_keys": [],
        "shell": "/bin/bash",
        "sudo_nopasswd": False,
    },
    "journald": {"Storage": "volatile", "RuntimeMaxUse": "50M"},
    "logrotate_compress": True,
    "kernel_args": {"present": ["fsck.mode=force", "fsck.repair=yes"], "absent": []},
    # Reboot by itself when a change needs it (kernel arguments): opt-in.
    "reboot_when_required": False,
    "reboot_delay_minutes": 1,
    "io_schedulers": {"mmc": "mq-deadline", "ssd": "mq-deadline", "usb": "mq-deadline"},
    "mail": {
        "enabled": False,
        "relay": "msmtp",
        "host": "",
        "port": 587,
        "tls": True,
        "from": "",
        "user": "",
        # pillar key holding the relay password (read on the node, never put in a return)
        "password_pillar": "",
        "root_alias": "",
    },
    "docker": {
        "daemon": {
            "storage-driver": "overlay2",
            "log-driver": "json-file",
            "log-opts": {"max-size": "10m", "max-file": "3"},
        },
        "data_root": "",
        # host:port of the cluster registry and its CA certificate (PEM)
        "registry": "",
        "registry_ca": "",
        "insecure_registries": [],
    },
    "timesync": True,
    "hostname": "",
    # Optional tuning, off by default.
    "tuning": {
        "zram": {"enabled": False, "algorithm": "zstd", "percent": 50},
        "root_mount_options": [],  # e.g. [noatime, lazytime]
        "cpu_governor": "",  # e.g. ondemand, schedutil, performance
        "irq_affinity": {
            "enabled": False,
            # regular expression over /proc/interrupts descriptions
            "pattern": "eth|xhci|ehci|ahci|dwc",
            "cpus": [],  # default: the board's big cores (armnode grain)
        },
    },
}
# Per os_family (the grain): package and service names, files. Armbian, Raspberry Pi OS and
# Ubuntu are Debian.
OS_FAMILY = {
    "Debian": {
        "os_packages": ["cron", "logrotate"],
        "admin_group": "sudo",
        "cron_service": "cron",
        "docker_package": "docker.io",
        "mail_packages": {"msmtp": ["msmtp", "msmtp-mta"], "ssmtp": ["ssmtp"]},
        "timesync_package": "systemd-timesyncd",
        "boot_tools": {"boot.txt": ["u-boot-tools"], "u-boot-menu": ["u-boot-menu"]},
        "mirror_file": "/etc/apt/sources.list",
        "zram_package": "zram-tools",
        "zram_config": "/etc/default/zramswap",
        "zram_service": "zramswap",
    },
    "Arch": {
        "os_packages": ["cronie", "logrotate"],
        "admin_group": "wheel",
        "cron_service": "cronie",
        "docker_package": "docker",
        "mail_packages": {"msmtp": ["msmtp", "msmtp-mta"], "ssmtp": ["ssmtp"]},
        # systemd-timesyncd is part of systemd on Arch
        "timesync_package": "",
        "boot_tools": {"boot.txt": ["uboot-tools"], "u-boot-menu": []},
        "mirror_file": "/etc/pacman.d/mirrorlist",
        "zram_package": "zram-generator",
        "zram_config": "/etc/systemd/zram-generator.conf",
        "zram_service": "systemd-zram-setup@zram0",
    },
}
# Per board (the armnode:board grain); a board not listed has none.
BOARDS = {
    # The HC1's SATA disk sits behind a USB bridge.
    "odroid-hc1": {"io_schedulers": {"usb": "mq-deadline"}},
}
# Mappings whose keys are the user's (checked by validate, where at all).
_FREE = ("mirrors", "journald", "io_schedulers", "docker:daemon", "mail_packages", "boot_tools")
# Lists of names (packages, users, keys, registries): each item a string.
_TYPES = {
    "packages": "strings",
    "default_users": "strings",
    "admin:ssh_keys": "strings",
    "docker:insecure_registries": "strings",
    "os_packages": "strings",
    "kernel_args:present": "strings",
    "kernel_args:absent": "strings",
}
# Every key a layer may set: the defaults and the os_family parameters.
_SCHEMA = {**DEFAULTS, **OS_FAMILY["Debian"]}
# Never in a return.
SECRETS = ("admin:password_hash",)


def _grain(grains: Mapping, key: str, default: str) -> str:
    value = (grains.get("armnode") or {}).get(key) if isinstance(grains, Mapping) else None
    return value if isinstance(value, str) and value else default


def resolve(opts=None, pillar=None, grains=None) -> tuple[dict, list[str]]:
    """``(settings, type problems)`` for this node; a wrongly typed value or an unknown key is
    left at its default (reported), so the formula renders and ``armnode.valid`` stops it."""
    grains = grains or {}
    layers = [
        DEFAULTS,
        OS_FAMILY.get(grains.get("os_family"), OS_FAMILY["Debian"]),
        BOARDS.get(_grain(grains, "board", "generic"), {}),
    ]
    problems: list[str] = []
    # Nested only: flat ``armnode.*`` minion options (boot_root, sysfs …) are not settings.
    for source in (opts, config.pillar_of(opts, pillar)):
        found, more = config.section(source, PILLAR, flat=False)
        problems += more
        lookup = found.pop("lookup", None) or {}  # found is a copy: the pillar keeps its key
        if not isinstance(lookup, Mapping):
            problems.append(f"{PILLAR}:lookup: must be a mapping, not {config.kind(lookup)}")
            lookup = {}
        layers += [lookup, found]
    conf, more = config.check(config.merge(*layers), _SCHEMA, PILLAR, free=_FREE, types=_TYPES)
    conf["board"] = _grain(grains, "board", "generic")
    conf["boot_flavour"] = _grain(grains, "boot_flavour", "unknown")
    return conf, problems + more


def settings(opts=None, pillar=None, grains=None, boot_root="/", strict=True) -> dict:
    """The node's settings (:func:`resolve`), validated (:func:`validate`); ArmswarmError
    naming every bad key unless ``strict`` is false."""
    conf, problems = resolve(opts, pillar, grains)
    if strict:
        problems += validate(conf, boot_root)
        if problems:
            raise ArmswarmError("invalid armnode settings: " + "; ".join(problems))
    return conf


def masked(conf: Mapping) -> dict:
    """``conf`` without its secrets, for returns."""
    return config.masked(conf, SECRETS)


# crypt(3) prefixes: MD5, bcrypt, SHA-256, SHA-512, yescrypt, gost-yescrypt, scrypt.
_HASH = re.compile(r"^\$(1|2[abxy]?|5|6|y|gy|7)\$[^\s:]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# A DNS name (underscores as internal DNS has them, a final dot), an IPv4 or a bare IPv6
# address: what msmtp and ssmtp hand to the resolver.
_HOST = re.compile(r"^([0-9A-Fa-f.]*:[0-9A-Fa-f:.]*|[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?)$")


# journald.conf's [Journal] settings (systemd 252, Debian 12; the last two came with 256,
# in Debian 13's 257: an older journald warns and ignores them).
JOURNALD_KEYS = (
    "Storage", "Compress", "Seal", "SplitMode", "SyncIntervalSec", "RateLimitIntervalSec",
    "RateLimitBurst", "SystemMaxUse", "SystemKeepFree", "SystemMaxFileSize", "SystemMaxFiles",
    "RuntimeMaxUse", "RuntimeKeepFree", "RuntimeMaxFileSize", "RuntimeMaxFiles",
    "MaxRetentionSec", "MaxFileSec", "ForwardToSyslog", "ForwardToKMsg", "ForwardToConsole",
    "ForwardToWall", "TTYPath", "MaxLevelStore", "MaxLevelSyslog", "MaxLevelKMsg",
    "MaxLevelConsole", "MaxLevelWall", "LineMax", "ReadKMsg", "Audit",
    "ForwardToSocket", "MaxLevelSocket",
)  # fmt: skip
# armnode:mirrors: Debian's archive and its security suite (one URL each), the components,
# Arch Linux ARM's mirrors (a list, in order).
_MIRROR_KEYS = ("debian", "security", "components", "arch")
# Keys whose values are whole files, where newlines belong (any other value with a newline or
# control character would add lines to the file it goes into: sources.list, msmtprc,
# journald, zram, IRQ, boot lines).
_MULTILINE = (f"{PILLAR}:scripts", f"{PILLAR}:docker:registry_ca")


def pacman_server_ok(url: str) -> bool:
    """An Arch Linux ARM mirror as ``armnode:mirrors:arch`` takes it: a base URL (the
    formula adds ``/$arch/$repo``) or a whole ``Server`` URL with pacman's ``$repo`` (and
    ``$arch``) in it, as the image's /etc/pacman.d/mirrorlist has them; no other ``$``
    (pacman would fetch it literally), no ``$arch`` without ``$repo`` (every repository from
    one directory)."""
    return "$" not in re.sub(r"\$(arch|repo)(?![A-Za-z0-9_])", "", url) and (
        "$repo" in url or "$arch" not in url
    )


def validate(settings: dict, boot_root: str = "/") -> list[str]:
    """Every problem, each naming its pillar key (values that may be secret are not shown)."""
    errors = config.control_characters(
        {k: v for k, v in settings.items() if k not in ("board", "boot_flavour")},
        PILLAR,
        _MULTILINE,
    )
    for key, value in (settings.get("journald") or {}).items():
        # One line of journald.conf each: KEY=value; journald only warns on a key it does
        # not know (or a key in the wrong case) and keeps its default.
        if key not in JOURNALD_KEYS:
            close = difflib.get_close_matches(str(key), JOURNALD_KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            errors.append(f"armnode:journald:{key}: not a journald.conf [Journal] setting{hint}")
        elif not isinstance(value, str | int | float):
            errors.append(f"armnode:journald:{key}: must be one value, not {config.kind(value)}")
    try:  # daemon.json: any JSON, nothing else (bytes, dates)
        json.dumps((settings.get("docker") or {}).get("daemon") or {})
    except (TypeError, ValueError):
        errors.append("armnode:docker:daemon: must be JSON (strings, numbers, lists, mappings)")
    for group in ("mail_packages", "boot_tools"):
        for key, value in (settings.get(group) or {}).items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors.append(f"armnode:{group}:{key}: must be a list of package names")
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
    if mirrors.get("security") and not mirrors.get("debian"):
        errors.append("armnode:mirrors:security: is used only with armnode:mirrors:debian")
    for key, value in mirrors.items():
        if key not in _MIRROR_KEYS:
            errors.append(f"armnode:mirrors:{key}: unknown key (known: {', '.join(_MIRROR_KEYS)})")
            continue
        if key == "components":
            if (
                not (
                    isinstance(value, str)
                    or (isinstance(value, list) and all(isinstance(v, str) for v in value))
                )
                or not str(value).strip()
            ):
                errors.append(
                    "armnode:mirrors:components: must be a string (main contrib) or a list of"
                    f" strings, not {config.kind(value)}"
                )
            elif bad := [
                c
                for c in (value.split() if isinstance(value, str) else value)
                if not apt_sources.component_ok(c)
            ]:
                errors.append(
                    f"armnode:mirrors:components: {bad!r} are not component names (main,"
                    " contrib, non-free-firmware, …: one word each)"
                )
            continue
        if key == "arch" and not isinstance(value, list):
            errors.append(f"armnode:mirrors:arch: must be a list of URLs, not {config.kind(value)}")
            continue
        if key != "arch" and not isinstance(value, str):
            errors.append(f"armnode:mirrors:{key}: must be one URL, not {config.kind(value)}")
            continue
        for url in value if isinstance(value, list) else [value]:
            if not apt_sources.uri_ok(url):
                errors.append(
                    f"armnode:mirrors:{key}: not a mirror URL (http://, https://, ftp:// "
                    "or file:///; no space or #, brackets only round an IPv6 host)"
                )
            elif key == "arch" and not pacman_server_ok(url):
                errors.append(
                    "armnode:mirrors:arch: pacman fills in only $arch and $repo: give the "
                    "mirror's base URL (http://host/archlinuxarm) or a whole Server URL with "
                    "$repo (http://host/archlinuxarm/$arch/$repo)"
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
    mail_conf = settings.get("mail") or {}
    if mail_conf.get("enabled"):
        if mail_conf.get("relay") not in mail.RELAYS:
            errors.append(
                f"armnode:mail:relay: {mail_conf.get('relay')!r} is not one of "
                f"{', '.join(mail.RELAYS)}"
            )
        host = mail_conf.get("host")
        if not host:
            errors.append("armnode:mail:host: the relay host is required")
        elif not isinstance(host, str) or not _HOST.match(host):
            # msmtp and ssmtp take the rest of the line as the host: a space is no error
            # there, just mail that never leaves
            errors.append(f"armnode:mail:host: {host!r} is not a host name or address")
        port = str(mail_conf.get("port", ""))
        if not port.isdigit() or not 0 < int(port) < 65536:
            errors.append(f"armnode:mail:port: {mail_conf.get('port')!r} is not a port")
        for key in ("from", "root_alias"):
            if mail_conf.get(key) and not _EMAIL.match(str(mail_conf[key])):
                errors.append(f"armnode:mail:{key}: {mail_conf[key]!r} is not an e-mail address")
    tuning = settings.get("tuning") or {}
    governor = tuning.get("cpu_governor") or ""
    if governor and not re.match(r"^[a-z0-9_]+$", str(governor)):
        errors.append(f"armnode:tuning:cpu_governor: {governor!r} is not a governor name")
    for option in tuning.get("root_mount_options") or []:
        if not isinstance(option, str) or not re.match(r"^[a-z0-9_=.-]+$", option):
            errors.append(f"armnode:tuning:root_mount_options: {option!r} is not a mount option")
    irq_conf = tuning.get("irq_affinity") or {}
    for cpu in irq_conf.get("cpus") or []:
        if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0:
            errors.append(
                f"armnode:tuning:irq_affinity:cpus: {cpu!r} is not a CPU number (0, 1, …)"
            )
    zram = tuning.get("zram") or {}
    algorithm = zram.get("algorithm")
    if algorithm is not None and not re.match(r"^[a-z0-9-]+$", str(algorithm)):
        errors.append(
            f"armnode:tuning:zram:algorithm: {zram.get('algorithm')!r} is not a compression "
            "algorithm name"
        )
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


# -- SSH lock-out ------------------------------------------------------------------------------
def usable_password(shadow_text: str, name: str) -> bool:
    """Whether ``name`` has a password one can log in with in /etc/shadow's text (not empty,
    not locked ``!…``, not ``*``)."""
    for line in shadow_text.splitlines():
        user, sep, rest = line.partition(":")
        if sep and user == name:
            hashed = rest.split(":", 1)[0]
            return bool(hashed) and not hashed.startswith(("!", "*"))
    return False


def authorized_keys(text: str) -> int:
    """How many keys an ``authorized_keys`` file holds (comments and blank lines are not)."""
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip()[:1] == "#")


def ssh_lockout(settings: dict, node_password: bool, node_keys: int) -> str:
    """Why removing the default users would leave nobody to log in over SSH, or ``""``: the
    admin gets a password or a key from pillar in the same run, or already has one on the
    node (``node_password``, ``node_keys``)."""
    admin = settings.get("admin") or {}
    if admin.get("password_hash") or admin.get("ssh_keys") or node_password or node_keys:
        return ""
    return (
        f"armnode:remove_default_users: not removing the default users: the admin "
        f"{admin.get('name')!r} has no password and no SSH key (armnode:admin:password_hash, "
        "armnode:admin:ssh_keys), so nobody could log in over SSH afterwards"
    )
