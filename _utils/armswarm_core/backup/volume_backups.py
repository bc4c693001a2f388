"""Volume copies (GNU ``tar`` of the volume's directory, read on the node where the minion runs)
and restores, with containers paused for the copy.

Decisions are in :mod:`armswarm_core.backup.backup_policy`.
"""

import ctypes
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy, backup_target
from armswarm_core.common import files

log = logging.getLogger(__name__)


# -- volumes -------------------------------------------------------------------------------
# Beside the volume's data (``/var/lib/docker/volumes/<name>/``), not in it: the application
# never sees it, and ``docker volume rm`` removes it with the volume.
MARKER = "armswarm-lineage.json"
STAGING = "armswarm-restore.staging"
OLD = "armswarm-restore.old"
LOCK = "armswarm-restore.lock"
LOCK_WAIT = 600  # seconds a restore waits for another restore of the same volume


def scan(path) -> dict:
    """Size, file count, last change (newest mtime/ctime, root included) of a directory and
    its ``fingerprint``: a SHA-256 over every entry's path, type, mode, owner, size, inode,
    mtime and ctime (ns). Any change to the content changes the ctime of what changed, and
    no program can set a ctime back: an equal fingerprint means the same content."""
    st = os.lstat(path)
    digest = hashlib.sha256()
    last, total, files, entries = max(st.st_mtime, st.st_ctime), 0, 0, 0

    def add(rel, st):
        digest.update(os.fsencode(rel) + b"\0")
        digest.update(
            b"%d %d %d %d %d %d %d\n"
            % (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino, st.st_mtime_ns,
               st.st_ctime_ns)
        )  # fmt: skip

    add(".", st)
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, path)
        for entry in dirnames + sorted(filenames):
            entries += 1
            rel = os.path.join(rel_dir, entry)
            try:
                st = os.lstat(os.path.join(dirpath, entry))
            except FileNotFoundError:
                digest.update(os.fsencode(rel) + b"\0gone\n")
                continue
            add(rel, st)
            last = max(last, st.st_mtime, st.st_ctime)
            if entry in filenames:
                files += 1
                total += st.st_size
    return {
        "bytes": total,
        "files": files,
        "last_change": last,
        "empty": entries == 0,
        "fingerprint": digest.hexdigest(),
    }


def marker_path(mountpoint) -> Path | None:
    """Where the lineage marker of a local volume lives (None outside Docker's layout)."""
    data = Path(mountpoint)
    return data.parent / MARKER if data.name == "_data" else None


def read_marker(mountpoint) -> dict | None:
    """The volume's lineage marker ``{lineage, origin, backup, sha256, content}``, or None
    (never backed up or restored here, or unreadable: then nothing is assumed)."""
    path = marker_path(mountpoint)
    try:
        marker = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("lineage") else None


def write_marker(mountpoint, marker: dict):
    path = marker_path(mountpoint)
    if path is not None:
        files.write(path, json.dumps(marker, sort_keys=True) + "\n", mode=0o600)


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


