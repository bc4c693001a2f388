"""Stack planning: hash labels per service, predictions, and a compose file that survives the
round trip to the docker CLI unchanged."""

import hashlib
import hmac
import json

import pytest
import yaml
from armswarm_core import ArmswarmError
from armswarm_core.swarm import networks, stacks

COMPOSE = """
services:
  web:
    image: reg:5000/web:v1
    environment: {APP_VERSION: "1e3", MODE: "0o17"}
    networks: [front]
    deploy: {replicas: 2, labels: [tier=web]}
  worker:
    image: reg:5000/worker:v1
    deploy:
networks:
  front: {driver: overlay}
"""


def test_each_service_is_labelled_with_its_hash():
    stamped, hashes = stacks.load_and_stamp(COMPOSE)
    assert set(hashes) == {"web", "worker"}
    assert stamped["services"]["web"]["deploy"]["labels"] == {
        "tier": "web",
        stacks.HASH_LABEL: hashes["web"],
    }
    assert stamped["services"]["worker"]["deploy"]["labels"] == {
        stacks.HASH_LABEL: hashes["worker"]
    }
    assert all(h.startswith("h") for h in hashes.values())


def test_hash_follows_the_service_and_its_networks():
    _, before = stacks.load_and_stamp(COMPOSE)
    _, tag = stacks.load_and_stamp(COMPOSE.replace("web:v1", "web:v2"))
    assert tag["web"] != before["web"] and tag["worker"] == before["worker"]
    _, net = stacks.load_and_stamp(
        COMPOSE.replace("{driver: overlay}", "{driver: overlay, attachable: true}")
    )
    assert net["web"] != before["web"] and net["worker"] == before["worker"]


def test_plan_predicts_create_update_remove():
    _, hashes = stacks.load_and_stamp(COMPOSE)
    existing = {"web": {"hash": "h-old"}, "old": {"hash": "x"}}
    assert stacks.plan(hashes, existing, prune=False) == {"create": ["worker"], "update": ["web"]}
    assert stacks.plan(hashes, existing, prune=True)["remove"] == ["old"]
    same = {name: {"hash": h} for name, h in hashes.items()}
    assert stacks.plan(hashes, same, prune=True) == {}


def test_a_paused_update_is_stuck_unless_this_run_rolls_the_service():
    paused = {"State": "paused", "Message": "update paused due to failure"}
    existing = {
        "web": {"hash": "h", "update": paused},
        "db": {"hash": "h", "update": {"State": "rollback_paused"}},
        "api": {"hash": "h", "update": {"State": "rollback_completed", "Message": "rolled"}},
        "old": {"hash": "h"},
    }
    assert stacks.stuck_updates(existing, set()) == {
        "db": "update rollback_paused",
        "web": "update paused (update paused due to failure)",
    }
    # Rolled out again by this run (changed, or force): the engine starts a new update.
    assert stacks.stuck_updates(existing, {"web", "db"}) == {}


def test_written_file_reads_back_identically_as_yaml():
    # What the CLI parses (YAML) must be what was hashed: strings stay strings.
    stamped, _ = stacks.load_and_stamp(COMPOSE)
    assert yaml.safe_load(json.dumps(stamped)) == stamped
    env = yaml.safe_load(json.dumps(stamped))["services"]["web"]["environment"]
    assert env == {"APP_VERSION": "1e3", "MODE": "0o17"}


@pytest.mark.parametrize("text", ["services: []", "not: [valid", "version: '3'"])
def test_bad_compose_is_refused(text):
    with pytest.raises(ArmswarmError):
        stacks.load_and_stamp(text)


def test_cli_host_only_for_another_engine():
    assert stacks._cli_host("unix://var/run/docker.sock") is None
    assert stacks._cli_host("unix://run/other.sock") == "unix:///run/other.sock"
    assert stacks._cli_host("tcp://10.0.0.1:2376") == "tcp://10.0.0.1:2376"


@pytest.mark.parametrize("value", ["sometimes", "", "Never", True, None, ["never"]])
def test_bad_resolve_image_is_refused_naming_the_key(value):
    with pytest.raises(ArmswarmError, match="resolve_image must be one of always, changed, never"):
        stacks.check_resolve_image(value)


@pytest.mark.parametrize("value", ["always", "changed", "never"])
def test_resolve_image_reaches_the_cli(value, tmp_path, monkeypatch):
    # A docker CLI that records its arguments: what the deploy asks the real CLI to do.
    record = tmp_path / "argv"
    cli = tmp_path / "docker"
    cli.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    stamped, _ = stacks.load_and_stamp(COMPOSE)
    stacks.deploy("web", stamped, None, with_registry_auth=False, resolve_image=value)
    argv = record.read_text().split("\n")
    assert argv[argv.index("--resolve-image") + 1] == value


