"""Per-user registry rights: the users' settings, the grants, the token server's users file,
logins and signatures (checked with cryptography, not with the signer), the client's reading
of a Bearer challenge, and the registry's token config."""

import base64
import json

import pytest
import yaml
from armswarm_core import ArmswarmError
from armswarm_core.registry import registry_api, registry_host, registry_settings, registry_token
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

pytestmark = pytest.mark.unit

USERS = {
    "puller": {"password": "p1", "right": "pull"},
    "builder": {"password": "p2", "right": "push"},
    "janitor": {"password": "p3", "right": "delete"},
}


def _conf(**registry):
    return registry_settings.settings(None, {"armswarm": {"registry": registry}})


def _problems(**registry):
    return registry_settings.resolve(None, {"armswarm": {"registry": registry}})[1]


# -- settings ----------------------------------------------------------------------------------
def test_users_with_rights_and_the_short_form():
    conf = _conf(auth="token", users={**USERS, "admin": "pw", "reader": {"password": "p4"}})
    assert registry_settings.users(conf) == {
        "puller": ("p1", "pull"),
        "builder": ("p2", "push"),
        "janitor": ("p3", "delete"),
        "admin": ("pw", "delete"),  # the short form: every right
        "reader": ("p4", "pull"),  # no right given: the least
    }


def test_bad_users_are_named_before_anything_changes():
    problems = _problems(
        auth="token",
        users={
            "a": {"password": "x", "rihgt": "push"},
            "b": {"password": "x", "right": "admin"},
            "c": {"password": "", "right": "pull"},
            "d": ["x"],
            "e": {"password": "x", "right": True},
        },
    )
    text = "; ".join(problems)
    assert "armswarm:registry:users:a:rihgt: unknown key (did you mean right?)" in text
    assert "armswarm:registry:users:b:right must be one of pull, push, delete" in text
    assert "armswarm:registry:users:c:password must be a non-empty string" in text
    assert "armswarm:registry:users:d: must be a password or a mapping" in text
    assert "armswarm:registry:users:e:right must be one of" in text
    assert "x" not in [p.split()[-1] for p in problems]  # no value shown


def test_htpasswd_cannot_hold_a_limited_right():
    # htpasswd only authenticates: a pull user would push and delete
    (problem,) = _problems(users={"puller": {"password": "x", "right": "pull"}})
    assert problem.startswith("armswarm:registry:users:puller:right needs armswarm:registry:auth")
    assert _problems(users={"admin": {"password": "x", "right": "delete"}, "b": "y"}) == []
    assert "armswarm:registry:auth must be one of htpasswd, token" in _problems(auth="jwt")
    assert "armswarm:registry:auth: must be a string, not a mapping" in _problems(auth={"a": 1})
    assert "armswarm:registry:token_port must differ from armswarm:registry:port" in (
        _problems(auth="token", token_port=5000)
    )


def test_credentials_per_use_fall_back_to_username():
    conf = _conf(
        username="all",
        password="pw",
        clients={"delete": {"username": "janitor", "password": "p3"}},
    )
    assert registry_settings.credentials(conf, "delete") == ("janitor", "p3")
    assert registry_settings.credentials(conf, "push") == ("all", "pw")
    assert registry_settings.credentials(conf, "pull") == ("all", "pw")
    pillar = {"armswarm": {"registry": {**conf, "host": "r:5000"}}}
    assert registry_api.settings(None, pillar, "delete").username == "janitor"
    assert registry_api.settings(None, pillar, "pull").username == "all"
    with pytest.raises(ArmswarmError, match="use 'admin'"):
        registry_settings.credentials(conf, "admin")
    assert "armswarm:registry:clients:pul: unknown key (did you mean pull?)" in _problems(
        clients={"pul": {"username": "x"}}
    )
    assert "armswarm:registry:clients:push:username: must be a string, not a boolean" in (
        _problems(clients={"push": {"username": True}})
    )


