"""The settings functions through Salt's real loader: what SLS files and states see."""

import json

import pytest
from loaders import load_modules, load_states

pytestmark = pytest.mark.functional

GRAINS = {"kernel": "Linux", "os_family": "Debian", "armnode": {"board": "rpi4"}}


def test_registry_config_and_pillar_merge_key_by_key(tmp_path):
    """Bug: once the minion config set any armswarm:registry key, the pillar's users and
    storage were lost."""
    pytest.importorskip("docker")
    mods = load_modules(
        tmp_path,
        armswarm={"registry": {"host": "reg.lan:5000"}},
        pillar={"armswarm": {"registry": {"users": {"builder": "pw"}, "storage": "/srv/reg"}}},
    )
    conf = mods["docker_registry.settings"]()
    assert conf["host"] == "reg.lan:5000" and conf["storage"] == "/srv/reg"
    assert list(conf["users"]) == ["builder"]
    assert "pw" not in json.dumps(conf)  # masked: a return is no place for passwords


def test_armnode_settings_leave_the_pillar_alone(tmp_path):
    pillar = {"armnode": {"lookup": {"cron_service": "crond"}, "hostname": "n1"}}
    mods = load_modules(tmp_path, grains=GRAINS, pillar=pillar)
    first = mods["armnode.settings"](strict=False)
    second = mods["armnode.settings"](strict=False)
    assert first == second and first["cron_service"] == "crond" and first["hostname"] == "n1"
    assert mods["pillar.raw"]("armnode") == {"lookup": {"cron_service": "crond"}, "hostname": "n1"}


def test_armnode_validation_state_reads_the_settings_itself(tmp_path):
    pillar = {"armnode": {"remove_default_users": "no", "kernel_args": {"present": []}}}
    states = load_states(tmp_path, grains=GRAINS, pillar=pillar)
    ret = states["armnode.settings_valid"]()
    assert ret["result"] is False
    assert "armnode:remove_default_users: must be true or false" in ret["comment"]


def test_backup_validation_state_reads_the_settings_itself(tmp_path):
    pytest.importorskip("docker")
    pillar = {"armswarm": {"backup": {"keep_daily": 0, "exclude": "cache"}}}
    states = load_states(tmp_path, pillar=pillar)
    ret = states["backup.settings_valid"]()
    assert ret["result"] is False
    assert "armswarm:backup:keep_daily" in ret["comment"]
    assert "armswarm:backup:exclude: must be a list" in ret["comment"]
    good = load_states(tmp_path, armswarm={"backup": {"keep_daily": 3}})
    assert good["backup.settings_valid"]()["result"] is True
