"""``docker_swarm.stack_deployed`` and ``stack_absent`` against a stand-in engine: the state
module itself (Salt's dunders set by hand), the swarm a small in-memory one, and ``docker stack
deploy`` an emulation of what the CLI makes of the compose file (the lab runs the real one).
What is checked: arguments refused before anything runs, predictions equal to what a run does,
and a second run that reports nothing."""

import base64
import copy
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from armswarm_core.common import docker_client
from armswarm_core.swarm import stacks
from test_armnode_render import _arg, show_sls

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]
NS = stacks.NAMESPACE_LABEL
IMAGE_LABEL = "com.docker.stack.image"


class APIError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.explanation = message


class FakeApi:
    """Services, configs, secrets and networks of a swarm, as the engine's API lists them."""

    def __init__(self):
        self._services: dict = {}
        self._configs: dict = {}
        self._secrets: dict = {}
        self._networks: dict = {}
        self.calls: list = []
        self._next = 0

    def _id(self):
        self._next += 1
        return f"id{self._next:04d}"

    @staticmethod
    def _match(obj_labels, name, filters):
        for key, want in (filters or {}).items():
            if key == "label":
                k, _, v = want.partition("=")
                if obj_labels.get(k) != v:
                    return False
            elif key == "name" and not name.startswith(want):
                return False
        return True

    def services(self, filters=None):
        return [
            copy.deepcopy(s)
            for s in self._services.values()
            if self._match(s["Spec"].get("Labels") or {}, s["Spec"]["Name"], filters)
        ]

    def tasks(self, filters=None):
        return []

    def nodes(self):
        return []

    def _objects(self, store, filters):
        return [
            copy.deepcopy(o)
            for o in store.values()
            if self._match(o["Spec"].get("Labels") or {}, o["Spec"]["Name"], filters)
        ]

    def configs(self, filters=None):
        return self._objects(self._configs, filters)

    def secrets(self, filters=None):
        return self._objects(self._secrets, filters)

    def networks(self, filters=None):
        return [
            copy.deepcopy(n)
            for n in self._networks.values()
            if self._match(n.get("Labels") or {}, n["Name"], filters)
        ]

    def inspect_config(self, config_id):
        for c in self._configs.values():
            if config_id in (c["ID"], c["Spec"]["Name"]):
                return copy.deepcopy(c)
        raise APIError(f"config {config_id} not found")

    def create_config(self, name, data, labels=None):
        self.calls.append(("create_config", name))
        if any(c["Spec"]["Name"] == name for c in self._configs.values()):
            raise APIError(f"config {name} already exists")
        self.add_object("configs", name, data, labels or {})
        return {"ID": self._configs[name]["ID"]}

    def _users(self, kind, obj):
        key = "ConfigID" if kind == "configs" else "SecretID"
        field = "Configs" if kind == "configs" else "Secrets"
        return [
            s["Spec"]["Name"]
            for s in self._services.values()
            if any(
                r.get(key) == obj["ID"]
                for r in s["Spec"]["TaskTemplate"]["ContainerSpec"].get(field) or []
            )
        ]

    def _remove(self, kind, object_id):
        store = self._configs if kind == "configs" else self._secrets
        self.calls.append((f"remove_{kind[:-1]}", object_id))
        for name, obj in list(store.items()):
            if obj["ID"] == object_id:
                if self._users(kind, obj):
                    raise APIError(f"{kind[:-1]} {name} is in use by {self._users(kind, obj)}")
                del store[name]
                return
        raise APIError(f"no such {kind[:-1]} {object_id}")

    def remove_config(self, object_id):
        self._remove("configs", object_id)

    def remove_secret(self, object_id):
        self._remove("secrets", object_id)

    def remove_service(self, service_id):
        self.calls.append(("remove_service", service_id))
        for name, s in list(self._services.items()):
            if s["ID"] == service_id:
                del self._services[name]

    def remove_network(self, network_id):
        self.calls.append(("remove_network", network_id))
        for name, n in list(self._networks.items()):
            if n["Id"] == network_id:
                if any(
                    t.get("Target") in (n["Id"], n["Name"])
                    for s in self._services.values()
                    for t in s["Spec"]["TaskTemplate"].get("Networks") or []
                ):
                    raise APIError(f"network {name} is in use")
                del self._networks[name]

    # -- set up by the tests ----------------------------------------------------------------
    def add_object(self, kind, name, data=b"x", labels=None):
        store = self._configs if kind == "configs" else self._secrets
        store[name] = {
            "ID": self._id(),
            "Spec": {
                "Name": name,
                "Labels": dict(labels or {}),
                "Data": base64.b64encode(data).decode(),
            },
        }
        return store[name]["ID"]

    def add_network(self, name, labels=None):
        self._networks[name] = {"Id": self._id(), "Name": name, "Labels": dict(labels or {})}

    def object_id(self, kind, name):
        store = self._configs if kind == "configs" else self._secrets
        return store[name]["ID"]

    def put_service(self, spec, previous=None):
        name = spec["Name"]
        old = self._services.get(name)
        entry = {"ID": old["ID"] if old else self._id(), "Spec": spec}
        if previous is not None:
            entry["PreviousSpec"] = previous
        self._services[name] = entry

    def object_names(self, kind):
        return sorted(self._configs if kind == "configs" else self._secrets)


