"""Form, grow and repair a Docker Swarm from pillar, from an orchestration on the master.

.. code-block:: yaml

    # salt/swarm/init.sls, run with: salt-run state.orch swarm.init
    armswarm-swarm-converged:
      swarm_cluster.converged:
        - name: armswarm:swarm

The layout (pillar ``armswarm:swarm``): ``managers`` and ``workers`` (minion ids, or
``{tgt: …, tgt_type: …}``), per-node ``nodes:<id>:advertise_addr|advertise_interface|labels|
availability``, ``allow_even_managers``, ``prune``, ``remove_undeclared_labels``,
``grain_labels``, ``force``, ``rotate_join_tokens``, ``autolock`` (true/false; unset leaves
the swarm's as it is), ``answer_timeout`` (seconds a minion has to answer before it
counts as down), ``role_timeout`` (seconds a promotion or demotion may take to settle).
Everything is validated before anything changes.

Join tokens go from a manager to each joiner sealed with the joiner's minion key (the master
holds every accepted minion's public key): returns, the job cache and events carry ciphertext.
With autolock on, the unlock key is kept on the master sealed for the master's own key, and a
manager found locked (restarted) is unlocked with it, sealed for that manager's key.
"""

import logging
import os
import time

import salt.client
import salt.key
import salt.utils.event
import salt.utils.minions
from armswarm_core import ArmswarmError
from armswarm_core.common import state_results
from armswarm_core.swarm import converge, join_tokens, swarm_layout, unlock_keys

log = logging.getLogger(__name__)

__virtualname__ = "swarm_cluster"
DEFAULT_TIMEOUT = 90


def __virtual__():
    return __virtualname__


class _Minions:
    """The convergence's transport (see :mod:`armswarm_core.swarm.converge`): calls to minions
    through the master, with errors as ArmswarmError naming the minion; keys, targets and
    progress events from the master."""

    def __init__(self, opts, timeout, client=None):
        self.opts = opts
        self.timeout = timeout
        self._client = client

    @property
    def client(self):
        # Made on first use: a layout refused before any call needs no client.
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def fork(self):
        """A transport with a client of its own (made in the calling thread), for another
        thread."""
        return _Minions(self.opts, self.timeout, client=self._new_client())

    def _new_client(self):
        return salt.client.get_local_client(self.opts["conf_file"])

    def many(self, targets, fun, arg=(), kwarg=None, timeout=None) -> dict:
        """``{minion: return}`` for the minions that answered; a failed call's return is an
        ArmswarmError naming the minion. Those that did not answer are left out."""
        rets = self.client.cmd(
            list(targets),
            fun,
            list(arg),
            tgt_type="list",
            kwarg=kwarg or {},
            timeout=timeout or self.timeout,
            full_return=True,
        )
        out = {}
        for minion_id, ret in rets.items():
            if ret is False or (
                isinstance(ret, dict)
                and (ret.get("failed") is True or ret.get("out") == "no_return")
            ):
                # No answer: LocalClient.cmd's False, or "Minion did not return. [No response]"
                # (or "[Not connected]") for one that did not answer its find_job.
                log.info("swarm_cluster: %s did not answer %s", minion_id, fun)
                continue
            if isinstance(ret, dict) and ret.get("retcode", 0) == 0:
                out[minion_id] = ret.get("ret")
            else:
                why = ret.get("ret") if isinstance(ret, dict) else ret
                log.warning("swarm_cluster: %s failed %s: %s", minion_id, fun, why)
                out[minion_id] = ArmswarmError(f"{minion_id}: {fun} failed: {why}")
        return out

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def one(self, target, fun, arg=(), kwarg=None, timeout=None):
        rets = self.client.cmd(
            target,
            fun,
            list(arg),
            kwarg=kwarg or {},
            timeout=max(self.timeout, timeout or 0),
            full_return=True,
        )
        if target not in rets:
            raise ArmswarmError(f"{target} did not answer {fun}")
        ret = rets[target]
        if not isinstance(ret, dict) or ret.get("retcode", 0) != 0:
            detail = ret.get("ret") if isinstance(ret, dict) else ret
            raise ArmswarmError(f"{target}: {fun} failed: {detail}")
        return ret.get("ret")

    def accepted(self) -> set:
        return set(salt.key.get_key(self.opts).list_keys().get("minions") or [])

    def public_keys(self, ids) -> dict:
        """The accepted public key of each minion, as the master stores it; an error when
        another accepted minion has the same key (boards cloned from one image)."""
        every = {}
        for minion_id in sorted(self.accepted() | set(ids)):
            path = os.path.join(self.opts["pki_dir"], "minions", minion_id)
            try:
                with open(path, encoding="utf-8") as fh:
                    every[minion_id] = fh.read()
            except OSError as exc:
                if minion_id in ids:
                    raise ArmswarmError(f"no accepted minion key for {minion_id}: {exc}") from exc
        shared = join_tokens.shared_keys(every, ids)
        if shared:
            raise ArmswarmError(
                "; ".join(
                    f"{minion} has the same minion key as {', '.join(others)}"
                    for minion, others in sorted(shared.items())
                )
                + ": boards cloned from one image open each other's secrets. Give each its "
                "own key (delete /etc/salt/pki/minion/minion.* on the board, restart "
                "salt-minion, salt-key -d and accept it again); nothing was sent"
            )
        return {minion_id: every[minion_id] for minion_id in ids}

    def expand(self, tgt, tgt_type) -> list:
        found = salt.utils.minions.CkMinions(self.opts).check_minions(tgt, tgt_type)
        return found.get("minions") or []

    def key_store(self):
        """The unlock keys kept on this master (``cachedir/armswarm/unlock_keys``)."""
        return unlock_keys.Store(self.opts["cachedir"], self.opts["pki_dir"])

    def progress(self, step, **data):
        """One event per step on the master's bus (``armswarm/swarm/<step>``), and a log line."""
        log.info("swarm_cluster: %s %s", step, data)
        try:
            with salt.utils.event.get_master_event(
                self.opts, self.opts["sock_dir"], listen=False
            ) as bus:
                bus.fire_event(data, f"armswarm/swarm/{step}")
        except Exception:  # noqa: BLE001 - progress must never break the run
            log.debug("swarm_cluster: cannot fire progress event", exc_info=True)


def converged(name, layout=None, force=None, timeout=DEFAULT_TIMEOUT):
    """
    Make the swarm match the layout in pillar ``name`` (default ``armswarm:swarm``): init once,
    managers joined one at a time, workers in parallel, labels from grains and pillar,
    availability, optional prune. Runs in an orchestration on the master.

    name
        Pillar key of the layout, unless ``layout`` is given.
    layout
        The layout itself (same shape as the pillar).
    force
        Take over nodes that are in another swarm (they leave it first). Default: the layout's
        ``force`` (false).
    timeout
        Seconds to wait for each minion call.
    """
    opts = __opts__
    if opts.get("__role") != "master":
        return state_results.failed(
            state_results.new(name),
            "swarm_cluster.converged runs in an orchestration: salt-run state.orch",
        )
    # Read pillar directly: Salt 3008's pillar.get redacts values unless unmasked (3006 lacks
    # that flag). The master config's layout, if any, is merged under it key by key.
    conf = layout if layout is not None else swarm_layout.layout_conf(opts, __pillar__, name)
    return converge.run(
        name, conf, _Minions(opts, timeout), force=force, test=bool(opts.get("test"))
    )