def test_bad_resolve_image_runs_no_cli(tmp_path, monkeypatch):
    record = tmp_path / "argv"
    cli = tmp_path / "docker"
    cli.write_text(f"#!/bin/sh\ntouch {record}\n")
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    stamped, _ = stacks.load_and_stamp(COMPOSE)
    with pytest.raises(ArmswarmError, match="resolve_image"):
        stacks.deploy("web", stamped, None, resolve_image="no")
    assert not record.exists()


# "false" quoted: docker stack deploy's schema takes no boolean in environment (see
# test_a_boolean_in_environment_or_labels_is_refused_naming_the_key).
SITE = """
services:
  web:
    image: reg:5000/web:v1
    env_file: ./site.env
    environment: {COLOR: green, DEBUG: "false"}
    configs: [{source: page, target: /www/index.html}]
    secrets: [token]
    deploy: {replicas: 2}
configs:
  page: {file: ./page.html}
  shared: {external: true}
secrets:
  token: {x-pillar: "armswarm:site:token"}
"""


NAMING_KEY = bytes(range(32))


def bundled(page=b"<h1>one</h1>", token="s3cret", env=b"MODE=blue\n# note\nNAME=a b\n"):
    files = {"./page.html": page, "./site.env": env}
    read = []

    def read_file(path, where):
        read.append((path, where))
        if path not in files:
            raise ArmswarmError(f"{where}: {path} missing")
        return files[path]

    out, written = stacks.bundle(
        "site",
        stacks.load(SITE),
        read_file,
        lambda key, where: {"armswarm:site:token": token}[key],
        lambda: NAMING_KEY,
    )
    return out, written, read


def test_files_named_relative_to_the_compose_file_come_along_named_by_content():
    out, files, read = bundled()
    assert sorted(read) == [
        ("./page.html", "configs:page:file"),
        ("./site.env", "services:web:env_file:0"),
    ]
    page = out["configs"]["page"]
    assert page["name"].startswith("site_page_") and page["file"].startswith("./files/config-")
    assert files[page["file"][2:]] == (b"<h1>one</h1>", 0o644)
    token = out["secrets"]["token"]
    assert "x-pillar" not in token and token["name"].startswith("site_token_")
    assert files[token["file"][2:]] == (b"s3cret", 0o600)
    assert out["configs"]["shared"] == {"external": True}
    # Another content: another name, and the service's hash follows.
    other, _, _ = bundled(page=b"<h1>two</h1>")
    assert other["configs"]["page"]["name"] != page["name"]
    assert stacks.stamp(other)[1]["web"] != stacks.stamp(out)[1]["web"]
    assert bundled(token="new")[0]["secrets"]["token"]["name"] != token["name"]
    # The secret's value is nowhere in the compose file the CLI gets.
    assert "s3cret" not in json.dumps(out)


def test_env_files_read_as_the_cli_reads_them():
    assert stacks.parse_env_file(b'A=1\n  # c\nB="q" x\nBARE\n\nC=\n') == {
        "A": "1",
        "B": '"q" x',
        "C": "",
    }


def test_bad_objects_name_the_key():
    with pytest.raises(ArmswarmError, match="configs:page: needs file"):
        stacks.bundle("s", stacks.load(SITE.replace("{file: ./page.html}", "{}")), None, None)
    with pytest.raises(ArmswarmError, match="secrets:token:x-pillar: must be one pillar key"):
        stacks.bundle(
            "s",
            stacks.load(SITE.replace('"armswarm:site:token"', "[a, b]")),
            lambda p, w: b"x",
            None,
        )


def _live(out, files, **change):
    """The spec the CLI makes of the bundled file (what the lab shows), with changes."""
    fields = stacks.desired_fields("site", out, files)["web"]
    spec = {
        "Name": "site_web",
        "Labels": {stacks.NAMESPACE_LABEL: "site", stacks.HASH_LABEL: "h1"},
        "Mode": {"Replicated": {"Replicas": 2}},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "reg:5000/web:v1@sha256:" + "0" * 64,
                "Env": sorted(f"{k}={v}" for k, v in fields["env"].items()),
                "Configs": [
                    {
                        "ConfigName": out["configs"]["page"]["name"],
                        "File": {"Name": "/www/index.html"},
                    }
                ],
                "Secrets": [
                    {"SecretName": out["secrets"]["token"]["name"], "File": {"Name": "token"}}
                ],
            }
        },
    }
    for key, value in change.items():
        if key == "replicas":
            spec["Mode"]["Replicated"]["Replicas"] = value
        else:
            spec["TaskTemplate"]["ContainerSpec"][key] = value
    return stacks.live_fields(spec)


def test_drift_is_found_in_the_live_spec_and_nothing_else():
    out, written, _ = bundled()
    desired = stacks.desired_fields("site", out, written)
    assert desired["web"]["env"] == {
        "MODE": "blue",
        "NAME": "a b",
        "COLOR": "green",
        "DEBUG": "false",
    }
    assert stacks.drift(desired["web"], _live(out, written)) == []
    assert stacks.drift(desired["web"], _live(out, written, replicas=1)) == ["replicas"]
    assert stacks.drift(desired["web"], _live(out, written, Env=["MODE=red"])) == ["env"]
    assert stacks.drift(desired["web"], _live(out, written, Image="reg:5000/web:v0")) == ["image"]
    hashes = {"web": "h1"}
    existing = {"web": {"hash": "h1", "fields": _live(out, written, replicas=5)}}
    assert stacks.plan(hashes, existing, False, desired) == {
        "update": ["web"],
        "drift": {"web": ["replicas"]},
    }


