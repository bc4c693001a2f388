"""The registry formula on a lab node: x509 CA and certificate made by Salt, the container,
htpasswd users, the CA through the mine into other nodes' docker trust, garbage collection,
and token auth with a right per user."""

import json
import time

import pytest
import requests
from armswarm_core import ArmswarmError
from armswarm_core.registry import registry_api
from helpers import load_registry_image

pytestmark = pytest.mark.lab

NODE = "node1"
PASSWORD = "lab-registry-pw-7f3a"  # only for this test registry


def _remove(lab):
    unit = "armswarm-registry-token.service"
    lab.exec(
        NODE, ["sh", "-c", f"systemctl disable --now {unit}; rm -f /etc/systemd/system/{unit}"]
    )
    lab.exec(NODE, ["systemctl", "daemon-reload"])
    lab.exec(NODE, ["docker", "rm", "-f", "armswarm-registry"])
    lab.exec(NODE, ["rm", "-rf", "/srv/registry", "/etc/armswarm/registry"])
    lab.run_salt("salt", NODE, "mine.delete", "armswarm_registry_ca", check=False)


@pytest.fixture(scope="module")
def deployed(lab):
    _remove(lab)  # a kept lab may hold an earlier run's
    image = load_registry_image(lab, NODE)
    host = f"{lab.node_address(lab.node(NODE))}:5000"
    pillar = {
        "armswarm": {
            "registry": {
                "node": NODE,
                "host": host,
                "image": image,
                "storage": "/srv/registry",
                "users": {"builder": PASSWORD},
            }
        }
    }
    yield host, pillar
    _remove(lab)


CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"


def _apply(lab, target, sls, pillar, test=False):
    args = [target, "state.apply", sls, f"pillar={json.dumps(pillar)}"]
    if test:
        args.append("test=True")
    proc = lab.run_salt("salt", "--out=json", "--static", *args, check=False)
    assert PASSWORD not in proc.stdout + proc.stderr
    states = json.loads(proc.stdout)[target]
    assert isinstance(states, dict), states
    return states


def _ca_file(lab):
    ca_file = lab.state_dir / "test-registry-ca.crt"
    ca_file.write_text(lab.salt_json(NODE, "docker_registry.ca_cert")[NODE])
    return str(ca_file)


def _changed(states):
    return {s["__id__"]: s["changes"] for s in states.values() if s["changes"]}


def _results(states):
    return {s["__id__"]: s["result"] for s in states.values()}


def test_no_users_no_registry(lab, deployed):
    # Closed by default: without users (and without allow_anonymous) nothing is deployed.
    _, pillar = deployed
    open_pillar = {"armswarm": {"registry": dict(pillar["armswarm"]["registry"])}}
    del open_pillar["armswarm"]["registry"]["users"]
    for test in (True, False):
        states = _apply(lab, NODE, "registry", open_pillar, test=test)
        running = next(s for s in states.values() if s["__id__"] == "armswarm-registry-running")
        assert running["result"] is False, running
        assert "armswarm:registry:users is empty" in running["comment"], running
        assert running["changes"] == {}
    code, out = lab.exec(NODE, ["docker", "ps", "-aq", "--filter", "name=armswarm-registry"])
    assert code == 0 and out.strip() == "", out
    _remove(lab)  # the CA this run made: the next test starts from nothing again


