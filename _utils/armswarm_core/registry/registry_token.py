"""The registry's token server: per-user rights for distribution's ``token`` auth.

distribution (Debian's docker-registry 2.8) offers ``htpasswd`` auth, which only
authenticates, or ``token`` auth, where a client that gets ``401`` with ``WWW-Authenticate:
Bearer realm=…,service=…,scope=…`` asks the realm for a token, with its basic-auth
credentials and the scopes it wants (``repository:web:pull,push``), and sends it back as
``Authorization: Bearer``. This module is that realm: it checks the login against the bcrypt
hashes of its users file (``name:right:hash`` lines, 0600), grants of each scope only what the
user's right allows (:data:`armswarm_core.registry.registry_settings.RIGHTS`) and signs a JWT
(ES256) with a key of its own. The registry trusts exactly that key's self-signed certificate
(``auth.token.rootcertbundle``), named in the token's ``x5c`` header; the key itself never
enters the registry's container.

Run as ``python3 -m armswarm_core.registry.registry_token <config.json>`` (the registry state
writes the config and a systemd unit); the decisions below are pure functions.
"""

import base64
import datetime
import json
import logging
import os
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from armswarm_core import ArmswarmError
from armswarm_core.common import password_hashes
from armswarm_core.registry import registry_settings

log = logging.getLogger("armswarm.registry_token")

PATH = "/token"
ISSUER = "armswarm-registry-token"
SERVICE = "armswarm-registry"
CATALOG = ("registry", "catalog", ("*",))


# -- scopes and grants -------------------------------------------------------------------------
def parse_scope(text: str) -> tuple | None:
    """``(type, name, actions)`` of ``repository:web/app:pull,push``; None when malformed. The
    name may hold ``/`` (and a registry host's ``:port`` never appears in it)."""
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        return None
    kind = kind.split("(", 1)[0]  # repository(plugin):… is a repository
    return kind, name, tuple(a for a in actions.split(",") if a)


def grant(right: str, scopes) -> list[dict]:
    """The token's ``access``: each requested scope cut down to what ``right`` allows
    (nothing of a scope it allows none of). The catalog (``registry:catalog:*``) is for the
    ``delete`` right only: retention lists every repository, nobody else needs to."""
    allowed = set(registry_settings.RIGHTS.get(right, ()))
    access: dict[tuple, list] = {}
    for text in scopes:
        parsed = parse_scope(text)
        if parsed is None:
            continue
        kind, name, actions = parsed
        if kind == "repository":
            given = [a for a in actions if a in allowed]
        elif (kind, name) == CATALOG[:2] and right == "delete":
            given = [a for a in actions if a == "*"]
        else:
            given = []
        if given:
            have = access.setdefault((kind, name), [])
            have.extend(a for a in given if a not in have)
    return [{"type": k, "name": n, "actions": a} for (k, n), a in sorted(access.items())]


def parse_users(text: str) -> dict:
    """``{name: (right, hash)}`` of the users file's ``name:right:hash`` lines."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        right, _, hashed = rest.partition(":")
        if name and right in registry_settings.RIGHTS and hashed:
            out[name] = (right, hashed)
    return out


def users_file(conf: Mapping, current: str = "") -> tuple[str, list]:
    """``(text, changed user names)`` of the users file for ``conf``'s users: a user whose
    right, cost and password are unchanged keeps its hash (re-applying changes nothing)."""
    cost = conf["htpasswd_cost"]
    existing = parse_users(current)
    lines, changed = [], []
    for name, (password, right) in sorted(registry_settings.users(conf).items()):
        old_right, old = existing.get(name, (None, ""))
        hashed = None
        if old and old_right == right and old.startswith(f"$2b${cost:02d}$"):
            if password_hashes.verify(password, old):
                hashed = old
        if hashed is None:
            hashed = password_hashes.hash_password(password, "bcrypt", rounds=cost)
            changed.append(name)
        lines.append(f"{name}:{right}:{hashed}")
    changed.extend(sorted(set(existing) - set(registry_settings.users(conf))))
    return ("\n".join(lines) + "\n") if lines else "", changed


def login(users: Mapping, authorization: str | None) -> tuple | None:
    """``(name, right)`` for a valid ``Authorization: Basic …`` header, else None. An unknown
    user costs a hash check too, so timing does not tell which names exist."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    if not sep:
        return None
    right, hashed = users.get(name, (None, None))
    if hashed is None:
        password_hashes.verify(password, "$2b$05$" + "." * 53)
        return None
    return (name, right) if password_hashes.verify(password, hashed) else None


# -- signing -----------------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_pair(days: int = 3650) -> tuple[bytes, bytes]:
    """``(key PEM, certificate PEM)``: a new P-256 key and its self-signed certificate, the
    only one the registry's ``rootcertbundle`` holds."""
    from cryptography import x509  # noqa: PLC0415 - the minion's Python has it (Salt needs it)
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "armswarm registry token signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


class Signer:
    """Signs JWTs with the token key; its certificate goes into every token's ``x5c``."""

    def __init__(self, key_pem: bytes, cert_pem: bytes):
        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

        self._key = serialization.load_pem_private_key(key_pem, None)
        if not isinstance(self._key, ec.EllipticCurvePrivateKey):
            raise ArmswarmError("the registry's token key is not an EC key")
        cert = x509.load_pem_x509_certificate(cert_pem)
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]

    def sign(self, claims: Mapping) -> str:
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec, utils  # noqa: PLC0415

        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)  # JWS wants r || s, 32 bytes each
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def claims(
    subject: str, access: list, service: str, ttl: int, now: float, issuer: str = ISSUER
) -> dict:
    return {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "iat": int(now),
        "nbf": int(now) - 30,  # a node's clock a little behind still accepts it
        "exp": int(now) + ttl,
        "jti": uuid.uuid4().hex,
        "access": access,
    }