class _Api:
    """A service's tasks as the engine lists them (pure logic: no daemon)."""

    def __init__(self, template, tasks, update=None, replicas=2):
        self.service = {
            "Spec": {
                "Name": "site_web",
                "TaskTemplate": template,
                "Mode": {"Replicated": {"Replicas": replicas}},
            },
            "UpdateStatus": {"State": update, "Message": "update rolled back"} if update else None,
        }
        self._tasks = tasks

    def services(self, filters=None):
        return [self.service]

    def tasks(self, filters=None):
        return self._tasks


class _Client:
    def __init__(self, *args, **kwargs):
        self.api = _Api(*args, **kwargs)


NEW = {"ContainerSpec": {"Image": "web:v1", "Env": ["COLOR=red"]}, "ForceUpdate": 0}
OLD = {"ContainerSpec": {"Image": "web:v1", "Env": ["COLOR=green"]}, "ForceUpdate": 0}


def _task(spec, state, desired="running", err=None):
    return {"Spec": spec, "DesiredState": desired, "Status": {"State": state, "Err": err}}


def test_an_env_only_change_is_not_converged_while_old_tasks_run():
    tasks = [_task(NEW, "running"), _task(OLD, "running")]
    state = stacks._service_state(_Client(NEW, tasks, update="updating"), "site", "web")
    assert state == "1/2 running the current definition, 1 still on the old one"
    done = [_task(NEW, "running"), _task(NEW, "running"), _task(OLD, "shutdown", "shutdown")]
    assert stacks._service_state(_Client(NEW, done, update="completed"), "site", "web") is None


def test_tasks_that_cannot_be_placed_say_why_and_a_rollback_fails():
    reason = "no suitable node (scheduling constraints not satisfied on 5 nodes)"
    tasks = [_task(OLD, "running"), _task(OLD, "running"), _task(NEW, "pending", err=reason)]
    state = stacks._service_state(_Client(NEW, tasks, update="updating"), "site", "web")
    assert state.endswith(f"waiting: {reason}"), state
    with pytest.raises(ArmswarmError, match="update rollback_completed: update rolled back"):
        stacks._service_state(_Client(NEW, tasks, update="rollback_completed"), "site", "web")


def test_a_rollback_to_the_definition_wanted_is_waited_for_not_failed():
    # The file put right while the engine rolls back to it: the rollback is the rollout.
    rolling = [_task(OLD, "running"), _task(NEW, "running")]
    client = _Client(OLD, rolling, update="rollback_started")
    assert stacks._service_state(client, "site", "web", rollback_ok=True) == "rolling back"
    with pytest.raises(ArmswarmError, match="update rollback_started"):
        stacks._service_state(client, "site", "web")
    # Done, but one task of the failed update still runs: not yet.
    done = _Client(OLD, rolling, update="rollback_completed")
    assert "1 still on the old one" in stacks._service_state(done, "site", "web", rollback_ok=True)
    finished = [_task(OLD, "running"), _task(OLD, "running"), _task(NEW, "shutdown", "shutdown")]
    finished_client = _Client(OLD, finished, update="rollback_completed")
    assert stacks._service_state(finished_client, "site", "web", rollback_ok=True) is None
    # A paused rollback is stuck, wanted definition or not.
    with pytest.raises(ArmswarmError, match="update rollback_paused"):
        stacks._service_state(
            _Client(OLD, rolling, update="rollback_paused"), "site", "web", rollback_ok=True
        )


def test_rollouts_under_way_are_those_this_run_does_not_start():
    existing = {
        "web": {"hash": "h", "update": {"State": "rollback_started"}},
        "db": {"hash": "h", "update": {"State": "updating"}},
        "api": {"hash": "h", "update": {"State": "rollback_completed"}},
        "old": {"hash": "h"},
    }
    assert stacks.rolling_updates(existing, set()) == {
        "db": "updating",
        "web": "rollback_started",
    }
    assert stacks.rolling_updates(existing, {"web"}) == {"db": "updating"}


def test_network_settings_read_back_with_mtu_and_ipv6():
    raw = {
        "Driver": "overlay",
        "EnableIPv6": True,
        "Options": {"com.docker.network.driver.mtu": "1400", "encrypted": ""},
        "IPAM": {"Config": [{"Subnet": "fd00:77::/64"}, {"Subnet": "10.9.0.0/24"}]},
    }
    got = networks.normalise(raw)
    assert (got["mtu"], got["enable_ipv6"], got["subnet6"], got["subnet"]) == (
        1400,
        True,
        "fd00:77::/64",
        "10.9.0.0/24",
    )
    want = networks.desired(mtu=1400, encrypted=True, enable_ipv6=True, subnet6="fd00:77::/64")
    assert networks.diff(got, want) == {}
    with pytest.raises(ArmswarmError, match="mtu: must be a whole number"):
        networks.desired(mtu=True)
    with pytest.raises(ArmswarmError, match="attachable: must be true or false"):
        networks.desired(attachable="false")