def test_masked_keeps_rights_and_hides_passwords():
    conf = _conf(auth="token", users=USERS, clients={"pull": {"username": "u", "password": "s"}})
    shown = json.dumps(registry_settings.masked(conf))
    assert all(u["password"] not in shown.replace("********", "") for u in USERS.values())
    assert registry_settings.masked(conf)["users"]["builder"]["right"] == "push"
    assert registry_settings.masked(conf)["clients"]["pull"] == {
        "username": "u",
        "password": "********",
    }


# -- grants ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("right", "expected"),
    [
        ("pull", [{"type": "repository", "name": "web/app", "actions": ["pull"]}]),
        ("push", [{"type": "repository", "name": "web/app", "actions": ["pull", "push"]}]),
        (
            "delete",
            [
                {"type": "registry", "name": "catalog", "actions": ["*"]},
                {"type": "repository", "name": "web/app", "actions": ["pull", "push", "delete"]},
            ],
        ),
    ],
)
def test_grant_cuts_each_scope_to_the_right(right, expected):
    asked = ["repository:web/app:pull,push", "repository:web/app:delete", "registry:catalog:*"]
    assert registry_token.grant(right, asked) == expected


def test_grant_ignores_malformed_and_unknown_scopes():
    assert registry_token.grant("delete", ["nonsense", "repository::pull", "other:x:pull"]) == []
    assert registry_token.grant("nobody", ["repository:a:pull"]) == []
    assert registry_token.parse_scope("repository(plugin):a/b:pull") == (
        "repository",
        "a/b",
        ("pull",),
    )


# -- users file and logins ---------------------------------------------------------------------
def test_users_file_keeps_hashes_until_password_right_or_cost_change():
    conf = _conf(auth="token", users=USERS)
    text, changed = registry_token.users_file(conf)
    assert changed == ["builder", "janitor", "puller"]
    assert all(line.split(":")[2].startswith("$2b$05$") for line in text.splitlines())
    assert registry_token.users_file(conf, text) == (text, [])
    moved = _conf(auth="token", users={**USERS, "puller": {"password": "p1", "right": "push"}})
    assert registry_token.users_file(moved, text)[1] == ["puller"]
    fewer = _conf(auth="token", users={"builder": USERS["builder"]})
    assert registry_token.users_file(fewer, text)[1] == ["janitor", "puller"]
    dearer = _conf(auth="token", users=USERS, htpasswd_cost=6)
    assert registry_token.users_file(dearer, text)[1] == ["builder", "janitor", "puller"]
    # The password is in no field (a bcrypt hash's random characters may hold "p1" anywhere).
    assert not any(f == "p1" for line in text.splitlines() for f in line.split(":"))


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_login_checks_the_bcrypt_hash():
    users = registry_token.parse_users(
        registry_token.users_file(_conf(auth="token", users=USERS))[0]
    )
    assert registry_token.login(users, _basic("builder", "p2")) == ("builder", "push")
    assert registry_token.login(users, _basic("builder", "p3")) is None
    assert registry_token.login(users, _basic("nobody", "p2")) is None
    assert registry_token.login(users, "Bearer abc") is None
    assert registry_token.login(users, "Basic !!!") is None
    assert registry_token.login(users, None) is None


