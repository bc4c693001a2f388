"""Volume backups: settings, names, manifests, retention and clean-up decisions (pure logic).

The I/O (tar, docker, the backup target) is in :mod:`armswarm_core.backup.backup_target`. Layout on
the backup target (a mounted network share)::

    <target>/volumes/<volume>/<backup id>/{data.tar.gz | data.tar, manifest.json, SHA256SUMS}
    <target>/mysql/<service or container>/<backup id>/{dump.sql.gz, manifest.json, SHA256SUMS}

A backup id is ``<UTC start, microseconds>Z_<minion id>``, so names sort by time and the
newest backup of a volume is found whichever node made it. A backup is written under a
``.<id>.partial`` name and renamed when complete: readers never see a half-written one.
``SHA256SUMS`` is in ``sha256sum`` format (``sha256sum -c`` checks it, also busybox's).

Each copy of a volume is a lineage (docs/backup.rst, "Lineages"): its marker beside the data
names the backup that holds its content; :func:`coverage`, :func:`lineage_retention` and
:func:`divergent` decide with it.
"""

import fnmatch
import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone

from armswarm_core import ArmswarmError
from armswarm_core.common import config

UTC = timezone.utc  # datetime.UTC needs Python 3.11


# Labels users put on volumes and containers.
LABEL_BACKUP = "io.armswarm.backup"  # "false" on a volume: never backed up
LABEL_KEEP = "io.armswarm.keep"  # "true" on a volume or container: never cleaned up
LABEL_MYSQL = "io.armswarm.backup.mysql"  # "true"/"false" on a container: dump it or not
LABEL_PAUSE = "io.armswarm.backup.pause"  # "false" on a container: not paused for a copy
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FORMAT = 1
ARCHIVES = {"gzip": "data.tar.gz", "none": "data.tar"}
DUMP = "dump.sql.gz"
PILLAR = "armswarm:backup"
# The one copy of the defaults (formula, module and states read them through settings()).
DEFAULTS = {
    "target": {"path": "/mnt/armswarm-backup", "require_mount": True},
    "keep_daily": 7,
    "compression": "gzip",
    "pause": True,
    # The longest a copy may take (containers paused meanwhile): a hung share fails the
    # backup and unpauses them after this many seconds.
    "pause_timeout_seconds": 600,
    "exclude": [],
    "mysql": {
        "enabled": True,
        "images": ["mysql", "mariadb"],
        # <service or container name>: {user: root, password_pillar: <pillar key>}
        "credentials": {},
        # The longest one dump may take, its writes to the share included: a hung share or
        # a dump stuck on a lock is given up after this many seconds, nothing published.
        "timeout_seconds": 3600,
    },
    "cleanup": {
        "enabled": True,
        "container_max_age_hours": 24,
        "images": True,
        "volumes": True,
    },
    "schedule": {
        "enabled": True,
        "backup": "30 2 * * *",
        "mysql": "0 2 * * *",
        "cleanup": "30 4 * * *",
    },
    # Where the formula installs the restore-on-first-start helper (image authors copy it).
    "helper_path": "/usr/local/sbin/armswarm-restore",
    # PATH for the cron jobs (salt-call lives in /usr/bin or /usr/local/bin).
    "cron_path": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


_ID = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)_(.+)$")
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S.*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CRON_FIELD = re.compile(r"^[0-9*/,\-]+$")


_TYPES = {
    "cleanup:container_max_age_hours": "number",
    "pause_timeout_seconds": "number",
    "exclude": "strings",
    "mysql:images": "strings",
    "mysql:timeout_seconds": "number",
}
# An absolute path of plain characters: the helper's path is a file name in a state, the cron
# PATH goes into root's crontab line, where cron's shell would take a space, ``;``, ``$`` or a
# quote as the start of another command.
_PLAIN_PATH = r"/[A-Za-z0-9_.+@/-]*"
_HELPER_PATH = re.compile(rf"^{_PLAIN_PATH}$")
_CRON_PATH = re.compile(rf"^{_PLAIN_PATH}(:{_PLAIN_PATH})*$")
_CREDENTIAL_KEYS = ("user", "password_pillar")


