"""The one settings layer: defaults < minion/master config < pillar, merged key by key.

Each domain keeps its defaults in one Python mapping (``DEFAULTS``, with ``PILLAR`` naming the
pillar key, e.g. ``armswarm:registry``) and has one function that calls :func:`lookup` and
:func:`check`. A domain's keys can be set

* in the minion's configuration (for runners, the master's), nested
  (``armswarm: {docker: {base_url: …}}``) or as flat dotted keys (``armswarm.docker.base_url``);
* in pillar, the same way.

Pillar wins over the configuration and the configuration over the defaults, one key at a time:
a mapping merges into the mapping below it, anything else replaces it; a key set to null (an
empty YAML value) counts as not set. Nothing here mutates its inputs (pillar and opts are shared
by every module of a run).

:func:`check` then types every key strictly against the defaults: a boolean only from a
boolean, a list never from a scalar, a whole number from a whole number (or a quoted one such
as ``"5000"``), never from a boolean; an unknown key is named with the closest known
one. Errors name the full key (``armswarm:registry:users``) and never show a value.
:func:`control_characters` finds the values (and key names) with a newline or another control
character: every domain refuses them, as each of its values ends up in a file, a command line,
a cron line or a unit, where one would add a line.
"""

import copy
import difflib
import re
from collections.abc import Mapping
from typing import Any

SECRET = "********"  # what a secret looks like in a return

_NUMBER = (int, float)
_DIGITS = re.compile(r"^[0-9]+$")
_DECIMAL = re.compile(r"^[0-9]+\.[0-9]+$")
# Newlines and other control characters (C0 and DEL).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def merge(*layers) -> dict:
    """Deep-merge mappings, later layers over earlier ones, key by key; returns a new dict
    and leaves the layers as they were. ``None`` layers and ``None`` values are skipped."""
    out: dict = {}
    for layer in layers:
        if not isinstance(layer, Mapping):
            continue
        for key, value in layer.items():
            if value is None:
                continue
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            elif isinstance(value, Mapping):
                out[key] = merge(value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def _nested(data: Mapping, parts: list) -> Any:
    node: Any = data
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _unflatten(parts: list, value) -> dict:
    for part in reversed(parts):
        value = {part: value}
    return value


def section(source: Mapping | None, path: str, flat: bool = True) -> tuple[dict, list[str]]:
    """The mapping at ``path`` (``armswarm:registry``) in a configuration or pillar: the nested
    mapping, then (``flat``) dotted keys (``armswarm.registry`` and ``armswarm.registry.host``)
    over it. Returns ``(a new dict, problems)``; a non-mapping there is a problem."""
    if not isinstance(source, Mapping):
        return {}, []
    parts = path.split(":")
    dotted = ".".join(parts)
    layers, problems = [], []
    found = [(path, _nested(source, parts))]
    if flat:
        found.append((dotted, source.get(dotted)))
        found += sorted(
            (key, value)
            for key, value in source.items()
            if isinstance(key, str) and key.startswith(dotted + ".")
        )
    for key, value in found:
        if value is None:
            continue
        if key.startswith(dotted + "."):
            layers.append(_unflatten(key[len(dotted) + 1 :].split("."), value))
        elif isinstance(value, Mapping):
            layers.append(value)
        else:
            problems.append(f"{path}: must be a mapping, not {kind(value)}")
    return merge(*layers), problems


def pillar_of(opts: Mapping | None, pillar: Mapping | None) -> Mapping:
    """The pillar to read: the one given, else the one in opts (a minion's ``opts["pillar"]``)."""
    if pillar is not None:
        return pillar
    return (opts or {}).get("pillar") or {}


def lookup(
    path: str, defaults: Mapping, opts: Mapping | None, pillar: Mapping | None
) -> tuple[dict, list[str]]:
    """``defaults`` < ``path`` in opts < ``path`` in pillar, key by key: ``(merged, problems)``."""
    from_opts, problems = section(opts, path)
    from_pillar, more = section(pillar_of(opts, pillar), path)
    return merge(defaults, from_opts, from_pillar), problems + more


# -- strict types ------------------------------------------------------------------------------
def kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, _NUMBER):
        return "a number"
    return type(value).__name__


def _expected(default) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "number"
    if isinstance(default, str):
        return "str"
    if isinstance(default, list | tuple):
        return "list"
    if isinstance(default, Mapping):
        return "mapping"
    return "any"


_WORDS = {
    "bool": "true or false",
    "int": "a whole number",
    "number": "a number",
    "str": "a string",
    "list": "a list",
    "mapping": "a mapping",
    "strings": "a list of strings",
}


