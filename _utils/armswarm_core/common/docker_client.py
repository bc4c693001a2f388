"""The one docker-engine client helper every armswarm module uses."""

from armswarm_core import ArmswarmError
from armswarm_core.common import config

try:
    import docker
    import docker.errors
    import requests.exceptions

    HAS_DOCKER = True
except ImportError:  # pragma: no cover - exercised by __virtual__ on minions without the SDK
    docker = None
    HAS_DOCKER = False


PILLAR = "armswarm:docker"
# Docker 20.10's API: from 1.42 on, listing volumes on a swarm node also asks the managers
# for cluster volumes, which a 20.10 manager does not know ("unknown method ListVolumes"), so a
# Docker 26 node in a mixed swarm could not list its own volumes. Engines that still serve it
# (Docker 26's minimum is 1.24) are spoken to in it; newer engines whose minimum is above it
# (Docker 29: 1.44) in their own.
API_VERSION = "1.41"
DEFAULTS = {
    "base_url": "unix://var/run/docker.sock",
    "timeout": 60,  # seconds per API call
}


def missing_dependency():
    """``None`` when the docker SDK is importable, else the reason for ``__virtual__``."""
    if HAS_DOCKER:
        return None
    return "the docker Python SDK is not installed (pip install docker)"


def virtual(name: str):
    """What ``__virtual__`` of loader module ``name`` returns when it needs the docker SDK:
    ``name``, or ``(False, reason)``."""
    reason = missing_dependency()
    return (False, f"{name}: {reason}") if reason else name


def engine_settings(opts=None, pillar=None) -> dict:
    """Engine endpoint and timeout: :data:`DEFAULTS` < ``armswarm:docker`` in opts < in
    pillar, key by key, typed; ArmswarmError naming a bad key."""
    conf, problems = config.lookup(PILLAR, DEFAULTS, opts, pillar)
    conf, more = config.check(conf, DEFAULTS, PILLAR)
    more += config.control_characters(conf, PILLAR)
    if conf["timeout"] < 1:
        more.append(f"{PILLAR}:timeout must be a whole number of seconds ≥ 1")
    if problems + more:
        raise ArmswarmError("; ".join(problems + more))
    return conf


def connect(opts=None, pillar=None, base_url=None, timeout=None):
    """Return a ``docker.DockerClient`` for the configured engine, or raise ArmswarmError."""
    reason = missing_dependency()
    if reason:
        raise ArmswarmError(reason)
    settings = engine_settings(opts, pillar)
    url = base_url or settings["base_url"]
    seconds = timeout or settings["timeout"]
    try:
        # the engine's own versions first (one unversioned request: a client made with a
        # version asks nothing when made), then the client in the version chosen from them
        probe = docker.APIClient(base_url=url, timeout=seconds, version=API_VERSION)
        try:
            version = api_version(probe.version(api_version=False))
        finally:
            probe.close()
        client = docker.DockerClient(base_url=url, timeout=seconds, version=version)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        # a socket nobody serves is a requests error, not the SDK's
        raise ArmswarmError(f"cannot reach the docker engine at {url}: {exc}") from exc
    return client


def _number(version) -> tuple:
    try:
        return tuple(int(part) for part in str(version).split("."))
    except ValueError:
        return ()


def api_version(engine: dict) -> str:
    """The API version to speak to an engine whose ``/version`` answer is ``engine``:
    :data:`API_VERSION` when the engine serves it, else the engine's own."""
    newest, oldest = engine.get("ApiVersion"), engine.get("MinAPIVersion")
    wanted = _number(API_VERSION)
    if not _number(newest):
        return API_VERSION
    if _number(newest) < wanted or (_number(oldest) and _number(oldest) > wanted):
        return str(newest)
    return API_VERSION
