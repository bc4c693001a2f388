"""Backups on real files, no Docker: modes whatever the umask, the content fingerprint, and
the copy's time limit against a write that really hangs (a named pipe nobody reads)."""

import ctypes
import gzip
import os
import select
import socket as sock
import stat
import subprocess
import tempfile
import threading
import time
import types
from datetime import datetime
from pathlib import Path

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy, backup_target, mysql_dumps, volume_backups

pytestmark = pytest.mark.functional


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_backups_are_owner_only_whatever_the_umask(tmp_path, umask):
    # A directory made by an older version with the usual 0755 is narrowed too.
    (tmp_path / "volumes").mkdir(mode=0o755)
    old = os.umask(umask)
    try:
        bid = backup_policy.backup_id(datetime.now(backup_policy.UTC), "node1")
        folder = tmp_path / "volumes" / "app"

        def produce(writer):
            writer.write(b"secret database pages")
            return backup_policy.ARCHIVES["none"]

        backup_target.publish(
            folder, bid, produce, {"kind": "volume", "name": "app", "node": "node1"}
        )
    finally:
        os.umask(old)
    assert _mode(tmp_path / "volumes") == 0o700
    assert _mode(folder) == 0o700
    assert _mode(folder / bid) == 0o700
    names = sorted(p.name for p in (folder / bid).iterdir())
    assert names == ["SHA256SUMS", "data.tar", "manifest.json"]
    assert {p.name: _mode(p) for p in (folder / bid).iterdir()} == dict.fromkeys(names, 0o600)


def test_the_fingerprint_sees_a_change_whose_mtime_was_put_back(tmp_path):
    (tmp_path / "d").mkdir()
    f = tmp_path / "d" / "f"
    f.write_bytes(b"one")
    first = volume_backups.scan(tmp_path)["fingerprint"]
    assert volume_backups.scan(tmp_path)["fingerprint"] == first  # reading changes nothing
    st = f.stat()
    time.sleep(0.01)
    f.write_bytes(b"two")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # a program can put the mtime back ...
    assert f.stat().st_mtime_ns == st.st_mtime_ns
    assert volume_backups.scan(tmp_path)["fingerprint"] != first  # ... not the ctime


def test_a_copy_that_hangs_is_given_up_within_its_limit(tmp_path):
    fifo = tmp_path / "share-that-hangs"
    os.mkfifo(fifo)
    gave_up = threading.Event()
    clock = time.monotonic()
    with pytest.raises(ArmswarmError, match="pause_timeout_seconds=1"):
        # Opening a FIFO for writing blocks in the kernel until a reader comes: nobody does.
        backup_target.with_limit(1, lambda: open(fifo, "wb"), gave_up.set)
    assert gave_up.is_set()
    assert time.monotonic() - clock < 5
    # The copy ran in a child process, killed: soon nobody holds the pipe for writing (a
    # read then sees end of file instead of "try again").
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        for _ in range(100):
            try:
                assert os.read(fd, 1) == b""
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            raise AssertionError("the copy's process still holds the pipe")
    finally:
        os.close(fd)
    # and it was reaped: no zombie child of this (long-lived, like a minion) process
    for _ in range(100):
        if not _zombie_children():
            break
        time.sleep(0.05)
    assert _zombie_children() == []


def _zombie_children() -> list:
    found = []
    for proc in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = proc.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(proc.parent.name)
    return found


def test_a_copy_in_time_returns_its_result_or_its_error(tmp_path):
    assert backup_target.with_limit(10, lambda: {"manifest": {"size": 3}}) == {
        "manifest": {"size": 3}
    }

    def fails():
        raise ArmswarmError("backup target is not writable (read-only)")

    with pytest.raises(ArmswarmError, match="read-only"):
        backup_target.with_limit(10, fails)
    # Its standard streams are /dev/null: a stuck copy never holds the caller's output.
    assert backup_target.with_limit(10, lambda: os.readlink("/proc/self/fd/1")) == "/dev/null"


