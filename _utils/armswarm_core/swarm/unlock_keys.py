"""The autolock unlock key of a swarm, kept on the master sealed for the master's own key.

A manager seals the key for the master (``docker_swarm.unlock_key``); the orchestration keeps
that ciphertext in ``<cachedir>/armswarm/unlock_keys/<layout>`` (0600, directory 0700) while
the layout's swarm is autolocked, and drops it when autolock goes off. A locked manager gets
the key opened on the master and sealed again for its own minion key, so the plaintext is
never in a return, an event or the job cache; the kept copy unlocks managers even when no
manager runs (the whole cluster powered up at once).
"""

import json
import os
import urllib.parse

from armswarm_core import ArmswarmError
from armswarm_core.common import files
from armswarm_core.swarm import join_tokens

SUBDIR = os.path.join("armswarm", "unlock_keys")
DEFAULT_LAYOUT = "armswarm:swarm"


class Store:
    """The kept unlock keys of a master (``cachedir``) and its private key (``pki_dir``)."""

    def __init__(self, cachedir: str, pki_dir: str):
        self.root = os.path.join(cachedir, SUBDIR)
        self.pki_dir = pki_dir

    def path(self, layout: str) -> str:
        """The file of layout ``layout`` (its pillar key, e.g. ``armswarm:swarm``)."""
        return os.path.join(self.root, urllib.parse.quote(str(layout), safe=""))

    def kept(self, layout: str) -> dict | None:
        """``{"cluster_id", "sealed"}`` kept for ``layout``, or None."""
        try:
            with open(self.path(layout), encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ArmswarmError(
                f"cannot read the kept unlock key {self.path(layout)}: {exc}"
            ) from exc
        if not isinstance(data, dict) or not join_tokens.is_sealed(data.get("sealed")):
            raise ArmswarmError(f"{self.path(layout)}: not a kept unlock key")
        return data

    def keep(self, layout: str, cluster_id: str | None, sealed: str) -> None:
        """Keep ``sealed`` (sealed for the master) as the unlock key of ``layout``."""
        if not join_tokens.is_sealed(sealed):
            raise ArmswarmError("the unlock key to keep is not sealed: not kept")
        # Ciphertext only, still nobody else's business: 0700 directory, 0600 file.
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        files.write(
            self.path(layout), json.dumps({"cluster_id": cluster_id, "sealed": sealed}), 0o600
        )

    def drop(self, layout: str) -> bool:
        """Remove the kept key of ``layout``; whether there was one."""
        try:
            os.remove(self.path(layout))
        except FileNotFoundError:
            return False
        return True

    def _open(self, sealed: str) -> str:
        try:
            with open(os.path.join(self.pki_dir, "master.pem"), "rb") as fh:
                private = fh.read()
        except OSError as exc:
            raise ArmswarmError(f"cannot read the master's key: {exc.strerror}") from exc
        return join_tokens.unseal(sealed, private, join_tokens.MASTER)

    def matches(self, layout: str, cluster_id: str | None, sealed: str) -> bool:
        """Whether the kept key of ``layout`` is the key ``sealed`` holds, for that cluster (the
        seals differ each time: compared opened, in this process only)."""
        kept = self.kept(layout)
        if kept is None or kept.get("cluster_id") != cluster_id:
            return False
        return self._open(kept["sealed"]) == self._open(sealed)

    def reseal(self, sealed: str, recipient_pub, recipient: str) -> str:
        """The key ``sealed`` (for the master) sealed again for minion ``recipient``."""
        return join_tokens.seal(self._open(sealed), recipient_pub, recipient)


def unlock(call, store: Store, target: str, target_pub, managers=(), layout=DEFAULT_LAYOUT):
    """Unlock the locked manager ``target`` (its minion public key ``target_pub``): the key of
    the first of ``managers`` that gives one, else the one kept for ``layout``; sealed again
    for ``target`` on the master. ``call(minion, fun, kwarg)`` runs an execution function
    (an error raises :class:`ArmswarmError`). Returns ``(target's answer, where the key came
    from)``."""
    sealed, source = None, None
    for manager in managers:
        answer = call(manager, "docker_swarm.unlock_key", {})
        if isinstance(answer, dict) and answer.get("available"):
            sealed, source = answer["sealed"], manager
            break
    if sealed is None:
        kept = store.kept(layout)
        if kept:
            sealed, source = kept["sealed"], f"kept on the master ({layout})"
    if sealed is None:
        raise ArmswarmError(
            f"no unlock key for {target}: no running manager gives one"
            + (f" ({', '.join(managers)})" if managers else "")
            + f" and none is kept on the master for {layout}"
        )
    answer = call(
        target, "docker_swarm.unlock", {"sealed_key": store.reseal(sealed, target_pub, target)}
    )
    return answer, source
