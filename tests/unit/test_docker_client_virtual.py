"""docker_client.virtual: the one ``__virtual__`` of the loader modules that need the SDK."""

from armswarm_core.common import docker_client


def test_loads_under_its_name_when_the_sdk_is_there():
    assert docker_client.HAS_DOCKER  # the test environment has the SDK
    assert docker_client.virtual("docker_swarm") == "docker_swarm"


def test_names_the_module_and_the_package_when_the_sdk_is_missing(monkeypatch):
    monkeypatch.setattr(docker_client, "HAS_DOCKER", False)
    assert docker_client.virtual("backup") == (
        False,
        "backup: the docker Python SDK is not installed (pip install docker)",
    )
