"""Volume copies (GNU ``tar`` of the volume's directory, read on the node where the minion runs)
and restores, with containers paused for the copy.

Decisions are in :mod:`armswarm_core.backup.backup_policy`.
"""

import hashlib
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

log = logging.getLogger(__name__)


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
    using it paused for the copy, then retention. Unchanged volumes are skipped (unless
    ``force``): a stale copy left on a node the service moved away from never shadows the
    newer backups made where it runs now."""
    root = backup_target.target_root(conf, write=True)
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
        try:
            done = _backup_one(engine, conf, root, node, vol, force)
        except (ArmswarmError, OSError) as exc:
            result["errors"][name] = str(exc)
            continue
        if isinstance(done, str):
            result["skipped"][name] = done
            continue
        result["backed_up"][name] = done
        backup_target.retain(result, root, "volumes", name, conf["keep_daily"])
    if wanted:
        for name in sorted(wanted - {v["name"] for v in volume_info(engine)}):
            result["errors"][name] = "no such volume on this node"
    return result


def _backup_one(engine, conf, root, node, vol, force):
    name = backup_policy.check_name(vol["name"])
    source = vol["mountpoint"]
    info = scan(source)
    if info["empty"]:
        return "empty"
    latest = backup_target.latest_good(root, "volumes", name)
    if latest and not force and latest["started"].timestamp() > info["last_change"]:
        return f"unchanged since backup {latest['id']}"
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
        warnings = []
        clock = time.monotonic()

        def produce(writer):
            warning = _tar_create(source, conf["compression"], writer)
            if warning:
                warnings.append(warning)
            return backup_policy.ARCHIVES[conf["compression"]]

        manifest = backup_target.publish(
            root / "volumes" / name,
            backup_policy.backup_id(started, node),
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
        "id": backup_policy.backup_id(started, node),
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
    _vol, data = _volume_dir(engine, backup_policy.check_name(name), create=False)
    if data is None:
        return "missing"
    return "empty" if scan(data)["empty"] else "data"


def restore_volume(engine, conf: dict, name: str, bid: str | None = None, force=False) -> dict:
    """Restore ``name`` from its newest good backup (or ``bid``) on this node, creating the
    volume when missing. The archive is extracted into a staging directory next to the
    volume's data while its checksum is computed, and moved in only when the checksum
    matches: a corrupted archive leaves the volume as it was. A volume with data is refused
    unless ``force`` (its content is then replaced)."""
    backup_policy.check_name(name)
    root = backup_target.target_root(conf, write=False)
    item = backup_target.choose(root, "volumes", name, bid)
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
