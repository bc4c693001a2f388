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


SITE = """
services:
  web:
    image: reg:5000/web:v1
    env_file: ./site.env
    environment: {COLOR: green, DEBUG: false}
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
        ("environment: ['A=$$x']", "env"),
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