def test_check_apply_reapply_check(lab, deployed):
    _, pillar = deployed
    check = _apply(lab, NODE, "registry", pillar, test=True)
    assert "armswarm-registry-running" in _changed(check)
    assert all(r in (None, True) for r in _results(check).values()), check
    applied = _apply(lab, NODE, "registry", pillar)
    assert all(_results(applied).values()), applied
    changed = _changed(applied)
    assert {
        "armswarm-registry-ca",
        "armswarm-registry-tls-cert",
        "armswarm-registry-running",
    } <= set(changed)
    assert changed["armswarm-registry-running"]["users"] == ["builder"]
    # Published on the node's address only, not on every interface.
    code, out = lab.exec(
        NODE,
        ["docker", "inspect", "--format", "{{json .HostConfig.PortBindings}}", "armswarm-registry"],
    )
    assert code == 0, out
    assert json.loads(out) == {
        "5000/tcp": [{"HostIp": lab.node_address(lab.node(NODE)), "HostPort": "5000"}]
    }
    code, _ = lab.exec(NODE, ["/opt/salt/bin/python3", "-c", CONNECT, "127.0.0.1", "5000"])
    assert code != 0  # loopback (and docker0) does not reach it
    # The container has the certificate and key it serves, never the CA's private key.
    copy = ["docker", "cp", "armswarm-registry:/etc/docker/registry/{}", "/tmp/registry-{}"]
    code, out = lab.exec(NODE, [a.format("tls.key") for a in copy])
    assert code == 0, out
    code, out = lab.exec(NODE, [a.format("ca.key") for a in copy])
    assert code != 0 and "ca.key" in out, out
    code, out = lab.exec(NODE, ["test", "-s", "/etc/armswarm/registry/ca.key"])
    assert code == 0  # it exists on the node, outside the container
    again = _apply(lab, NODE, "registry", pillar)
    assert _changed(again) == {} and all(_results(again).values()), _changed(again)
    check = _apply(lab, NODE, "registry", pillar, test=True)
    assert _changed(check) == {}, _changed(check)
    assert all(r is True for r in _results(check).values()), {
        s["__id__"]: (s["result"], s["comment"]) for s in check.values() if s["result"] is not True
    }
    # A changed setting is predicted as a new container, and nothing is touched.
    moved = {"armswarm": {"registry": {**pillar["armswarm"]["registry"], "storage": "/srv/r2"}}}
    check = _apply(lab, NODE, "registry", moved, test=True)
    predicted = _changed(check)["armswarm-registry-running"]
    assert predicted["container"] == "would be (re)created", predicted
    assert lab.exec(NODE, ["test", "-e", "/srv/r2"])[0] == 1


def test_nodes_trust_it_through_the_mine_and_push_with_credentials(lab, deployed):
    host, pillar = deployed
    states = _apply(lab, "node2", "armnode", pillar)
    assert all(_results(states).values())
    code, ca = lab.exec("node2", ["cat", f"/etc/docker/certs.d/{host}/ca.crt"])
    assert code == 0 and "BEGIN CERTIFICATE" in ca
    ref = f"{host}/smoke:1"
    script = (
        f"d=$(mktemp -d); echo hi > $d/hi; tar -C $d -c . | docker import - {ref} && "
        f"echo {PASSWORD} | docker login -u builder --password-stdin {host} && docker push {ref}"
    )
    code, out = lab.exec("node2", ["sh", "-c", script])
    assert code == 0, out
    # Without credentials the registry refuses.
    response = requests.get(f"https://{host}/v2/_catalog", verify=_ca_file(lab), timeout=10)
    assert response.status_code == 401


def test_garbage_collection_frees_deleted_images(lab, deployed):
    host, _ = deployed
    ca_file = _ca_file(lab)
    auth = ("builder", PASSWORD)
    script = (
        f"d=$(mktemp -d); head -c 3000000 /dev/urandom > $d/blob; "
        f"tar -C $d -c . | docker import - {host}/big:1 && docker push {host}/big:1"
    )
    code, out = lab.exec("node2", ["sh", "-c", script])
    assert code == 0, out
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    head = requests.head(
        f"https://{host}/v2/big/manifests/1",
        headers=accept,
        auth=auth,
        verify=str(ca_file),
        timeout=10,
    )
    digest = head.headers["Docker-Content-Digest"]
    deleted = requests.delete(
        f"https://{host}/v2/big/manifests/{digest}", auth=auth, verify=str(ca_file), timeout=10
    )
    assert deleted.status_code == 202
    result = lab.salt_json(NODE, "docker_registry.garbage_collect")[NODE]
    assert result["freed_bytes"] > 2_500_000, result
    # Serving again, writable, and the other image is intact.
    status = lab.salt_json(NODE, "docker_registry.status")[NODE]
    assert status["status"] == "running" and status["readonly"] is False
    catalog = requests.get(
        f"https://{host}/v2/smoke/tags/list", auth=auth, verify=str(ca_file), timeout=10
    )
    assert catalog.json()["tags"] == ["1"]


READ_ONLY_AS_AN_INTERRUPTED_COLLECTION_LEAVES_IT = """
import json, sys
sys.path.insert(0, "/var/cache/salt/minion/extmods/utils")
import docker
from armswarm_core.registry import registry_host
client = docker.from_env()
conf = registry_host.settings(None, json.loads(sys.argv[1]))
now = registry_host.current(client, conf)
conf = {**conf, "image": now["image"], "listen": now["listen"], "port": now["port"]}
registry_host.replace(client, conf, now["spec"], readonly=True)
print(json.dumps(registry_host.current(client, conf)))
"""


