"""The one settings layer: a pure key-by-key merge, defaults < config < pillar, strict types,
and each domain's settings function."""

import copy
import re
from pathlib import Path

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy
from armswarm_core.build import build_settings
from armswarm_core.common import config, docker_client
from armswarm_core.node import node_settings
from armswarm_core.registry import registry_api, registry_host, registry_settings
from armswarm_core.swarm import swarm_layout

pytestmark = pytest.mark.unit


# -- merge -------------------------------------------------------------------------------------
def test_merge_is_key_by_key_and_never_mutates():
    base = {"a": {"x": 1, "y": [1]}, "b": 1}
    over = {"a": {"y": [2], "z": {"q": 1}}, "c": None, "b": None}
    before = copy.deepcopy((base, over))
    out = config.merge(base, over)
    assert out == {"a": {"x": 1, "y": [2], "z": {"q": 1}}, "b": 1}
    assert (base, over) == before
    out["a"]["y"].append(3)
    out["a"]["z"]["q"] = 2
    assert (base, over) == before  # no shared structure either


def test_a_scalar_replaces_a_mapping_and_the_other_way():
    assert config.merge({"a": {"x": 1}}, {"a": "s"}) == {"a": "s"}
    assert config.merge({"a": "s"}, {"a": {"x": 1}}) == {"a": {"x": 1}}


def test_lookup_nested_and_flat_keys_pillar_last():
    opts = {
        "armswarm": {"docker": {"base_url": "tcp://a:2375", "timeout": 5}},
        "armswarm.docker.timeout": 7,
    }
    pillar = {"armswarm": {"docker": {"base_url": "tcp://b:2375"}}}
    conf, problems = config.lookup("armswarm:docker", {"extra": 1}, opts, pillar)
    assert conf == {"extra": 1, "base_url": "tcp://b:2375", "timeout": 7} and problems == []


def test_lookup_reads_opts_pillar_when_no_pillar_is_given():
    opts = {"pillar": {"armswarm": {"docker": {"timeout": 9}}}}
    assert config.lookup("armswarm:docker", {}, opts, None)[0] == {"timeout": 9}


def test_a_section_that_is_not_a_mapping_is_a_problem():
    conf, problems = config.lookup("armswarm:docker", {"t": 1}, None, {"armswarm": {"docker": 3}})
    assert conf == {"t": 1} and problems == ["armswarm:docker: must be a mapping, not a number"]


# -- strict types ------------------------------------------------------------------------------
DEFAULTS = {"flag": True, "count": 2, "ratio": 0.5, "name": "x", "items": [], "sub": {"k": 1}}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("flag", "false", "armswarm:t:flag: must be true or false, not a string"),
        ("flag", 0, "armswarm:t:flag: must be true or false, not a number"),
        ("count", True, "armswarm:t:count: must be a whole number, not a boolean"),
        ("count", 2.5, "armswarm:t:count: must be a whole number, not a number"),
        ("count", "two", "armswarm:t:count: must be a whole number, not a string"),
        ("ratio", False, "armswarm:t:ratio: must be a number, not a boolean"),
        ("name", 3, "armswarm:t:name: must be a string, not a number"),
        ("items", "a", "armswarm:t:items: must be a list, not a string"),
        ("sub", ["k"], "armswarm:t:sub: must be a mapping, not a list"),
    ],
)
def test_wrong_types_are_named_with_the_full_key(key, value, message):
    clean, problems = config.check({**DEFAULTS, key: value}, DEFAULTS, "armswarm:t")
    assert problems == [message]
    assert clean[key] == DEFAULTS[key]  # left at the default, so a formula still renders


def test_quoted_numbers_are_numbers():
    clean, problems = config.check({"count": "5", "ratio": "1.5"}, DEFAULTS, "armswarm:t")
    assert clean == {"count": 5, "ratio": 1.5} and problems == []


def test_unknown_keys_name_the_closest_known_one():
    conf = {"sub": {"kk": 1}, "cuont": 3, "zzz": 1}
    clean, problems = config.check(conf, DEFAULTS, "armswarm:t")
    assert problems == [
        "armswarm:t:sub:kk: unknown key (did you mean k?)",
        "armswarm:t:cuont: unknown key (did you mean count?)",
        "armswarm:t:zzz: unknown key",
    ]
    assert clean == {"sub": {}}