def coerce(value, want: str):
    """``value`` as ``want`` (bool, int, number, str, list, strings (a list of strings),
    mapping, any), or raise TypeError.
    Only a quoted number (``"5000"``, ``"1.5"`` for a number) is converted; nothing else is
    guessed."""
    if want == "any":
        return value
    if want == "bool" and isinstance(value, bool):
        return value
    if want in ("int", "number") and not isinstance(value, bool):
        if isinstance(value, int) or (want == "number" and isinstance(value, float)):
            return value
        # Spaces around a quoted number are fine; a newline or tab is garbage, not a number.
        text = value.strip(" ") if isinstance(value, str) else ""
        if _DIGITS.fullmatch(text):
            return int(text)
        if want == "number" and _DECIMAL.fullmatch(text):
            return float(text)
    if want == "str" and isinstance(value, str):
        return value
    if want == "list" and isinstance(value, list | tuple):
        return list(value)
    if want == "strings" and isinstance(value, list | tuple):
        if all(isinstance(item, str) for item in value):
            return list(value)
        raise TypeError("must be a list of strings, not a list with other items")
    if want == "mapping" and isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"must be {_WORDS.get(want, want)}, not {kind(value)}")


_UNFIT = object()


def _first_fit(value, wants: tuple):
    for want in wants:
        try:
            return coerce(value, want)
        except TypeError:
            continue
    return _UNFIT


def check(
    conf: Mapping,
    defaults: Mapping,
    path: str,
    free: tuple = (),
    types: Mapping | None = None,
) -> tuple[dict, list[str]]:
    """Type ``conf`` (a merged mapping) against ``defaults``: ``(clean, problems)``.

    ``free``: relative paths (``journald``, ``docker:daemon``) of mappings whose keys are the
    user's; ``types``: relative path → kind, for a key whose default does not show its type
    (``bool``, ``int``, ``number``, ``str``, ``list``, ``mapping``, ``any``, or a tuple of
    them). In ``clean`` an unknown key is dropped and a wrongly typed value is the default, so
    a formula still renders while its validation state reports the problems."""
    types = types or {}
    problems: list[str] = []

    def walk(value: Mapping, base: Mapping, rel: tuple) -> dict:
        out = {}
        for key, given in value.items():
            sub = (*rel, str(key))
            name = ":".join(sub)
            where = f"{path}:{name}"
            if key not in base and name not in types:
                if _CONTROL.search(str(key)):  # not shown: it would break the message's line
                    problems.append(f"{path}: a key contains a newline or control character")
                    continue
                close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{where}: unknown key{hint}")
                continue
            default = base.get(key)
            wants = types.get(name, _expected(default))
            wants = wants if isinstance(wants, tuple) else (wants,)
            item = _first_fit(given, wants)
            if item is _UNFIT:
                words = " or ".join(_WORDS.get(w, w) for w in wants)
                what = kind(given)
                if "strings" in wants and isinstance(given, list | tuple):
                    what = "a list with other items"
                problems.append(f"{where}: must be {words}, not {what}")
                if default is not None:
                    out[key] = copy.deepcopy(default)
                continue
            # An empty default mapping (``users: {}``) is the user's: its keys are not checked.
            fixed = isinstance(default, Mapping) and default and name not in free
            out[key] = walk(item, default, sub) if isinstance(item, Mapping) and fixed else item
        return out

    return walk(conf, defaults, ()), problems


def control_characters(value, key: str, multiline: tuple = ()) -> list[str]:
    """A problem for every key under ``key`` (a colon path, ``armswarm:backup``) whose name or
    string value has a newline or another control character. ``multiline``: full keys whose
    values are whole files, where newlines belong."""
    if key in multiline:
        return []
    if isinstance(value, str):
        return [f"{key}: contains a newline or control character"] if _CONTROL.search(value) else []
    found = []
    if isinstance(value, Mapping):
        for sub, item in value.items():
            if isinstance(sub, str) and _CONTROL.search(sub):
                found.append(f"{key}: a key contains a newline or control character")
            else:
                found += control_characters(item, f"{key}:{sub}", multiline)
    elif isinstance(value, list | tuple):
        for item in value:
            found += control_characters(item, key, multiline)
    return found


def masked(conf: Mapping, secrets: tuple) -> dict:
    """A copy of ``conf`` with the values at ``secrets`` (colon paths; ``users:*`` is every
    value of ``users``) replaced by :data:`SECRET`, for returns."""
    out = copy.deepcopy(dict(conf))
    for secret in secrets:
        *parents, last = secret.split(":")
        node = _nested(out, parents) if parents else out
        if not isinstance(node, dict):
            continue
        if last == "*":
            for key in node:
                node[key] = SECRET
        elif node.get(last):
            node[last] = SECRET
    return out