def _upload_status(host, ca_file) -> int:
    """What the registry answers to the start of a blob upload (202 when it takes pushes)."""
    response = requests.post(
        f"https://{host}/v2/smoke/blobs/uploads/",
        auth=("builder", PASSWORD),
        verify=ca_file,
        timeout=10,
    )
    if response.status_code == 202:  # cancel it: nothing is left half-uploaded
        requests.delete(
            f"https://{host}{response.headers['Location']}"
            if response.headers["Location"].startswith("/")
            else response.headers["Location"],
            auth=("builder", PASSWORD),
            verify=ca_file,
            timeout=10,
        )
    return response.status_code


def test_a_registry_left_read_only_is_made_writable_by_the_state(lab, deployed):
    """Garbage collection runs in a read-only registry; when the writable one does not come
    back (the minion killed mid-collection, or its start failed) the state sees the drift."""
    host, pillar = deployed
    ca_file = _ca_file(lab)
    assert _upload_status(host, ca_file) == 202
    code, out = lab.exec(
        NODE,
        [
            "/opt/salt/bin/python3",
            "-c",
            READ_ONLY_AS_AN_INTERRUPTED_COLLECTION_LEAVES_IT,
            json.dumps(pillar),
        ],
    )
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1])["readonly"] is True
    assert _upload_status(host, ca_file) != 202  # the registry itself refuses pushes
    check = _apply(lab, NODE, "registry", pillar, test=True)
    predicted = _changed(check)
    assert predicted == {
        "armswarm-registry-running": {"container": "would be made writable (it is read-only)"}
    }, predicted
    assert _upload_status(host, ca_file) != 202  # the check changed nothing
    applied = _apply(lab, NODE, "registry", pillar)
    changed = _changed(applied)
    assert set(changed) == {"armswarm-registry-running"}, changed
    assert changed["armswarm-registry-running"]["container"]["old"]["readonly"] is True
    assert all(_results(applied).values()), applied
    assert _upload_status(host, ca_file) == 202
    status = lab.salt_json(NODE, "docker_registry.status")[NODE]
    assert status["status"] == "running" and status["readonly"] is False
    for test in (False, True):
        again = _apply(lab, NODE, "registry", pillar, test=test)
        assert _changed(again) == {}, _changed(again)


BUILD_WITH_LOGIN = """
import base64, io, json, sys, tarfile
sys.path.insert(0, "/var/cache/salt/minion/extmods/utils")
import docker
from armswarm_core.build import build_job
host, password = sys.argv[1:3]
docker_file = f"FROM {host}/smoke:1\\nCOPY note /note\\n".encode()
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for name, data in (("Dockerfile", docker_file), ("note", b"child\\n")):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
answer = build_job.run(
    docker.from_env(), "child", f"{host}/child:1", base64.b64encode(buf.getvalue()).decode(),
    registry=host, auth={"username": "builder", "password": password}, timeout=120,
)
print(json.dumps({k: answer.get(k) for k in ("status", "error", "digest")}))
"""


def test_a_build_pulls_its_parent_from_the_authenticating_registry(lab, deployed):
    host, _ = deployed
    # node2 pushed smoke:1 above; without its stored login and without the local copy, the
    # build can only get the parent by logging in itself.
    code, out = lab.exec(
        "node2", ["sh", "-c", f"docker logout {host}; docker rmi -f {host}/smoke:1"]
    )
    assert code == 0, out
    # the minion's Python (its venv has the docker SDK), as the imagebuild module runs it
    code, out = lab.exec("node2", ["/opt/salt/bin/python3", "-c", BUILD_WITH_LOGIN, host, PASSWORD])
    assert code == 0, out
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["status"] == "ok" and answer["digest"].startswith("sha256:"), answer
    code, out = lab.exec(
        "node2", ["sh", "-c", f"docker logout {host}; docker rmi -f {host}/child:1"]
    )
    assert code == 0, out