def test_free_mappings_and_empty_default_mappings_take_any_key():
    defaults = {"users": {}, "daemon": {"a": 1}}
    conf = {"users": {"u": "p"}, "daemon": {"b": [1]}}
    clean, problems = config.check(conf, defaults, "armswarm:t", free=("daemon",))
    assert clean == conf and problems == []


def test_errors_never_show_values():
    conf = {"name": ["hunter2"]}
    assert "hunter2" not in str(config.check(conf, DEFAULTS, "armswarm:t")[1])


def test_masked_hides_secrets_in_a_copy():
    conf = {"users": {"a": "pw1"}, "password": "pw2", "username": "u"}
    out = config.masked(conf, ("users:*", "password"))
    assert out == {"users": {"a": config.SECRET}, "password": config.SECRET, "username": "u"}
    assert conf["users"]["a"] == "pw1"


# -- domains -----------------------------------------------------------------------------------
def test_registry_settings_from_opts_and_pillar_key_by_key():
    """Bug: a minion config with any armswarm:registry key hid the pillar's users and storage
    (the whole value of the first source won)."""
    opts = {"armswarm": {"registry": {"host": "reg.lan:5000"}}}
    pillar = {"armswarm": {"registry": {"users": {"builder": "pw"}, "storage": "/srv/ssd/reg"}}}
    conf = registry_host.settings(opts, pillar)
    assert conf["host"] == "reg.lan:5000"
    assert conf["users"] == {"builder": "pw"} and conf["storage"] == "/srv/ssd/reg"
    # The same keys reach the client side.
    assert registry_api.settings(opts, pillar).host == "reg.lan:5000"
    # the password hidden, the user's right shown (the short form has every right)
    masked = registry_settings.masked(conf)["users"]
    assert masked == {"builder": {"password": config.SECRET, "right": "delete"}}


def test_state_arguments_override_pillar_unless_none():
    pillar = {"armswarm": {"registry": {"port": 5001, "image": "registry:2.8"}}}
    conf = registry_host.settings(None, pillar, "reg", port=5002, image=None)
    assert (conf["port"], conf["image"], conf["name"]) == (5002, "registry:2.8", "reg")


def test_registry_keep_is_not_a_boolean():
    with pytest.raises(ArmswarmError, match="armswarm:registry:keep: must be a whole number"):
        registry_api.settings(None, {"armswarm": {"registry": {"host": "r:1", "keep": True}}})


def test_docker_engine_settings():
    assert docker_client.engine_settings() == docker_client.DEFAULTS
    opts = {"armswarm.docker.base_url": "tcp://x:2375"}
    pillar = {"armswarm": {"docker": {"timeout": "30"}}}
    assert docker_client.engine_settings(opts, pillar) == {
        "base_url": "tcp://x:2375",
        "timeout": 30,
    }
    with pytest.raises(ArmswarmError, match="armswarm:docker:timeout: must be a whole number"):
        docker_client.engine_settings(None, {"armswarm": {"docker": {"timeout": True}}})


def test_imagebuild_settings():
    opts = {"armswarm": {"imagebuild": {"source": "salt://images", "target": ["n1", "n2"]}}}
    pillar = {"armswarm": {"imagebuild": {"tgt_type": "list", "max_context_mb": 8}}}
    conf = build_settings.settings(opts, pillar)
    assert (conf["source"], conf["target"], conf["tgt_type"]) == (
        "salt://images",
        ["n1", "n2"],
        "list",
    )
    assert conf["max_context_mb"] == 8 and conf["retries"] == build_settings.DEFAULTS["retries"]
    with pytest.raises(ArmswarmError, match="armswarm:imagebuild:strategy"):
        build_settings.settings(None, {"armswarm": {"imagebuild": {"strategy": "fast"}}})
    with pytest.raises(ArmswarmError, match="did you mean retries"):
        build_settings.settings(None, {"armswarm": {"imagebuild": {"retry": 1}}})