class FakeClient:
    def __init__(self):
        self.api = FakeApi()


def _env_file(data: bytes) -> list:
    out = []
    # As the CLI reads it: a BOM first and a CR before each newline dropped.
    for raw in data.decode("utf-8-sig").split("\n"):
        line = raw.removesuffix("\r").lstrip()
        if line and not line.startswith("#") and "=" in line:
            out.append(line)
    return out


def cli_deploy(client, stack, compose, prune, files):
    """What ``docker stack deploy`` does with a bundled, stamped compose file: creates the
    configs and secrets that are missing, creates or updates every service of the file
    (an update keeps the old spec as ``PreviousSpec``; an image equal to the
    ``com.docker.stack.image`` label keeps the live image) and with ``prune`` removes the
    stack's other services."""
    api = client.api
    names = {}
    for kind in ("configs", "secrets"):
        names[kind] = {}
        for key, obj in (compose.get(kind) or {}).items():
            if obj.get("external"):
                ext = obj["external"]
                names[kind][key] = (
                    obj.get("name") or (ext.get("name") if isinstance(ext, dict) else None) or key
                )
                continue
            name = obj.get("name") or f"{stack}_{key}"
            names[kind][key] = name
            store = api._configs if kind == "configs" else api._secrets
            if name not in store:
                data = files[obj["file"][2:]][0]
                api.add_object(kind, name, data, {NS: stack})
    wanted = set()
    for svc, definition in compose["services"].items():
        full = f"{stack}_{svc}"
        wanted.add(full)
        deploy = definition.get("deploy") or {}
        env = []
        for path in definition.get("env_file") or []:
            env += _env_file(files[path[2:]][0])
        given = definition.get("environment") or {}
        if isinstance(given, list):
            given = dict(item.split("=", 1) for item in given)
        for key, value in given.items():
            env.append(f"{key}={'' if value is None else value}")
        labels = {k: "" if v is None else str(v) for k, v in (deploy.get("labels") or {}).items()}
        container_labels = definition.get("labels") or {}
        if isinstance(container_labels, list):
            container_labels = dict(item.split("=", 1) for item in container_labels)
        container_labels[NS] = stack
        mounts = [
            {"Target": v.split(":")[1] if isinstance(v, str) else v["target"]}
            for v in definition.get("volumes") or []
        ]
        labels.update({NS: stack, IMAGE_LABEL: definition["image"]})
        refs = {}
        for kind, id_key, name_key in (
            ("configs", "ConfigID", "ConfigName"),
            ("secrets", "SecretID", "SecretName"),
        ):
            refs[kind] = []
            for item in definition.get(kind) or []:
                source = item if isinstance(item, str) else item["source"]
                target = (None if isinstance(item, str) else item.get("target")) or source
                name = names[kind][source]
                refs[kind].append(
                    {id_key: api.object_id(kind, name), name_key: name, "File": {"Name": target}}
                )
        old = api._services.get(full)
        image = definition["image"]
        if old and old["Spec"]["Labels"].get(IMAGE_LABEL) == image:
            image = old["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        spec = {
            "Name": full,
            "Labels": labels,
            "Mode": {"Replicated": {"Replicas": deploy.get("replicas", 1)}},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": image,
                    "Env": env,
                    "Labels": container_labels,
                    "Mounts": mounts,
                    "Configs": refs["configs"],
                    "Secrets": refs["secrets"],
                }
            },
        }
        api.put_service(spec, previous=copy.deepcopy(old["Spec"]) if old else None)
    if prune:
        for full, s in list(api._services.items()):
            if s["Spec"]["Labels"].get(NS) == stack and full not in wanted:
                del api._services[full]