def test_a_replacement_that_does_not_start_keeps_the_old_registry(lab, deployed):
    host, pillar = deployed
    code, before = lab.exec(NODE, ["docker", "inspect", "--format", "{{.Id}}", "armswarm-registry"])
    assert code == 0, before
    # An image the engine cannot run (no command): the new container fails to be created.
    code, out = lab.exec(
        NODE,
        [
            "sh",
            "-c",
            "d=$(mktemp -d); echo x > $d/x; tar -C $d -c . | docker import - armswarm-lab/broken:1",
        ],
    )
    assert code == 0, out
    # ... and a new password in the same change: the files it writes are bind-mounted into
    # the container, so the old one must run again on its own files, not the new ones
    broken = {"armswarm": {"registry": {**pillar["armswarm"]["registry"]}}}
    broken["armswarm"]["registry"]["image"] = "armswarm-lab/broken:1"
    broken["armswarm"]["registry"]["users"] = {"builder": PASSWORD + "-new"}
    code, htpasswd_before = lab.exec(NODE, ["cat", "/etc/armswarm/registry/htpasswd"])
    assert code == 0 and htpasswd_before.startswith("builder:$2"), htpasswd_before
    states = _apply(lab, NODE, "registry", broken)
    running = next(s for s in states.values() if s["__id__"] == "armswarm-registry-running")
    assert running["result"] is False and "runs again" in running["comment"], running
    code, after = lab.exec(
        NODE, ["docker", "inspect", "--format", "{{.Id}} {{.State.Status}}", "armswarm-registry"]
    )
    assert code == 0 and after.split() == [before.strip(), "running"], after
    code, out = lab.exec(NODE, ["docker", "ps", "-aq", "--filter", "name=previous"])
    assert out.strip() == "", out
    response = requests.get(
        f"https://{host}/v2/", auth=("builder", PASSWORD), verify=_ca_file(lab), timeout=10
    )
    assert response.status_code == 200
    assert lab.exec(NODE, ["cat", "/etc/armswarm/registry/htpasswd"]) == (0, htpasswd_before)
    refused = requests.get(
        f"https://{host}/v2/", auth=("builder", PASSWORD + "-new"), verify=_ca_file(lab), timeout=10
    )
    assert refused.status_code == 401
    # and the pillar it was deployed from is still what runs
    again = _apply(lab, NODE, "registry", pillar)
    assert _changed(again) == {} and all(_results(again).values()), _changed(again)


def test_a_changed_hash_cost_rehashes_and_the_registry_takes_it(lab, deployed):
    host, pillar = deployed
    code, text = lab.exec(NODE, ["cat", "/etc/armswarm/registry/htpasswd"])
    # cheap by default: the registry checks it on every request
    assert code == 0 and text.startswith("builder:$2b$05$"), text
    dearer = {"armswarm": {"registry": {**pillar["armswarm"]["registry"], "htpasswd_cost": 8}}}
    check = _apply(lab, NODE, "registry", dearer, test=True)
    running = next(s for s in check.values() if s["__id__"] == "armswarm-registry-running")
    assert running["result"] is None and running["changes"]["users"] == ["builder"], running
    assert lab.exec(NODE, ["cat", "/etc/armswarm/registry/htpasswd"]) == (0, text)
    try:
        applied = _apply(lab, NODE, "registry", dearer)
        assert all(_results(applied).values()), _changed(applied)
        code, new = lab.exec(NODE, ["cat", "/etc/armswarm/registry/htpasswd"])
        assert code == 0 and new.startswith("builder:$2b$08$"), new
        # the running registry reads the new hash: the password still opens it, another not
        for password, status in ((PASSWORD, 200), (PASSWORD + "x", 401)):
            response = requests.get(
                f"https://{host}/v2/", auth=("builder", password), verify=_ca_file(lab), timeout=10
            )
            assert response.status_code == status, password == PASSWORD
        for mode in ("re-apply", "check"):
            again = _apply(lab, NODE, "registry", dearer, test=mode == "check")
            assert _changed(again) == {} and all(
                r is not False for r in _results(again).values()
            ), _changed(again)
    finally:
        _apply(lab, NODE, "registry", pillar)
    code, back = lab.exec(NODE, ["cat", "/etc/armswarm/registry/htpasswd"])
    assert code == 0 and back.startswith("builder:$2b$05$"), back


TOKEN_USERS = {
    "puller": {"password": "lab-pull-pw-41c2", "right": "pull"},
    "builder": {"password": "lab-push-pw-9d0e", "right": "push"},
    "janitor": {"password": "lab-delete-pw-77ab", "right": "delete"},
}


def _client(host, ca_file, user):
    conf = registry_api.Settings(
        host=host,
        url=f"https://{host}",
        ca_file=ca_file,
        username=user,
        password=TOKEN_USERS[user]["password"],
    )
    return registry_api.Registry(conf, retries=1)


def _login_push(lab, host, user, ref):
    password = TOKEN_USERS[user]["password"]
    script = (
        f"d=$(mktemp -d); echo {user} > $d/who; tar -C $d -c . | docker import - {ref} && "
        f"echo {password} | docker login -u {user} --password-stdin {host} && docker push {ref}"
    )
    return lab.exec("node2", ["sh", "-c", script])