def _tar_create(source: str, compression: str, writer, running=None):
    """Stream a tar (optionally gzip -1: fast on small CPUs) of ``source`` into ``writer``.
    The processes are appended to ``running`` (a list) so that a time limit can kill them."""
    # stderr goes to a file: a pipe nobody reads while the data streams could fill and stall tar
    errfile = tempfile.TemporaryFile()
    tar = subprocess.Popen(
        ["tar", "--create", "--file=-", "--numeric-owner", "--directory", source, "."],
        stdout=subprocess.PIPE,
        stderr=errfile,
    )
    procs, out = [tar], tar.stdout
    if running is not None:
        running.append(tar)
    if compression == "gzip":
        gz = subprocess.Popen(["gzip", "-1", "-c"], stdin=tar.stdout, stdout=subprocess.PIPE)
        tar.stdout.close()
        procs.append(gz)
        if running is not None:
            running.append(gz)
        out = gz.stdout
    try:
        while chunk := out.read(backup_target.CHUNK):
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
    using it paused for the copy (at most ``pause_timeout_seconds``), then retention. A
    volume is skipped (unless ``force``) only when its own last backup, named in its lineage
    marker, holds exactly its current content: a newer backup of the same name made on
    another node never counts (that is another lineage, see docs/backup.rst). Every access
    to the target is under the same limit (:class:`backup_target.Share`): a hung share fails
    the run at the limit, naming the share, and the volumes after it are not tried."""
    share = backup_target.Share(conf)
    root = share.probed_root(conf, done="given up before any container was paused")
    wanted = set(names) if names else None
    result = {"backed_up": {}, "skipped": {}, "errors": {}, "removed": {}}
    for vol in volume_info(engine):
        name = vol["name"]
        if wanted is not None and name not in wanted:
            continue
        why = backup_policy.excluded(name, vol["labels"], conf["exclude"])
        if why is None and vol["driver"] != "local":
            why = f"driver {vol['driver']} (only local volumes are backed up)"
        if why:
            result["skipped"][name] = why
            continue
        if share.hung:
            # Each try would wait the whole limit again: a dead share does not come back.
            result["errors"][name] = f"not tried: {share.hung}"
            continue
        try:
            done = _backup_one(engine, conf, share, root, node, vol, force)
        except (ArmswarmError, OSError) as exc:
            result["errors"][name] = str(exc)
            continue
        if isinstance(done, str):
            result["skipped"][name] = done
            continue
        result["backed_up"][name] = done
        backup_target.retain(
            result,
            root,
            "volumes",
            name,
            conf["keep_daily"],
            run=lambda job, name=name: share.call(
                f"retention of {name}", job, done="given up, the new backup is complete"
            ),
        )
    if wanted:
        for name in sorted(wanted - {v["name"] for v in volume_info(engine)}):
            result["errors"][name] = "no such volume on this node"
    return result


def _unchanged(root, name, marker, info) -> str | None:
    """Why a backup is not needed (its own last backup holds this content), else None."""
    if not marker or not marker.get("content") or marker["content"] != info["fingerprint"]:
        return None
    item = backup_target.find(root, "volumes", name, marker.get("backup") or "")
    if item is None or "error" in item or item["manifest"].get("sha256") != marker.get("sha256"):
        return None
    try:  # a truncated archive is backed up again (the full check is the clean-up's)
        size = (Path(item["path"]) / item["manifest"]["archive"]).stat().st_size
    except OSError:
        return None
    if size != item["manifest"]["size"]:
        return None
    return f"unchanged since its backup {item['id']} (lineage {marker['lineage']})"


def _backup_one(engine, conf, share, root, node, vol, force):
    name = backup_policy.check_name(vol["name"])
    source = vol["mountpoint"]
    info = scan(source)
    if info["empty"]:
        return "empty"
    marker = read_marker(source)
    # The share is read (in a child, backup_target.Share) only when the marker may spare it.
    may_skip = bool(marker and marker.get("content") == info["fingerprint"])
    if (
        not force
        and may_skip
        and (
            why := share.call(
                f"reading the earlier backups of {name}",
                lambda: _unchanged(root, name, marker, info),
                done="given up before its containers were paused",
            )
        )
    ):
        return why
    if marker:
        lineage, origin, parent = marker["lineage"], marker.get("origin"), marker.get("backup")
    else:
        # Never backed up or restored by armswarm here (or restored by the helper inside a
        # container): a new lineage, whatever other nodes backed up under this name.
        lineage = backup_policy.new_lineage(node, datetime.now(backup_policy.UTC))
        origin = parent = None
    paused = []
    started = datetime.now(backup_policy.UTC)

    try:
        if conf["pause"]:
            for c in vol["containers"]:
                if c.get("State") == "running" and backup_policy.is_true(
                    (c.get("Labels") or {}).get(backup_policy.LABEL_PAUSE, "true")
                ):
                    engine.api.pause(c["Id"])
                    paused.append(c)
        # The start time is taken once writers are paused: later changes are not in it.
        started = datetime.now(backup_policy.UTC)
        before = scan(source)["fingerprint"]
        warnings = []
        clock = time.monotonic()

        def produce(writer):
            warning = _tar_create(source, conf["compression"], writer)
            if warning:
                warnings.append(warning)
            return backup_policy.ARCHIVES[conf["compression"]]

        bid = backup_policy.backup_id(started, node)
        fields = {
            "kind": "volume",
            "name": name,
            "node": node,
            "started": started,
            "compression": conf["compression"],
            "source_bytes": info["bytes"],
            "files": info["files"],
            "last_change": info["last_change"],
            "paused": [c["Names"][0].lstrip("/") for c in paused],
            "lineage": lineage,
            "origin": origin,
            "parent": parent,
            "content": before,
        }

        def copy():
            folder = root / "volumes" / name
            manifest = backup_target.publish(folder, bid, produce, fields)
            return {"manifest": manifest, "warnings": warnings}

        # In a child process (see backup_target.with_limit): tar and gzip die with it.
        copied = share.call(
            "the copy", copy, done="given up, containers unpaused, nothing published"
        )
        manifest, warnings = copied["manifest"], copied["warnings"]
        seconds = time.monotonic() - clock
        # Content that changed during the copy (a writer not paused) is in no backup whole.
        same = not warnings and scan(source)["fingerprint"] == before
    finally:
        for c in paused:
            try:
                engine.api.unpause(c["Id"])
            except Exception as exc:  # noqa: BLE001 - report, and unpause the others
                log.error("backup: cannot unpause %s: %s", c["Id"][:12], exc)
    write_marker(
        source,
        {
            "lineage": lineage,
            "origin": origin,
            "backup": bid,
            "sha256": manifest["sha256"],
            "content": before if same else None,
        },
    )
    return {
        "id": bid,
        "lineage": lineage,
        "bytes": info["bytes"],
        "archive_bytes": manifest["size"],
        "sha256": manifest["sha256"],
        "seconds": round(seconds, 3),
        "paused": manifest["paused"],
        **({"warning": warnings[0][-300:]} if warnings else {}),
        **({} if same else {"changed_during_copy": True}),
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
    _vol, data = _volume_dir(engine, backup_policy.check_name(name), create=False)
    if data is None:
        return "missing"
    return "empty" if scan(data)["empty"] else "data"


def _users(engine, name: str) -> list[str]:
    """Containers that are running (or paused, restarting) with ``name`` mounted."""
    return sorted(
        c["Names"][0].lstrip("/")
        for c in engine.api.containers(all=True)
        if c.get("State") in ("running", "paused", "restarting")
        and any(m.get("Type") == "volume" and m.get("Name") == name for m in c.get("Mounts") or ())
    )


class _Lock:
    """An exclusive ``flock`` beside the volume's data: one restore of a volume at a time."""

    def __init__(self, folder: Path, name: str):
        self.path, self.name, self.fd = folder / LOCK, name, None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise ArmswarmError(
                        f"another restore of {self.name} has held its lock for {LOCK_WAIT} s"
                    ) from None
                time.sleep(0.2)

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path):
    """Swap two directories in one step (``renameat2(RENAME_EXCHANGE)``): a reader, a crash or
    a power cut sees the old content or the new one, never a mix and never neither."""
    libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is None:
        raise ArmswarmError("this C library has no renameat2: an atomic swap is not possible")
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise ArmswarmError(f"cannot swap {a} and {b} atomically: {os.strerror(err)}")