def _check(conf: Mapping) -> tuple[dict, list[str]]:
    """Strict types against :data:`DEFAULTS`, then the rules types cannot say."""
    clean, problems = config.check(conf, DEFAULTS, PILLAR, types=_TYPES)
    problems += config.control_characters(clean, PILLAR)
    if not clean["target"]["path"].startswith("/"):
        problems.append(f"{PILLAR}:target:path must be an absolute path")
    if clean["keep_daily"] < 1:
        problems.append(f"{PILLAR}:keep_daily must be an integer >= 1, not {clean['keep_daily']}")
    if clean["compression"] not in ARCHIVES:
        problems.append(f"{PILLAR}:compression must be one of {sorted(ARCHIVES)}")
    # a new mapping: the merged input is never changed
    credentials = clean["mysql"]["credentials"] = dict(clean["mysql"]["credentials"])
    for name, cred in list(credentials.items()):
        if not isinstance(cred, Mapping) or "password" in cred:
            # A password written here would travel in the state's arguments and returns:
            # reported, and dropped from the settings even when they are returned anyway.
            problems.append(
                f"{PILLAR}:mysql:credentials:{name}: give password_pillar (a pillar key), "
                "not a password"
            )
            credentials[name] = (
                {k: v for k, v in cred.items() if k != "password"}
                if isinstance(cred, Mapping)
                else {}
            )
            continue
        for key, value in cred.items():
            where = f"{PILLAR}:mysql:credentials:{name}:{key}"
            if key not in _CREDENTIAL_KEYS:
                problems.append(f"{where}: unknown key (known: {', '.join(_CREDENTIAL_KEYS)})")
            elif not isinstance(value, str) or not value:
                problems.append(f"{where}: must be a string, not {config.kind(value)}")
    if not _HELPER_PATH.fullmatch(clean["helper_path"]):
        problems.append(
            f"{PILLAR}:helper_path must be an absolute path of letters, digits and _.+@/-"
        )
    if not _CRON_PATH.fullmatch(clean["cron_path"]):
        problems.append(
            f"{PILLAR}:cron_path must be absolute directories (letters, digits and _.+@/-) "
            "separated by ':'"
        )
    for key, limit in (
        ("pause_timeout_seconds", clean["pause_timeout_seconds"]),
        ("mysql:timeout_seconds", clean["mysql"]["timeout_seconds"]),
    ):
        if limit <= 0:
            problems.append(f"{PILLAR}:{key} must be > 0, not {limit!r}")
    age = clean["cleanup"]["container_max_age_hours"]
    if age < 0:
        problems.append(f"{PILLAR}:cleanup:container_max_age_hours must be >= 0, not {age!r}")
    for job in ("backup", "mysql", "cleanup"):
        spec = clean["schedule"][job]
        if cron_fields(spec) is None:
            problems.append(f"{PILLAR}:schedule:{job} must be 5 cron fields, not {spec!r}")
    return clean, problems


def resolve(opts: Mapping | None = None, pillar: Mapping | None = None) -> tuple[dict, list]:
    """``(settings, problems)``: :data:`DEFAULTS` < ``armswarm:backup`` in opts < in pillar,
    key by key, typed (a wrongly typed value is left at its default)."""
    conf, problems = config.lookup(PILLAR, DEFAULTS, opts, pillar)
    clean, more = _check(conf)
    return clean, problems + more


def settings(opts: Mapping | None = None, pillar: Mapping | None = None, strict=True) -> dict:
    """The backup settings (see :func:`resolve`); ArmswarmError naming every bad key unless
    ``strict`` is false (the formula renders, its validation state reports them)."""
    conf, problems = resolve(opts, pillar)
    if problems and strict:
        raise ArmswarmError("invalid armswarm:backup settings: " + "; ".join(problems))
    return conf


def validate(conf: Mapping) -> list[str]:
    """Every problem with merged settings (empty list when valid)."""
    return _check(config.merge(DEFAULTS, conf))[1]


def cron_fields(spec) -> dict | None:
    """``"30 2 * * *"`` → the ``cron.present`` arguments, or None when malformed."""
    if not isinstance(spec, str):
        return None
    fields = spec.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        return None
    return dict(zip(("minute", "hour", "daymonth", "month", "dayweek"), fields, strict=True))


def check_name(name: str, what: str = "volume") -> str:
    """A volume or dump-set name safe to use as a directory name on the target."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ArmswarmError(f"invalid {what} name {name!r}")
    return name


# -- backup ids ----------------------------------------------------------------------------
def backup_id(started: datetime, node: str) -> str:
    return f"{started.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}_{node}"


def parse_backup_id(name: str) -> tuple[datetime, str] | None:
    """``(start time, node)`` of a complete backup's directory name; None for anything else."""
    match = _ID.match(name)
    if not match:
        return None
    try:  # the pattern admits impossible dates such as month 13
        started = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return started, match.group(2)


def partial_name(bid: str) -> str:
    return f".{bid}.partial"


