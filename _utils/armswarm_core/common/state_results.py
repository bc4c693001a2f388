"""The return of a Salt state, built the same way by every armswarm state.

Salt reads ``{"name", "result", "changes", "comment"}``: ``result`` is ``True`` (as wanted,
``changes`` say what was done), ``None`` (test mode: it would change, ``changes`` say how) or
``False`` (failed). Each helper below ends a state one of these ways and returns the dict.

.. code-block:: python

    ret = state_results.new(name)
    if not change:
        return state_results.unchanged(ret, "… is as specified")
    if __opts__["test"]:
        return state_results.would_change(ret, "… would be changed", change)
    ...
    return state_results.changed(ret, "… changed", change)
"""


def new(name) -> dict:
    """A return for ``name``: no changes, result ``True``, no comment yet."""
    return {"name": name, "changes": {}, "result": True, "comment": ""}


def unchanged(ret: dict, comment: str) -> dict:
    """Already as wanted."""
    ret["comment"] = comment
    return ret


def would_change(ret: dict, comment: str, changes=None) -> dict:
    """Test mode: ``changes`` (default: those already in ``ret``) are what applying does."""
    if changes is not None:
        ret["changes"] = changes
    ret.update(result=None, comment=comment)
    return ret


def changed(ret: dict, comment: str, changes=None) -> dict:
    """Applied: ``changes`` (default: those already in ``ret``) were made."""
    if changes is not None:
        ret["changes"] = changes
    ret["comment"] = comment
    return ret


def failed(ret: dict, reason, changes=None) -> dict:
    """Failed for ``reason`` (a message or an ``ArmswarmError``). No change is claimed unless
    ``changes`` says what was done before it failed."""
    ret.update(result=False, changes=changes or {}, comment=str(reason))
    return ret