def test_a_task_matches_its_template_without_what_the_engine_leaves_out():
    # As docker 28 shows them: the task's copy lacks RestartPolicy, Runtime, StopGracePeriod.
    template = {
        "ContainerSpec": {"Image": "web:v1", "StopGracePeriod": 10**10, "DNSConfig": {}},
        "RestartPolicy": {"Condition": "any"},
        "Runtime": "container",
        "ForceUpdate": 0,
    }
    task_spec = {
        "ContainerSpec": {"Image": "web:v1"},
        "ForceUpdate": 0,
        "Placement": {"Platforms": [{"Architecture": "amd64", "OS": "linux"}]},
    }
    tasks = [_task(task_spec, "running"), _task(task_spec, "running")]
    assert (
        stacks._service_state(_Client(template, tasks, update="completed"), "site", "web") is None
    )
    forced = {**template, "ForceUpdate": 1}
    assert stacks._service_state(_Client(forced, tasks, update="completed"), "site", "web")


# -- object keys and names ---------------------------------------------------------------------
def _bundle_only(text, read=None):
    calls = []

    def read_file(path, where):
        calls.append(path)
        return (read or {}).get(path, b"data")

    return stacks.bundle(
        "site", stacks.load(text), read_file, lambda k, w: "v", lambda: NAMING_KEY
    ), calls


@pytest.mark.parametrize(
    "key, message",
    [
        ("../../x", r"configs:\.\./\.\./x: the key '\.\./\.\./x' must be made of"),
        ("a b", "configs:a b: the key 'a b' must be made of"),
        # site_<key>_<12 hex digits>: a key of 46 makes 64 characters, one of 47 too many.
        ("k" * 47, "would be 65 characters, the engine takes at most 64"),
    ],
)
def test_a_key_that_names_no_swarm_object_is_refused_before_anything_is_read(key, message):
    text = f"services: {{}}\nconfigs:\n  ok: {{file: ./b}}\n  '{key}': {{file: ./a}}\n"
    calls = []
    with pytest.raises(ArmswarmError, match=message):
        stacks.bundle("site", stacks.load(text), lambda p, w: calls.append(p) or b"", None)
    assert calls == []
    (out, _), _ = _bundle_only(f"services: {{}}\nconfigs:\n  '{'k' * 46}': {{file: ./a}}\n")
    assert len(out["configs"]["k" * 46]["name"]) == 64
    # A name of its own (or external): no name is generated from the key, its length is free.
    (out, _), _ = _bundle_only(
        f"services: {{}}\nconfigs:\n  '{'k' * 60}': {{name: short, file: ./a}}\n"
        f"  '{'e' * 60}': {{external: true, name: ext}}\n"
    )
    assert out["configs"]["k" * 60]["name"] == "short"


def test_bundle_file_names_come_from_the_digest_only():
    (out, files), _ = _bundle_only(
        "services: {}\nconfigs:\n  my.page-1: {file: ./a}\nsecrets:\n  tok_en: {x-pillar: k}\n"
    )
    assert all("my.page" not in path and "tok_en" not in path for path in files)
    assert sorted(files) == sorted(
        [
            f"files/config-{stacks._digest(b'data')}",
            f"files/secret-{stacks._keyed_digest(NAMING_KEY, b'v')}",
        ]
    )


def test_an_object_with_its_own_name_is_shipped_and_keeps_the_name():
    text = (
        "services: {}\nconfigs:\n  page: {name: site-page-v1, file: ./a.conf}\n"
        "  ext: {external: true}\nsecrets:\n  tok: {name: my_token, x-pillar: k}\n"
    )
    (out, files), calls = _bundle_only(text, {"./a.conf": b"conf"})
    assert calls == ["./a.conf"]
    page, tok = out["configs"]["page"], out["secrets"]["tok"]
    assert page["name"] == "site-page-v1" and files[page["file"][2:]] == (b"conf", 0o644)
    assert tok == {"name": "my_token", "file": tok["file"]} and files[tok["file"][2:]][0] == b"v"
    assert "x-pillar" not in json.dumps(out)
    assert out["configs"]["ext"] == {"external": True}
    with pytest.raises(ArmswarmError, match=r"configs:page:name: '-bad' is no swarm object name"):
        _bundle_only("services: {}\nconfigs:\n  page: {name: '-bad', file: ./a}\n")


# -- what the CLI makes of the file, and what cannot be told --------------------------------------
def _desired(text, files=None):
    return stacks.desired_fields("site", stacks.load(text), files or {})


