"""Volume backups, MySQL/MariaDB dumps, restores and the daily clean-up, on one node.

Decisions (what to back up, keep, remove) are in :mod:`armswarm_core.backup`; this module does
the I/O: GNU ``tar`` of a volume's directory (read on the node, as the minion runs there),
the docker engine (pause, exec, remove) and the backup target (a mounted network share).
Nothing here logs or returns a database password.
"""

import gzip
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core import backup as plan

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PROBE = ".armswarm-write-probe"


# -- the target ----------------------------------------------------------------------------
def target_root(conf: dict, write: bool) -> Path:
    """The backup target's path once it is usable; a clear ArmswarmError otherwise."""
    root = Path(conf["target"]["path"])
    if not root.is_dir():
        raise ArmswarmError(f"backup target {root} does not exist or is not a directory")
    if conf["target"].get("require_mount", True) and not os.path.ismount(root):
        raise ArmswarmError(
            f"backup target {root} is not a mount point (is the network drive mounted?)"
        )
    if write:
        probe = root / PROBE
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            reason = "read-only" if exc.errno == 30 else exc.strerror
            raise ArmswarmError(f"backup target {root} is not writable ({reason})") from exc
    return root


def backups(root: Path, kind: str, name: str) -> list[dict]:
    """Complete backups of ``name`` (newest first) with their parsed manifest; backups whose
    manifest or checksum file is damaged are listed with ``error``."""
    folder = root / kind / name
    out = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        parsed = plan.parse_backup_id(entry.name)
        if not parsed or not entry.is_dir():
            continue
        item = {"id": entry.name, "path": str(entry), "started": parsed[0], "node": parsed[1]}
        try:
            sums = plan.parse_sums((entry / plan.SUMS).read_text())
            manifest_text = (entry / plan.MANIFEST).read_text()
            if _sha256_bytes(manifest_text.encode()) != sums.get(plan.MANIFEST):
                raise ArmswarmError(f"checksum mismatch for {plan.MANIFEST}")
            item["manifest"] = plan.parse_manifest(manifest_text, sums)
        except (OSError, ArmswarmError) as exc:
            item["error"] = str(exc)
        out.append(item)
    return sorted(out, key=lambda b: b["started"], reverse=True)


def latest_good(root: Path, kind: str, name: str) -> dict | None:
    for item in backups(root, kind, name):
        if "error" not in item:
            return item
    return None


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _HashingWriter:
    """A file that hashes and counts what goes through it."""

    def __init__(self, fh):
        self.fh, self.hash, self.size = fh, hashlib.sha256(), 0

    def write(self, data):
        self.hash.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self):
        self.fh.flush()


