"""Which API version armswarm speaks to an engine, from the engine's own answer."""

import pytest
from armswarm_core.common import docker_client

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        # Docker 20.10 (Debian 12), 26.1 (Debian 13): both serve 1.41, the mixed swarm's
        ({"ApiVersion": "1.41", "MinAPIVersion": "1.12"}, "1.41"),
        ({"ApiVersion": "1.45", "MinAPIVersion": "1.24"}, "1.41"),
        # Docker 29 no longer serves anything below 1.44: its own
        ({"ApiVersion": "1.52", "MinAPIVersion": "1.44"}, "1.52"),
        # an engine older than 1.41 (Docker 19.03): its own
        ({"ApiVersion": "1.40", "MinAPIVersion": "1.12"}, "1.40"),
        # no usable answer: ours (the first request says what is wrong)
        ({}, "1.41"),
        ({"ApiVersion": "x"}, "1.41"),
    ],
)
def test_the_api_version_suits_the_engine(engine, expected):
    assert docker_client.api_version(engine) == expected


def test_an_engine_nobody_serves_is_a_clear_error(tmp_path):
    pytest.importorskip("docker")
    url = f"unix://{tmp_path}/nothing.sock"
    with pytest.raises(docker_client.ArmswarmError, match="cannot reach the docker engine at"):
        docker_client.connect(base_url=url, timeout=2)