def test_backup_settings_from_the_minion_config_too():
    opts = {"armswarm": {"backup": {"target": {"path": "/mnt/nas"}}}}
    pillar = {"armswarm": {"backup": {"target": {"require_mount": False}}}}
    conf = backup_policy.settings(opts, pillar)
    assert conf["target"] == {"path": "/mnt/nas", "require_mount": False}


ARCH_HC1 = {"os_family": "Arch", "armnode": {"board": "odroid-hc1", "boot_flavour": "boot.txt"}}


def test_armnode_layers_and_the_pillar_is_not_changed():
    """Bug: map.jinja popped ``lookup`` out of pillar ``armnode``, so only the first SLS of a
    run saw it."""
    pillar = {
        "armnode": {
            "lookup": {"cron_service": "crond", "admin_group": "staff"},
            "admin_group": "operators",  # armnode wins over armnode:lookup
            "io_schedulers": {"mmc": "bfq"},
        }
    }
    before = copy.deepcopy(pillar)
    for _ in range(2):  # every SLS asks: each sees the same
        conf, problems = node_settings.resolve({}, pillar, ARCH_HC1)
        assert problems == []
        assert conf["cron_service"] == "crond" and conf["admin_group"] == "operators"
        assert conf["docker_package"] == "docker"  # Arch
        assert conf["io_schedulers"] == {"mmc": "bfq", "ssd": "mq-deadline", "usb": "mq-deadline"}
        assert (conf["board"], conf["boot_flavour"]) == ("odroid-hc1", "boot.txt")
        assert "lookup" not in conf
    assert pillar == before


def test_armnode_unknown_os_family_is_debian_and_minion_options_are_not_settings():
    opts = {"armnode.boot_root": "/srv/fixture", "armnode": {"hostname": "n1"}}
    conf, problems = node_settings.resolve(opts, {}, {"os_family": "Suse"})
    assert problems == [] and conf["admin_group"] == "sudo" and conf["hostname"] == "n1"
    assert (conf["board"], conf["boot_flavour"]) == ("generic", "unknown")


def test_armnode_strict_types_and_masking():
    pillar = {"armnode": {"admin": {"sudo_nopasswd": "yes"}, "kernal_args": {}}}
    conf, problems = node_settings.resolve({}, pillar, {})
    assert problems == [
        "armnode:admin:sudo_nopasswd: must be true or false, not a string",
        "armnode:kernal_args: unknown key (did you mean kernel_args?)",
    ]
    assert conf["admin"]["sudo_nopasswd"] is False
    with pytest.raises(ArmswarmError, match="armnode:admin:sudo_nopasswd"):
        node_settings.settings({}, pillar, {})
    hashed = {"armnode": {"admin": {"password_hash": "$6$salt$hash"}}}
    shown = node_settings.settings({}, hashed, {}, strict=False)
    assert node_settings.masked(shown)["admin"]["password_hash"] == config.SECRET
    assert shown["admin"]["password_hash"] == "$6$salt$hash"


def test_swarm_layout_is_fed_through_the_same_merge():
    opts = {"armswarm": {"swarm": {"listen_port": 2400, "managers": ["a"]}}}
    pillar = {"armswarm": {"swarm": {"managers": ["m1"], "workers": ["w1"]}}}
    conf = swarm_layout.layout_conf(opts, pillar)
    assert conf == {"listen_port": 2400, "managers": ["m1"], "workers": ["w1"]}
    layout, errors, _ = swarm_layout.parse_layout(conf)
    assert errors == [] and layout.listen_port == 2400
    assert swarm_layout.layout_conf({}, {}) is None
    assert swarm_layout.layout_conf({}, {"armswarm": {"swarm": "x"}}) is None
    rack = {"armswarm": {"swarms": {"rack2": {"managers": ["r1"]}}}}
    assert swarm_layout.layout_conf({}, rack, "armswarm:swarms:rack2") == {"managers": ["r1"]}


