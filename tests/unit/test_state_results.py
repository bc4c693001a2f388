"""common.state_results: the four endings of a state, as Salt reads them."""

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.common import state_results


def test_a_new_return_claims_nothing():
    assert state_results.new("x") == {"name": "x", "changes": {}, "result": True, "comment": ""}
    assert state_results.new("x") is not state_results.new("x")  # never a shared dict


def test_unchanged_keeps_result_true_and_no_changes():
    ret = state_results.new("x")
    assert state_results.unchanged(ret, "as specified") is ret
    assert ret == {"name": "x", "changes": {}, "result": True, "comment": "as specified"}


@pytest.mark.parametrize(
    "ending, result", [(state_results.would_change, None), (state_results.changed, True)]
)
def test_would_change_and_changed_carry_the_changes(ending, result):
    # test mode predicts (None), an applied change is True: the changes read the same
    ret = ending(state_results.new("x"), "text", {"a": 1})
    assert ret == {"name": "x", "changes": {"a": 1}, "result": result, "comment": "text"}
    ret = state_results.new("y")
    ret["changes"] = {"b": 2}  # set before the test-mode branch, as the states do
    assert ending(ret, "text")["changes"] == {"b": 2}


def test_failed_drops_predicted_changes_and_shows_the_error():
    ret = state_results.new("x")
    ret["changes"] = {"a": 1}
    state_results.failed(ret, ArmswarmError("pillar key a:b is not a list"))
    assert ret == {
        "name": "x",
        "changes": {},
        "result": False,
        "comment": "pillar key a:b is not a list",
    }


def test_failed_after_a_partial_change_keeps_what_was_done():
    ret = state_results.failed(state_results.new("x"), "not converged", {"create": ["a"]})
    assert ret["result"] is False and ret["changes"] == {"create": ["a"]}