def test_a_cancelled_publish_leaves_nothing(tmp_path):
    cancel = threading.Event()
    bid = backup_policy.backup_id(datetime.now(backup_policy.UTC), "node1")

    def produce(writer):
        writer.write(b"first chunk")
        cancel.set()  # the time limit passed meanwhile
        writer.write(b"second chunk")
        return backup_policy.ARCHIVES["none"]

    with pytest.raises(backup_target.Cancelled):
        backup_target.publish(tmp_path / "volumes" / "app", bid, produce, {}, cancel)
    assert list((tmp_path / "volumes" / "app").iterdir()) == []


class _DumpStandIn:
    """The Docker API calls a dump makes, answered with a real socket whose far end, in a
    process of its own (as dockerd is), plays the dump's shell command: it reads the password
    line from stdin, sends ``dump`` as stdout frames, then ``err`` and the exit status line as
    stderr (``DUMP_CMD`` prints it), or with ``stuck`` sends a first frame and then nothing,
    as a dump blocked on a lock. Only the dump stream is a stand-in; the files are written by
    the real code."""

    def __init__(self, dump: bytes, code=0, err=b"", stuck=False, scratch=None):
        self.dump, self.code, self.err, self.stuck = dump, code, err, stuck
        self.scratch = Path(tempfile.mkdtemp(dir=scratch))

    @property
    def stdin(self) -> bytes:
        return (self.scratch / "stdin").read_bytes()

    def closed(self, seconds=5) -> bool:
        """The far end saw the connection close (the dump would end)."""
        for _ in range(int(seconds * 20)):
            if (self.scratch / "closed").exists():
                return True
            time.sleep(0.05)
        return False

    def containers(self, filters):
        return [{"Id": "c1", "Names": ["/shop-db"], "Image": "mariadb:11.4", "Labels": {}}]

    def inspect_container(self, cid):
        return {"Config": {"Env": ["MARIADB_ROOT_PASSWORD=s3cret-pw"]}}

    def exec_create(self, cid, argv, **kwargs):
        return {"Id": "exec1"}

    def exec_start(self, exec_id, socket=False):
        ours, theirs = sock.socketpair()
        pid = os.fork()
        if pid == 0:  # the far end; nobody else holds its socket
            try:
                ours.close()
                self._far_end(theirs)
            finally:
                os._exit(0)
        theirs.close()
        threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()
        return ours

    def _far_end(self, theirs):
        def frame(stream, chunk):
            theirs.sendall(bytes([stream, 0, 0, 0]) + len(chunk).to_bytes(4, "big") + chunk)

        stdin = b""
        while data := theirs.recv(4096):
            stdin += data
        (self.scratch / "stdin").write_bytes(stdin)
        for start in range(0, len(self.dump), 1000):  # several frames, as dockerd sends
            frame(1, self.dump[start : start + 1000])
            if self.stuck:
                # The reader shut its writing half at once; a hang-up is its whole end closed.
                poll = select.poll()
                poll.register(theirs, select.POLLHUP)
                if poll.poll(30_000):
                    (self.scratch / "closed").touch()
                return
        status = b"\n" + mysql_dumps.EXIT_MARK + str(self.code).encode() + b"\n"
        frame(2, self.err + status)
        theirs.close()

    def exec_inspect(self, exec_id):
        return {"Running": False, "ExitCode": 0}


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_a_mysql_dump_is_owner_only_whatever_the_umask(tmp_path, umask):
    # A mysql/ directory made by an older version with the usual 0755 is narrowed too.
    (tmp_path / "mysql").mkdir(mode=0o755)
    (tmp_path / "mysql").chmod(0o755)
    dump = b"-- MariaDB dump 10.19\nINSERT INTO orders VALUES (1,'card 4111');\n" * 300
    api = _DumpStandIn(dump, scratch=tmp_path)
    conf = backup_policy.settings(
        pillar={"armswarm": {"backup": {"target": {"path": str(tmp_path), "require_mount": False}}}}
    )
    old = os.umask(umask)
    try:
        result = mysql_dumps.mysql_dump(
            types.SimpleNamespace(api=api), conf, "node1", lambda key, default=None: default
        )
    finally:
        os.umask(old)
    assert result["errors"] == {} and list(result["dumped"]) == ["shop-db"]
    assert api.stdin == b"s3cret-pw\n"  # the password went on stdin, nowhere else
    folder = tmp_path / "mysql" / "shop-db"
    (backup,) = [p for p in folder.iterdir()]
    assert backup.name == result["dumped"]["shop-db"]["id"]
    assert gzip.decompress((backup / backup_policy.DUMP).read_bytes()) == dump
    assert {p: _mode(p) for p in (tmp_path / "mysql", folder, backup)} == dict.fromkeys(
        (tmp_path / "mysql", folder, backup), 0o700
    )
    names = sorted(p.name for p in backup.iterdir())
    assert names == ["SHA256SUMS", "dump.sql.gz", "manifest.json"]
    assert {p.name: _mode(p) for p in backup.iterdir()} == dict.fromkeys(names, 0o600)
    assert not any(b"s3cret-pw" in p.read_bytes() for p in backup.iterdir())


