"""The registry node's pure parts: settings, config.yml, htpasswd, what forces a new container."""

import pytest
import yaml
from armswarm_core import ArmswarmError
from armswarm_core.common import password_hashes
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
    open_conf = registry_host.settings(None, _pillar(allow_anonymous=True))
    assert "auth" not in registry_host.config_document(open_conf)
    assert registry_host.config_document(conf, readonly=True)["storage"]["maintenance"] == {
        "readonly": {"enabled": True}
    }


def test_htpasswd_keeps_matching_hashes():
    text, changed = registry_host.htpasswd({"b": "pw1", "a": "pw2"})
    assert changed == ["a", "b"] and text.startswith("a:$2")
    assert not any(f == "pw1" for line in text.splitlines() for f in line.split(":"))
    assert registry_host.htpasswd({"b": "pw1", "a": "pw2"}, text) == (text, [])
    new, changed = registry_host.htpasswd({"b": "other"}, text)
    assert changed == ["b", "a"] and new.count("\n") == 1


def test_htpasswd_cost_is_cheap_by_default_and_a_changed_cost_rehashes():
    text, _ = registry_host.htpasswd({"a": "pw"})
    (hashed,) = [line.split(":", 1)[1] for line in text.splitlines()]
    assert hashed.startswith("$2b$05$"), hashed  # as `htpasswd -B`
    dearer, changed = registry_host.htpasswd({"a": "pw"}, text, cost=10)
    assert changed == ["a"] and dearer.split(":", 1)[1].startswith("$2b$10$")
    assert registry_host.htpasswd({"a": "pw"}, dearer, cost=10) == (dearer, [])
    # the system's own libcrypt agrees the new hash is the password's
    stored = dearer.split(":", 1)[1].strip()
    assert password_hashes.libcrypt("pw", stored) == stored
    assert password_hashes.libcrypt("other", stored) != stored


@pytest.mark.parametrize("cost", [3, 32, "five", True, 5.5])
def test_htpasswd_cost_out_of_range_or_not_an_integer_is_refused(cost):
    with pytest.raises(ArmswarmError, match="htpasswd_cost"):
        registry_host.settings(None, _pillar(htpasswd_cost=cost))


def test_spec_hash_follows_the_files(tmp_path):
    conf = registry_host.settings()
    first = registry_host.spec_hash(conf, tmp_path)
    (tmp_path / "tls.crt").write_text("cert 1")
    second = registry_host.spec_hash(conf, tmp_path)
    assert first != second
    assert registry_host.spec_hash({**conf, "image": "registry:2.8"}, tmp_path) != second
    (tmp_path / "other").write_text("ignored")
    assert registry_host.spec_hash(conf, tmp_path) == second


def test_closed_by_default():
    # No users: refused, naming the key, unless an open registry is asked for (a string is
    # not a boolean).
    with pytest.raises(ArmswarmError, match="armswarm:registry:users is empty"):
        registry_host.config_document(registry_host.settings())
    with pytest.raises(ArmswarmError, match="allow_anonymous"):
        registry_host.settings(None, _pillar(allow_anonymous="true"))
    with pytest.raises(ArmswarmError, match="armswarm:registry:listen"):
        registry_host.settings(None, _pillar(listen="0.0.0.0\n"))
    # every interface is not an address the nodes use
    for everywhere in ("0.0.0.0", "::"):
        with pytest.raises(ArmswarmError, match="listen .* is every interface"):
            registry_host.settings(None, _pillar(listen=everywhere))


# ip4_interfaces as a board with Docker reports it: docker0 (the same 172.17.0.1 on every
# node) and a user network's bridge come before the LAN interface, plus a veth and loopback.
BOARD_INTERFACES = {
    "br-3f2a9c1d": ["172.18.0.1"],
    "docker0": ["172.17.0.1"],
    "docker_gwbridge": ["172.19.0.1"],
    "eth0": ["192.168.1.20", "169.254.3.4"],
    "lo": ["127.0.0.1"],
    "veth12ab": [],
    "wlan0": ["192.168.2.20"],
}