def _publish(folder: Path, bid: str, produce, manifest_fields: dict) -> dict:
    """Write a backup under its partial name with ``produce(writer) -> archive name``, add the
    manifest and checksums, fsync and rename it into place. Returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / plan.partial_name(bid)
    partial.mkdir()
    try:
        started = datetime.now(plan.UTC)
        archive = produce_name = None
        with open(partial / "archive.tmp", "wb") as fh:
            writer = _HashingWriter(fh)
            produce_name = produce(writer)
            fh.flush()
            os.fsync(fh.fileno())
        archive = produce_name
        (partial / "archive.tmp").rename(partial / archive)
        manifest = plan.make_manifest(
            started=manifest_fields.pop("started", started),
            finished=datetime.now(plan.UTC),
            archive=archive,
            size=writer.size,
            digest=writer.hash.hexdigest(),
            **manifest_fields,
        )
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (partial / plan.MANIFEST).write_text(text)
        sums = {archive: manifest["sha256"], plan.MANIFEST: _sha256_bytes(text.encode())}
        (partial / plan.SUMS).write_text(plan.sums_text(sums))
        _fsync_dir(partial)
        partial.rename(folder / bid)
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_retention(root: Path, kind: str, name: str, keep_daily: int) -> list[str]:
    """Delete the backups of ``name`` that retention does not keep (ids returned). Damaged
    backups count as neither kept nor deleted: they stay for a person to look at."""
    items = backups(root, kind, name)
    good = [b["id"] for b in items if "error" not in b]
    if not good:
        return []
    _keep, delete = plan.retention(good, keep_daily)
    removed = []
    for bid in delete:
        try:
            shutil.rmtree(root / kind / name / bid)
            removed.append(bid)
        except FileNotFoundError:
            pass  # another node's retention run got there first
    # A partial backup older than a day is a crashed run's leftover.
    for entry in (root / kind / name).glob(".*.partial"):
        if time.time() - entry.stat().st_mtime > 86400:
            shutil.rmtree(entry, ignore_errors=True)
    return removed


# -- volumes -------------------------------------------------------------------------------
def scan(path) -> dict:
    """Size, file count and last change (newest mtime/ctime, root included) of a directory."""
    st = os.lstat(path)
    last, total, files, entries = max(st.st_mtime, st.st_ctime), 0, 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in dirnames + filenames:
            entries += 1
            try:
                st = os.lstat(os.path.join(dirpath, entry))
            except FileNotFoundError:
                continue
            last = max(last, st.st_mtime, st.st_ctime)
            if entry in filenames:
                files += 1
                total += st.st_size
    return {"bytes": total, "files": files, "last_change": last, "empty": entries == 0}


def volume_info(engine) -> list[dict]:
    """Every volume with its labels, mount point and the containers that mount it."""
    users: dict[str, list] = {}
    for c in engine.api.containers(all=True):
        for mount in c.get("Mounts") or ():
            if mount.get("Type") == "volume":
                users.setdefault(mount.get("Name"), []).append(c)
    out = []
    for vol in engine.api.volumes().get("Volumes") or ():
        out.append(
            {
                "name": vol["Name"],
                "driver": vol.get("Driver"),
                "labels": vol.get("Labels") or {},
                "mountpoint": vol.get("Mountpoint"),
                "containers": users.get(vol["Name"], []),
            }
        )
    return out


def _drain(errfile) -> str:
    """The text a finished process wrote to ``errfile`` (a temporary file), which is closed."""
    with errfile:
        errfile.seek(0)
        return errfile.read().decode(errors="replace").strip()


def _tar_create(source: str, compression: str, writer):
    """Stream a tar (optionally gzip -1: fast on small CPUs) of ``source`` into ``writer``."""
    # stderr goes to a file: a pipe nobody reads while the data streams could fill and stall tar
    errfile = tempfile.TemporaryFile()
    tar = subprocess.Popen(
        ["tar", "--create", "--file=-", "--numeric-owner", "--directory", source, "."],
        stdout=subprocess.PIPE,
        stderr=errfile,
    )
    procs, out = [tar], tar.stdout
    if compression == "gzip":
        gz = subprocess.Popen(["gzip", "-1", "-c"], stdin=tar.stdout, stdout=subprocess.PIPE)
        tar.stdout.close()
        procs.append(gz)
        out = gz.stdout
    try:
        while chunk := out.read(CHUNK):
            writer.write(chunk)
    finally:
        out.close()
        codes = [p.wait() for p in procs]
        err = _drain(errfile)
    # GNU tar exits 1 when a file changed while it was read: kept, with the warning.
    if codes[0] not in (0, 1) or any(codes[1:]):
        raise ArmswarmError(f"tar of {source} failed ({codes}): {err[-500:]}")
    return err if codes[0] == 1 else ""


def backup_volumes(engine, conf: dict, node: str, names=None, force=False) -> dict:
    """Back up the node's volumes (all, or ``names``): one archive per volume, containers
    using it paused for the copy, then retention. Unchanged volumes are skipped (unless
    ``force``): a stale copy left on a node the service moved away from never shadows the
    newer backups made where it runs now."""
    root = target_root(conf, write=True)
    wanted = set(names) if names else None
    result = {"backed_up": {}, "skipped": {}, "errors": {}, "removed": {}}
    for vol in volume_info(engine):
        name = vol["name"]
        if wanted is not None and name not in wanted:
            continue
        why = plan.excluded(name, vol["labels"], conf["exclude"])
        if why is None and vol["driver"] != "local":
            why = f"driver {vol['driver']} (only local volumes are backed up)"
        if why:
            result["skipped"][name] = why
            continue
        try:
            done = _backup_one(engine, conf, root, node, vol, force)
        except (ArmswarmError, OSError) as exc:
            result["errors"][name] = str(exc)
            continue
        if isinstance(done, str):
            result["skipped"][name] = done
            continue
        result["backed_up"][name] = done
        _retain(result, root, "volumes", name, conf["keep_daily"])
    if wanted:
        for name in sorted(wanted - {v["name"] for v in volume_info(engine)}):
            result["errors"][name] = "no such volume on this node"
    return result


def _backup_one(engine, conf, root, node, vol, force):
    name = plan.check_name(vol["name"])
    source = vol["mountpoint"]
    info = scan(source)
    if info["empty"]:
        return "empty"
    latest = latest_good(root, "volumes", name)
    if latest and not force and latest["started"].timestamp() > info["last_change"]:
        return f"unchanged since backup {latest['id']}"
    paused = []
    started = datetime.now(plan.UTC)
    try:
        if conf["pause"]:
            for c in vol["containers"]:
                if c.get("State") == "running" and plan.is_true(
                    (c.get("Labels") or {}).get(plan.LABEL_PAUSE, "true")
                ):
                    engine.api.pause(c["Id"])
                    paused.append(c)
        # The start time is taken once writers are paused: later changes are not in it.
        started = datetime.now(plan.UTC)
        warnings = []
        clock = time.monotonic()

        def produce(writer):
            warning = _tar_create(source, conf["compression"], writer)
            if warning:
                warnings.append(warning)
            return plan.ARCHIVES[conf["compression"]]

        manifest = _publish(
            root / "volumes" / name,
            plan.backup_id(started, node),
            produce,
            {
                "kind": "volume",
                "name": name,
                "node": node,
                "started": started,
                "compression": conf["compression"],
                "source_bytes": info["bytes"],
                "files": info["files"],
                "last_change": info["last_change"],
                "paused": [c["Names"][0].lstrip("/") for c in paused],
            },
        )
        seconds = time.monotonic() - clock
    finally:
        for c in paused:
            try:
                engine.api.unpause(c["Id"])
            except Exception as exc:  # noqa: BLE001 - report, and unpause the others
                log.error("backup: cannot unpause %s: %s", c["Id"][:12], exc)
    return {
        "id": plan.backup_id(started, node),
        "bytes": info["bytes"],
        "archive_bytes": manifest["size"],
        "sha256": manifest["sha256"],
        "seconds": round(seconds, 3),
        "paused": manifest["paused"],
        **({"warning": warnings[0][-300:]} if warnings else {}),
    }


def _volume_dir(engine, name: str, create: bool):
    import docker.errors  # noqa: PLC0415 - the SDK is checked by the loader's __virtual__

    try:
        vol = engine.api.inspect_volume(name)
    except docker.errors.NotFound:
        if not create:
            return None, None
        vol = engine.api.create_volume(name, driver="local")
    if vol.get("Driver") != "local":
        raise ArmswarmError(f"volume {name} uses driver {vol.get('Driver')}: only local ones")
    return vol, Path(vol["Mountpoint"])


def volume_state(engine, name: str) -> str:
    """``missing``, ``empty`` or ``data``."""
    _vol, data = _volume_dir(engine, plan.check_name(name), create=False)
    if data is None:
        return "missing"
    return "empty" if scan(data)["empty"] else "data"


def choose(root: Path, kind: str, name: str, bid: str | None) -> dict:
    items = backups(root, kind, name)
    if bid:
        for item in items:
            if item["id"] == bid:
                break
        else:
            raise ArmswarmError(f"no backup {bid} of {name} in {root / kind / name}")
    else:
        good = [b for b in items if "error" not in b]
        if not good:
            raise ArmswarmError(f"no usable backup of {name} in {root / kind / name}")
        item = good[0]
    if "error" in item:
        raise ArmswarmError(f"backup {item['id']} of {name} is damaged: {item['error']}")
    return item


def restore_volume(engine, conf: dict, name: str, bid: str | None = None, force=False) -> dict:
    """Restore ``name`` from its newest good backup (or ``bid``) on this node, creating the
    volume when missing. The archive is extracted into a staging directory next to the
    volume's data while its checksum is computed, and moved in only when the checksum
    matches: a corrupted archive leaves the volume as it was. A volume with data is refused
    unless ``force`` (its content is then replaced)."""
    plan.check_name(name)
    root = target_root(conf, write=False)
    item = choose(root, "volumes", name, bid)
    manifest = item["manifest"]
    _vol, data = _volume_dir(engine, name, create=False)
    if data is not None and not scan(data)["empty"] and not force:
        raise ArmswarmError(f"volume {name} has data: pass force=True to replace it")
    created = data is None
    if created:
        _vol, data = _volume_dir(engine, name, create=True)
    staging = data.parent / f"armswarm-restore.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    clock = time.monotonic()
    try:
        digest, size, err = _extract(
            Path(item["path"]) / manifest["archive"],
            staging,
            manifest.get("compression", "gzip"),
        )
        if digest != manifest["sha256"] or size != manifest["size"]:
            raise ArmswarmError(
                f"backup {item['id']} of {name}: checksum mismatch "
                f"(expected {manifest['sha256'][:16]}…, read {digest[:16]}…): "
                "restore refused, the volume is untouched"
            )
        if err is not None:
            raise ArmswarmError(f"backup {item['id']} of {name}: extraction failed: {err}")
        if force:
            for entry in list(data.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        for entry in staging.iterdir():
            os.rename(entry, data / entry.name)
        # The archive's "./" carries the volume root's owner and mode (e.g. mysql:mysql).
        st = staging.stat()
        os.chown(data, st.st_uid, st.st_gid)
        os.chmod(data, st.st_mode & 0o7777)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            # Leave the node as it was: no empty volume made by a refused restore.
            engine.api.remove_volume(name)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return {
        "volume": name,
        "backup": item["id"],
        "bytes": manifest.get("source_bytes"),
        "files": manifest.get("files"),
        "seconds": round(time.monotonic() - clock, 3),
    }


def _extract(archive: Path, dest: Path, compression: str):
    """Feed ``archive`` to ``tar -x`` while hashing it; (sha256, size, tar error or None).
    The whole file is always read, so the checksum is known even when tar gives up."""
    argv = ["tar", "--extract", "--file=-", "--numeric-owner", "--directory", str(dest)]
    if compression == "gzip":
        argv.append("--gzip")
    errfile = tempfile.TemporaryFile()  # not a pipe: a chatty tar must not stall on it
    tar = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=errfile)
    digest, size, sink = hashlib.sha256(), 0, tar.stdin
    with open(archive, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if sink:
                try:
                    sink.write(chunk)
                except BrokenPipeError:
                    sink = None
    try:
        tar.stdin.close()
    except BrokenPipeError:
        pass
    code = tar.wait()
    err = _drain(errfile)
    return digest.hexdigest(), size, (None if code == 0 else (err[-500:] or f"exit {code}"))


def verify(conf: dict, kind: str, name: str, bid: str | None = None) -> dict:
    """Recompute the checksums of a backup (the newest good one by default)."""
    root = target_root(conf, write=False)
    item = choose(root, kind, name, bid)
    manifest = item["manifest"]
    digest = hashlib.sha256()
    with open(Path(item["path"]) / manifest["archive"], "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    ok = digest.hexdigest() == manifest["sha256"]
    return {"id": item["id"], "ok": ok, "archive": manifest["archive"], "size": manifest["size"]}


def listing(conf: dict, kind: str, name: str | None = None) -> dict:
    """``{name: [backup ids with node, size, status]}`` on the target."""
    root = target_root(conf, write=False)
    base = root / kind
    names = [name] if name else sorted(p.name for p in base.iterdir()) if base.is_dir() else []
    out = {}
    for n in names:
        out[n] = [
            {
                "id": b["id"],
                "node": b["node"],
                "size": (b.get("manifest") or {}).get("size"),
                "status": b.get("error", "complete"),
            }
            for b in backups(root, kind, n)
        ]
    return out


# -- MySQL / MariaDB -----------------------------------------------------------------------
DUMP_CMD = (
    'exec "$(command -v mariadb-dump || command -v mysqldump)" --all-databases '
    '--single-transaction --routines --events --triggers --user="$ARMSWARM_DB_USER"'
)
CLIENT_CMD = 'exec "$(command -v mariadb || command -v mysql)" --user="$ARMSWARM_DB_USER"'
ROOT_PASSWORD_ENV = ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD")
EMPTY_PASSWORD_ENV = ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "MYSQL_ALLOW_EMPTY_PASSWORD")


def mysql_containers(engine, conf: dict) -> list[dict]:
    """Running containers detected as MySQL/MariaDB: ``{id, name, set, env}``."""
    out = []
    for c in engine.api.containers(filters={"status": "running"}):
        labels = c.get("Labels") or {}
        if plan.mysql_detected(c.get("Image") or "", labels, conf["mysql"]["images"]):
            name = c["Names"][0].lstrip("/")
            out.append({"id": c["Id"], "name": name, "set": plan.dump_set_name(name, labels)})
    return out


def credentials(engine, conf: dict, container: dict, pillar_get) -> tuple[str, str] | None:
    """``(user, password)`` from pillar (``mysql:credentials:<set or name>``) or the
    container's environment (``*_ROOT_PASSWORD``, ``*_ROOT_PASSWORD_FILE``); None if none."""
    creds = conf["mysql"]["credentials"]
    entry = creds.get(container["set"]) or creds.get(container["name"])
    if entry:
        password = pillar_get(entry.get("password_pillar", ""), None)
        if password is None:
            return None
        return entry.get("user", "root"), str(password)
    env = dict(
        item.split("=", 1)
        for item in engine.api.inspect_container(container["id"])["Config"].get("Env") or ()
        if "=" in item
    )
    for key in ROOT_PASSWORD_ENV:
        if env.get(key):
            return "root", env[key]
        if env.get(f"{key}_FILE"):
            code, out = _exec_output(engine, container["id"], ["cat", env[f"{key}_FILE"]])
            if code == 0:
                return "root", out.decode().rstrip("\n")
    if any(plan.is_true(env.get(k)) for k in EMPTY_PASSWORD_ENV):
        return "root", ""
    return None