@pytest.fixture
def swarm(monkeypatch, tmp_path):
    """``(run, client, deploys)``: ``run(state, test=False, pillar=None, **kwargs)`` runs a
    state function of ``_states/docker_swarm.py`` against the stand-in swarm ``client``;
    ``deploys`` records each ``docker stack deploy`` and ``service update`` the state asks
    for."""
    errors = pytest.importorskip("docker.errors")
    monkeypatch.setattr(errors, "APIError", APIError)
    spec = importlib.util.spec_from_file_location(
        "docker_swarm_state", REPO / "_states/docker_swarm.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    client = FakeClient()
    deploys: list = []
    monkeypatch.setattr(docker_client, "connect", lambda *a, **k: client)
    monkeypatch.setattr(docker_client, "engine_settings", lambda *a, **k: {"base_url": None})

    def deploy(stack, compose, base_url, prune=False, files=None, **kwargs):
        deploys.append(("deploy", stack, prune, kwargs, copy.deepcopy(compose)))
        cli_deploy(client, stack, compose, prune, files or {})

    monkeypatch.setattr(stacks, "deploy", deploy)

    def set_images(stack, images, base_url, **kwargs):
        deploys.append(("set_images", stack, images, kwargs))
        for svc, image in images.items():
            old = client.api._services[f"{stack}_{svc}"]["Spec"]
            new = copy.deepcopy(old)
            new["TaskTemplate"]["ContainerSpec"]["Image"] = image
            client.api.put_service(new, previous=copy.deepcopy(old))

    monkeypatch.setattr(stacks, "set_images", set_images, raising=False)
    monkeypatch.setattr(stacks, "wait_converged", lambda *a, **k: {})

    def run(state, test=False, pillar=None, **kwargs):
        mod.__opts__ = {"test": test, "id": "node1"}
        mod.__pillar__ = pillar or {}
        mod.__salt__ = {}
        return getattr(mod, state)(**kwargs)

    run.module = mod
    return run, client, deploys


def compose_file(tmp_path, text, **files):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    path = tmp_path / "stack.yml"
    path.write_text(text)
    return str(path)


SIMPLE = """
services:
  web:
    image: reg/web:v1
    deploy: {replicas: 2}
"""


# -- 1: strictly typed arguments -------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value",
    [
        ("prune", "false"),
        ("prune", 0),
        ("wait", "no"),
        ("with_registry_auth", "true"),
        ("force", "false"),
    ],
)
def test_a_boolean_that_is_no_boolean_is_refused_before_anything_runs(swarm, tmp_path, key, value):
    run, client, deploys = swarm
    path = compose_file(tmp_path, SIMPLE)
    ret = run("stack_deployed", name="site", compose=path, **{key: value})
    assert ret["result"] is False and ret["comment"].startswith(f"{key}: must be true or false")
    assert deploys == [] and client.api.calls == [] and client.api.services() == []


@pytest.mark.parametrize("value", ["300", True, 0, -5, None, [300]])
@pytest.mark.parametrize("state", ["stack_deployed", "stack_absent"])
def test_a_timeout_that_is_no_positive_number_is_refused(swarm, tmp_path, value, state):
    run, client, deploys = swarm
    kwargs = {"compose": compose_file(tmp_path, SIMPLE)} if state == "stack_deployed" else {}
    ret = run(state, name="site", timeout=value, **kwargs)
    assert ret["result"] is False, ret
    assert ret["comment"].startswith("timeout: must be a positive number of seconds"), ret
    assert deploys == [] and client.api.calls == []


# -- 3: the compose file is read once ----------------------------------------------------------
def test_the_compose_file_is_read_once(swarm, tmp_path, monkeypatch):
    run, client, deploys = swarm
    path = compose_file(tmp_path, SIMPLE)
    reads = []
    original = run.module._compose_text
    monkeypatch.setattr(run.module, "_compose_text", lambda *a: reads.append(a) or original(*a))
    ret = run("stack_deployed", name="site", compose=path)
    assert ret["result"] is True and ret["changes"] == {"create": ["web"]}, ret
    assert len(reads) == 1
    assert run("stack_deployed", name="site", compose=path)["changes"] == {}


# -- 4, 5: configs and secrets of earlier versions ----------------------------------------------
PAGE = """
services:
  web:
    image: reg/web:v1
    configs: [{source: page, target: /www/index.html}]
configs:
  page: {file: ./page.html}
"""


