"""Strict values outside armnode (issue 14 item 5): every settings loader refuses garbage with
its own error naming the key, never with another exception, and refuses a newline or control
character in any value (each ends up in a file, a command line, a cron line or a unit)."""

import copy
from pathlib import Path

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy
from armswarm_core.build import build_settings
from armswarm_core.common import config, docker_client
from armswarm_core.node import node_settings
from armswarm_core.registry import registry_settings
from armswarm_core.swarm import swarm_engine, swarm_layout

pytestmark = pytest.mark.unit

BOARDS = Path(__file__).resolve().parents[2] / "armswarm" / "lab" / "fixtures" / "boards"
RPI4 = {"os_family": "Debian", "armnode": {"board": "rpi4", "boot_flavour": "rpi-cmdline"}}

GARBAGE = [None, 7, ["x"], {"x": 1}, "a\nb", b"x"]


def _pillar(path: str, conf: dict) -> dict:
    for part in reversed(path.split(":")):
        conf = {part: conf}
    return conf


def _swarm(conf: dict):
    layout, errors, _ = swarm_layout.parse_layout(
        swarm_layout.layout_conf(pillar=_pillar("armswarm:swarm", conf))
    )
    if errors:
        raise ArmswarmError("; ".join(errors))
    return layout


# name: (read a pillar section, its pillar key, the keys and their defaults, free mappings)
LOADERS = {
    "armnode": (
        lambda c: node_settings.settings(
            pillar={"armnode": c}, grains=RPI4, boot_root=str(BOARDS / "rpi4" / "rootfs")
        ),
        node_settings.PILLAR,
        node_settings._SCHEMA,
        node_settings._FREE,
    ),
    "backup": (
        lambda c: backup_policy.settings(pillar=_pillar(backup_policy.PILLAR, c)),
        backup_policy.PILLAR,
        backup_policy.DEFAULTS,
        ("mysql:credentials",),
    ),
    "registry": (
        lambda c: registry_settings.settings({}, _pillar(registry_settings.PILLAR, c)),
        registry_settings.PILLAR,
        registry_settings.DEFAULTS,
        ("users",),
    ),
    "imagebuild": (
        lambda c: build_settings.settings({}, _pillar(build_settings.PILLAR, c)),
        build_settings.PILLAR,
        build_settings.DEFAULTS,
        ("build_args", "speeds"),
    ),
    "docker": (
        lambda c: docker_client.engine_settings({}, _pillar(docker_client.PILLAR, c)),
        docker_client.PILLAR,
        docker_client.DEFAULTS,
        (),
    ),
    "swarm": (
        lambda c: _swarm(config.merge({"managers": ["m1"]}, c)),
        "armswarm:swarm",
        {
            "managers": ["m1"],
            "workers": ["w1"],
            "allow_even_managers": False,
            "prune": False,
            "remove_undeclared_labels": False,
            "grain_labels": True,
            "listen_port": 2377,
            "force": False,
            "rotate_join_tokens": False,
            "answer_timeout": 20,
            "role_timeout": 60,
            "default_addr_pool": ["10.20.0.0/16"],
            "subnet_size": 24,
            "data_path_port": 4789,
            "cluster": {key: 3600 for key in swarm_engine.CLUSTER_SPEC},
            "nodes": {
                "m1": {
                    "advertise_addr": "10.0.0.1",
                    "advertise_interface": "eth0",
                    "labels": {},
                    "availability": "active",
                    "data_path_addr": "10.0.0.1",
                }
            },
        },
        ("nodes:m1:labels",),
    ),
}


def _keys(defaults: dict, free: tuple, rel: tuple = ()):
    """Every key (colon path) and its default, nested mappings included."""
    for key, default in defaults.items():
        name = ":".join((*rel, key))
        yield name, default
        if isinstance(default, dict) and default and name not in free:
            yield from _keys(default, free, (*rel, key))


def _set(path: str, value) -> dict:
    *parents, last = path.split(":")
    return _pillar(":".join(parents), {last: value}) if parents else {last: value}