def test_short_syntax_targets_are_the_source_name_as_the_cli_gives_them():
    fields = _desired(
        "services:\n  web:\n    image: a\n    configs: [site]\n    secrets: [{source: tok}]\n"
        "configs:\n  site: {name: site_site_1}\nsecrets:\n  tok: {name: site_tok_1}\n"
    )["web"]
    assert fields["configs"] == [("site_site_1", "site")]
    assert fields["secrets"] == [("site_tok_1", "tok")]


def test_external_objects_are_named_by_name_then_external_name_then_key():
    text = (
        "services:\n  web:\n    image: a\n    secrets: [plain, named, old]\n"
        "secrets:\n  plain: {external: true}\n  named: {external: true, name: db_pw}\n"
        "  old: {external: {name: legacy_pw}}\n"
    )
    assert _desired(text)["web"]["secrets"] == [
        ("db_pw", "named"),
        ("legacy_pw", "old"),
        ("plain", "plain"),
    ]
    assert stacks.object_names(stacks.load(text))["secrets"] == ["db_pw", "legacy_pw", "plain"]


@pytest.mark.parametrize(
    "service, field",
    [
        ("environment: {RATIO: 1.0}", "env"),
        ("environment: {A: 'x$HOME'}", "env"),
        ("environment: ['A=$x']", "env"),
        ("environment: ['A=${X:-$$}']", "env"),
        ("env_file: ./e.env", "env"),  # a bare KEY line: the CLI takes it from its environment
        ("deploy: {labels: {a: '${X}'}}", "labels"),
        ("deploy: {labels: {a: 1.5}}", "labels"),
    ],
)
def test_what_the_cli_makes_up_by_itself_is_not_compared(service, field):
    fields = _desired(
        f"services:\n  web:\n    image: a\n    {service}\n",
        {"e.env": (b"A=1\nHOME\n", 0o600)},
    )["web"]
    assert fields[field] is None
    image = _desired("services:\n  web:\n    image: reg/web:${TAG}\n")["web"]["image"]
    assert image is None


def test_a_label_without_value_is_empty_as_the_cli_gives_it():
    fields = _desired("services:\n  web:\n    image: a\n    deploy: {labels: {a: null, b: 2}}\n")
    assert fields["web"]["labels"] == {"a": "", "b": "2"}


@pytest.mark.parametrize(
    "auth, resolve, extra",
    [(True, "changed", ["--with-registry-auth"]), (False, "never", ["--no-resolve-image"])],
)
def test_an_image_changed_by_hand_is_put_back_with_a_service_update(
    tmp_path, monkeypatch, auth, resolve, extra
):
    record = tmp_path / "argv"
    cli = tmp_path / "docker"
    cli.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {record}\n')
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    stacks.set_images(
        "site",
        {"web": "reg:5000/web:v1"},
        None,
        with_registry_auth=auth,
        resolve_image=resolve,
    )
    argv = record.read_text().splitlines()
    assert argv == [
        "service",
        "update",
        "--image",
        "reg:5000/web:v1",
        "--detach",
        "--quiet",
        *extra,
        "site_web",
    ]


# -- pillar secrets named by an HMAC ---------------------------------------------------------------
def test_a_pillar_secret_is_named_by_an_hmac_with_the_swarms_key():
    out, files, _ = bundled(token="s3cret")
    name = out["secrets"]["token"]["name"]
    digest = hmac.new(NAMING_KEY, b"s3cret", hashlib.sha256).hexdigest()[:12]
    assert name == f"site_token_{digest}"
    assert hashlib.sha256(b"s3cret").hexdigest()[:12] not in json.dumps([out, sorted(files)])
    # Configs and file secrets keep a plain content hash; the key is asked for once, and not
    # at all without a pillar secret.
    assert out["configs"]["page"]["name"].endswith(stacks._digest(b"<h1>one</h1>"))
    asked = []
    stacks.bundle(
        "s",
        stacks.load("services: {}\nsecrets:\n  a: {x-pillar: k}\n  b: {x-pillar: k}\n"),
        None,
        lambda k, w: "v",
        lambda: asked.append(1) or NAMING_KEY,
    )
    assert asked == [1]
    stacks.bundle(
        "s",
        stacks.load("services: {}\nconfigs:\n  a: {file: ./a}\n"),
        lambda p, w: b"x",
        None,
        lambda: asked.append(2),
    )
    assert asked == [1]


def test_before_the_key_exists_a_prediction_names_a_new_object():
    out, _ = stacks.bundle(
        "site",
        stacks.load("services: {}\nsecrets:\n  tok: {x-pillar: k}\n"),
        None,
        lambda k, w: "v",
        lambda: None,
    )
    name = out["secrets"]["tok"]["name"]
    assert name == "site_tok_" + stacks.UNKNOWN_DIGEST
    assert not set(stacks.UNKNOWN_DIGEST) <= set("0123456789abcdef")  # no digest's suffix


