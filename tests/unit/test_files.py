"""common.files on real files: atomic replacement, modes from the first byte, owners kept,
symlinks followed, the original intact after a failure."""

import errno
import os
import resource
import signal
import stat
import threading

import pytest
from armswarm_core.backup import backup_policy, backup_target
from armswarm_core.common import files

BIG = b"x" * (32 << 20)  # long enough for a watcher to see the temporary file


@pytest.fixture
def umask():
    """Set a umask for one test (restored afterwards)."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def watched_write(path, data, mode, tries=20):
    """Write while a thread lists the directory: the modes seen of every other entry (the
    temporary files) during the writes. Retries until at least one was seen."""
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            for entry in os.scandir(path.parent):
                if entry.name != path.name:
                    try:
                        seen.append((entry.name, stat.S_IMODE(entry.stat().st_mode)))
                    except FileNotFoundError:
                        pass  # renamed between listing and stat

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        for _ in range(tries):
            files.write(path, data, mode)
            if seen:
                break
    finally:
        stop.set()
        thread.join()
    assert seen, "the watcher never saw the temporary file"
    return seen


@pytest.mark.parametrize("existing", [None, 0o644])
def test_a_secret_is_never_readable_by_others_even_with_umask_000(tmp_path, umask, existing):
    umask(0)  # a write that relied on the umask would show 0666 here
    path = tmp_path / "secret"
    if existing is not None:
        path.write_text("old")
        path.chmod(existing)
    seen = watched_write(path, BIG, 0o600)
    assert {m for _, m in seen} == {0o600}, seen
    assert all(name.startswith(".secret.") for name, _ in seen)
    assert mode_of(path) == 0o600
    assert path.read_bytes() == BIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]  # no temporary left


def test_a_mode_without_write_bits_is_kept_exactly(tmp_path, umask):
    umask(0)
    path = tmp_path / "ro"
    seen = watched_write(path, BIG, 0o444)
    assert {m for _, m in seen} == {0o444}
    assert mode_of(path) == 0o444


def test_without_a_mode_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0)
    path = tmp_path / "conf"
    path.write_text("old")
    path.chmod(0o640)
    seen = watched_write(path, BIG, None)
    assert {m for _, m in seen} == {0o640}
    assert mode_of(path) == 0o640


def test_without_a_mode_a_new_file_gets_what_open_would_give(tmp_path, umask):
    umask(0o027)
    files.write(tmp_path / "new", "text")
    with open(tmp_path / "by-open", "w") as fh:
        fh.write("text")
    assert mode_of(tmp_path / "new") == mode_of(tmp_path / "by-open") == 0o640


def test_an_explicit_mode_is_exact_whatever_the_umask(tmp_path, umask):
    umask(0o077)
    files.write(tmp_path / "script", "#!/bin/sh\n", 0o755)
    assert mode_of(tmp_path / "script") == 0o755


def test_text_is_utf8_and_parents_are_created(tmp_path):
    path = tmp_path / "a" / "b" / "c.txt"
    files.write(path, "Grüße\n")
    assert path.read_bytes() == "Grüße\n".encode()
    files.write(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
@pytest.mark.parametrize("mode", [None, 0o640])
def test_the_owner_and_group_of_a_replaced_file_are_kept(tmp_path, mode):
    path = tmp_path / "owned"
    path.write_text("old")
    os.chown(path, 1234, 2345)
    path.chmod(0o4750)  # after the chown, which clears set-id bits; kept only if re-set
    files.write(path, "new", mode)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert stat.S_IMODE(st.st_mode) == (0o4750 if mode is None else mode)
    assert path.read_text() == "new"


def test_a_write_that_fails_midway_leaves_the_original_and_no_temporary(tmp_path):
    path = tmp_path / "fstab"
    path.write_text("original\n")
    path.chmod(0o644)
    # A real short write: the kernel refuses to grow a file past RLIMIT_FSIZE (EFBIG).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(OSError) as info:
            files.write(path, b"y" * (1 << 20))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert info.value.errno == errno.EFBIG
    assert path.read_text() == "original\n"
    assert mode_of(path) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["fstab"]


def test_a_directory_in_the_way_fails_and_leaves_no_temporary(tmp_path):
    (tmp_path / "conf").mkdir()
    with pytest.raises(OSError):
        files.write(tmp_path / "conf", "text")
    assert [p.name for p in tmp_path.iterdir()] == ["conf"]
    assert (tmp_path / "conf").is_dir()


def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    # e.g. /boot/boot.txt linked into the boot partition: the file the bootloader reads
    # changes, the link stays.
    (tmp_path / "part").mkdir()
    target = tmp_path / "part" / "boot.txt"
    target.write_text("old")
    target.chmod(0o600)
    link = tmp_path / "boot.txt"
    link.symlink_to("part/boot.txt")
    files.write(link, "new")
    assert link.is_symlink() and os.readlink(link) == "part/boot.txt"
    assert target.read_text() == "new"
    assert mode_of(target) == 0o600
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == ["boot.txt"]


def test_a_dangling_symlink_gets_its_target_created(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "made" / "file")
    files.write(link, "text", 0o600)
    assert link.is_symlink()
    assert (tmp_path / "made" / "file").read_text() == "text"
    assert mode_of(tmp_path / "made" / "file") == 0o600


def test_fsync_dir_takes_directories_only(tmp_path):
    files.fsync_dir(tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        files.fsync_dir(tmp_path / "f")


# -- a caller: backups appear complete under their final name, or not at all ----------------
BID = "20240101T000000.000000Z_node1"


def test_a_published_backup_is_complete_and_checks(tmp_path):
    def produce(writer):
        writer.write(b"archive bytes")
        return "data.tar.gz"

    backup_target.publish(
        tmp_path / "volumes" / "v",
        BID,
        produce,
        {"kind": "volumes", "name": "v", "node": "node1", "compression": "gzip"},
    )
    [item] = backup_target.backups(tmp_path, "volumes", "v")
    assert "error" not in item, item
    folder = tmp_path / "volumes" / "v" / BID
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["data.tar.gz", backup_policy.MANIFEST, backup_policy.SUMS]
    )
    assert (folder / "data.tar.gz").read_bytes() == b"archive bytes"


def test_a_backup_that_fails_while_written_leaves_nothing(tmp_path):
    def produce(writer):
        writer.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        backup_target.publish(tmp_path / "volumes" / "v", BID, produce, {})
    assert list((tmp_path / "volumes" / "v").iterdir()) == []