def _cycle(run, path, expected, **kwargs):
    """Predict, apply (the same changes), then nothing left to do."""
    predicted = run("stack_deployed", test=True, name="site", compose=path, **kwargs)
    assert predicted["result"] is None and predicted["changes"] == expected, predicted
    applied = run("stack_deployed", name="site", compose=path, **kwargs)
    assert applied["result"] is True and applied["changes"] == expected, applied
    again = run("stack_deployed", name="site", compose=path, **kwargs)
    assert again["result"] is True and again["changes"] == {}, again
    return applied


def _page(tmp_path, content):
    (tmp_path / "page.html").write_text(content)
    return compose_file(tmp_path, PAGE)


def test_the_previous_definitions_objects_stay_for_a_rollback(swarm, tmp_path):
    run, client, _ = swarm
    _cycle(run, _page(tmp_path, "one"), {"create": ["web"]})
    (first,) = client.api.object_names("configs")
    _cycle(run, _page(tmp_path, "two"), {"update": ["web"]})
    # The service's previous definition (a rollback's) still names the first page.
    assert first in client.api.object_names("configs")
    assert len(client.api.object_names("configs")) == 2
    _cycle(
        run, _page(tmp_path, "three"), {"update": ["web"], "remove_objects": {"configs": [first]}}
    )
    assert len(client.api.object_names("configs")) == 2


def test_without_wait_what_the_rollout_frees_is_left_for_a_later_run(swarm, tmp_path):
    run, client, _ = swarm
    run("stack_deployed", name="site", compose=_page(tmp_path, "one"))
    (first,) = client.api.object_names("configs")
    run("stack_deployed", name="site", compose=_page(tmp_path, "two"))
    path = _page(tmp_path, "three")
    predicted = run("stack_deployed", test=True, name="site", compose=path, wait=False)
    assert predicted["changes"] == {"update": ["web"]}, predicted
    assert (
        f"Left for a later run (the rollout may still need them, wait is false): configs {first}"
        in predicted["comment"]
    )
    applied = run("stack_deployed", name="site", compose=path, wait=False)
    assert applied["changes"] == {"update": ["web"]} and first in applied["comment"], applied
    assert first in client.api.object_names("configs")
    # A later run: no service uses it any more, not even to roll back.
    _cycle(run, path, {"remove_objects": {"configs": [first]}}, wait=False)
    assert first not in client.api.object_names("configs")


TWO = """
services:
  web:
    image: reg/web:v1
  old:
    image: reg/old:v1
    configs: [conf]
    secrets: [tok]
configs:
  conf: {file: ./conf}
secrets:
  tok: {file: ./tok}
"""


def test_objects_of_services_removed_by_prune_go_in_the_same_run(swarm, tmp_path):
    run, client, _ = swarm
    path = compose_file(tmp_path, TWO, conf="c", tok="t")
    _cycle(run, path, {"create": ["old", "web"]}, prune=True)
    conf, tok = client.api.object_names("configs")[0], client.api.object_names("secrets")[0]
    path = compose_file(tmp_path, "services:\n  web:\n    image: reg/web:v1\n")
    _cycle(
        run,
        path,
        {"remove": ["old"], "remove_objects": {"configs": [conf], "secrets": [tok]}},
        prune=True,
    )
    assert client.api.object_names("configs") == client.api.object_names("secrets") == []


# -- 6: drift that never clears ------------------------------------------------------------------
DRIFTLESS = """
services:
  web:
    image: reg/web:${TAG:-v1}
    environment: {RATIO: 1.0, PLAIN: "x"}
    env_file: ./web.env
    configs: [page]
    secrets: [db, legacy, named]
    deploy:
      labels: {empty: null, home: "$HOME"}
configs:
  page: {file: ./page.html}
secrets:
  db: {external: true}
  legacy: {external: {name: legacy_pw}}
  named: {external: true, name: named_pw}
"""


def test_a_file_the_cli_reads_its_own_way_is_up_to_date_after_one_run(swarm, tmp_path):
    run, client, _ = swarm
    for name in ("db", "legacy_pw", "named_pw"):
        client.api.add_object("secrets", name)
    path = compose_file(tmp_path, DRIFTLESS, **{"web.env": "A=1\nBARE\n", "page.html": "p"})
    _cycle(run, path, {"create": ["web"]})


