"""The one docker-engine client helper every armswarm module uses."""

from armswarm_core import ArmswarmError
from armswarm_core.common import config

try:
    import docker
    import docker.errors

    HAS_DOCKER = True
except ImportError:  # pragma: no cover - exercised by __virtual__ on minions without the SDK
    docker = None
    HAS_DOCKER = False


PILLAR = "armswarm:docker"
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
    try:
        # API 1.41 (Docker 20.10's) on every engine: from 1.42 on, listing volumes on a swarm
        # node also asks the managers for cluster volumes, which a 20.10 manager does not know
        # ("unknown method ListVolumes"), so a Docker 26 node in a mixed swarm could not list
        # its own volumes. Docker 26 still serves 1.41 (its minimum is 1.24).
        client = docker.DockerClient(
            base_url=url, timeout=timeout or settings["timeout"], version=API_VERSION
        )
        client.ping()
    except docker.errors.DockerException as exc:
        raise ArmswarmError(f"cannot reach the docker engine at {url}: {exc}") from exc
    return client