def _exec_output(engine, cid, argv):
    exec_id = engine.api.exec_create(cid, argv, stdout=True, stderr=False)["Id"]
    out = engine.api.exec_start(exec_id)
    return engine.api.exec_inspect(exec_id)["ExitCode"], out


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def mysql_dump(engine, conf: dict, node: str, pillar_get, only=None) -> dict:
    """``mysqldump --single-transaction`` of every detected MySQL/MariaDB container (or the
    ones named in ``only``), gzip-compressed, with manifest and checksums, then retention."""
    root = target_root(conf, write=True)
    result = {"dumped": {}, "skipped": {}, "errors": {}, "removed": {}}
    if not conf["mysql"]["enabled"]:
        result["skipped"]["*"] = "mysql dumps are disabled (armswarm:backup:mysql:enabled)"
        return result
    for c in mysql_containers(engine, conf):
        if only and c["name"] not in only and c["set"] not in only:
            continue
        try:
            plan.check_name(c["set"], "dump set")
            creds = credentials(engine, conf, c, pillar_get)
            if creds is None:
                result["skipped"][c["set"]] = "no credentials (pillar or container environment)"
                continue
            result["dumped"][c["set"]] = _dump_one(engine, conf, root, node, c, creds)
        except (ArmswarmError, OSError) as exc:
            result["errors"][c["set"]] = str(exc)
            continue
        _retain(result, root, "mysql", c["set"], conf["keep_daily"])
    return result