# A stack as real ones are written (stefanprodan/swarmprom: version "3.3", configs from files,
# absolute binds; dockersamples/example-voting-app: unquoted "8080:80" ports): the CLI's 3.3
# schema takes no config name, YAML 1.1 reads 22:22 as 1342; an env file saved on Windows.
REAL = """
version: "3.3"
x-env: &env
  - TZ=UTC
services:
  web:
    image: reg/web:v1
    ports: [22:22, 8080:80]
    environment: *env
    env_file: ./web.env
    labels: [tier=web]
    configs: [{source: caddy, target: /etc/caddy/Caddyfile, mode: 0o440}]
    volumes: [/var/run/docker.sock:/var/run/docker.sock:ro, data:/data]
    deploy:
      replicas: "${WEB_REPLICAS:-2}"
      labels: {zip: "08", mode: on}
configs:
  caddy: {file: ./Caddyfile}
volumes:
  data: {}
"""


def test_a_real_world_stack_is_written_as_the_cli_reads_it_and_settles(swarm, tmp_path):
    run, client, deploys = swarm
    path = compose_file(
        tmp_path, REAL, **{"web.env": b'\xef\xbb\xbfA=1\r\nB="q"\r\n', "Caddyfile": "c"}
    )
    _cycle(run, path, {"create": ["web"]})
    written = deploys[0][4]
    assert written["version"] == "3.5"
    web = written["services"]["web"]
    assert web["ports"] == ["22:22", "8080:80"] and web["configs"][0]["mode"] == 0o440
    assert web["deploy"]["labels"]["mode"] == "on"
    env = client.api._services["site_web"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert sorted(env) == ["A=1", 'B="q"', "TZ=UTC"]


def test_what_the_cli_would_refuse_is_refused_before_anything_runs(swarm, tmp_path):
    run, client, deploys = swarm
    path = compose_file(tmp_path, SIMPLE.replace("deploy:", "env_file: ./e.env\n    deploy:"))
    (tmp_path / "e.env").write_text("export A=1\n")
    for test in (True, False):
        ret = run("stack_deployed", test=test, name="site", compose=path)
        assert ret["result"] is False, ret
        assert "services:web:env_file:0: ./e.env: line 1: the variable 'export A'" in ret["comment"]
    assert deploys == [] and client.api.services() == []


# -- 9: stack_absent checks first ------------------------------------------------------------
def _shared(client):
    api = client.api
    api.add_network("site_default", {NS: "site"})
    conf = api.add_object("configs", "site_conf_1", b"c", {NS: "site"})
    net = api._networks["site_default"]["Id"]

    def spec(name, stack, configs=()):
        return {
            "Name": name,
            "Labels": {NS: stack},
            "Mode": {"Replicated": {"Replicas": 1}},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "a", "Configs": list(configs)},
                "Networks": [{"Target": net}],
            },
        }

    api.put_service(spec("site_web", "site"))
    api.put_service(spec("other_web", "other", [{"ConfigID": conf, "ConfigName": "site_conf_1"}]))


@pytest.mark.parametrize("test", [True, False])
def test_a_stack_others_use_is_refused_before_anything_is_removed(swarm, test):
    run, client, _ = swarm
    _shared(client)
    ret = run("stack_absent", test=test, name="site")
    assert ret["result"] is False and ret["changes"] == {}, ret
    assert "network site_default by other_web; config site_conf_1 by other_web" in ret["comment"]
    assert client.api.calls == []
    assert [s["Spec"]["Name"] for s in client.api.services()] == ["site_web", "other_web"]


def test_a_stack_of_its_own_is_removed_whole(swarm):
    run, client, _ = swarm
    _shared(client)
    client.api.remove_service(client.api._services["other_web"]["ID"])
    client.api.calls.clear()
    ret = run("stack_absent", name="site")
    assert ret["result"] is True, ret
    assert ret["changes"] == {
        "removed": {
            "services": ["site_web"],
            "networks": ["site_default"],
            "configs": ["site_conf_1"],
        }
    }
    assert client.api.services() == [] and client.api.object_names("configs") == []