def answer(conf: Mapping, users: Mapping, signer, authorization, query: Mapping, now: float):
    """``(HTTP status, body dict, subject)`` for one token request (``query``: the parsed
    query string or form, lists of values)."""
    who = login(users, authorization)
    if who is None:
        return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication failed"}]}, ""
    name, right = who
    service = (query.get("service") or [conf["service"]])[0]
    if service != conf["service"]:
        return 400, {"errors": [{"code": "DENIED", "message": "unknown service"}]}, name
    scopes = [s for value in query.get("scope") or [] for s in value.split(" ") if s]
    access = grant(right, scopes)
    token = signer.sign(claims(name, access, service, conf["ttl"], now, conf["issuer"]))
    issued = datetime.datetime.fromtimestamp(int(now), datetime.timezone.utc).isoformat()
    body = {
        "token": token,
        "access_token": token,
        "expires_in": conf["ttl"],
        "issued_at": issued.replace("+00:00", "Z"),
    }
    return 200, body, name


# -- the server --------------------------------------------------------------------------------
def config_document(conf: Mapping, config_dir: str) -> dict:
    """The token server's config (JSON, no secrets: paths and names), from the registry
    settings."""
    return {
        "listen": conf["listen"],
        "port": conf["token_port"],
        "issuer": ISSUER,
        "service": SERVICE,
        "ttl": conf["token_ttl"],
        "tls_cert": f"{config_dir}/tls.crt",
        "tls_key": f"{config_dir}/tls.key",
        "signing_key": f"{config_dir}/token.key",
        "signing_cert": f"{config_dir}/token.crt",
        "users": f"{config_dir}/token-users",
    }


def realm(conf: Mapping) -> str:
    """The URL clients fetch tokens from: the registry's host name on ``token_port`` (the
    registry's TLS certificate covers it)."""
    hostname = conf["host"].rsplit(":", 1)[0] if conf["host"] else conf["listen"]
    return f"https://{hostname}:{conf['token_port']}{PATH}"


class _Handler(BaseHTTPRequestHandler):
    server_version = "armswarm-registry-token"
    protocol_version = "HTTP/1.1"
    # A client that connects and says nothing (a port scan, a stuck node) gives up its thread
    # after this, instead of holding it.
    timeout = 30

    def setup(self):
        # The TLS handshake here, in this request's thread and under its timeout: done in the
        # accept loop, one silent client would stop every login.
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", f'Basic realm="{SERVICE}"')
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, query, authorization):
        url = urlsplit(self.path)
        if url.path != PATH:
            return self._reply(404, {"errors": [{"code": "NOT_FOUND"}]})
        app = self.server.app
        status, body, name = answer(
            app["conf"],
            app["users"],
            app["signer"],
            authorization,
            query,
            time.time(),
        )
        # who and what: never a password or a token
        log.info(
            "%s %s scope=%s -> %s", self.client_address[0], name or "-", query.get("scope"), status
        )
        return self._reply(status, body)

    def do_GET(self):  # noqa: N802 - http.server's names
        self._handle(parse_qs(urlsplit(self.path).query), self.headers.get("Authorization"))

    def do_POST(self):  # noqa: N802
        # OAuth2's password grant (docker with an identity token uses POST): the form's
        # username/password stand for the basic-auth header
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(min(length, 65536)).decode(errors="replace"))
        authorization = self.headers.get("Authorization")
        if (form.get("grant_type") or [""])[0] == "password" and "username" in form:
            pair = f"{form['username'][0]}:{(form.get('password') or [''])[0]}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        self._handle(form, authorization)

    def log_message(self, format, *args):  # noqa: A002 - the request line holds the scope only
        pass


def load(config_path: str) -> dict:
    with open(config_path, encoding="utf-8") as handle:
        conf = json.load(handle)
    with open(conf["users"], encoding="utf-8") as handle:
        users = parse_users(handle.read())
    with open(conf["signing_key"], "rb") as key, open(conf["signing_cert"], "rb") as cert:
        signer = Signer(key.read(), cert.read())
    return {"conf": conf, "users": users, "signer": signer}


def serve(config_path: str, ready: threading.Event | None = None):
    """Serve tokens until killed (TLS with the registry's certificate)."""
    app = load(config_path)
    conf = app["conf"]
    server = ThreadingHTTPServer((conf["listen"], conf["port"]), _Handler)
    server.daemon_threads = True
    server.app = app
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(conf["tls_cert"], conf["tls_key"])
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    log.info(
        "serving tokens on %s:%s for %d users", conf["listen"], conf["port"], len(app["users"])
    )
    if ready is not None:
        ready.set()
    server.serve_forever()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    os.umask(0o077)
    if len(argv) != 1:
        sys.stderr.write("usage: python3 -m armswarm_core.registry.registry_token CONFIG\n")
        return 2
    serve(argv[0])
    return 0


if __name__ == "__main__":  # pragma: no cover - the systemd unit's entry point
    sys.exit(main())
