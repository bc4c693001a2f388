"""armswarm's shared layer.

Every armswarm loader module (execution, state, grains, runner) is a thin façade over this
package; loader modules never import each other. It is importable in two ways:

* pip-installed: ``armswarm_core`` is a top-level package in site-packages;
* synced from file_roots (``saltutil.sync_utils``): Salt puts the minion's ``extmods/utils``
  directory on ``sys.path`` while it loads modules, so ``import armswarm_core`` finds the copy
  synced from ``salt://_utils/armswarm_core``.

Nothing here may import Salt's loader dunders: functions take ``opts``/``pillar`` explicitly.
"""

__all__ = ["ArmswarmError"]


class ArmswarmError(Exception):
    """An error with a message meant for the user (states put it in their comment)."""
