"""MySQL/MariaDB dumps and their restore, through ``docker exec``.

Nothing here logs or returns a database password. It reaches the client on the exec's stdin
(first line), never in the exec's environment or command: those are in the request that
creates the exec, which dockerd writes to its log with ``debug: true``.
"""

import gzip
import hashlib
import os
import shutil
import signal
import socket
import time
from datetime import datetime
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy, backup_target

# -- MySQL / MariaDB -----------------------------------------------------------------------
# The dump's exit status comes last on its stderr: the process that writes the dump to the
# share (a child, under a time limit) learns it there, before anything is published.
EXIT_MARK = b"armswarm-dump-exit:"
DUMP_CMD = (
    '"$(command -v mariadb-dump || command -v mysqldump)" --all-databases '
    '--single-transaction --routines --events --triggers --user="$ARMSWARM_DB_USER"; '
    f'code=$?; printf "\\n{EXIT_MARK.decode()}%s\\n" "$code" >&2; exit "$code"'
)


CLIENT_CMD = 'exec "$(command -v mariadb || command -v mysql)" --user="$ARMSWARM_DB_USER"'
# the password is stdin's first line (``read`` takes no byte beyond it); the rest is the
# client's
READ_PASSWORD = "IFS= read -r MYSQL_PWD || exit 97; export MYSQL_PWD; "


def _exec(api, container: str, command: str, user: str):
    """``(exec_id, socket, raw socket)`` of ``command`` in the container, started, reading the
    password as stdin's first line (never in the exec's env or argv: dockerd logs those)."""
    exec_id = api.exec_create(
        container,
        ["sh", "-c", READ_PASSWORD + command],
        stdin=True,
        environment={"ARMSWARM_DB_USER": user},
    )["Id"]
    sock = api.exec_start(exec_id, socket=True)
    return exec_id, sock, getattr(sock, "_sock", sock)


def _password_line(password: str) -> bytes:
    if "\n" in password or "\r" in password or "\0" in password:
        raise ArmswarmError("a database password with a line break cannot be passed on")
    return password.encode() + b"\n"


def _frames(raw):
    """``(stream, payload)`` of a non-tty exec's multiplexed output (8-byte frame headers:
    stream 1 stdout, 2 stderr), as they arrive."""
    buf = bytearray()
    while data := raw.recv(65536):
        buf += data
        while len(buf) >= 8:
            length = int.from_bytes(buf[4:8], "big")
            if len(buf) < 8 + length:
                break
            yield buf[0], bytes(buf[8 : 8 + length])
            del buf[: 8 + length]


ROOT_PASSWORD_ENV = ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD")
EMPTY_PASSWORD_ENV = ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "MYSQL_ALLOW_EMPTY_PASSWORD")