# -- manifests -----------------------------------------------------------------------------
def sums_text(sums: Mapping[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


def parse_sums(text: str) -> dict[str, str]:
    """``SHA256SUMS`` → ``{file: hex digest}``; ArmswarmError on a malformed line."""
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SUM_LINE.match(line)
        if not match or "/" in match.group(2):
            raise ArmswarmError(f"{SUMS} line {number} is malformed")
        sums[match.group(2)] = match.group(1)
    if not sums:
        raise ArmswarmError(f"{SUMS} is empty")
    return sums


def make_manifest(kind, name, node, started, finished, archive, size, digest, **extra) -> dict:
    return {
        "format": FORMAT,
        "kind": kind,
        "name": name,
        "node": node,
        "started": started.astimezone(UTC).isoformat(),
        "finished": finished.astimezone(UTC).isoformat(),
        "archive": archive,
        "size": size,
        "sha256": digest,
        **extra,
    }


def parse_manifest(text: str, sums: Mapping[str, str]) -> dict:
    """The manifest of a backup, checked against its ``SHA256SUMS`` (not the data itself)."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ArmswarmError(f"{MANIFEST} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArmswarmError(f"{MANIFEST} has an unknown format")
    missing = [k for k in ("kind", "name", "archive", "size", "sha256") if k not in manifest]
    if missing:
        raise ArmswarmError(f"{MANIFEST} lacks {missing}")
    archive = manifest["archive"]
    if archive not in (*ARCHIVES.values(), DUMP):
        raise ArmswarmError(f"{MANIFEST} names an unexpected archive {archive!r}")
    if sums.get(archive) != manifest["sha256"]:
        raise ArmswarmError(f"{MANIFEST} and {SUMS} disagree about {archive}")
    return manifest


# -- retention -----------------------------------------------------------------------------
def retention(ids: list[str], keep_daily: int) -> tuple[list[str], list[str]]:
    """``(keep, delete)`` among complete backup ids of one volume: the newest backup of each
    of the ``keep_daily`` most recent days that have one. Ids that do not parse are kept."""
    dated = sorted(
        ((parsed[0], bid) for bid in ids if (parsed := parse_backup_id(bid))), reverse=True
    )
    keep, delete, days = [], [], []
    for started, bid in dated:
        day = started.date()
        if day not in days and len(days) < keep_daily:
            days.append(day)
            keep.append(bid)
        else:
            delete.append(bid)
    keep += [bid for bid in ids if not parse_backup_id(bid)]
    return sorted(keep), sorted(delete)


def lineage_retention(items: list[dict], keep_daily: int) -> tuple[list[str], list[str]]:
    """``(keep, delete)`` among complete backups ``{id, lineage, origin}`` of one volume:
    the daily rule of :func:`retention` over all of them, and the newest backup of every
    lineage (a divergent copy of the volume, see docs/backup.rst) on top, unless a restore
    continued it (another lineage names it as its ``origin``). Backups without a lineage
    (dumps, older backups) form one lineage."""
    keep, _delete = retention([b["id"] for b in items], keep_daily)
    keep = set(keep)
    origins = {b.get("origin") for b in items if b.get("origin")}
    newest: dict = {}
    for b in items:
        parsed = parse_backup_id(b["id"])
        if parsed is None:
            continue
        line = b.get("lineage") or ""
        if line not in newest or parsed[0] > newest[line][0]:
            newest[line] = (parsed[0], b["id"])
    keep |= {bid for _, bid in newest.values() if bid not in origins}
    ids = [b["id"] for b in items]
    return sorted(keep), sorted(bid for bid in ids if bid not in keep)


def divergent(items: list[dict], chosen: dict) -> dict[str, str]:
    """``{lineage: its newest backup id}`` for the lineages other than ``chosen``'s, leaving
    out the one ``chosen`` was restored from (its ancestor, not a divergent copy)."""
    newest: dict = {}
    for b in items:
        line = b.get("lineage")
        if not line or line == chosen.get("lineage") or parse_backup_id(b["id"]) is None:
            continue
        if line not in newest or b["id"] > newest[line]:
            newest[line] = b["id"]
    return {line: bid for line, bid in sorted(newest.items()) if bid != chosen.get("origin")}


def new_lineage(node: str, now: datetime) -> str:
    """A lineage id: where and when this copy of a volume started, plus randomness (two
    copies started in the same microsecond on one node still differ)."""
    return f"{backup_id(now, node)}.{secrets.token_hex(4)}"


def coverage(marker: Mapping | None, fingerprint: str, item: Mapping | None, digest) -> str | None:
    """None when the backup ``marker`` names holds exactly the volume's current content
    (``fingerprint``) and its archive verifies, else why not. ``item``: that backup as
    listed on the target (None when gone); ``digest``: a callable reading its archive's
    SHA-256 (only called when everything else agrees)."""
    if not marker or not marker.get("backup"):
        return "no backup of its current content (never backed up or restored on this node)"
    bid = marker["backup"]
    if not marker.get("content"):
        return f"its backup {bid} was made while it changed: not known to hold its content"
    if marker["content"] != fingerprint:
        return f"changed since its backup {bid}"
    if item is None:
        return f"its backup {bid} is no longer on the target"
    if "error" in item:
        return f"its backup {bid} is damaged: {item['error']}"
    manifest = item["manifest"]
    if manifest.get("sha256") != marker.get("sha256"):
        return f"its backup {bid} on the target is not the archive it made"
    read = digest()
    if read != manifest["sha256"]:
        return f"its backup {bid} fails its {SUMS} check (archive damaged or truncated)"
    return None


def excluded(volume: str, labels: Mapping | None, patterns) -> str | None:
    """Why ``volume`` is not backed up (opt-out label or exclude pattern), else None."""
    if str((labels or {}).get(LABEL_BACKUP, "")).lower() in ("false", "no", "0", "off"):
        return f"labelled {LABEL_BACKUP}=false"
    for pattern in patterns or ():
        if fnmatch.fnmatchcase(volume, str(pattern)):
            return f"excluded by pattern {pattern!r}"
    return None


def is_true(value) -> bool:
    return str(value or "").lower() in ("true", "yes", "1", "on")


# -- clean-up ------------------------------------------------------------------------------
STOPPED = ("exited", "created", "dead")


def plan_cleanup(
    containers: list[dict],
    volumes: list[dict],
    covered,
    now: float,
    max_age_hours: float,
    target_problem: str | None = None,
    clean_volumes: bool = True,
) -> dict:
    """What a clean-up removes, and why each volume is kept.

    ``containers``: ``{id, name, state, finished, labels, volumes}`` (``finished`` in epoch
    seconds, or the creation time for a container that never ran); ``volumes``: ``{name,
    labels, last_change, empty}`` (``last_change`` None when it cannot be read);
    ``covered(name)``: None when an intact backup of exactly the volume's current content
    exists (see :func:`coverage`), else why not; called only for volumes that could go.

    A stopped container goes once it has been stopped longer than ``max_age_hours`` unless
    labelled keep. A volume goes only when no remaining container uses it, it is not labelled
    keep, and it is empty or covered. A newer backup made elsewhere (another node, another
    lineage) never covers it. When the backup target cannot be read (``target_problem``)
    only empty volumes can go.
    """
    limit = now - max_age_hours * 3600
    remove_containers = []
    for c in containers:
        if c["state"] not in STOPPED or is_true(c["labels"].get(LABEL_KEEP)):
            continue
        if c.get("finished") is not None and c["finished"] <= limit:
            remove_containers.append(c["id"])
    users: dict[str, list[str]] = {}
    for c in containers:
        if c["id"] not in remove_containers:
            for vol in c.get("volumes", ()):
                users.setdefault(vol, []).append(c["name"])
    remove_volumes, kept = [], {}
    for vol in volumes:
        name = vol["name"]
        if not clean_volumes:
            continue
        if name in users:
            kept[name] = f"in use by {', '.join(sorted(users[name]))}"
        elif is_true((vol.get("labels") or {}).get(LABEL_KEEP)):
            kept[name] = f"labelled {LABEL_KEEP}=true"
        elif vol.get("empty"):
            remove_volumes.append(name)
        elif vol.get("last_change") is None:
            kept[name] = "its content cannot be read (not a local volume?)"
        elif target_problem:
            kept[name] = f"backups cannot be checked: {target_problem}"
        elif (why := covered(name)) is not None:
            kept[name] = why
        else:
            remove_volumes.append(name)
    return {"containers": remove_containers, "volumes": remove_volumes, "kept": kept}


def mysql_detected(image: str, labels: Mapping | None, names) -> bool:
    """A container runs MySQL/MariaDB: its label says so, or its image's name matches."""
    label = (labels or {}).get(LABEL_MYSQL)
    if label is not None:
        return is_true(label)
    repo = image.split("@", maxsplit=1)[0]
    last = repo.rsplit("/", 1)[-1].split(":")[0].lower()
    return any(str(n).lower() in last for n in names or ())


def dump_set_name(container_name: str, labels: Mapping | None) -> str:
    """Dumps are filed under the swarm service's name (stable across nodes), else the
    container's."""
    return (labels or {}).get(SWARM_SERVICE_LABEL) or container_name.lstrip("/")
