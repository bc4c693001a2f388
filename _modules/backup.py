"""Volume backups to a network drive, MySQL/MariaDB dumps, restores and the daily clean-up.

A thin façade over :mod:`armswarm_core.backup.backup_target`. Settings are ``armswarm:backup`` in
the minion config and pillar, merged key by key with pillar last (see
``salt/backup/pillar.example`` and the users' guide); the
``backup`` formula schedules :func:`run`, :func:`mysql_dump` and :func:`cleanup` daily with cron.

Database passwords are read on the node (container environment or a pillar key) and never
appear in returns or logs.
"""

import logging

from armswarm_core import ArmswarmError
from armswarm_core.backup import (
    backup_policy,
    backup_target,
    mysql_dumps,
    volume_backups,
    volume_cleanup,
)
from armswarm_core.common import docker_client
from salt.exceptions import CommandExecutionError
from salt.utils.data import traverse_dict_and_list

log = logging.getLogger(__name__)

__virtualname__ = "backup"


def __virtual__():
    return docker_client.virtual(__virtualname__)


def _conf(target=None, strict=True):
    try:
        conf = backup_policy.settings(__opts__, __pillar__, strict=strict)
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    if target:
        conf["target"]["path"] = str(target)
    return conf


def _call(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc


def _engine():
    return _call(docker_client.connect, __opts__, __pillar__)


def _pillar_get(key, default=None):
    if not key:
        return default
    return traverse_dict_and_list(__pillar__, key, default, delimiter=":")


def _names(value):
    if value is None:
        return None
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    return [str(v) for v in value]


def _flag(value, key):
    """A boolean argument as given: ``force="false"`` from a script must not read as true."""
    if not isinstance(value, bool):
        raise CommandExecutionError(f"{key} must be true or false, not {value!r}")
    return value


def _flag_errors(result):
    if result.get("errors"):
        __context__["retcode"] = 1
    return result


def settings(strict=True):
    """
    The effective backup settings: the defaults < ``armswarm:backup`` in the minion config <
    in pillar, key by key, validated (an error names every bad key). Credentials appear only
    as pillar key names. ``strict=False`` (the formula's ``map.jinja``) returns them even when
    some keys are bad, each left at its default; the ``backup.settings_valid`` state reports
    those.

    CLI Example:

    .. code-block:: bash

        salt '*' backup.settings
    """
    return _conf(strict=_flag(strict, "strict"))


def run(volumes=None, force=False, target=None):
    """
    Back up this node's volumes to the target: one archive per volume (containers using it
    paused for the copy, at most ``pause_timeout_seconds``), a manifest and ``SHA256SUMS``
    (files 0600, directories 0700), then retention (``keep_daily`` days and the newest backup
    of each lineage). Skips volumes labelled ``io.armswarm.backup=false``, excluded ones,
    empty ones, and ones whose own last backup (their lineage marker) holds exactly their
    current content (``force=True`` backs them up anyway); a newer backup of the same name
    from another node never counts. A target that is missing, not mounted or read-only fails
    before anything is written or deleted; one that hangs fails at ``pause_timeout_seconds``
    (every access to it is under that limit), naming it, with no container left paused.

    volumes
        Only these volumes (list or comma-separated).
    target
        Another mounted target path than ``armswarm:backup:target:path``.

    CLI Example:

    .. code-block:: bash

        salt '*' backup.run
        salt node1 backup.run volumes=app_data force=True
    """
    conf = _conf(target)
    result = _call(
        volume_backups.backup_volumes,
        _engine(),
        conf,
        __opts__["id"],
        names=_names(volumes),
        force=_flag(force, "force"),
    )
    return _flag_errors(result)


def mysql_dump(names=None, target=None):
    """
    Dump every MySQL/MariaDB container running on this node (detected by image name or the
    label ``io.armswarm.backup.mysql=true``) with ``--single-transaction``, gzip it with a
    manifest and checksums under ``mysql/<service or container>/``, then keep ``keep_daily``
    days. Credentials come from pillar (``armswarm:backup:mysql:credentials``) or the
    container's environment (``MARIADB_ROOT_PASSWORD``, ``MYSQL_ROOT_PASSWORD``, ``…_FILE``).

    CLI Example:

    .. code-block:: bash

        salt '*' backup.mysql_dump
        salt node2 backup.mysql_dump names=db_mariadb
    """
    conf = _conf(target)
    result = _call(
        mysql_dumps.mysql_dump, _engine(), conf, __opts__["id"], _pillar_get, only=_names(names)
    )
    return _flag_errors(result)


def mysql_restore(name, container=None, backup=None):
    """
    Load the newest good dump of ``name`` (or the dump ``backup``) into the running
    ``container`` (default: the container called ``name``). The dump's checksum is checked
    first: a damaged dump is refused before the database is touched.

    CLI Example:

    .. code-block:: bash

        salt node3 backup.mysql_restore db_mariadb container=db_mariadb.1.x7fa0
    """
    conf = _conf()
    return _call(
        mysql_dumps.mysql_restore,
        _engine(),
        conf,
        name,
        container or name,
        _pillar_get,
        bid=backup,
    )


def restore(volume, backup=None, force=False):
    """
    Restore ``volume`` on this node from its newest good backup (or ``backup``, an id from
    :func:`list_backups`), creating the volume when it is missing. The archive's checksum is
    verified while it is extracted to a new staging directory, which is swapped in for the
    old data atomically only when complete and matching. A volume with data is refused
    unless ``force=True``; one a running container uses is always refused; two restores of
    one volume take turns. The return lists ``other_lineages``: the newest backup of every
    other copy of the volume (after a drain, the node that kept writing), to pick with
    ``backup=``.

    CLI Example:

    .. code-block:: bash

        salt node5 backup.restore app_data
        salt node5 backup.restore app_data backup=20250102T023000.000000Z_node4 force=True
    """
    conf = _conf()
    return _call(
        volume_backups.restore_volume,
        _engine(),
        conf,
        volume,
        backup,
        _flag(force, "force"),
        __opts__["id"],
    )


def volume_state(volume):
    """
    Whether ``volume`` is ``missing``, ``empty`` or has ``data`` on this node.

    CLI Example:

    .. code-block:: bash

        salt '*' backup.volume_state app_data
    """
    return _call(volume_backups.volume_state, _engine(), volume)


def list_backups(name=None, kind="volumes"):
    """
    Backups on the target per volume (``kind=volumes``) or dump set (``kind=mysql``), newest
    first, with the node that made each, its size and status (``complete`` or what is
    damaged).

    CLI Example:

    .. code-block:: bash

        salt node1 backup.list_backups
        salt node1 backup.list_backups app_data
        salt node1 backup.list_backups kind=mysql
    """
    if kind not in ("volumes", "mysql"):
        raise CommandExecutionError("kind must be volumes or mysql")
    return _call(backup_target.listing, _conf(), kind, name)


def verify(name, backup=None, kind="volumes"):
    """
    Re-read a backup (the newest good one by default) and compare its checksum.

    CLI Example:

    .. code-block:: bash

        salt node1 backup.verify app_data
    """
    if kind not in ("volumes", "mysql"):
        raise CommandExecutionError("kind must be volumes or mysql")
    return _call(backup_target.verify, _conf(), kind, name, backup)


def cleanup(dry_run=False, max_age_hours=None, target=None):
    """
    Remove stopped containers older than ``cleanup:container_max_age_hours``, dangling images
    and unused volumes; never a volume in use, labelled ``io.armswarm.keep=true``, or whose
    exact current content is not in an intact backup (the one its lineage marker names, its
    archive verified against ``SHA256SUMS``; empty volumes excepted). Returns what was removed (or
    would be, with ``dry_run=True``), why each volume was kept, and the bytes freed. When the
    backup target cannot be read, only empty volumes can go.

    max_age_hours
        Overrides ``cleanup:container_max_age_hours`` for this run.
    target
        Another target path than ``armswarm:backup:target:path``.

    CLI Example:

    .. code-block:: bash

        salt '*' backup.cleanup dry_run=True
        salt '*' backup.cleanup
    """
    dry_run = _flag(dry_run, "dry_run")
    conf = _conf(target)
    if not conf["cleanup"]["enabled"]:
        return {"dry_run": dry_run, "comment": "clean-up is disabled"}
    result = _call(
        volume_cleanup.cleanup, _engine(), conf, dry_run=dry_run, max_age_hours=max_age_hours
    )
    return _flag_errors(result)
