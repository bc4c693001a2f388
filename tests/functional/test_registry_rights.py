"""Per-user registry rights with a real registry: Debian's docker-registry (distribution 2.8)
in ``token`` mode, the token server as the systemd unit runs it (``python -m``), and the
runner's API client doing the bearer dance for pulls, pushes, deletes and the catalog."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests
import yaml
from armswarm_core import ArmswarmError
from armswarm_core.registry import registry_api, registry_host, registry_settings, registry_token

from armswarm.lab import pki

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(not shutil.which("docker-registry"), reason="docker-registry missing"),
]

USERS = {
    "puller": {"password": "pull-pw-1", "right": "pull"},
    "builder": {"password": "push-pw-2", "right": "push"},
    "janitor": {"password": "delete-pw-3", "right": "delete"},
}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(port, proc):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        try:
            with socket.create_connection(("127.0.0.1", port), 1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    base = tmp_path_factory.mktemp("regtoken")
    pki.ensure_ca(base, "test CA")
    cert, key = pki.issue_server_cert(base, "tls", "127.0.0.1")
    port, token_port = _port(), _port()
    pillar = {
        "armswarm": {
            "registry": {
                "host": f"127.0.0.1:{port}",
                "listen": "127.0.0.1",
                "port": port,
                "token_port": token_port,
                "auth": "token",
                "users": USERS,
                "config_dir": str(base),
            }
        }
    }
    conf = registry_settings.settings(None, pillar)
    # the files the registry state writes, made by the same functions
    signing_key, signing_cert = registry_token.signing_pair()
    (base / "token.key").write_bytes(signing_key)
    (base / "token.crt").write_bytes(signing_cert)
    (base / "token-users").write_text(registry_token.users_file(conf)[0])
    (base / "token.json").write_text(registry_host.token_config(conf))
    doc = registry_host.config_document(conf)
    # the paths the container would see, on this machine
    doc["http"]["addr"] = f"127.0.0.1:{port}"
    doc["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
    doc["storage"]["filesystem"]["rootdirectory"] = str(base / "data")
    doc["auth"]["token"]["rootcertbundle"] = str(base / "token.crt")
    (base / "config.yml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONPATH": registry_host.code_root()}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "armswarm_core.registry.registry_token",
                str(base / "token.json"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            ["docker-registry", "serve", str(base / "config.yml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        _wait(token_port, procs[0])
        _wait(port, procs[1])
        yield pillar, str(base / "ca.crt"), procs[0]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _client(pillar, ca_file, use, **creds):
    over = {**pillar["armswarm"]["registry"], "ca_file": ca_file, **creds}
    return registry_api.Registry(registry_api.settings(None, {"armswarm": {"registry": over}}, use))


def _as(pillar, ca_file, user):
    return _client(pillar, ca_file, "push", username=user, password=USERS[user]["password"])


def _push_image(client, repo, tag):
    config_digest = client._upload_blob(repo, json.dumps({"architecture": "none"}).encode())
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": registry_api.DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(json.dumps({"architecture": "none"})),
                "digest": config_digest,
            },
            "layers": [],
        }
    ).encode()
    return client.put_manifest(repo, tag, body, registry_api.DOCKER_MANIFEST)


def test_each_user_gets_its_right_only(registry):
    pillar, ca_file, _ = registry
    builder = _as(pillar, ca_file, "builder")
    digest = _push_image(builder, "web/app", "1")
    assert digest.startswith("sha256:")
    assert builder.tags("web/app") == ["1"]
    # a pull user reads, and its push is refused by the registry itself
    puller = _as(pillar, ca_file, "puller")
    assert puller.digest("web/app", "1") == digest
    with pytest.raises(ArmswarmError, match="HTTP 401"):
        _push_image(puller, "web/app", "2")
    # a push user moves tags (retag: GET then PUT) but cannot delete nor list the catalog
    assert builder.retag("web/app", "1", "latest") == digest
    with pytest.raises(ArmswarmError, match="HTTP 401"):
        builder.delete("web/app", digest)
    with pytest.raises(ArmswarmError, match="HTTP 401"):
        builder.catalog()
    # the delete user lists, untags and deletes
    janitor = _as(pillar, ca_file, "janitor")
    assert janitor.catalog() == ["web/app"]
    janitor.untag("web/app", "latest")
    assert janitor.tags("web/app") == ["1"]
    janitor.delete("web/app", digest)
    assert janitor.tags("web/app") == []
    # and what the registry says without any token
    anonymous = requests.get(
        f"https://{pillar['armswarm']['registry']['host']}/v2/web/app/tags/list",
        verify=ca_file,
        timeout=10,
    )
    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.headers["WWW-Authenticate"]


def test_a_silent_client_does_not_stop_the_logins(registry):
    """A connection that never starts TLS (a port scan, a hung node) holds its own thread,
    not the server's accept loop: the next login still gets its token."""
    pillar, ca_file, _ = registry
    realm = registry_token.realm(registry_settings.settings(None, pillar))
    port = pillar["armswarm"]["registry"]["token_port"]
    with socket.create_connection(("127.0.0.1", port), 5):
        time.sleep(0.5)  # accepted by now, and silent
        answer = requests.get(
            realm,
            params={"service": registry_token.SERVICE},
            auth=("puller", USERS["puller"]["password"]),
            verify=ca_file,
            timeout=5,
        )
    assert answer.status_code == 200 and answer.json()["token"]


def test_credentials_per_use_and_a_wrong_password(registry):
    pillar, ca_file, server = registry
    per_use = {
        "clients": {
            "pull": {"username": "puller", "password": USERS["puller"]["password"]},
            "delete": {"username": "janitor", "password": USERS["janitor"]["password"]},
        },
        "username": "builder",  # the push use falls back to these
        "password": USERS["builder"]["password"],
    }
    assert _push_image(_client(pillar, ca_file, "push", **per_use), "api", "1")
    assert "api" in _client(pillar, ca_file, "delete", **per_use).catalog()
    with pytest.raises(ArmswarmError, match="HTTP 401"):
        _client(pillar, ca_file, "pull", **per_use).catalog()
    wrong = _client(pillar, ca_file, "push", username="builder", password="not-it")
    with pytest.raises(ArmswarmError, match=r"token server .* HTTP 401 for user builder"):
        wrong.tags("api")
    # a docker login (no scope) gets a token for nothing; a bad one a 401 (the realm's own)
    realm = registry_token.realm(registry_settings.settings(None, pillar))
    login = requests.get(
        realm,
        params={"service": registry_token.SERVICE, "account": "puller"},
        auth=("puller", USERS["puller"]["password"]),
        verify=ca_file,
        timeout=10,
    )
    assert login.status_code == 200 and login.json()["token"]
    assert requests.get(realm, auth=("nobody", "x"), verify=ca_file, timeout=10).status_code == 401
    # its log says who asked for what, never a password or a token
    server.terminate()
    log = server.communicate(timeout=10)[0].decode()
    assert "puller" in log and "janitor" in log
    for secret in [u["password"] for u in USERS.values()] + [login.json()["token"], "not-it"]:
        assert secret not in log
