"""The registry node's pure parts: settings, config.yml, htpasswd, what forces a new container."""

import pytest
import yaml
from armswarm_core import ArmswarmError
from armswarm_core.registry import registry_host

pytestmark = pytest.mark.unit


def _pillar(**registry):
    return {"armswarm": {"registry": registry}}


def test_settings_defaults_and_errors():
    conf = registry_host.settings(None, _pillar(port="5001"))
    assert conf["port"] == 5001 and conf["image"] == "registry:2"
    with pytest.raises(ArmswarmError) as err:
        registry_host.settings(None, _pillar(port=0, storage="srv", users={"a:b": "x"}))
    text = str(err.value)
    assert "port" in text and "storage" in text and "users" in text
    with pytest.raises(ArmswarmError, match="armswarm:registry:users: must be a mapping"):
        registry_host.settings(None, _pillar(users=["builder"]))


def test_config_document():
    conf = registry_host.settings(None, _pillar(users={"builder": "pw"}))
    doc = yaml.safe_load(registry_host.render_config(conf))
    assert doc["storage"]["delete"] == {"enabled": True}
    assert doc["http"]["addr"] == ":5000" and "tls" in doc["http"]
    assert doc["auth"]["htpasswd"]["path"] == "/etc/docker/registry/htpasswd"
    assert "pw" not in registry_host.render_config(conf)
    assert "auth" not in registry_host.config_document(registry_host.settings())
    assert registry_host.config_document(conf, readonly=True)["storage"]["maintenance"] == {
        "readonly": {"enabled": True}
    }


def test_htpasswd_keeps_matching_hashes():
    text, changed = registry_host.htpasswd({"b": "pw1", "a": "pw2"})
    assert changed == ["a", "b"] and text.startswith("a:$2")
    assert "pw1" not in text
    assert registry_host.htpasswd({"b": "pw1", "a": "pw2"}, text) == (text, [])
    new, changed = registry_host.htpasswd({"b": "other"}, text)
    assert changed == ["b", "a"] and new.count("\n") == 1


def test_spec_hash_follows_the_files(tmp_path):
    conf = registry_host.settings()
    first = registry_host.spec_hash(conf, tmp_path)
    (tmp_path / "tls.crt").write_text("cert 1")
    second = registry_host.spec_hash(conf, tmp_path)
    assert first != second
    assert registry_host.spec_hash({**conf, "image": "registry:2.8"}, tmp_path) != second
    (tmp_path / "other").write_text("ignored")
    assert registry_host.spec_hash(conf, tmp_path) == second