def _retain(result: dict, root: Path, kind: str, name: str, keep_daily: int):
    """Retention after a good backup; a failure there is reported, the backup stays good."""
    try:
        removed = apply_retention(root, kind, name, keep_daily)
    except (ArmswarmError, OSError) as exc:
        result["errors"][name] = f"backup made, but retention failed: {exc}"
        return
    if removed:
        result["removed"][name] = removed


def _dump_one(engine, conf, root, node, c, creds):
    user, password = creds
    api = engine.api
    started = datetime.now(plan.UTC)
    clock = time.monotonic()
    exec_ids = []

    def produce(writer):
        exec_id = api.exec_create(
            c["id"],
            ["sh", "-c", DUMP_CMD],
            environment={"MYSQL_PWD": password, "ARMSWARM_DB_USER": user},
        )["Id"]
        exec_ids.append(exec_id)
        errors = bytearray()
        with gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=1, mtime=0) as gz:
            for out, err in api.exec_start(exec_id, stream=True, demux=True):
                if out:
                    gz.write(out)
                if err and len(errors) < 4096:
                    errors += err
        code = _exit_code(api, exec_id)
        if code != 0:
            message = _scrub(errors.decode(errors="replace").strip(), password)
            raise ArmswarmError(f"dump of {c['name']} failed (exit {code}): {message[-500:]}")
        return plan.DUMP

    manifest = _publish(
        root / "mysql" / c["set"],
        plan.backup_id(started, node),
        produce,
        {
            "kind": "mysql",
            "name": c["set"],
            "node": node,
            "started": started,
            "container": c["name"],
            "compression": "gzip",
        },
    )
    return {
        "id": plan.backup_id(started, node),
        "container": c["name"],
        "archive_bytes": manifest["size"],
        "sha256": manifest["sha256"],
        "seconds": round(time.monotonic() - clock, 3),
    }


