"""A real salt-master and salt-minion (pytest-salt-factories) serving this tree."""

from pathlib import Path

import pytest

from armswarm import paths

FIXTURES = Path(__file__).resolve().parents[2] / "armswarm" / "lab" / "fixtures" / "boards"


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    return {"root_dir": str(tmp_path_factory.mktemp("salt-root")), "start_timeout": 120}


@pytest.fixture(scope="package")
def master(salt_factories, tmp_path_factory):
    extensions = paths.link_extensions(tmp_path_factory.mktemp("extensions"))
    factory = salt_factories.salt_master_daemon(
        "armswarm-master",
        overrides={
            "file_roots": {"base": paths.file_roots(extensions)},
            "pillar_roots": {"base": [paths.pillar_root()]},
        },
    )
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def minion(master):
    factory = master.salt_minion_daemon(
        "armswarm-minion",
        overrides={"armnode.device_tree": str(FIXTURES / "rockpro64" / "device-tree")},
    )
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def salt_cli(master):
    return master.salt_cli(timeout=120)
