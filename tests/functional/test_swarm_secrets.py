"""The autolock unlock key through the real loader: sealed for the master in the return, and
opened again only by the master's key; a sealed key for a manager opens only as that minion.
The engine's answer is the one stand-in (a real autolocked swarm would lock the lab's
managers at each dockerd restart)."""

import json

import pytest
import salt.crypt
from armswarm_core import ArmswarmError
from armswarm_core.common import docker_client
from armswarm_core.swarm import join_tokens, swarm_engine
from loaders import load_modules

pytestmark = pytest.mark.functional

KEY = "SWMKEY-1-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"


@pytest.fixture
def minion(tmp_path, monkeypatch):
    pytest.importorskip("docker")
    pki = tmp_path / "pki"
    pki.mkdir()
    master_priv, master_pub = salt.crypt.gen_keys(2048)
    minion_priv, minion_pub = salt.crypt.gen_keys(2048)
    (pki / "minion_master.pub").write_text(master_pub)
    (pki / "minion.pem").write_text(minion_priv)
    unlocked = []
    # no engine is asked (a machine without a running dockerd runs this test too)
    monkeypatch.setattr(docker_client, "connect", lambda *args, **kwargs: object())
    monkeypatch.setattr(swarm_engine, "unlock_key", lambda client: KEY)
    monkeypatch.setattr(swarm_engine, "unlock", lambda client, key: unlocked.append(key) or {})
    mods = load_modules(tmp_path, id="node2", pki_dir=str(pki))
    return mods, master_priv, minion_pub, unlocked


def test_unlock_key_is_sealed_for_the_master(minion):
    mods, master_priv, _, _ = minion
    answer = mods["docker_swarm.unlock_key"]()
    assert KEY not in json.dumps(answer) and answer["available"] is True
    assert join_tokens.unseal(answer["sealed"], master_priv, join_tokens.MASTER) == KEY
    with pytest.raises(ArmswarmError):
        join_tokens.unseal(answer["sealed"], master_priv, "node2")


def test_a_sealed_unlock_key_opens_only_as_its_minion(minion):
    mods, _, minion_pub, unlocked = minion
    mods["docker_swarm.unlock"](sealed_key=join_tokens.seal(KEY, minion_pub, "node2"))
    assert unlocked == [KEY]
    with pytest.raises(Exception, match="cannot open the unlock key"):
        mods["docker_swarm.unlock"](sealed_key=join_tokens.seal(KEY, minion_pub, "node3"))
    assert unlocked == [KEY]
