"""Build contexts served to the nodes from the master's file server, by their SHA-256.

A job's arguments name its context (``salt://<run>/<sha256>.tar.gz?saltenv=armswarm_contexts``)
and its hash; they never carry the bytes. Salt publishes a job's arguments to every connected
minion (each one decides whether it is targeted) and the master's job cache keeps them for
``keep_jobs`` hours: a context in the arguments went to every board and stayed in the cache.
Served instead, a context travels only to the node that fetches it (``cp.get_file`` over its
own authenticated channel), is checked against the hash in the job before it is unpacked, and
is removed from the master when its run ends.

The master serves the directory as the file server environment :data:`SALTENV`:

.. code-block:: yaml

    file_roots:
      base: [...]
      armswarm_contexts:
        - /var/cache/salt/master/armswarm/imagebuild/contexts
"""

import shutil
import time
from pathlib import Path, PurePosixPath

from armswarm_core import ArmswarmError
from armswarm_core.build import build_job
from armswarm_core.common import files

SALTENV = "armswarm_contexts"
STALE_SECONDS = 86400  # a run directory older than this is from a run that was killed


def root(file_roots) -> Path:
    """The directory the master serves as :data:`SALTENV` (``file_roots`` of the master
    config): the first of its roots. ArmswarmError naming the setting when there is none."""
    roots = file_roots.get(SALTENV) if isinstance(file_roots, dict) else None
    if isinstance(roots, str):
        roots = [roots]
    if not roots or not isinstance(roots, list) or not isinstance(roots[0], str):
        raise ArmswarmError(
            f"the master serves no file_roots:{SALTENV}: build contexts go to the nodes through "
            f"the file server; add to the master config  file_roots: {{{SALTENV}: "
            "[<cachedir>/armswarm/imagebuild/contexts]}  and restart the master"
        )
    return Path(roots[0])


def serve(directory: Path, run_id: str, contexts: dict) -> dict:
    """Write each context (``{name: bytes}``) as ``<directory>/<run_id>/<sha256>.tar.gz``;
    returns ``{name: {"source": salt://…, "sha256": …}}``, what the jobs name."""
    if PurePosixPath(run_id).name != run_id or run_id in ("", ".", ".."):
        raise ArmswarmError(f"{run_id!r}: not a run id")
    sweep(directory, exclude=run_id)
    out = {}
    for name, data in contexts.items():
        digest = build_job.sha256(data)
        files.write(Path(directory) / run_id / f"{digest}.tar.gz", data)
        out[name] = {
            "source": f"salt://{run_id}/{digest}.tar.gz?saltenv={SALTENV}",
            "sha256": digest,
        }
    return out


def withdraw(directory: Path, run_id: str):
    """Remove the run's contexts (its jobs have ended)."""
    shutil.rmtree(Path(directory) / run_id, ignore_errors=True)


def sweep(directory: Path, exclude=None, now=None, older_than=STALE_SECONDS):
    """Remove run directories left by runs that were killed (older than ``older_than``)."""
    now = time.time() if now is None else now
    try:
        entries = list(Path(directory).iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name == exclude or not entry.is_dir() or entry.is_symlink():
            continue
        if now - entry.stat().st_mtime > older_than:
            shutil.rmtree(entry, ignore_errors=True)