# -- compose files as the docker CLI reads them ------------------------------------------------
# Checked against docker CLI 28.2.2 (`docker stack config`, which needs no engine) and its
# sources: cli/compose/loader (go-yaml v3, kvfile for env files, interpolate.go's casts),
# cli/compose/schema/data/config_schema_v3.*.json, cli/compose/convert, internal/volumespec.
def test_plain_scalars_resolve_as_go_yaml_v3_not_yaml_1_1():
    # YAML 1.1 (PyYAML) reads 22:22 as 1342 (base 60), 08 and 1e3 as strings, yes/NO as
    # booleans, 0o440 as a string, a lone = as an error; the CLI: "22:22", 8, 1000, "yes",
    # a key "NO", 288, "=". The JSON the CLI gets carries what was read here.
    compose = stacks.load(
        "services:\n  web:\n    image: a\n    ports: [22:22, 8080:80]\n"
        "    environment: {ZIP: 08, R: 1e3, Y: yes, NO: 1, EQ: =, T: 1:30, O: 0o17, H: 0x1F}\n"
        "    secrets: [{source: s, mode: 0o440}, {source: t, mode: 0440}]\n"
        "    x-when: 2024-01-01\n"
    )
    web = compose["services"]["web"]
    assert web["ports"] == ["22:22", "8080:80"]
    assert web["environment"] == {
        "ZIP": 8.0,
        "R": 1000.0,
        "Y": "yes",
        "NO": 1,
        "EQ": "=",
        "T": "1:30",
        "O": 15,
        "H": 31,
    }
    assert [s["mode"] for s in web["secrets"]] == [0o440, 0o440]
    assert web["x-when"] == "2024-01-01"  # a timestamp: kept as written
    assert yaml.safe_load(json.dumps(compose)) == compose
    # What the CLI prints of them: not told here (floats), the rest exactly.
    env = stacks.desired_fields("s", compose, {})["web"]["env"]
    assert env is None
    fields = _desired("services:\n  web:\n    image: a\n    environment: {Y: yes, O: 0o17}\n")
    assert fields["web"]["env"] == {"Y": "yes", "O": "15"}


def test_anchors_merge_keys_and_extension_fields_are_read_and_a_key_twice_is_refused():
    # x- fields with anchors and <<: merge keys (compose specification, "Fragments" and
    # "Extension"); go-yaml v3 refuses a key given twice in one mapping, as the CLI does.
    text = (
        "x-defaults: &defaults\n  image: reg/web:v1\n  environment: {A: '1'}\n"
        "services:\n  web:\n    <<: *defaults\n    image: reg/web:v2\n"
        "  api: {<<: [*defaults]}\n"
    )
    compose = stacks.load(text)
    assert compose["services"]["web"] == {"image": "reg/web:v2", "environment": {"A": "1"}}
    assert compose["services"]["api"]["image"] == "reg/web:v1"
    with pytest.raises(ArmswarmError, match="mapping key 'image' already defined at line 3"):
        stacks.load("services:\n  web:\n    image: a\n    image: b\n")
    with pytest.raises(ArmswarmError, match="services:web:environment: the key 1 is no string"):
        stacks.load("services:\n  web:\n    image: a\n    environment: {1: x}\n")
    with pytest.raises(ArmswarmError, match="services:web:x-r: inf is no number"):
        stacks.load("services:\n  web:\n    image: a\n    x-r: .inf\n")


def _bundle_text(text, files=None, stack="site"):
    files = files or {}
    return stacks.bundle(
        stack,
        stacks.load(text),
        lambda path, where: files[path],
        lambda key, where: "v",
        lambda: NAMING_KEY,
    )


@pytest.mark.parametrize(
    "service, message",
    [
        ("environment: {DEBUG: false}", "services:web:environment:DEBUG: false is a boolean"),
        ("labels: {traefik.enable: true}", "services:web:labels:traefik.enable: true is a"),
        ("deploy: {labels: {a: TRUE}}", "services:web:deploy:labels:a: true is a boolean"),
        ("environment: [A=1, 2]", "services:web:environment:1: must be a string"),
    ],
)
def test_a_boolean_in_environment_or_labels_is_refused_naming_the_key(service, message):
    # config_schema_v3.x.json, list_or_dict: "string", "number" or "null" (the CLI: "must be
    # a string, number or null"); yes/on are strings to the CLI and stay so.
    with pytest.raises(ArmswarmError, match=message):
        _bundle_text(f"services:\n  web:\n    image: a\n    {service}\n")
    out, _ = _bundle_text("services:\n  web:\n    image: a\n    labels: {x: yes}\n")
    assert out["services"]["web"]["labels"] == {"x": "yes"}


def test_a_service_without_image_is_refused():
    # docker stack deploy ignores build: ("Ignoring unsupported options: build").
    with pytest.raises(ArmswarmError, match="services:web: needs an image .*build is ignored"):
        _bundle_text("services:\n  web:\n    build: .\n")