def _dump_conf(tmp_path, **mysql):
    conf, problems = backup_policy.resolve(
        {"armswarm": {"backup": {"mysql": mysql}}} if mysql else {},
        {"armswarm": {"backup": {"target": {"path": str(tmp_path), "require_mount": False}}}},
    )
    assert problems == []
    return conf


def test_a_failed_dump_publishes_nothing_and_says_why_without_the_password(tmp_path):
    api = _DumpStandIn(
        b"-- partial\n", code=2, err=b"mysqldump: Got error: 1045 s3cret-pw", scratch=tmp_path
    )
    result = mysql_dumps.mysql_dump(
        types.SimpleNamespace(api=api), _dump_conf(tmp_path), "node1", lambda k, d=None: d
    )
    assert result["dumped"] == {}
    assert "failed (exit 2): mysqldump: Got error: 1045 ***" in result["errors"]["shop-db"]
    assert "s3cret-pw" not in str(result)
    assert list((tmp_path / "mysql" / "shop-db").iterdir()) == []


def test_a_dump_that_does_not_finish_is_given_up_at_its_limit(tmp_path):
    api = _DumpStandIn(b"-- MariaDB dump\n" * 100, stuck=True, scratch=tmp_path)
    clock = time.monotonic()
    result = mysql_dumps.mysql_dump(
        types.SimpleNamespace(api=api),
        _dump_conf(tmp_path, timeout_seconds=1),
        "node1",
        lambda k, d=None: d,
    )
    assert time.monotonic() - clock < 5
    error = result["errors"]["shop-db"]
    assert "the dump of shop-db did not finish within mysql:timeout_seconds=1" in error
    assert "the dump stopped, nothing published" in error and result["dumped"] == {}
    assert api.closed()  # the dump's connection was closed: the dump ends
    _assert_no_child_left()
    # Its half-written partial copy goes once the killed child is gone.
    for _ in range(100):
        if not list((tmp_path / "mysql" / "shop-db").iterdir()):
            break
        time.sleep(0.05)
    assert list((tmp_path / "mysql" / "shop-db").iterdir()) == []


def _shell(script):
    proc = subprocess.Popen(["sh", "-c", script])
    for _ in range(100):  # the shell has started what it runs
        kids = mysql_dumps._descendants(proc.pid)
        if kids:
            return proc, kids
        time.sleep(0.05)
    raise AssertionError(f"{script} started nothing")


def test_a_dump_given_up_is_stopped_and_its_shell_reaps_it():
    # In a process of its own that adopts orphans and never reaps them, as a database server
    # that is a container's PID 1: a dump orphaned by its shell would stay a zombie there.
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
            mark = mysql_dumps.EXIT_MARK.decode()
            # A dump stuck writing (sleep) under the dump command's shell, which, as DUMP_CMD
            # does, prints the exit mark once the dump ends.
            proc, (dump,) = _shell(f'sleep 600; code=$?; echo "{mark}$code" >/dev/null; sleep 600')
            api = types.SimpleNamespace(exec_inspect=lambda exec_id: {"Pid": proc.pid})
            mysql_dumps._stop_exec(api, "exec1")
            stopped = proc.wait(timeout=10) != 0
            time.sleep(0.2)
            code = 0 if stopped and not Path(f"/proc/{dump}").exists() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    # 0: the shell was stopped after it reaped the dump, no zombie handed to anyone
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_pid_that_is_not_a_dump_shell_is_left_alone():
    proc, (child,) = _shell("sleep 600; echo not a dump")
    try:
        for pid in (proc.pid, 0, None):
            api = types.SimpleNamespace(exec_inspect=lambda exec_id, pid=pid: {"Pid": pid})
            mysql_dumps._stop_exec(api, "exec1")
        time.sleep(0.3)
        assert proc.poll() is None and Path(f"/proc/{child}/cmdline").read_bytes()
    finally:
        os.kill(child, 9)
        proc.wait(timeout=10)


