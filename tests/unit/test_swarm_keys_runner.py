"""``salt-run swarm_keys.unlock``: the key goes sealed both ways, and a manager that was not
unlocked is an error (not a return that reads like success)."""

import importlib.util

import pytest
import salt.crypt
from armswarm_core.swarm import join_tokens, unlock_keys
from salt.exceptions import CommandExecutionError

from armswarm import paths

pytestmark = pytest.mark.unit

KEY = "SWMKEY-1-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"


class _Local:
    def __init__(self, master_pub, node_priv, unlock_answer):
        self.master_pub, self.node_priv = master_pub, node_priv
        self.unlock_answer = unlock_answer
        self.opened = []

    def cmd(self, tgt, fun, kwarg=None, timeout=None):
        if fun == "docker_swarm.unlock_key":
            sealed = join_tokens.seal(KEY, self.master_pub, join_tokens.MASTER)
            return {tgt: {"available": True, "sealed": sealed}}
        assert fun == "docker_swarm.unlock"
        self.opened.append(join_tokens.unseal(kwarg["sealed_key"], self.node_priv, tgt))
        return {tgt: self.unlock_answer}


@pytest.fixture
def runner(tmp_path, monkeypatch):
    master_priv, master_pub = salt.crypt.gen_keys(2048)
    node_priv, node_pub = salt.crypt.gen_keys(2048)
    (tmp_path / "minions").mkdir()
    (tmp_path / "master.pem").write_text(master_priv)
    (tmp_path / "minions" / "node2").write_text(node_pub)
    spec = importlib.util.spec_from_file_location(
        "swarm_keys_runner_under_test", paths.tree_root() / "_runners/swarm_keys.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {
        "conf_file": "unused",
        "pki_dir": str(tmp_path),
        "cachedir": str(tmp_path / "cache"),
    }

    def make(answer):
        local = _Local(master_pub, node_priv, answer)
        monkeypatch.setattr(module.salt.client, "get_local_client", lambda conf: local)
        local.store = unlock_keys.Store(str(tmp_path / "cache"), str(tmp_path))
        local.master_pub = master_pub
        return module, local

    return make


def test_the_locked_manager_gets_the_key_sealed_for_it(runner):
    module, local = runner({"state": "active"})
    result = module.unlock("node2", "node1")
    assert result == {"target": "node2", "result": {"state": "active"}, "key_from": "node1"}
    assert local.opened == [KEY] and KEY not in repr(result)


def test_without_a_running_manager_the_key_kept_on_the_master_is_used(runner):
    module, local = runner({"state": "active"})
    with pytest.raises(CommandExecutionError, match="none is kept on the master"):
        module.unlock("node2")
    local.store.keep("armswarm:swarm", "c1", join_tokens.seal(KEY, local.master_pub, "salt-master"))
    result = module.unlock("node2")
    assert result["key_from"] == "kept on the master (armswarm:swarm)"
    assert local.opened == [KEY] and KEY not in repr(result)


@pytest.mark.parametrize("answer", ["ERROR: unlocking the swarm failed (wrong key?)", None])
def test_a_manager_left_locked_is_an_error(runner, answer):
    module, _ = runner(answer)
    with pytest.raises(CommandExecutionError, match="node2 was not unlocked"):
        module.unlock("node2", "node1")