# -- issue 14, items 5 and 6: the examples as given ----------------------------------------------
@pytest.mark.parametrize(
    ("read", "message"),
    [
        (
            lambda: backup_policy.resolve(
                pillar={"armswarm": {"backup": {"cleanup": {"enabled": "false"}}}}
            ),
            "armswarm:backup:cleanup:enabled: must be true or false, not a string",
        ),
        (
            lambda: node_settings.resolve(
                pillar={"armnode": {"kernel_args": {"present": "fsck.mode=force"}}}
            ),
            "armnode:kernel_args:present: must be a list of strings, not a string",
        ),
        (
            lambda: node_settings.resolve(
                pillar={"armnode": {"tuning": {"root_mount_options": "noatime"}}}
            ),
            "armnode:tuning:root_mount_options: must be a list, not a string",
        ),
        (
            lambda: node_settings.resolve(pillar={"armnode": {"tunning": {}}}),
            "armnode:tunning: unknown key (did you mean tuning?)",
        ),
        (
            lambda: swarm_layout.parse_layout({"managers": ["m1"], "force": "false"})[:2],
            "armswarm:swarm:force: must be true or false, not a string",
        ),
    ],
)
def test_issue_examples_are_errors_naming_the_key(read, message):
    _, problems = read()[:2]
    assert message in problems


def test_issue_examples_keep_the_defaults():
    conf, _ = node_settings.resolve(
        pillar={"armnode": {"kernel_args": {"present": "fsck.mode=force"}}}
    )
    assert conf["kernel_args"]["present"] == ["fsck.mode=force", "fsck.repair=yes"]
    conf, _ = backup_policy.resolve(
        pillar={"armswarm": {"backup": {"cleanup": {"enabled": "false"}}}}
    )
    assert conf["cleanup"]["enabled"] is True  # the default; armnode.valid / the state stop the run


CONTROL = [
    (
        "mirrors",
        {"debian": "http://deb.debian.org/debian\ndeb http://evil/ x main"},
        "armnode:mirrors:debian",
    ),
    ("mirrors", {"components": "main\rcontrib"}, "armnode:mirrors:components"),
    ("journald", {"Storage": "volatile\nForwardToWall=yes"}, "armnode:journald:Storage"),
    ("mail", {"host": "smtp.example.org\x00"}, "armnode:mail:host"),
    (
        "admin",
        {"ssh_keys": ["ssh-ed25519 AAAA a@b\nssh-ed25519 BBBB evil"]},
        "armnode:admin:ssh_keys",
    ),
    ("tuning", {"zram": {"algorithm": "zstd\x1b"}}, "armnode:tuning:zram:algorithm"),
    ("tuning", {"irq_affinity": {"pattern": "eth\n0 .*"}}, "armnode:tuning:irq_affinity:pattern"),
    ("hostname", "node1\nnode2", "armnode:hostname"),
]


@pytest.mark.parametrize(("key", "value", "where"), CONTROL)
def test_control_characters_in_file_values_are_refused_naming_the_key(key, value, where):
    conf, problems = node_settings.resolve(pillar={"armnode": {key: value}})
    assert problems == []
    errors = node_settings.validate(conf)
    assert f"{where}: contains a newline or control character" in errors
    assert not any("evil" in e or "ForwardToWall" in e for e in errors)


def test_newlines_belong_in_whole_files_only():
    conf, _ = node_settings.resolve(
        pillar={
            "armnode": {
                "scripts": {"hello": "#!/bin/sh\necho hi\n"},
                "docker": {"registry": "r:5000", "registry_ca": "-----BEGIN\nx\n-----END\n"},
            }
        }
    )
    assert not [e for e in node_settings.validate(conf) if "control character" in e]


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        (
            {"irq_affinity": {"cpus": [4, "5"]}},
            "armnode:tuning:irq_affinity:cpus: '5' is not a CPU number",
        ),
        (
            {"irq_affinity": {"cpus": [True]}},
            "armnode:tuning:irq_affinity:cpus: True is not a CPU number",
        ),
        ({"zram": {"algorithm": "zstd lz4"}}, "armnode:tuning:zram:algorithm: 'zstd lz4' is not"),
        ({"root_mount_options": [1]}, "armnode:tuning:root_mount_options: 1 is not a mount option"),
    ],
)
def test_tuning_values_are_checked_naming_the_key(tuning, message):
    conf, _ = node_settings.resolve(pillar={"armnode": {"tuning": tuning}})
    assert any(e.startswith(message) for e in node_settings.validate(conf))


