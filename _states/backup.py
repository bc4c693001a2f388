"""States for volume backups: settings checked before any change, a volume restored before
a stack is deployed.

.. code-block:: yaml

    app-data-restored:
      backup.volume_restored:
        - name: shop_db_data
"""

from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy, backup_target, volume_backups
from armswarm_core.common import docker_client, state_results

__virtualname__ = "backup"


def __virtual__():
    return docker_client.virtual(__virtualname__)


def settings_valid(name="backup-settings", settings=None):
    """
    The backup settings (the defaults < minion config < pillar ``armswarm:backup``, or
    ``settings`` when given) are valid; states that change things require this one, so bad
    input stops the run before anything changes.
    """
    ret = state_results.new(name)
    if settings is None:
        problems = backup_policy.resolve(__opts__, __pillar__)[1]
    else:
        problems = backup_policy.validate(settings)
    if problems:
        return state_results.failed(ret, "Invalid backup settings: " + "; ".join(problems))
    return state_results.unchanged(ret, "Backup settings are valid")


def volume_restored(name, backup=None):
    """
    Volume ``name`` exists on this node with data: when it is missing or empty, it is
    restored from its newest good backup (or ``backup``). Run it on the node a service is
    pinned to before deploying the stack; a volume that has data is never touched.
    """
    ret = state_results.new(name)
    try:
        conf = backup_policy.settings(__opts__, __pillar__)
        engine = docker_client.connect(__opts__, __pillar__)
        current = volume_backups.volume_state(engine, name)
        if current == "data":
            return state_results.unchanged(ret, f"Volume {name} has data")
        root = backup_target.target_root(conf, write=False)
        item = backup_target.choose(root, "volumes", name, backup)
        ret["changes"] = {"volume": {"old": current, "new": f"restored from {item['id']}"}}
        if __opts__["test"]:
            return state_results.would_change(
                ret, f"Volume {name} ({current}) would be restored from {item['id']}"
            )
        done = volume_backups.restore_volume(engine, conf, name, item["id"], node=__opts__["id"])
        comment = f"Volume {name} restored from {done['backup']} in {done['seconds']} s"
        if done["other_lineages"]:
            # Divergent copies (a node that kept writing after a move): a person may prefer one.
            others = ", ".join(done["other_lineages"].values())
            comment += f"; other lineages' newest backups (pick with backup=): {others}"
        return state_results.changed(ret, comment)
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)
