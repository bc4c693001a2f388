"""Which minions share one accepted key (boards cloned from one image): nothing is sealed
for them, since either board can open what was sealed for the other."""

import pytest
import salt.crypt
from armswarm_core.swarm import join_tokens

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pems():
    return [salt.crypt.gen_keys(2048)[1] for _ in range(2)]


def test_cloned_boards_are_found_whatever_the_line_breaks(pems):
    one, two = pems
    # the master's copy of a key may differ from the board's in line breaks only
    keys = {"node4": one, "node5": one.replace("\n", "\r\n") + "\n", "node6": two}
    assert join_tokens.shared_keys(keys, ["node4", "node6"]) == {"node4": ["node5"]}
    assert join_tokens.shared_keys(keys, ["node5"]) == {"node5": ["node4"]}
    assert join_tokens.shared_keys(keys, ["node6", "node9"]) == {}
