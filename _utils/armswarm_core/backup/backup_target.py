"""The backup target (a mounted network share): usable or not, listing, publishing a backup
atomically with its manifest and ``SHA256SUMS``, verifying, retention on disk.

Decisions are in :mod:`armswarm_core.backup.backup_policy`.
"""

import hashlib
import json
import os
import select
import shutil
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy
from armswarm_core.common import files

CHUNK = 1 << 20
PROBE = ".armswarm-write-probe"
# Backups hold whatever the volumes hold (database files, keys): owner only, whatever the umask.
FILE_MODE = 0o600
DIR_MODE = 0o700


class Cancelled(ArmswarmError):
    """The copy was given up (its time limit passed): the partial backup is removed."""


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


def archive_digest(item: dict) -> str:
    """The SHA-256 of a listed backup's archive, read from the target."""
    digest = hashlib.sha256()
    with open(Path(item["path"]) / item["manifest"]["archive"], "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def find(root: Path, kind: str, name: str, bid: str) -> dict | None:
    """The listed backup ``bid`` of ``name`` (``error`` when damaged), None when absent."""
    return next((b for b in backups(root, kind, name) if b["id"] == bid), None)


def private_dir(path: Path):
    """``path`` and its missing parents below the target made, each 0700; an existing one
    made by an older version (0755) is narrowed."""
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        pass
    if os.stat(path).st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)


class _HashingWriter:
    """A file that hashes and counts what goes through it, and stops when ``cancel`` is set."""

    def __init__(self, fh, cancel=None):
        self.fh, self.hash, self.size, self.cancel = fh, hashlib.sha256(), 0, cancel

    def write(self, data):
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("the copy was given up")
        self.hash.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self):
        self.fh.flush()


def publish(folder: Path, bid: str, produce, manifest_fields: dict, cancel=None) -> dict:
    """Write a backup under its partial name with ``produce(writer) -> archive name``, add the
    manifest and checksums, fsync and rename it into place. Returns the manifest. Files are
    0600 and directories 0700 whatever the umask. When ``cancel`` (a threading.Event) is set
    the next write fails and nothing is renamed into place."""
    private_dir(folder.parent)
    private_dir(folder)
    partial = folder / backup_policy.partial_name(bid)
    partial.mkdir(mode=DIR_MODE)
    try:
        os.chmod(partial, DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened
        started = datetime.now(backup_policy.UTC)
        archive = produce_name = None
        fd = os.open(
            partial / "archive.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE
        )
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            writer = _HashingWriter(fh, cancel)
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
        files.write(partial / backup_policy.MANIFEST, text, mode=FILE_MODE)
        sums = {archive: manifest["sha256"], backup_policy.MANIFEST: _sha256_bytes(text.encode())}
        # files.write fsyncs ``partial``: the archive's rename above is durable too.
        files.write(partial / backup_policy.SUMS, backup_policy.sums_text(sums), mode=FILE_MODE)
        if cancel is not None and cancel.is_set():
            raise Cancelled("the copy was given up")
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
    good = [
        {
            "id": b["id"],
            "lineage": b["manifest"].get("lineage"),
            "origin": b["manifest"].get("origin"),
        }
        for b in items
        if "error" not in b
    ]
    if not good:
        return []
    _keep, delete = backup_policy.lineage_retention(good, keep_daily)
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
    ok = archive_digest(item) == manifest["sha256"]
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
                "lineage": (b.get("manifest") or {}).get("lineage"),
                "status": b.get("error", "complete"),
            }
            for b in backups(root, kind, n)
        ]
    return out


def retain(result: dict, root: Path, kind: str, name: str, keep_daily: int, run=None):
    """Retention after a good backup; a failure there is reported, the backup stays good.
    ``run(job)``, when given, runs ``job()`` (e.g. in a child process under a time limit)."""
    try:
        job = lambda: apply_retention(root, kind, name, keep_daily)  # noqa: E731
        removed = run(job) if run else job()
    except (ArmswarmError, OSError) as exc:
        result["errors"][name] = f"backup made, but retention failed: {exc}"
        return
    if removed:
        result["removed"][name] = removed


