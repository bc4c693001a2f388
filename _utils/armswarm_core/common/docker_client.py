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


DEFAULT_BASE_URL = "unix://var/run/docker.sock"
DEFAULT_TIMEOUT = 60


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
    """Engine endpoint and timeout (``armswarm:docker:base_url`` and ``…:timeout``)."""
    return {
        "base_url": config.get("docker.base_url", opts, pillar, DEFAULT_BASE_URL),
        "timeout": int(config.get("docker.timeout", opts, pillar, DEFAULT_TIMEOUT)),
    }


def connect(opts=None, pillar=None, base_url=None, timeout=None):
    """Return a ``docker.DockerClient`` for the configured engine, or raise ArmswarmError."""
    reason = missing_dependency()
    if reason:
        raise ArmswarmError(reason)
    settings = engine_settings(opts, pillar)
    url = base_url or settings["base_url"]
    try:
        client = docker.DockerClient(base_url=url, timeout=timeout or settings["timeout"])
        client.ping()
    except docker.errors.DockerException as exc:
        raise ArmswarmError(f"cannot reach the docker engine at {url}: {exc}") from exc
    return client