def _fits(default, value) -> bool:
    """``value`` has the type of ``default`` (may be valid input, not garbage)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float)
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return False  # a string key: every garbage string has a newline


CASES = [
    pytest.param(loader, key, value, id=f"{loader}:{key}={value!r}")
    for loader, (_, _, defaults, free) in LOADERS.items()
    for key, _ in _keys(defaults, free)
    for value in GARBAGE
]


@pytest.mark.parametrize(("loader", "key", "value"), CASES)
def test_garbage_of_every_type_is_a_clear_error_naming_the_key(loader, key, value):
    read, pillar, defaults, free = LOADERS[loader]
    default = dict(_keys(defaults, free))[key]
    if (loader, key) in WHOLE_FILES and isinstance(value, str):
        pytest.skip("a whole file: newlines belong")
    try:
        got = read(_set(key, value))
    except ArmswarmError as exc:  # anything else fails the test: a traceback
        assert f"{pillar}:{key}" in str(exc)
        return
    if value is None:  # an empty YAML value is "not set"
        parent = key.rpartition(":")[0]
        assert got == read(_set(parent, {}) if parent else {})
    elif (loader, key) == ("imagebuild", "target"):  # a Salt target: a string or a list
        assert _fits([], value), f"{pillar}:{key} took {value!r}"
    else:
        assert _fits(default, value), f"{pillar}:{key} took {value!r}"


def _item_cases():
    for loader, (_, _, defaults, free) in LOADERS.items():
        for key, default in _keys(defaults, free):
            if isinstance(default, list):
                for value in GARBAGE:
                    yield pytest.param(loader, key, [value], id=f"{loader}:{key}=[{value!r}]")
            if key in free:
                for value in GARBAGE:
                    yield pytest.param(
                        loader, key, {"k": value}, id=f"{loader}:{key}={{k: {value!r}}}"
                    )


# What a free mapping (or a list) may hold (the rest of GARBAGE is refused there).
ITEMS_OK = {
    "build_args": (7,),
    "speeds": (7,),
    "nodes:m1:labels": (7,),
    "journald": (7,),  # RuntimeMaxUse: 50M, MaxLevelStore: 6
    "tuning:irq_affinity:cpus": (7,),
    "mail_packages": (["x"],),
    "boot_tools": (["x"],),
    "docker:daemon": (7, ["x"], {"x": 1}),  # daemon.json: any JSON, checked by dockerd
}
# Values that are whole files, where a newline belongs.
WHOLE_FILES = {("armnode", "docker:registry_ca"), ("armnode", "scripts")}


@pytest.mark.parametrize(("loader", "key", "value"), list(_item_cases()))
def test_garbage_inside_lists_and_mappings_is_a_clear_error(loader, key, value):
    read, pillar, _, _ = LOADERS[loader]
    item = value[0] if isinstance(value, list) else value["k"]
    if item is None and isinstance(value, dict):
        pytest.skip("an empty value in a mapping is not set")
    try:
        read(_set(key, value))
    except ArmswarmError as exc:
        assert f"{pillar}:{key}" in str(exc)
        return
    assert item in ITEMS_OK.get(key, ()), f"{pillar}:{key} took {value!r}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # The crontab line is "PATH=<cron_path> salt-call …": a newline adds a command.
        ("cron_path", "/usr/bin\n* * * * * root /tmp/x", "armswarm:backup:cron_path"),
        # … and so does a space (cron's shell runs the word after it).
        ("cron_path", "/usr/bin /tmp/x", "armswarm:backup:cron_path must be absolute"),
        ("cron_path", "/usr/bin;/tmp/x", "armswarm:backup:cron_path must be absolute"),
        ("cron_path", "usr/bin", "armswarm:backup:cron_path must be absolute"),
        ("helper_path", "/usr/local/sbin/x\n", "armswarm:backup:helper_path"),
        ("helper_path", "/usr/local/sbin/a b", "armswarm:backup:helper_path must be"),
        ("target", {"path": "/mnt/b\x00"}, "armswarm:backup:target:path"),
        ("exclude", ["cache\n"], "armswarm:backup:exclude"),
        (
            "mysql",
            {"credentials": {"db": {"user": "root\n--init-command"}}},
            "armswarm:backup:mysql:credentials:db:user",
        ),
        (
            "mysql",
            {"credentials": {"db": {"user": 0}}},
            "armswarm:backup:mysql:credentials:db:user: must be a string",
        ),
    ],
)
def test_backup_values_for_cron_lines_and_files_are_checked(key, value, message):
    with pytest.raises(ArmswarmError, match=message):
        backup_policy.settings(pillar={"armswarm": {"backup": {key: value}}})


def test_the_default_cron_path_and_helper_path_pass():
    conf = backup_policy.settings(pillar={})
    assert conf["cron_path"] == backup_policy.DEFAULTS["cron_path"]
    ok = backup_policy.settings(
        pillar={"armswarm": {"backup": {"cron_path": "/opt/salt/bin:/usr/bin"}}}
    )
    assert ok["cron_path"] == "/opt/salt/bin:/usr/bin"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # A user name starts an htpasswd line: a newline would add a user.
        ("users", {"ci\nevil": "pw"}, "armswarm:registry:users: a key contains a newline"),
        ("users", {"ci": "pw\n"}, "armswarm:registry:users:ci: contains a newline"),
        ("users", {"": "pw"}, "armswarm:registry:users: user names must be strings"),
        ("extra_sans", ["DNS:registry\nIP:1.2.3.4"], "armswarm:registry:extra_sans: contains"),
        # The SANs are joined with ", ": a comma would add another.
        ("extra_sans", ["DNS:registry, IP:6.6.6.6"], "armswarm:registry:extra_sans: each entry"),
        ("extra_sans", ["registry"], "armswarm:registry:extra_sans: each entry"),
        ("extra_sans", ["IP:300.1.1.1"], "armswarm:registry:extra_sans: each entry"),
        ("host", "reg.lan:5000\n", "armswarm:registry:host: contains"),
        ("host", "reg.lan/../x:5000", "armswarm:registry:host must be"),
        ("image", "registry:2\x1b", "armswarm:registry:image: contains"),
        ("storage", "/srv/registry\n", "armswarm:registry:storage: contains"),
        ("password", "pw\r", "armswarm:registry:password: contains"),
    ],
)
def test_registry_values_for_htpasswd_certificates_and_paths_are_checked(key, value, message):
    with pytest.raises(ArmswarmError, match=message):
        registry_settings.settings(
            {}, {"armswarm": {"registry": {"users": {"a": "b"}, key: value}}}
        )


@pytest.mark.parametrize(
    "value", ["reg.lan:5000", "10.0.0.5:5000", "[fd00::5]:5000", "registry", "a-b.c"]
)
def test_registry_hosts_clients_use_pass(value):
    assert registry_settings.settings({}, {"armswarm": {"registry": {"host": value}}})["host"]


def test_registry_sans_that_are_names_or_addresses_pass():
    sans = ["DNS:registry", "DNS:*.lan", "IP:192.168.1.10", "IP:fd00::1"]
    conf = registry_settings.settings({}, {"armswarm": {"registry": {"extra_sans": sans}}})
    assert conf["extra_sans"] == sans


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"source": "salt://images\n"}, "armswarm:imagebuild:source: contains"),
        ({"target": ["n1", "n2\n"]}, "armswarm:imagebuild:target: contains"),
        ({"target": ["n1", 2]}, "armswarm:imagebuild:target: must be a string or a list of"),
        ({"build_args": {"V": "1\nRUN x"}}, "armswarm:imagebuild:build_args:V: contains"),
        ({"build_args": {"V": [1]}}, "armswarm:imagebuild:build_args:V must be a string"),
        ({"platforms": [None]}, "armswarm:imagebuild:platforms: must be a list of strings"),
        ({"registry_aliases": [5]}, "armswarm:imagebuild:registry_aliases: must be a list"),
    ],
)
def test_imagebuild_values_are_checked(conf, message):
    with pytest.raises(ArmswarmError, match=message):
        build_settings.settings({}, {"armswarm": {"imagebuild": conf}})


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"managers": ["m1\n"]}, "armswarm:swarm:managers: contains"),
        ({"nodes": {"m1": {"labels": {"zone": "a\nb"}}}}, "armswarm:swarm:nodes:m1:labels:zone"),
        ({"nodes": {"m1": {"advertise_interface": "eth0\n"}}}, "advertise_interface: contains"),
        ({"workers": {"tgt": "G@role:w\n"}}, "armswarm:swarm:workers:tgt: contains"),
    ],
)
def test_swarm_values_with_control_characters_are_refused(conf, message):
    with pytest.raises(ArmswarmError, match=message):
        _swarm({"managers": ["m1"], **conf})


def test_a_quoted_number_with_a_newline_is_not_a_number():
    with pytest.raises(ArmswarmError, match="armswarm:registry:port: must be a whole number"):
        registry_settings.settings({}, {"armswarm": {"registry": {"port": "5000\n"}}})
    assert registry_settings.settings({}, {"armswarm": {"registry": {"port": " 5000 "}}})["port"]


def test_control_characters_helper_skips_whole_files_only():
    conf = {"script": "#!/bin/sh\necho\n", "name": "a\tb", "list": ["ok", "x\x7f"]}
    found = config.control_characters(copy.deepcopy(conf), "p", ("p:script",))
    assert found == [
        "p:name: contains a newline or control character",
        "p:list: contains a newline or control character",
    ]