def restore_volume(
    engine, conf: dict, name: str, bid: str | None = None, force=False, node: str = ""
) -> dict:
    """Restore ``name`` from its newest good backup (or ``bid``) on this node, creating the
    volume when missing. Transactional: the archive is extracted into a staging directory
    beside the volume's data while its checksum is computed, and only a complete, matching
    copy is swapped in, atomically (the old content is then removed). A volume with data is
    refused unless ``force``; a volume a running container uses is always refused; two
    restores of one volume run one after the other (a lock). The result lists the other
    lineages' newest backups (divergent copies a person may prefer, ``backup=``)."""
    backup_policy.check_name(name)
    root = backup_target.target_root(conf, write=False)
    items = backup_target.backups(root, "volumes", name)
    item = backup_target.choose(root, "volumes", name, bid)
    manifest = item["manifest"]
    vol, data = _volume_dir(engine, name, create=False)
    if vol is not None:
        _check_restorable(engine, vol, name, data, force)
    created = data is None
    if created:
        vol, data = _volume_dir(engine, name, create=True)
    staging, old = data.parent / STAGING, data.parent / OLD
    clock = time.monotonic()
    with _Lock(data.parent, name):
        try:
            # Again under the lock: another restore or a container may have come first.
            _check_restorable(engine, vol, name, data, force)
            # Leftovers of a run that crashed (this one holds the lock: nobody else's).
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
            staging.mkdir(mode=0o700)
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
            os.sync()  # the new copy is on disk before it replaces the old one
            # The archive's "./" gave staging the volume root's owner and mode (mysql:mysql).
            _exchange(staging, data)
            files.fsync_dir(data.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created and not _has_entries(data):
                # Leave the node as it was: no empty volume made by a refused restore.
                try:
                    engine.api.remove_volume(name)
                except Exception:  # noqa: BLE001 - docker.errors.APIError: in use meanwhile
                    log.warning("restore: could not remove the empty volume %s", name)
            raise
        shutil.rmtree(staging, ignore_errors=True)  # now the old content
        lineage = backup_policy.new_lineage(node or "restore", datetime.now(backup_policy.UTC))
        write_marker(
            data,
            {
                "lineage": lineage,
                "origin": item["id"],
                "backup": item["id"],
                "sha256": manifest["sha256"],
                "content": scan(data)["fingerprint"],
            },
        )
    return {
        "volume": name,
        "backup": item["id"],
        "lineage": lineage,
        "other_lineages": backup_policy.divergent(
            [
                {"id": b["id"], **{k: b["manifest"].get(k) for k in ("lineage", "origin")}}
                for b in items
                if "error" not in b
            ],
            {"id": item["id"], **{k: manifest.get(k) for k in ("lineage", "origin")}},
        ),
        "bytes": manifest.get("source_bytes"),
        "files": manifest.get("files"),
        "seconds": round(time.monotonic() - clock, 3),
    }


def _has_entries(path: Path) -> bool:
    try:
        return any(os.scandir(path))
    except OSError:
        return True  # unknown: keep it


def _check_restorable(engine, vol: dict, name: str, data: Path, force: bool):
    if vol.get("Options"):
        # Its data lives on the device it mounts while in use, not in the directory.
        raise ArmswarmError(
            f"volume {name} has driver options {sorted(vol['Options'])}: restore "
            "into it is not supported (restore into a plain local volume)"
        )
    users = _users(engine, name)
    if users:
        raise ArmswarmError(
            f"volume {name} is in use by running container(s) {', '.join(users)}: "
            "stop them (scale the service to 0) before restoring"
        )
    if _has_entries(data) and not force:
        raise ArmswarmError(f"volume {name} has data: pass force=True to replace it")


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
        while chunk := fh.read(backup_target.CHUNK):
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
