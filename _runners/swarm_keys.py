"""Swarm secrets that pass through the master, opened only on the master.

A manager seals the autolock unlock key for the master (``docker_swarm.unlock_key``); the
orchestration keeps it so while autolock is on (:mod:`armswarm_core.swarm.unlock_keys`). This
runner opens a running manager's key, or the kept one, with the master's private key and
re-seals it for the locked manager, which opens it with its own (``docker_swarm.unlock
sealed_key=…``). Job returns and the job cache hold ciphertext only.
"""

import os

import salt.client
from armswarm_core import ArmswarmError
from armswarm_core.swarm import unlock_keys
from salt.exceptions import CommandExecutionError

__virtualname__ = "swarm_keys"


def __virtual__():
    return __virtualname__


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise CommandExecutionError(f"cannot read {path}: {exc.strerror}") from exc


def unlock(target, manager=None, layout=unlock_keys.DEFAULT_LAYOUT):
    """
    Unlock the locked manager ``target`` (after a restart with autolock on) with the unlock
    key of the running manager ``manager``, or, without one (or when it gives none), the key
    the orchestration keeps on the master for the layout at pillar key ``layout``. The key
    travels sealed for the master, then sealed for ``target``; it is never in a return.

    CLI Example:

    .. code-block:: bash

        salt-run swarm_keys.unlock node2 node1
        salt-run swarm_keys.unlock node2
    """
    local = salt.client.get_local_client(__opts__["conf_file"])

    def call(minion, fun, kwarg):
        return local.cmd(minion, fun, kwarg=kwarg, timeout=60).get(minion)

    store = unlock_keys.Store(__opts__.get("cachedir", ""), __opts__["pki_dir"])
    target_pub = _read(os.path.join(__opts__["pki_dir"], "minions", str(target)))
    try:
        result, source = unlock_keys.unlock(
            call, store, str(target), target_pub, [manager] if manager else [], layout
        )
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    # the node's swarm state after the unlock, or its error (a string) or no answer at all
    if not isinstance(result, dict):
        raise CommandExecutionError(f"{target} was not unlocked: {result!r}"[:300])
    return {"target": target, "result": result, "key_from": source}