def test_default_host_is_never_a_docker_bridge():
    conf = registry_host.settings(None, _pillar(users={"u": "p"}))
    placed = registry_host.placement(conf, BOARD_INTERFACES)
    assert placed["addresses"] == ["192.168.1.20", "192.168.2.20"]
    assert placed["host"] == "192.168.1.20:5000" and placed["listen"] == "192.168.1.20"
    # host names one of the node's addresses: published there
    conf = registry_host.settings(None, _pillar(host="192.168.2.20:5000"))
    assert registry_host.placement(conf, BOARD_INTERFACES)["listen"] == "192.168.2.20"
    # a DNS name: the first reachable address; listen set: that one
    conf = registry_host.settings(None, _pillar(host="registry.lan:5000"))
    assert registry_host.placement(conf, BOARD_INTERFACES)["listen"] == "192.168.1.20"
    conf = registry_host.settings(None, _pillar(listen="192.168.2.20"))
    assert registry_host.placement(conf, BOARD_INTERFACES)["listen"] == "192.168.2.20"
    # only docker's bridges: nothing to publish on, not 172.17.0.1
    only_docker = {"docker0": ["172.17.0.1"], "lo": ["127.0.0.1"]}
    placed = registry_host.placement(registry_host.settings(), only_docker)
    assert placed == {"host": "", "listen": "", "addresses": []}


def test_the_container_sees_only_what_it_serves(tmp_path):
    for name in ("ca.key", "ca.crt", "tls.key", "tls.crt", "config.yml", "htpasswd"):
        (tmp_path / name).write_text(name)
    conf = registry_host.settings(
        None, _pillar(config_dir=str(tmp_path), storage="/srv/registry", listen="10.0.0.5")
    )
    conf["name"] = "armswarm-registry"
    kwargs = registry_host.container_kwargs(conf, "spec")
    sources = set(kwargs["volumes"])
    assert sources == {"/srv/registry"} | {
        str(tmp_path / n) for n in ("tls.key", "tls.crt", "config.yml", "htpasswd")
    }
    assert all(v["mode"] == "ro" for k, v in kwargs["volumes"].items() if k != "/srv/registry")
    assert kwargs["ports"] == {"5000/tcp": ("10.0.0.5", 5000)}
    with pytest.raises(ArmswarmError, match="listen"):
        registry_host.container_kwargs({**conf, "listen": ""}, "spec")


class _Container:
    def __init__(self, host_ip):
        self.labels = {}
        self.short_id, self.status = "abc123", "running"
        self.attrs = {
            "HostConfig": {"PortBindings": {"5000/tcp": [{"HostIp": host_ip, "HostPort": "5000"}]}},
            "Config": {"Image": "armswarm/registry:1"},
        }


class _Client:
    def __init__(self, container):
        self.container, self.asked = container, []

    @property
    def containers(self):
        return self

    def get(self, name):
        self.asked.append(name)
        return self.container

    def run(self, *args, **kwargs):  # a replacement would start here: it must not
        raise AssertionError("the registry was replaced")


@pytest.mark.parametrize("host_ip", ["", "0.0.0.0", "::"])
def test_garbage_collection_never_republishes_on_every_interface(host_ip):
    client = _Client(_Container(host_ip))
    conf = registry_host.settings(None, _pillar())
    assert conf["listen"] in (None, "")
    with pytest.raises(ArmswarmError, match="no address to publish on"):
        registry_host.garbage_collect(client, conf)
    assert client.asked == [conf["name"]]  # read, nothing stopped or started


class _Exec(_Container):
    def exec_run(self, argv):
        self.ran = argv
        return 0, b"blob eligible for deletion: sha256:ab\n"


def test_a_writable_restart_that_fails_after_collection_says_the_registry_stays_read_only(
    monkeypatch, tmp_path
):
    container = _Exec("10.0.0.5")
    container.labels = {registry_host.HASH_LABEL: "spec1"}
    made = []

    def replace(client, conf, spec, readonly=False, **_):
        made.append((spec, readonly))
        if not readonly:  # the writable start fails: replace() rolled back to the read-only one
            raise ArmswarmError("the registry does not listen on 10.0.0.5:5000 after 30 s")

    monkeypatch.setattr(registry_host, "replace", replace)
    conf = registry_host.settings(None, _pillar(storage=str(tmp_path), listen="10.0.0.5"))
    with pytest.raises(ArmswarmError) as err:
        registry_host.garbage_collect(_Client(container), conf)
    text = str(err.value)
    assert "stays read-only" in text and "does not listen on 10.0.0.5:5000" in text, text
    assert "apply the registry state" in text
    assert made == [("spec1", True), ("spec1", False)]
    assert container.ran[1] == "garbage-collect"