def mysql_containers(engine, conf: dict) -> list[dict]:
    """Running containers detected as MySQL/MariaDB: ``{id, name, set, env}``."""
    out = []
    for c in engine.api.containers(filters={"status": "running"}):
        labels = c.get("Labels") or {}
        if backup_policy.mysql_detected(c.get("Image") or "", labels, conf["mysql"]["images"]):
            name = c["Names"][0].lstrip("/")
            out.append(
                {"id": c["Id"], "name": name, "set": backup_policy.dump_set_name(name, labels)}
            )
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
    if any(backup_policy.is_true(env.get(k)) for k in EMPTY_PASSWORD_ENV):
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
    ones named in ``only``), gzip-compressed, with manifest and checksums, then retention.

    Every access to the target is in a child process under a time limit
    (:class:`backup_target.Share`): the probe and retention under ``pause_timeout_seconds``,
    each dump under ``mysql:timeout_seconds``. A hung share fails the run at the limit, the
    dump stops (its connection closes), nothing is published, and the dumps after it are not
    tried."""
    share = backup_target.Share(conf)
    root = share.probed_root(conf, done="given up before any dump")
    result = {"dumped": {}, "skipped": {}, "errors": {}, "removed": {}}
    if not conf["mysql"]["enabled"]:
        result["skipped"]["*"] = "mysql dumps are disabled (armswarm:backup:mysql:enabled)"
        return result
    for c in mysql_containers(engine, conf):
        if only and c["name"] not in only and c["set"] not in only:
            continue
        if share.hung:
            result["errors"][c["set"]] = f"not tried: {share.hung}"
            continue
        try:
            backup_policy.check_name(c["set"], "dump set")
            creds = credentials(engine, conf, c, pillar_get)
            if creds is None:
                result["skipped"][c["set"]] = "no credentials (pillar or container environment)"
                continue
            result["dumped"][c["set"]] = _dump_one(engine, conf, share, root, node, c, creds)
        except (ArmswarmError, OSError) as exc:
            result["errors"][c["set"]] = str(exc)
            continue
        backup_target.retain(
            result,
            root,
            "mysql",
            c["set"],
            conf["keep_daily"],
            run=lambda job, name=c["set"]: share.call(
                f"retention of {name}", job, done="given up, the new dump is complete"
            ),
        )
    return result


def _dump_one(engine, conf, share, root, node, c, creds):
    user, password = creds
    api = engine.api
    started = datetime.now(backup_policy.UTC)
    clock = time.monotonic()
    line = _password_line(password)
    bid = backup_policy.backup_id(started, node)
    exec_id, sock, raw = _exec(api, c["id"], DUMP_CMD, user)

    def produce(writer):
        errors = bytearray()
        with gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=1, mtime=0) as gz:
            for stream, payload in _frames(raw):
                if stream == 1:
                    gz.write(payload)
                else:
                    errors = (errors + payload)[-8192:]  # the exit status comes last
        text, mark, status = bytes(errors).rpartition(EXIT_MARK)
        message = _scrub((text if mark else status).decode(errors="replace").strip(), password)
        if not mark:
            raise ArmswarmError(
                f"dump of {c['name']} ended without its exit status: {message[-500:]}"
            )
        if status.strip() != b"0":
            code = status.strip().decode(errors="replace")
            raise ArmswarmError(f"dump of {c['name']} failed (exit {code}): {message[-500:]}")
        return backup_policy.DUMP

    def job():
        # In the child: the exec's socket, the gzip and the share's writes die with it.
        raw.sendall(line)
        raw.shutdown(socket.SHUT_WR)
        manifest = backup_target.publish(
            root / "mysql" / c["set"],
            bid,
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
        return {"size": manifest["size"], "sha256": manifest["sha256"]}

    try:
        manifest = share.call(
            f"the dump of {c['name']}",
            job,
            give_up=lambda: _stop_exec(api, exec_id),
            done="given up, the dump stopped, nothing published",
            limit=conf["mysql"]["timeout_seconds"],
            setting="mysql:timeout_seconds",
            after=lambda: shutil.rmtree(
                root / "mysql" / c["set"] / backup_policy.partial_name(bid), ignore_errors=True
            ),
        )
    finally:
        sock.close()
    return {
        "id": bid,
        "container": c["name"],
        "archive_bytes": manifest["size"],
        "sha256": manifest["sha256"],
        "seconds": round(time.monotonic() - clock, 3),
    }


def _stop_exec(api, exec_id):
    """End the dump of an exec given up: its connection stays open while the child that
    reads it is stuck on a hung share (a killed process holds its files until the kernel lets
    it go), so the dump would run on. The exec's shell and what it started get SIGTERM, by
    the host PID dockerd reports, once ``/proc`` confirms that PID runs our command (a minion
    in another PID namespace kills nothing)."""
    try:
        pid = int(api.exec_inspect(exec_id).get("Pid") or 0)
    except Exception:  # noqa: BLE001 - the dump is given up either way
        return
    if not _runs_dump_shell(pid):
        return
    # The dump first, then its shell once the shell has reaped it: a shell killed first
    # leaves the dump to the container's PID 1, and a database server there reaps no one.
    dumps = _descendants(pid)
    for target in dumps:
        _terminate(target)
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{d}") for d in dumps) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _runs_dump_shell(pid):  # not a new process on a reused PID
        _terminate(pid)


def _runs_dump_shell(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return pid > 0 and EXIT_MARK in fh.read()
    except OSError:
        return False


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


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
    backup_policy.check_name(name, "dump set")
    root = backup_target.target_root(conf, write=False)
    item = backup_target.choose(root, "mysql", name, bid)
    manifest = item["manifest"]
    path = Path(item["path"]) / manifest["archive"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(backup_target.CHUNK):
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
    line = _password_line(password)
    exec_id, sock, raw = _exec(api, target["id"], CLIENT_CMD, user)
    try:
        raw.sendall(line)
        with gzip.open(path, "rb") as dump:
            while chunk := dump.read(backup_target.CHUNK):
                raw.sendall(chunk)
        raw.shutdown(socket.SHUT_WR)
        output = b"".join(payload for _, payload in _frames(raw))
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