def test_kernel_args_with_control_characters_are_refused():
    conf, _ = node_settings.resolve(
        pillar={"armnode": {"kernel_args": {"present": ["quiet\x00"], "absent": []}}}
    )
    assert any(
        e.startswith("armnode:kernel_args: kernel argument") for e in node_settings.validate(conf)
    )


def test_a_state_argument_replaces_its_registry_key_whole():
    pillar = {"armswarm": {"registry": {"host": "r:5000", "users": {"old": "p1", "ci": "p2"}}}}
    conf = registry_settings.settings({}, pillar, users={"ci": "p3"})
    # a user left out of the argument has no access any more
    assert conf["users"] == {"ci": "p3"}
    assert registry_settings.settings({}, pillar, users={})["users"] == {}
    assert registry_settings.settings({}, pillar, users=None)["users"] == {"old": "p1", "ci": "p2"}


def test_a_plaintext_database_password_never_comes_back_even_unstrict():
    pillar = {
        "armswarm": {
            "backup": {"mysql": {"credentials": {"db": {"user": "root", "password": "s3cret"}}}}
        }
    }
    with pytest.raises(ArmswarmError, match="give password_pillar") as err:
        backup_policy.settings({}, pillar)
    assert "s3cret" not in str(err.value)
    conf = backup_policy.settings({}, pillar, strict=False)
    assert conf["mysql"]["credentials"]["db"] == {"user": "root"}
    assert "s3cret" not in repr(conf)


def test_ssh_login_on_the_node():
    from armswarm_core.node import node_settings as ns  # noqa: PLC0415

    shadow = "root:*:19000:0:99999:7:::\nadmin:!$6$x$y:1::\nops:$6$salt$hash:1::\nnew::1::\n"
    assert [ns.usable_password(shadow, n) for n in ("root", "admin", "ops", "new", "x")] == [
        False,
        False,
        True,
        False,
        False,
    ]
    assert ns.authorized_keys("# keys\n\n  # old\nssh-ed25519 AAAA a@b\n") == 1
    settings = {"admin": {"name": "admin", "password_hash": "", "ssh_keys": []}}
    assert "admin:password_hash" in ns.ssh_lockout(settings, False, 0)
    assert ns.ssh_lockout(settings, True, 0) == "" and ns.ssh_lockout(settings, False, 1) == ""


@pytest.mark.parametrize(
    ("mirrors", "message"),
    [
        ({"debian": ["http://a/debian"]}, "armnode:mirrors:debian: must be one URL, not a list"),
        ({"debian": "http://a/debian", "security": 1}, "armnode:mirrors:security: must be one URL"),
        ({"arch": "http://a/arm"}, "armnode:mirrors:arch: must be a list of URLs"),
        ({"debian": "http://a/debian", "components": {"main": 1}}, "armnode:mirrors:components"),
        ({"debian": "http://a/debian", "component": "main"}, "armnode:mirrors:component: unknown"),
        ({"security": "http://a/debian-security"}, "only with armnode:mirrors:debian"),
        # What an apt line would split on, read as options or cut off as a comment.
        ({"debian": "http://a/deb ian"}, "armnode:mirrors:debian: not a mirror URL"),
        ({"debian": "[trusted=yes] http://a/debian"}, "armnode:mirrors:debian:"),
        ({"debian": "http://a/debian#lan"}, "armnode:mirrors:debian:"),
        ({"debian": "http://a/debian", "security": "http://a/s x"}, "armnode:mirrors:security:"),
        ({"arch": ["http://a/arm x"]}, "armnode:mirrors:arch:"),
        # pacman fills in $arch and $repo only; $arch alone serves every repo from one dir
        ({"arch": ["http://a/$arch"]}, "armnode:mirrors:arch: pacman fills in only"),
        ({"arch": ["http://a/$architecture/$repo"]}, "armnode:mirrors:arch: pacman"),
        ({"arch": ["http://a/$ARCH/$repo"]}, "armnode:mirrors:arch: pacman"),
        ({"arch": ["file:srv/alarm"]}, "armnode:mirrors:arch: not a mirror URL"),
        ({"debian": "http://a/debian", "components": ["main contrib"]}, "not component names"),
        ({"debian": "http://a/debian", "components": "main [x]"}, "['[x]']"),
    ],
)
def test_mirror_settings_are_typed_strictly(mirrors, message):
    conf, _ = node_settings.resolve(pillar={"armnode": {"mirrors": mirrors}})
    errors = node_settings.validate(conf)
    assert any(message in e for e in errors), errors


