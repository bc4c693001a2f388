"""States for volume backups: settings checked before any change, a volume restored before
a stack is deployed.

.. code-block:: yaml

    app-data-restored:
      backup.volume_restored:
        - name: shop_db_data
"""

from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy, backup_target, volume_backups
from armswarm_core.common import docker_client

__virtualname__ = "backup"


def __virtual__():
    reason = docker_client.missing_dependency()
    if reason:
        return False, f"backup: {reason}"
    return __virtualname__


def _ret(name):
    return {"name": name, "changes": {}, "result": True, "comment": ""}


def settings_valid(name="backup-settings", settings=None):
    """
    The backup settings (the defaults < minion config < pillar ``armswarm:backup``, or
    ``settings`` when given) are valid; states that change things require this one, so bad
    input stops the run before anything changes.
    """
    ret = _ret(name)
    if settings is None:
        problems = backup_policy.resolve(__opts__, __pillar__)[1]
    else:
        problems = backup_policy.validate(settings)
    if problems:
        ret.update(result=False, comment="Invalid backup settings: " + "; ".join(problems))
    else:
        ret["comment"] = "Backup settings are valid"
    return ret


def volume_restored(name, backup=None):
    """
    Volume ``name`` exists on this node with data: when it is missing or empty, it is
    restored from its newest good backup (or ``backup``). Run it on the node a service is
    pinned to before deploying the stack; a volume that has data is never touched.
    """
    ret = _ret(name)
    try:
        conf = backup_policy.settings(__opts__, __pillar__)
        engine = docker_client.connect(__opts__, __pillar__)
        current = volume_backups.volume_state(engine, name)
        if current == "data":
            ret["comment"] = f"Volume {name} has data"
            return ret
        root = backup_target.target_root(conf, write=False)
        item = backup_target.choose(root, "volumes", name, backup)
        ret["changes"] = {"volume": {"old": current, "new": f"restored from {item['id']}"}}
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"Volume {name} ({current}) would be restored from {item['id']}"
            return ret
        done = volume_backups.restore_volume(engine, conf, name, item["id"])
        ret["comment"] = f"Volume {name} restored from {done['backup']} in {done['seconds']} s"
    except ArmswarmError as exc:
        ret.update(result=False, changes={}, comment=str(exc))
    return ret