# -- 8: an image changed by hand is really put back ------------------------------------------------
def test_an_image_changed_by_hand_is_put_back(swarm, tmp_path):
    run, client, deploys = swarm
    path = _page(tmp_path, "one")
    run("stack_deployed", name="site", compose=path, resolve_image="never")
    spec = client.api._services["site_web"]["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = "reg/web:hand"
    deploys.clear()
    _cycle(
        run,
        path,
        {"update": ["web"], "drift": {"web": ["image"]}},
        resolve_image="never",
        with_registry_auth=False,
    )
    image = client.api._services["site_web"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image == "reg/web:v1"
    assert [d[0] for d in deploys] == ["deploy", "set_images"]
    assert deploys[1][2] == {"web": "reg/web:v1"}
    assert deploys[1][3]["with_registry_auth"] is False
    assert deploys[1][3]["resolve_image"] == "never"


# -- 10: the swarm's naming key -------------------------------------------------------------------
TOKEN = """
services:
  web:
    image: reg/web:v1
    secrets: [token]
secrets:
  token: {x-pillar: "armswarm:site:token"}
"""
PILLAR = {"armswarm": {"site": {"token": "pa55word"}}}


def test_the_naming_key_is_made_once_in_the_swarm_and_never_returned(swarm, tmp_path):
    run, client, _ = swarm
    path = compose_file(tmp_path, TOKEN)
    key_name = stacks.NAMING_KEY_CONFIG
    predicted = run("stack_deployed", test=True, name="site", compose=path, pillar=PILLAR)
    assert predicted["result"] is None and predicted["changes"] == {"create": ["web"]}
    assert client.api.object_names("configs") == []  # test=True makes no key
    applied = run("stack_deployed", name="site", compose=path, pillar=PILLAR)
    assert applied["result"] is True and applied["changes"] == {"create": ["web"]}, applied
    assert client.api.object_names("configs") == [key_name]
    key = base64.b64decode(client.api._configs[key_name]["Spec"]["Data"])
    assert len(key) == 32
    (secret,) = client.api.object_names("secrets")
    assert secret == f"site_token_{stacks._keyed_digest(key, b'pa55word')}"
    assert hashlib.sha256(b"pa55word").hexdigest()[:12] not in secret
    said = json.dumps([predicted, applied])
    for text in (key.hex(), base64.b64encode(key).decode(), "pa55word"):
        assert text not in said
    # Read back (by any manager: it is the swarm's): the same name, nothing to do.
    for test in (True, False):
        again = run("stack_deployed", test=test, name="site", compose=path, pillar=PILLAR)
        assert again["result"] is True and again["changes"] == {}, again
    assert [c for c in client.api.calls if c[0] == "create_config"] == [("create_config", key_name)]
    # A new value: a new secret, predicted as such.
    other = {"armswarm": {"site": {"token": "n3w"}}}
    _cycle(run, path, {"update": ["web"]}, pillar=other)


def test_the_stacks_sls_passes_pillar_types_through_for_the_state_to_check(tmp_path):
    stack = {"compose": "salt://stacks/web.yml", "timeout": "300", "wait": False}
    shown = show_sls(
        tmp_path,
        {"os_family": "Debian"},
        pillar={"armswarm": {"stacks": {"web": stack}}},
        sls="swarm.stacks",
    )
    state = shown["armswarm-stack-web"]
    assert _arg(state, "docker_swarm", "timeout") == "300"  # refused by the state, not 300
    assert _arg(state, "docker_swarm", "wait") is False
    assert _arg(state, "docker_swarm", "with_registry_auth") is None


# -- registry_auth_pillar: armswarm:registry is the registry's pull client ------------------------
def test_stack_deploys_log_in_with_the_registrys_pull_client(swarm, tmp_path):
    run, _, deploys = swarm
    pillar = {
        "armswarm": {
            "registry": {
                "host": "reg.lan:5000",
                "username": "builder",
                "password": "push-pw",
                "clients": {"pull": {"username": "puller", "password": "pull-pw"}},
            }
        }
    }
    ret = run(
        "stack_deployed",
        pillar=pillar,
        name="site",
        compose=_page(tmp_path, "one"),
        registry_auth_pillar="armswarm:registry",
    )
    assert ret["result"] is True, ret
    assert deploys[0][3]["registry_auth"] == {
        "registry": "reg.lan:5000",
        "username": "puller",
        "password": "pull-pw",
    }
    assert "pull-pw" not in json.dumps(ret)
    # without a pull client it falls back to username/password, as every use does
    del pillar["armswarm"]["registry"]["clients"]
    deploys.clear()
    ret = run(
        "stack_deployed",
        pillar=pillar,
        name="site2",
        compose=_page(tmp_path, "one"),
        registry_auth_pillar="armswarm:registry",
    )
    assert ret["result"] is True, ret
    assert deploys[0][3]["registry_auth"]["username"] == "builder"
