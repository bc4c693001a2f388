"""Apply a changed ``/etc/docker/daemon.json`` across the swarm: one dockerd restart at a time.

The ``armnode`` formula writes the file (checked first) and, on a node in a swarm, only marks
it; this runner restarts the marked nodes' engines in turn, workers first, a manager only when
the other managers keep the quorum, each back in the swarm before the next
(:mod:`armswarm_core.node.docker_daemon`).
"""

import logging
import os
import sys
import time

import salt.client
from armswarm_core import ArmswarmError
from armswarm_core.node import docker_daemon
from armswarm_core.swarm import unlock_keys

log = logging.getLogger(__name__)

__virtualname__ = "armnode_docker"


def __virtual__():
    return __virtualname__


class _SaltTransport:
    def __init__(self, timeout):
        self.local = salt.client.get_local_client(__opts__["conf_file"])
        self.timeout = timeout
        self._states = None

    def _swarm_states(self):
        if self._states is None:
            answers = self.local.cmd("*", "docker_swarm.state", timeout=30)
            self._states = {m: s for m, s in answers.items() if isinstance(s, dict)}
        return self._states

    def roles(self):
        out = {}
        for minion, state in self._swarm_states().items():
            if state.get("state") != "active":
                out[minion] = None
            else:
                out[minion] = "manager" if state.get("is_manager") else "worker"
        return out

    def node_id(self, minion):
        return (self._swarm_states().get(minion) or {}).get("node_id")

    def nodes(self, exclude):
        managers = sorted(
            m for m, s in self._swarm_states().items() if s.get("is_manager") and m != exclude
        )
        for manager in managers:
            answer = self.local.cmd(manager, "docker_swarm.nodes", timeout=30).get(manager)
            if isinstance(answer, list):
                return answer
        return None

    def restart(self, minion):
        answer = self.local.cmd(
            minion,
            "armnode.restart_docker",
            kwarg={"timeout": self.timeout},
            timeout=self.timeout + 60,
        ).get(minion)
        return answer if isinstance(answer, dict) else {"ok": False, "error": str(answer)}

    def unlock(self, minion):
        """Unlock a manager that came back locked: another running manager's key (or the one
        the orchestration keeps on the master), opened here and sealed for ``minion``."""
        managers = sorted(
            m for m, s in self._swarm_states().items() if s.get("is_manager") and m != minion
        )

        def call(target, fun, kwarg):
            return self.local.cmd(target, fun, kwarg=kwarg, timeout=60).get(target)

        store = unlock_keys.Store(__opts__["cachedir"], __opts__["pki_dir"])
        try:
            with open(os.path.join(__opts__["pki_dir"], "minions", minion), "rb") as fh:
                public = fh.read()
            answer, source = unlock_keys.unlock(call, store, minion, public, managers)
        except (OSError, ArmswarmError) as exc:
            return {"ok": False, "error": f"came back locked and cannot be unlocked: {exc}"}
        if not isinstance(answer, dict):
            return {"ok": False, "error": f"came back locked, unlock failed: {answer!r}"[:300]}
        log.info("armnode_docker: %s unlocked with the key of %s", minion, source)
        return {"ok": True, "unlocked": True}

    def sleep(self, seconds):
        time.sleep(seconds)


def rolling_restart(tgt="*", tgt_type="glob", timeout=180):
    """
    Restart dockerd on the targeted minions whose ``daemon.json`` changed while they were in a
    swarm (``armnode.docker_restart_pending``), one node at a time: workers (and nodes
    outside the swarm) first, then managers, a manager only when the others keep the raft
    quorum without it, each node back in the swarm (ready, reachable) before the next; a manager
    that comes back locked (autolock) is unlocked with the master-sealed key. Stops
    at the first node that cannot be restarted safely; returns ``restarted``, ``pending``,
    ``error`` and ``retcode`` (1 with an error: salt-run exits 1).

    CLI Example:

    .. code-block:: bash

        salt-run armnode_docker.rolling_restart
        salt-run armnode_docker.rolling_restart tgt='node[1-3]' tgt_type=glob
    """
    transport = _SaltTransport(float(timeout))
    answers = transport.local.cmd(
        tgt, "armnode.docker_restart_pending", tgt_type=tgt_type, timeout=30
    )
    pending = sorted(m for m, flag in answers.items() if flag is True)
    if not pending:
        return {"restarted": [], "pending": [], "error": None, "retcode": 0}

    def progress(message):
        # in the log, and on salt-run's stderr (stdout keeps the return for --out=json)
        log.info("armnode_docker: %s", message)
        print(f"armnode_docker: {message}", file=sys.stderr, flush=True)

    result = docker_daemon.rolling_restart(
        transport, pending, timeout=float(timeout), progress=progress
    )
    result["retcode"] = 1 if result["error"] else 0
    if result["error"]:
        __context__["retcode"] = 1  # salt-run's exit code, and an orchestration's salt.runner
    return result
