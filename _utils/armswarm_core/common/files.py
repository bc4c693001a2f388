"""Writing files: atomically, durably, with the final owner and mode from the first byte.

Every file armswarm writes from content it holds goes through :func:`write`; a directory
published by a rename (a backup) uses :func:`fsync_dir` for the same guarantees.
"""

import os
import secrets
import stat
from pathlib import Path


def write(path, data, mode: int | None = None):
    """Replace ``path`` with ``data`` (``str``, written as UTF-8, or ``bytes``).

    * Atomic: the content goes to a temporary file in the same directory, is fsynced and then
      renamed over ``path``, and the directory is fsynced. A reader sees the old file or the
      new one, never a part; after a failure (disk full, a crash) the old file is untouched
      and the temporary file is gone.
    * Mode: ``mode`` when given, else the mode of the file replaced, else what ``open(path,
      "w")`` gives a new file (``0o666`` less the umask). The temporary file is created with
      no more permission than that (the umask can only narrow it) and gets its owner before
      the first byte is written: a secret never exists with a wider mode. The exact mode
      (bits the umask took, set-id bits) is set once the content is in, before the rename.
    * Owner: the owner and group of a replaced file are kept (as writing in place keeps
      them); a new file belongs to the caller.
    * A symlink at ``path`` is followed: the file it points to is replaced and the link
      stays, as with ``open(path, "w")`` (a boot file linked into another partition stays
      there). A dangling link gets its target created.
    * Missing parent directories are created.
    """
    target = Path(os.path.realpath(path))
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    if mode is None and old is not None:
        mode = stat.S_IMODE(old.st_mode)
    tmp, fd = _create_beside(target, 0o666 if mode is None else mode & 0o777)
    try:
        with os.fdopen(fd, "wb") as fh:
            if old is not None and (old.st_uid, old.st_gid) != _owner(fh.fileno()):
                os.fchown(fh.fileno(), old.st_uid, old.st_gid)
            fh.write(payload)
            fh.flush()
            if mode is not None:
                # Exact, whatever the umask took; after the chown and the write, which clear
                # set-id bits. Until now the mode was narrower, never wider.
                os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def fsync_dir(path):
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _owner(fd) -> tuple:
    st = os.fstat(fd)
    return st.st_uid, st.st_gid


def _create_beside(target: Path, mode: int) -> tuple:
    """A new temporary file next to ``target``: ``(path, fd open for writing)``."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")
