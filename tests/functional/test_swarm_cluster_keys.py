"""The orchestration's transport reads the joiners' keys from the master's real pki
directory (salt.key): a key another accepted minion shares is refused, nothing is sealed."""

import importlib.util

import pytest
import salt.config
import salt.crypt
from armswarm_core import ArmswarmError

from armswarm import paths

pytestmark = pytest.mark.functional


@pytest.fixture
def master(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "swarm_cluster_state_under_test", paths.tree_root() / "_states/swarm_cluster.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    opts = salt.config.master_config(None)
    opts.update({"pki_dir": str(tmp_path / "pki"), "cachedir": str(tmp_path / "cache")})
    for sub in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        (tmp_path / "pki" / sub).mkdir(parents=True)
    one, two = (salt.crypt.gen_keys(2048)[1] for _ in range(2))

    def accept(**keys):
        for minion, pem in keys.items():
            (tmp_path / "pki" / "minions" / minion).write_text(pem)
        return module._Minions(opts, timeout=10)

    return accept, one, two


def test_each_joiner_gets_its_own_key(master):
    accept, one, two = master
    transport = accept(node4=one, node5=two)
    assert transport.public_keys(["node4"]) == {"node4": one}


def test_a_key_two_boards_share_is_refused(master):
    accept, one, _ = master
    transport = accept(node4=one, node5=one)
    with pytest.raises(ArmswarmError, match="node4 has the same minion key as node5"):
        transport.public_keys(["node4"])


def test_a_joiner_without_an_accepted_key_is_a_clear_error(master):
    accept, one, _ = master
    transport = accept(node4=one)
    with pytest.raises(ArmswarmError, match="no accepted minion key for node7"):
        transport.public_keys(["node7"])