def test_an_old_version_is_raised_to_the_first_that_takes_object_names():
    # stefanprodan/swarmprom: version "3.3" with configs from files. The CLI's 3.3 schema
    # refuses the name given here ("configs.x Additional property name is not allowed").
    text = (
        "version: '{v}'\nservices:\n  web: {{image: a, configs: [c]}}\n"
        "configs:\n  c: {{file: ./c}}\n"
    )
    for given, written in [("3.3", "3.5"), ("3.1", "3.5"), ("3.8", "3.8"), ("3", "3")]:
        out, _ = _bundle_text(text.format(v=given), {"./c": b"x"})
        assert out["version"] == written
    out, _ = _bundle_text("services:\n  web: {image: a}\n")
    assert "version" not in out


ENV_FILE = "services:\n  web:\n    image: a\n    env_file: {env_file}\n"


@pytest.mark.parametrize(
    "data, env",
    [
        # Windows editors: a BOM and CRLF (the CLI drops both).
        (b"\xef\xbb\xbfA=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
        # Quotes, # and $ are the value's (kvfile: "no interpolation, substitution or
        # escaping"); trailing blanks stay; leading ones go.
        (
            b'A="x y" # no comment\n  B=${HOME}\nC=x \n',
            {"A": '"x y" # no comment', "B": "${HOME}", "C": "x "},
        ),
        # Only \n ends a line (Python's splitlines also splits at \f, \x1c, \u2028).
        (b"A=x\x0cy\nB=1\xe2\x80\xa82\n", {"A": "x\x0cy", "B": "1\u20282"}),
        (b"A=1\nA=2\n", {"A": "2"}),
    ],
)
def test_env_files_read_by_the_clis_rules(data, env):
    out, files = _bundle_text(ENV_FILE.format(env_file="./e.env"), {"./e.env": data})
    assert stacks.desired_fields("site", out, files)["web"]["env"] == env


@pytest.mark.parametrize(
    "data, message",
    [
        (b"export A=1\n", "line 1: the variable 'export A' contains blanks"),
        (b"A=1\nB = 2\n", "line 2: the variable 'B ' contains blanks"),
        (b"=x\n", "line 1 has no variable name"),
        (b"A=\xff\n", "line 1 is no valid UTF-8"),
        # compose-go's multi-line quoted value (a PEM key): the CLI reads line by line.
        (b'KEY="-----BEGIN KEY-----\nMIIB\n-----END KEY-----"\n', "line 1: the value of KEY opens"),
        # A line without =: its text is no name, and may be a value's: not shown.
        (b"pass word hunter2\n", "line 1: a line without = that contains blanks"),
    ],
)
def test_an_env_file_the_cli_refuses_is_refused_naming_service_and_file(data, message):
    with pytest.raises(ArmswarmError, match=rf"services:web:env_file:0: \./e\.env: {message}"):
        _bundle_text(ENV_FILE.format(env_file="./e.env"), {"./e.env": data})


def test_an_env_file_error_shows_no_value():
    with pytest.raises(ArmswarmError) as err:
        _bundle_text(ENV_FILE.format(env_file="./e.env"), {"./e.env": b"A=1\nmy hunter2\n"})
    assert "hunter2" not in str(err.value)
    with pytest.raises(ArmswarmError) as err:
        _bundle_text("services:\n  web:\n    image: a\n    environment: {A: [hunter2]}\n")
    assert "hunter2" not in str(err.value)


def test_the_long_env_file_syntax_is_refused():
    # docker compose's "- path: …, required: false"; the CLI: "env_file.0 must be a string".
    with pytest.raises(ArmswarmError, match="services:web:env_file:0: docker stack deploy takes"):
        _bundle_text(ENV_FILE.format(env_file="[{path: ./e.env, required: false}]"))
    with pytest.raises(ArmswarmError, match="a path with a variable"):
        _bundle_text(ENV_FILE.format(env_file="./${STAGE}.env"))


def test_an_empty_value_the_clis_environment_fills_is_not_compared(monkeypatch):
    # updateEnvironment: an empty value takes the CLI's own variable when it has one.
    monkeypatch.setenv("ARMSWARM_TEST_FILLED", "from-minion")
    monkeypatch.delenv("ARMSWARM_TEST_EMPTY", raising=False)
    text = "services:\n  web:\n    image: a\n    environment: [ARMSWARM_TEST_{}=]\n"
    assert _desired(text.format("FILLED"))["web"]["env"] is None
    assert _desired(text.format("EMPTY"))["web"]["env"] == {"ARMSWARM_TEST_EMPTY": ""}


def test_dollar_dollar_is_a_dollar_and_compared():
    # The CLI's interpolation: $$ is a literal $ (template.go).
    fields = _desired(
        "services:\n  web:\n    image: a\n    environment: ['A=x$$y']\n"
        "    deploy: {labels: {l: 'a$$b'}}\n"
    )["web"]
    assert fields["env"] == {"A": "x$y"} and fields["labels"] == {"l": "a$b"}


@pytest.mark.parametrize(
    "deploy, replicas",
    [
        ("{replicas: '${WEB_REPLICAS:-2}'}", None),  # cast by the CLI after interpolation
        ("{replicas: '3'}", 3),  # interpolate.go: deploy.replicas cast with strconv.Atoi
        ("{}", 1),
        ("{mode: global}", "global"),
        ("{mode: '${MODE}'}", None),
    ],
)
def test_replicas_as_the_cli_casts_them(deploy, replicas):
    assert (
        _desired(f"services:\n  web:\n    image: a\n    deploy: {deploy}\n")["web"]["replicas"]
        == replicas
    )


@pytest.mark.parametrize(
    "volumes, mounts",
    [
        # stefanprodan/swarmprom: absolute binds with options, named volumes
        (
            "['/var/run/docker.sock:/var/run/docker.sock:ro', 'grafana:/var/lib/grafana']",
            ["/var/lib/grafana", "/var/run/docker.sock"],
        ),
        ("['/cache']", ["/cache"]),  # anonymous volume
        ("['C:\\data:/data']", ["/data"]),  # volumespec: a Windows drive's colon
        (
            "[{type: bind, source: /srv, target: /srv}, {type: tmpfs, target: /tmp}]",
            ["/srv", "/tmp"],
        ),
        # ${VAR:-default} holds a colon: a split at every colon read "-./data}" as the target
        ("['${DATA_DIR:-/srv/data}:/var/lib/data']", None),
    ],
)
def test_mount_targets_as_the_cli_splits_volumes(volumes, mounts):
    text = f"services:\n  web:\n    image: a\n    volumes: {volumes}\n"
    assert _desired(text)["web"]["mounts"] == mounts


@pytest.mark.parametrize(
    "volume", ["./data:/data", "'../shared:/shared:ro'", "{type: bind, source: ./d, target: /d}"]
)
def test_a_relative_bind_mount_is_refused(volume):
    # The CLI makes it absolute against the compose file's directory: a temporary one here.
    with pytest.raises(ArmswarmError, match="services:web:volumes:0: the bind mount source"):
        _bundle_text(f"services:\n  web:\n    image: a\n    volumes: [{volume}]\n")


def test_a_pinned_digest_changed_by_hand_is_drift_a_resolved_one_is_not():
    def spec(image):
        return {
            "TaskTemplate": {"ContainerSpec": {"Image": image}},
            "Mode": {"Replicated": {"Replicas": 1}},
        }

    pinned = "nginx@sha256:" + "a" * 64
    want = _desired(f"services:\n  web:\n    image: {pinned}\n")["web"]
    assert stacks.drift(want, stacks.live_fields(spec(pinned))) == []
    other = stacks.live_fields(spec("nginx@sha256:" + "b" * 64))
    assert stacks.drift(want, other) == ["image"]
    # A tag: the digest the engine resolved it to (resolve_image) is no drift.
    tag = _desired("services:\n  web:\n    image: docker.io/library/nginx\n")["web"]
    resolved = stacks.live_fields(spec("nginx:latest@sha256:" + "c" * 64))
    assert stacks.drift(tag, resolved) == []


def test_container_labels_changed_by_hand_are_drift():
    # Service labels: (container labels, ContainerSpec.Labels, with the stack's namespace
    # label the CLI adds) as opposed to deploy.labels (the service's).
    want = _desired("services:\n  web:\n    image: a\n    labels: [tier=web, bare]\n")["web"]
    assert want["container_labels"] == {"tier": "web", "bare": ""}
    spec = {
        "Labels": {stacks.NAMESPACE_LABEL: "site"},
        "Mode": {"Replicated": {"Replicas": 1}},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "a",
                "Labels": {stacks.NAMESPACE_LABEL: "site", "tier": "web", "bare": ""},
            }
        },
    }
    assert stacks.drift(want, stacks.live_fields(spec)) == []
    spec["TaskTemplate"]["ContainerSpec"]["Labels"]["tier"] = "db"
    assert stacks.drift(want, stacks.live_fields(spec)) == ["container_labels"]


def test_external_as_the_cli_casts_it_and_a_name_from_its_environment():
    # interpolate.go casts secrets.*.external with toBoolean ("yes", "false"…); the compose
    # specification's external config named "${HTTP_CONFIG_KEY}".
    text = (
        "services:\n  web:\n    image: a\n    secrets: [ext, own]\n    configs: [http]\n"
        "secrets:\n  ext: {external: 'yes'}\n  own: {external: 'false', file: ./own}\n"
        "configs:\n  http: {external: true, name: '${HTTP_CONFIG_KEY}'}\n"
    )
    out, files = _bundle_text(text, {"./own": b"o"})
    assert out["secrets"]["ext"] == {"external": "yes"}
    assert out["secrets"]["own"]["name"].startswith("site_own_")
    fields = stacks.desired_fields("site", out, files)["web"]
    assert fields["secrets"] == [("ext", "ext"), (out["secrets"]["own"]["name"], "own")]
    assert fields["configs"] is None  # named from the CLI's environment
    with pytest.raises(ArmswarmError, match="secrets:ext:external: must be true or false"):
        _bundle_text(text.replace("'yes'", "'${EXT}'"), {"./own": b"o"})