# -- tokens ------------------------------------------------------------------------------------
def _b64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_token_is_an_es256_jwt_the_certificate_in_x5c_verifies():
    key_pem, cert_pem = registry_token.signing_pair()
    signer = registry_token.Signer(key_pem, cert_pem)
    users = registry_token.parse_users(
        registry_token.users_file(_conf(auth="token", users=USERS))[0]
    )
    conf = {"service": registry_token.SERVICE, "issuer": registry_token.ISSUER, "ttl": 300}
    status, body, who = registry_token.answer(
        conf,
        users,
        signer,
        _basic("puller", "p1"),
        {"service": [registry_token.SERVICE], "scope": ["repository:web:pull,push"]},
        1_000_000,
    )
    assert (status, who, body["expires_in"]) == (200, "puller", 300)
    head, payload, signature = body["token"].split(".")
    header, claims = json.loads(_b64(head)), json.loads(_b64(payload))
    assert header["alg"] == "ES256"
    cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    assert cert == x509.load_pem_x509_certificate(cert_pem)
    raw = _b64(signature)
    der = utils.encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )
    cert.public_key().verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    assert claims["access"] == [{"type": "repository", "name": "web", "actions": ["pull"]}]
    assert (claims["iss"], claims["aud"], claims["sub"]) == (
        registry_token.ISSUER,
        registry_token.SERVICE,
        "puller",
    )
    assert claims["exp"] - 300 == 1_000_000 and claims["nbf"] < 1_000_000
    bad = registry_token.answer(conf, users, signer, _basic("puller", "x"), {}, 1_000_000)
    assert bad[0] == 401 and "token" not in bad[1]
    other = registry_token.answer(
        conf, users, signer, _basic("puller", "p1"), {"service": ["elsewhere"]}, 1_000_000
    )
    assert other[0] == 400


# -- the registry side and the client ----------------------------------------------------------
def test_token_mode_config_and_served_files():
    conf = _conf(auth="token", users=USERS, host="reg.lan:5000", listen="10.0.0.1")
    doc = yaml.safe_load(registry_host.render_config(conf))
    assert doc["auth"] == {
        "token": {
            "realm": "https://reg.lan:5001/token",
            "service": registry_token.SERVICE,
            "issuer": registry_token.ISSUER,
            "rootcertbundle": "/etc/docker/registry/token.crt",
        }
    }
    # the registry gets the signer's certificate, never its key or the users' hashes
    assert registry_host.served_files(conf) == ("config.yml", "tls.crt", "tls.key", "token.crt")
    assert "htpasswd" in registry_host.served_files(_conf(users={"a": "b"}))
    server = json.loads(registry_host.token_config(conf))
    assert (server["listen"], server["port"]) == ("10.0.0.1", 5001)
    assert "p1" not in registry_host.token_config(conf)


def test_token_server_restarts_only_for_its_own_inputs(tmp_path):
    root = registry_host.code_root()
    files = {"unit": b"u", "token.json": b"{}", "token-users": b"a:pull:$2b$"}
    spec = registry_host.token_spec(files, root)
    assert registry_host.token_spec(dict(files), root) == spec
    assert registry_host.token_spec({**files, "token-users": b"a:push:$2b$"}, root) != spec
    assert registry_host.token_spec(files, str(tmp_path)) != spec  # other code
    unit = registry_host.token_unit("/opt/salt/bin/python3", root, "/etc/armswarm/registry")
    assert "ExecStart=/opt/salt/bin/python3 -m armswarm_core.registry.registry_token " in unit
    assert f'Environment="PYTHONPATH={root}"' in unit


def test_client_reads_bearer_challenges_and_scope_keys():
    header = (
        'Bearer realm="https://r:5001/token",service="armswarm-registry",'
        'scope="repository:a/b:pull,push",error="insufficient_scope"'
    )
    assert registry_api.challenge(header) == {
        "realm": "https://r:5001/token",
        "service": "armswarm-registry",
        "scope": "repository:a/b:pull,push",
        "error": "insufficient_scope",
    }
    assert registry_api.challenge('Basic realm="x"') is None
    assert registry_api.challenge("") is None
    url = "https://r:5000/v2/a/b/manifests/sha256:1"
    assert registry_api.scope_key("GET", url) == ("a/b", "read")
    assert registry_api.scope_key("HEAD", url) == ("a/b", "read")
    assert registry_api.scope_key("PUT", url) == ("a/b", "write")
    assert registry_api.scope_key("DELETE", url) == ("a/b", "delete")
    assert registry_api.scope_key("GET", "https://r:5000/v2/_catalog?n=1000") == (
        "registry:catalog",
        "read",
    )