def test_token_auth_gives_each_user_its_right(lab, deployed):
    started = time.monotonic()
    host, pillar = deployed
    token = {"armswarm": {"registry": {**pillar["armswarm"]["registry"], "auth": "token"}}}
    token["armswarm"]["registry"]["users"] = TOKEN_USERS
    secrets = [u["password"] for u in TOKEN_USERS.values()]

    def apply(pillar_, test=False):
        states = _apply(lab, NODE, "registry", pillar_, test=test)
        out = json.dumps(states)
        assert not [s for s in secrets if s in out]
        return states

    try:
        check = apply(token, test=True)
        predicted = _changed(check)["armswarm-registry-running"]
        assert {"users", "token_key", "token_server", "container"} <= set(predicted), predicted
        assert lab.exec(NODE, ["test", "-e", "/etc/armswarm/registry/token.key"])[0] == 1
        applied = apply(token)
        assert all(_results(applied).values()), applied
        changed = _changed(applied)["armswarm-registry-running"]
        assert changed["users"] == ["builder", "janitor", "puller"], changed
        for mode in (False, True):  # re-apply, then check: nothing left to do
            again = apply(token, test=mode)
            assert _changed(again) == {} and all(_results(again).values()), _changed(again)
        code, out = lab.exec(
            NODE,
            [
                "stat",
                "-c",
                "%n %a",
                "/etc/armswarm/registry/token.key",
                "/etc/armswarm/registry/token-users",
            ],
        )
        assert code == 0 and out.split() == [
            "/etc/armswarm/registry/token.key",
            "600",
            "/etc/armswarm/registry/token-users",
            "600",
        ], out
        # the registry trusts the signer's certificate; its key stays outside the container
        copy = ["docker", "cp", "armswarm-registry:/etc/docker/registry/{}", "/tmp/registry-{}"]
        assert lab.exec(NODE, [a.format("token.crt") for a in copy])[0] == 0
        code, out = lab.exec(NODE, [a.format("token.key") for a in copy])
        assert code != 0 and "token.key" in out, out

        # docker itself: the pull user's push is refused, the push user's goes through, and
        # the pull user pulls it
        ref = f"{host}/rights:1"
        code, out = _login_push(lab, host, "puller", ref)
        assert code != 0 and ("denied" in out or "unauthorized" in out), out
        ca_file = _ca_file(lab)
        janitor = _client(host, ca_file, "janitor")
        assert janitor.tags("rights") == []  # the registry has nothing of it
        code, out = _login_push(lab, host, "builder", ref)
        assert code == 0, out
        password = TOKEN_USERS["puller"]["password"]
        code, out = lab.exec(
            "node2",
            [
                "sh",
                "-c",
                f"docker rmi {ref} && echo {password} | docker login -u puller "
                f"--password-stdin {host} && docker pull {ref}",
            ],
        )
        assert code == 0, out
        # the API: the push user cannot delete, the delete user can
        digest = janitor.digest("rights", "1")
        assert digest and digest.startswith("sha256:")
        try:
            _client(host, ca_file, "builder").delete("rights", digest)
        except ArmswarmError as exc:
            assert "HTTP 401" in str(exc), exc
        else:
            raise AssertionError("the push user deleted a manifest")
        assert janitor.digest("rights", "1") == digest
        janitor.delete("rights", digest)
        assert janitor.digest("rights", "1") is None

        # a new password for one user: the token server restarts, the registry stays
        code, before = lab.exec(
            NODE, ["docker", "inspect", "--format", "{{.Id}}", "armswarm-registry"]
        )
        moved = json.loads(json.dumps(token))
        moved["armswarm"]["registry"]["users"]["puller"]["password"] = password + "-2"
        secrets.append(password + "-2")
        changed = _changed(apply(moved))["armswarm-registry-running"]
        assert changed["users"] == ["puller"] and "container" not in changed, changed
        assert lab.exec(
            NODE, ["docker", "inspect", "--format", "{{.Id}}", "armswarm-registry"]
        ) == (
            0,
            before,
        )
        realm = f"https://{host.rsplit(':', 1)[0]}:5001/token"
        for pw, status in ((password, 401), (password + "-2", 200)):
            response = requests.get(realm, auth=("puller", pw), verify=ca_file, timeout=10)
            assert response.status_code == status
    finally:
        lab.exec("node2", ["sh", "-c", f"docker logout {host}; docker rmi -f {host}/rights:1"])
        # back to the htpasswd registry this module deployed: no token server left
        back = _apply(lab, NODE, "registry", pillar)
    assert all(_results(back).values()), _changed(back)
    assert _changed(back)["armswarm-registry-running"]["token_server"] == "removed"
    code, _ = lab.exec(NODE, ["test", "-e", "/etc/systemd/system/armswarm-registry-token.service"])
    assert code == 1
    assert time.monotonic() - started < 90