def _exit_code(api, exec_id, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return info["ExitCode"]
        if time.monotonic() > deadline:
            return -1
        time.sleep(0.2)


def mysql_restore(engine, conf, name, container, pillar_get, bid=None) -> dict:
    """Load a dump of set ``name`` into the running ``container`` (checksum first: a damaged
    dump is refused before the database is touched)."""
    plan.check_name(name, "dump set")
    root = target_root(conf, write=False)
    item = choose(root, "mysql", name, bid)
    manifest = item["manifest"]
    path = Path(item["path"]) / manifest["archive"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != manifest["sha256"]:
        raise ArmswarmError(
            f"dump {item['id']} of {name}: checksum mismatch: restore refused, "
            "the database is untouched"
        )
    info = engine.api.inspect_container(container)
    target = {"id": info["Id"], "name": info["Name"].lstrip("/"), "set": name}
    creds = credentials(engine, conf, target, pillar_get)
    if creds is None:
        raise ArmswarmError(f"no credentials for {target['name']} (pillar or its environment)")
    user, password = creds
    api = engine.api
    clock = time.monotonic()
    exec_id = api.exec_create(
        target["id"],
        ["sh", "-c", CLIENT_CMD],
        stdin=True,
        environment={"MYSQL_PWD": password, "ARMSWARM_DB_USER": user},
    )["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    try:
        with gzip.open(path, "rb") as dump:
            while chunk := dump.read(CHUNK):
                raw.sendall(chunk)
        raw.shutdown(socket.SHUT_WR)
        output = _read_frames(raw)
    finally:
        sock.close()
    code = _exit_code(api, exec_id, timeout=600)
    if code != 0:
        message = _scrub(output.decode(errors="replace").strip(), password)
        raise ArmswarmError(f"loading {item['id']} into {target['name']} failed: {message[-500:]}")
    return {
        "set": name,
        "backup": item["id"],
        "container": target["name"],
        "seconds": round(time.monotonic() - clock, 3),
    }


def _read_frames(raw) -> bytes:
    """The multiplexed stdout/stderr of a non-tty exec (8-byte frame headers), joined."""
    buf = bytearray()
    while data := raw.recv(65536):
        buf += data
    out, pos = bytearray(), 0
    while pos + 8 <= len(buf):
        length = int.from_bytes(buf[pos + 4 : pos + 8], "big")
        out += buf[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return bytes(out)


# -- clean-up ------------------------------------------------------------------------------
def _finished(api, c) -> float:
    if c.get("State") == "created":
        return float(c["Created"])
    state = api.inspect_container(c["Id"])["State"]
    finished = state.get("FinishedAt") or ""
    try:
        # Docker reports nanoseconds: keep the seconds part.
        return (
            datetime.strptime(finished[:19], "%Y-%m-%dT%H:%M:%S")
            .replace(tzinfo=plan.UTC)
            .timestamp()
        )
    except ValueError:
        return float(c["Created"])


def cleanup(engine, conf: dict, dry_run=False, now=None, max_age_hours=None) -> dict:
    """Stopped containers older than the limit, dangling images, unused volumes that are
    safe to lose (see :func:`armswarm_core.backup.plan_cleanup`). Reports what went (or would
    go, with ``dry_run``) and the bytes freed."""
    api = engine.api
    now = time.time() if now is None else now
    settings = dict(conf["cleanup"])
    if max_age_hours is not None:
        settings["container_max_age_hours"] = float(max_age_hours)
    containers = []
    raw_containers = api.containers(all=True, size=True)
    for c in raw_containers:
        state = c.get("State")
        containers.append(
            {
                "id": c["Id"],
                "name": c["Names"][0].lstrip("/"),
                "state": state,
                "finished": _finished(api, c) if state in plan.STOPPED else None,
                "labels": c.get("Labels") or {},
                "volumes": [m["Name"] for m in c.get("Mounts") or () if m.get("Type") == "volume"],
                "size": c.get("SizeRw") or 0,
            }
        )
    target_problem, latest = None, {}
    try:
        root = target_root(conf, write=False)
    except ArmswarmError as exc:
        target_problem, root = str(exc), None
    volumes = []
    for vol in volume_info(engine) if settings["volumes"] else ():
        entry = {"name": vol["name"], "labels": vol["labels"], "last_change": None}
        if vol["driver"] == "local" and vol["mountpoint"]:
            try:
                info = scan(vol["mountpoint"])
                entry.update(info)
            except OSError:
                pass
        if root is not None:
            good = latest_good(root, "volumes", vol["name"])
            if good:
                latest[vol["name"]] = good["started"].timestamp()
        volumes.append(entry)
    decided = plan.plan_cleanup(
        containers,
        volumes,
        latest,
        now,
        settings["container_max_age_hours"],
        target_problem=target_problem,
        clean_volumes=settings["volumes"],
    )
    report = {
        "dry_run": bool(dry_run),
        "removed": {"containers": [], "images": [], "volumes": []},
        "kept": {"volumes": decided["kept"]},
        "freed_bytes": 0,
        "errors": [],
    }
    if target_problem:
        report["errors"].append(target_problem)
    by_id = {c["id"]: c for c in containers}
    for cid in decided["containers"]:
        c = by_id[cid]
        if _remove(report, dry_run, lambda cid=cid: api.remove_container(cid), c["name"]):
            report["removed"]["containers"].append({"name": c["name"], "bytes": c["size"]})
            report["freed_bytes"] += c["size"]
    if settings["images"]:
        dangling = api.images(filters={"dangling": True})
        if dry_run:
            for img in dangling:
                report["removed"]["images"].append({"id": img["Id"], "bytes": img["Size"]})
                report["freed_bytes"] += img["Size"]
        elif dangling:
            pruned = api.prune_images(filters={"dangling": True})
            for item in pruned.get("ImagesDeleted") or ():
                if item.get("Deleted"):
                    report["removed"]["images"].append({"id": item["Deleted"]})
            report["freed_bytes"] += pruned.get("SpaceReclaimed") or 0
    sizes = {v["name"]: v.get("bytes", 0) for v in volumes}
    for name in decided["volumes"]:
        # The engine refuses a volume a container started using since the scan.
        if _remove(report, dry_run, lambda name=name: api.remove_volume(name), name):
            report["removed"]["volumes"].append({"name": name, "bytes": sizes.get(name, 0)})
            report["freed_bytes"] += sizes.get(name, 0)
    return report


def _remove(report, dry_run, action, what) -> bool:
    if dry_run:
        return True
    try:
        action()
        return True
    except Exception as exc:  # noqa: BLE001 - docker.errors.APIError: report and go on
        report["errors"].append(f"{what}: {exc}")
        return False