class ShareHung(ArmswarmError):
    """An access to the backup target did not finish within its time limit."""


class Share:
    """The backup target of one run, every access to it in a child process under
    ``pause_timeout_seconds`` (see :func:`with_limit`): on a dead NAS a stat, a read or a
    write blocks in the kernel, not only the copy. Once one access hung, no other is tried."""

    def __init__(self, conf: dict):
        self.path, self.limit, self.hung = (
            conf["target"]["path"],
            conf["pause_timeout_seconds"],
            None,
        )

    def probed_root(self, conf: dict, done: str) -> Path:
        """The target's root, once a probe file shows it mounted and writable (under the
        limit: ``done`` says what a hang there leaves undone)."""
        return Path(
            self.call(
                "the check that the target is mounted and writable (a probe file)",
                lambda: str(target_root(conf, write=True)),
                done=done,
            )
        )

    def call(
        self,
        what: str,
        job,
        give_up=None,
        done="given up, nothing published",
        limit=None,
        setting="pause_timeout_seconds",
        after=None,
    ):
        """``job()`` under the share's limit (or ``limit``, the setting named ``setting``);
        ``after`` as in :func:`with_limit`."""
        if self.hung:
            raise ArmswarmError(f"not tried: {self.hung}")
        try:
            return with_limit(
                self.limit if limit is None else limit,
                job,
                give_up,
                what=what,
                share=self.path,
                done=done,
                setting=setting,
                after=after,
            )
        except ShareHung:
            self.hung = f"the backup target {self.path} did not answer within the limit"
            raise


def with_limit(
    seconds,
    job,
    give_up=None,
    what="the copy",
    share=None,
    done="given up, containers unpaused, nothing published",
    setting="pause_timeout_seconds",
    after=None,
):
    """``job()`` (its result JSON-serialisable) in a forked child; after ``seconds``
    ``give_up()`` (if given) runs, the child is killed and :class:`ShareHung` is raised,
    naming ``what`` was given up, the ``share``, the limit's ``setting`` and what was ``done``
    about it. ``after()`` (if given) runs once the killed child is gone (when the share
    answers again): it removes what the child left half written.

    A child process, not a thread: a write to a hung share blocks in the kernel,
    uninterruptibly (an NFS hard mount, a frozen file system), and a process with such a
    thread cannot exit. The child has /dev/null as its standard streams, so a stuck child
    holds neither the caller's output (cron, ``salt-call``) nor its exit; it dies, killed,
    the moment the kernel lets it go, before it can rename anything into place."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(read_fd)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            try:
                answer = {"value": job()}
            except BaseException as exc:  # noqa: BLE001 - handed to the parent
                answer = {"error": str(exc) or type(exc).__name__}
            data = json.dumps(answer).encode()
            while data:
                data = data[os.write(write_fd, data) :]
        except BaseException:  # noqa: BLE001 - nothing to report to: the exit code says it
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline, chunks, finished = time.monotonic() + seconds, [], False
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([read_fd], [], [], left)[0]:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    finished = True
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
    if not finished:
        if give_up is not None:
            give_up()
        os.kill(pid, signal.SIGKILL)
        # a process stuck on a hung share dies only when the share answers: reaped then, by a
        # thread (the minion lives on; an unreaped child would stay a zombie of it)
        threading.Thread(target=_reap, args=(pid, after), daemon=True).start()
        target = f"the backup target {share}" if share else "the backup target"
        raise ShareHung(
            f"{what} did not finish within {setting}={seconds:g} (is {target} hung?): {done}"
        )
    _pid, status = os.waitpid(pid, 0)
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ArmswarmError(f"the copy's process failed (status {status})") from None
    if "error" in answer:
        raise ArmswarmError(answer["error"])
    return answer["value"]


def _reap(pid: int, after=None):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    if after is not None:
        try:
            after()
        except Exception:  # noqa: BLE001 - a leftover is retention's, after a day
            pass
