"""Configuration lookup shared by all loader modules.

Values come from (first hit wins) the minion/master config, then pillar, then the default, using
the ``armswarm:`` namespace, e.g. ``armswarm: {docker: {base_url: unix://var/run/docker.sock}}``
or a flat key ``armswarm.docker.base_url``.
"""

from collections.abc import Mapping
from typing import Any

_MISSING = object()


def _lookup(data: Mapping | None, dotted: str) -> Any:
    if not data:
        return _MISSING
    flat = data.get(dotted, _MISSING)
    if flat is not _MISSING:
        return flat
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def get(key: str, opts: Mapping | None = None, pillar: Mapping | None = None, default=None):
    """Return ``armswarm.<key>`` from opts, then pillar, else ``default``."""
    dotted = f"armswarm.{key}"
    for source in (opts, pillar, (opts or {}).get("pillar")):
        value = _lookup(source, dotted)
        if value is not _MISSING:
            return value
    return default
