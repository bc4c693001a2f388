"""The backup target (a mounted network share): usable or not, listing, publishing a backup
atomically with its manifest and ``SHA256SUMS``, verifying, retention on disk.

Decisions are in :mod:`armswarm_core.backup.backup_policy`.
"""

import hashlib
import json
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy
from armswarm_core.common import files

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
        parsed = backup_policy.parse_backup_id(entry.name)
        if not parsed or not entry.is_dir():
            continue
        item = {"id": entry.name, "path": str(entry), "started": parsed[0], "node": parsed[1]}
        try:
            sums = backup_policy.parse_sums((entry / backup_policy.SUMS).read_text())
            manifest_text = (entry / backup_policy.MANIFEST).read_text()
            if _sha256_bytes(manifest_text.encode()) != sums.get(backup_policy.MANIFEST):
                raise ArmswarmError(f"checksum mismatch for {backup_policy.MANIFEST}")
            item["manifest"] = backup_policy.parse_manifest(manifest_text, sums)
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


def publish(folder: Path, bid: str, produce, manifest_fields: dict) -> dict:
    """Write a backup under its partial name with ``produce(writer) -> archive name``, add the
    manifest and checksums, fsync and rename it into place. Returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / backup_policy.partial_name(bid)
    partial.mkdir()
    try:
        started = datetime.now(backup_policy.UTC)
        archive = produce_name = None
        with open(partial / "archive.tmp", "wb") as fh:
            writer = _HashingWriter(fh)
            produce_name = produce(writer)
            fh.flush()
            os.fsync(fh.fileno())
        archive = produce_name
        (partial / "archive.tmp").rename(partial / archive)
        manifest = backup_policy.make_manifest(
            started=manifest_fields.pop("started", started),
            finished=datetime.now(backup_policy.UTC),
            archive=archive,
            size=writer.size,
            digest=writer.hash.hexdigest(),
            **manifest_fields,
        )
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        files.write(partial / backup_policy.MANIFEST, text)
        sums = {archive: manifest["sha256"], backup_policy.MANIFEST: _sha256_bytes(text.encode())}
        # files.write fsyncs ``partial``: the archive's rename above is durable too.
        files.write(partial / backup_policy.SUMS, backup_policy.sums_text(sums))
        # The whole backup appears under its final name at once, or not at all.
        partial.rename(folder / bid)
        files.fsync_dir(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def apply_retention(root: Path, kind: str, name: str, keep_daily: int) -> list[str]:
    """Delete the backups of ``name`` that retention does not keep (ids returned). Damaged
    backups count as neither kept nor deleted: they stay for a person to look at."""
    items = backups(root, kind, name)
    good = [b["id"] for b in items if "error" not in b]
    if not good:
        return []
    _keep, delete = backup_policy.retention(good, keep_daily)
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


def retain(result: dict, root: Path, kind: str, name: str, keep_daily: int):
    """Retention after a good backup; a failure there is reported, the backup stays good."""
    try:
        removed = apply_retention(root, kind, name, keep_daily)
    except (ArmswarmError, OSError) as exc:
        result["errors"][name] = f"backup made, but retention failed: {exc}"
        return
    if removed:
        result["removed"][name] = removed
