"""common.state_results: the four endings of a state, as Salt reads them."""

from armswarm_core import ArmswarmError
from armswarm_core.common import state_results


def test_a_new_return_claims_nothing():
    assert state_results.new("x") == {"name": "x", "changes": {}, "result": True, "comment": ""}
    assert state_results.new("x") is not state_results.new("x")  # never a shared dict


def test_unchanged_keeps_result_true_and_no_changes():
    ret = state_results.new("x")
    assert state_results.unchanged(ret, "as specified") is ret
    assert ret == {"name": "x", "changes": {}, "result": True, "comment": "as specified"}


def test_would_change_is_result_none_with_the_predicted_changes():
    ret = state_results.would_change(state_results.new("x"), "would", {"a": 1})
    assert ret == {"name": "x", "changes": {"a": 1}, "result": None, "comment": "would"}
    ret = state_results.new("y")
    ret["changes"] = {"b": 2}
    assert state_results.would_change(ret, "would")["changes"] == {"b": 2}


def test_changed_keeps_result_true_with_what_was_done():
    ret = state_results.changed(state_results.new("x"), "done", {"a": 1})
    assert ret == {"name": "x", "changes": {"a": 1}, "result": True, "comment": "done"}
    ret = state_results.new("y")
    ret["changes"] = {"b": 2}
    assert state_results.changed(ret, "done")["changes"] == {"b": 2}


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