def test_a_mirror_url_is_never_shown_in_its_error():
    # A mirror may take a password in its URL (http://user:pw@host/debian).
    conf, _ = node_settings.resolve(
        pillar={"armnode": {"mirrors": {"debian": "http://u:Pw-9x@a/deb ian"}}}
    )
    errors = node_settings.validate(conf)
    assert any("armnode:mirrors:debian" in e for e in errors), errors
    assert not any("Pw-9x" in e for e in errors), errors


@pytest.mark.parametrize(
    "url",
    [
        "http://mirror.archlinuxarm.org/$arch/$repo",  # as the image's mirrorlist has it
        "http://de.mirror.archlinuxarm.org/",
        "file:///srv/alarm",
    ],
)
def test_an_arch_mirror_may_be_a_base_or_a_whole_server_url(url):
    conf, _ = node_settings.resolve(pillar={"armnode": {"mirrors": {"arch": [url]}}})
    assert not [e for e in node_settings.validate(conf) if "mirrors" in e]


def test_good_mirror_settings_pass():
    conf, _ = node_settings.resolve(
        pillar={
            "armnode": {
                "mirrors": {
                    "debian": "http://[fd00::1]:3142/debian",
                    "security": "http://a/debian-security",
                    "components": ["main", "contrib", "main/debian-installer"],
                    "arch": ["http://a/arm"],
                }
            }
        }
    )
    assert not [e for e in node_settings.validate(conf) if "mirrors" in e]


def test_journald_keys_are_the_ones_journald_ships():
    # The real file systemd installs lists every [Journal] setting, commented out.
    shipped = Path("/etc/systemd/journald.conf")
    if not shipped.is_file():
        pytest.skip("no systemd journald.conf on this machine")
    keys = set(re.findall(r"^#?([A-Z][A-Za-z]+)=", shipped.read_text(), re.M))
    assert len(keys) > 20, keys
    assert keys <= set(node_settings.JOURNALD_KEYS), keys - set(node_settings.JOURNALD_KEYS)


@pytest.mark.parametrize(
    ("key", "hint"),
    [("Storag", " (did you mean Storage?)"), ("storage", " (did you mean Storage?)"), ("Zzz", "")],
)
def test_an_unknown_journald_setting_is_named_with_the_closest(key, hint):
    conf, _ = node_settings.resolve(pillar={"armnode": {"journald": {key: "volatile"}}})
    errors = node_settings.validate(conf)
    assert f"armnode:journald:{key}: not a journald.conf [Journal] setting{hint}" in errors


@pytest.mark.parametrize(
    ("mail", "message"),
    [
        ({"host": "smtp example.org"}, "armnode:mail:host: 'smtp example.org' is not a host"),
        ({"host": "-smtp.example.org"}, "armnode:mail:host:"),
        ({"host": ["smtp.example.org"]}, "armnode:mail:host:"),
        ({"host": "smtp.example.org", "port": 0}, "armnode:mail:port: 0 is not a port"),
        ({"host": "smtp.example.org", "port": 65536}, "armnode:mail:port: 65536 is not a port"),
    ],
)
def test_a_mail_relay_msmtp_would_misread_is_refused(mail, message):
    conf, _ = node_settings.resolve(pillar={"armnode": {"mail": {"enabled": True, **mail}}})
    errors = node_settings.validate(conf)
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    "host", ["smtp.example.org", "smtp.example.org.", "relay_1.lan", "10.77.9.1", "fd00::25"]
)
def test_relay_hosts_as_people_write_them_pass(host):
    conf, _ = node_settings.resolve(pillar={"armnode": {"mail": {"enabled": True, "host": host}}})
    assert not [e for e in node_settings.validate(conf) if "armnode:mail" in e]
