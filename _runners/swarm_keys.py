"""Swarm secrets that pass through the master, opened only on the master.

A manager seals the autolock unlock key for the master (``docker_swarm.unlock_key``); this
runner opens it with the master's private key and re-seals it for the locked manager, which
opens it with its own (``docker_swarm.unlock sealed_key=…``). Job returns and the job cache
hold ciphertext only.
"""

import os

import salt.client
from armswarm_core import ArmswarmError
from armswarm_core.swarm import join_tokens
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


def unlock(target, manager):
    """
    Unlock the locked manager ``target`` (after a restart with autolock on) with the unlock
    key of the running manager ``manager``: the key travels sealed for the master, then
    sealed for ``target``; it is never in a return.

    CLI Example:

    .. code-block:: bash

        salt-run swarm_keys.unlock node2 node1
    """
    local = salt.client.get_local_client(__opts__["conf_file"])
    answer = local.cmd(manager, "docker_swarm.unlock_key", timeout=30).get(manager)
    if not isinstance(answer, dict) or not answer.get("available"):
        raise CommandExecutionError(f"{manager} has no unlock key to give: {answer!r}"[:300])
    pki = __opts__["pki_dir"]
    try:
        key = join_tokens.unseal(
            answer["sealed"], _read(os.path.join(pki, "master.pem")), join_tokens.MASTER
        )
        sealed = join_tokens.seal(
            key, _read(os.path.join(pki, "minions", str(target))), str(target)
        )
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    result = local.cmd(target, "docker_swarm.unlock", kwarg={"sealed_key": sealed}, timeout=60).get(
        target
    )
    # the node's swarm state after the unlock, or its error (a string) or no answer at all
    if not isinstance(result, dict):
        raise CommandExecutionError(f"{target} was not unlocked: {result!r}"[:300])
    return {"target": target, "result": result}