@pytest.mark.parametrize("value", [0, -1, "soon", True, [60]])
def test_the_dump_limit_is_typed(value):
    _, problems = backup_policy.resolve(
        {}, {"armswarm": {"backup": {"mysql": {"timeout_seconds": value}}}}
    )
    assert any("armswarm:backup:mysql:timeout_seconds" in p for p in problems), problems


class _Engine:
    """Docker's answers for two volumes, one used by a running container (what a backup run
    asks the engine); pause and unpause are recorded."""

    def __init__(self, base: Path):
        self.api, self.paused = self, []
        self.vols = []
        for name in ("app", "later"):
            (base / name / "_data").mkdir(parents=True)
            (base / name / "_data" / "f").write_bytes(b"pages")
            self.vols.append(
                {"Name": name, "Driver": "local", "Mountpoint": f"{base}/{name}/_data"}
            )

    def volumes(self):
        return {"Volumes": self.vols}

    def containers(self, all=False):  # noqa: A002 - docker SDK's name
        mount = {"Type": "volume", "Name": "app"}
        return [{"Id": "c" * 64, "Names": ["/app"], "State": "running", "Mounts": [mount]}]

    def pause(self, cid):
        self.paused.append(cid)

    def unpause(self, cid):
        pass


def _run_against(engine, share):
    conf, problems = backup_policy.resolve(
        {"armswarm": {"backup": {"pause_timeout_seconds": 1}}},
        {"armswarm": {"backup": {"target": {"path": str(share), "require_mount": False}}}},
    )
    assert problems == []
    clock = time.monotonic()
    try:
        return volume_backups.backup_volumes(engine, conf, "node1"), engine
    finally:
        # One limit per run, not one per volume: the second volume is not tried.
        assert time.monotonic() - clock < 4


def test_a_share_whose_probe_hangs_fails_the_run_at_the_limit_naming_it(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    # The write probe's open blocks until a reader comes, like a write to a dead NAS.
    os.mkfifo(share / backup_target.PROBE)
    with pytest.raises(ArmswarmError) as err:
        _run_against(_Engine(tmp_path / "docker"), share)
    assert f"is the backup target {share} hung?" in str(err.value)
    assert "pause_timeout_seconds=1" in str(err.value)
    assert "before any container was paused" in str(err.value)
    _assert_no_child_left()


def test_a_share_whose_listing_hangs_fails_before_the_pause(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    engine = _Engine(tmp_path / "docker")
    data = Path(engine.vols[0]["Mountpoint"])
    bid = backup_policy.backup_id(datetime.now(backup_policy.UTC), "node1")
    # The volume's marker says its last backup holds this content: the run reads that
    # backup's SHA256SUMS on the share to check it, and that read blocks.
    (share / "volumes" / "app" / bid).mkdir(parents=True)
    os.mkfifo(share / "volumes" / "app" / bid / backup_policy.SUMS)
    fingerprint = volume_backups.scan(data)["fingerprint"]
    volume_backups.write_marker(
        data, {"lineage": "l1", "backup": bid, "sha256": "0" * 64, "content": fingerprint}
    )
    ret, engine = _run_against(engine, share)
    assert engine.paused == []
    assert ret["backed_up"] == {}
    assert f"is the backup target {share} hung?" in ret["errors"]["app"]
    assert "before its containers were paused" in ret["errors"]["app"]
    assert ret["errors"]["later"] == (
        f"not tried: the backup target {share} did not answer within the limit"
    )
    _assert_no_child_left()


def _assert_no_child_left():
    # Killed (a FIFO's open is interruptible) and reaped: no zombie of a minion-like process.
    for _ in range(100):
        if not _zombie_children() and not _children():
            break
        time.sleep(0.05)
    assert _zombie_children() == []
    assert _children() == []


def _children() -> list:
    return [p.parent.name for p in Path("/proc").glob("[0-9]*/stat") if _ppid(p) == os.getpid()]


def _ppid(stat_file: Path):
    try:
        return int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
