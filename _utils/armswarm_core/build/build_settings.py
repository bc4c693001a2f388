"""The image builds' settings, ``armswarm:imagebuild`` (the runner's defaults; arguments on
the command line win): :data:`DEFAULTS` < the master's config < the pillar compiled for the
master's id, key by key (:mod:`armswarm_core.common.config`)."""

from collections.abc import Mapping

from armswarm_core import ArmswarmError
from armswarm_core.build import dispatch, scheduler
from armswarm_core.common import architectures, config

PILLAR = "armswarm:imagebuild"
DEFAULTS = {
    "source": "",  # salt://… or a directory on the master; required by run and plan
    "target": "*",  # the build nodes …
    "tgt_type": "glob",  # … as a Salt target
    "strategy": "dynamic",  # static: a round-robin split (only for comparison)
    "retries": 2,  # transient failures (registry, network) per image
    "max_context_mb": 32,  # an image directory is sent to its node compressed
    "probe_every": dispatch.PROBE_EVERY,  # seconds between "still building?" checks
    "probe_timeout": dispatch.PROBE_TIMEOUT,  # unanswered this long twice: the node is gone
    "build_args": {},  # --build-arg for every image (over tree.yaml, under image.yaml)
    "registry_aliases": [],  # other names of the cluster registry in FROM lines
    "speeds": {},  # minion id or board → relative build speed (over what runs measured)
    "platforms": [],  # the tree's default platforms; empty: every platform of the nodes
}
# A board's relative build speed until runs have measured its nodes (multi-threaded 7-zip
# MIPS of sbc-bench results, ODROID-HC1 = 1.0; see docs/imagebuild.rst). The lab gives its
# node containers CPU shares in the same proportion.
BOARD_SPEEDS = {
    "rockpro64": 1.15,
    "rockpro64-extlinux": 1.15,
    "odroid-hc1": 1.0,
    "rpi4": 0.8,
    "sopine": 0.5,
}
# A Salt target may be a list (tgt_type: list).
_TYPES = {
    "target": ("str", "strings"),
    "max_context_mb": "number",
    "registry_aliases": "strings",
    "platforms": "strings",
}


def settings(opts: Mapping | None = None, pillar: Mapping | None = None) -> dict:
    """The merged, typed settings; ArmswarmError naming every bad key."""
    conf, problems = config.lookup(PILLAR, DEFAULTS, opts, pillar)
    conf, more = config.check(conf, DEFAULTS, PILLAR, free=("build_args", "speeds"), types=_TYPES)
    problems += more + config.control_characters(conf, PILLAR)
    if conf["strategy"] not in scheduler.STRATEGIES:
        problems.append(f"{PILLAR}:strategy must be one of {', '.join(scheduler.STRATEGIES)}")
    if conf["retries"] < 0:
        problems.append(f"{PILLAR}:retries must be a whole number ≥ 0")
    for key in ("max_context_mb", "probe_every", "probe_timeout"):
        if conf[key] <= 0:
            problems.append(f"{PILLAR}:{key} must be a number > 0")
    for key, value in conf["build_args"].items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            kind = config.kind(value)
            problems.append(f"{PILLAR}:build_args:{key} must be a string or a number, not {kind}")
    for key, value in (conf.get("speeds") or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            problems.append(f"{PILLAR}:speeds:{key} must be a number > 0, not {value!r}")
    for item in conf["platforms"]:
        if architectures.platform(item) is None:
            problems.append(
                f"{PILLAR}:platforms: {item!r} is not a known platform "
                f"(known: {', '.join(sorted(architectures.ARCH_OF))})"
            )
    if problems:
        raise ArmswarmError("; ".join(problems))
    return conf
