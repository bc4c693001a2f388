"""The cluster registry over its HTTP API v2: listing, dated tags, retention.

``armswarm:registry`` in the master config and pillar (merged key by key, see
:mod:`armswarm_core.registry.registry_settings`); the client's keys:

.. code-block:: yaml

    armswarm:
      registry:
        host: registry.local.lan:5000   # what image references start with
        url: https://registry.local.lan:5000   # default: https://<host>
        ca_file: /etc/docker/certs.d/registry.local.lan:5000/ca.crt
        username: builder               # optional basic auth …
        password: …                     # … never shown in returns or logs
        clients:                        # per use (pull, push, delete), else username/password
          delete: {username: janitor, password: …}
        tag_format: "%Y%m%d"            # dated tags, UTC
        keep: 7                         # retention: dated tags kept per repository
"""

import hashlib
import json
import re
import time
from dataclasses import dataclass

from armswarm_core import ArmswarmError
from armswarm_core.common import architectures
from armswarm_core.registry import registry_settings

try:
    import requests

    HAS_REQUESTS = True
except ImportError:  # pragma: no cover - exercised by __virtual__
    requests = None
    HAS_REQUESTS = False
from armswarm_core.registry import tag_retention

# Ask for every manifest kind, or the registry may answer with a converted schema and a
# digest that no tag points to.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


def image_index(manifests: list) -> tuple:
    """``(body, media type)`` of the index over per-platform manifests (``[(platform,
    media type, size, digest)]``): a Docker manifest list when every manifest is a Docker
    v2 manifest (what dockerd pushes), otherwise an OCI index. Entries are in platform order
    and carry os, architecture and variant."""
    if not manifests:
        raise ArmswarmError("an image index needs at least one manifest")
    docker = all(media == DOCKER_MANIFEST for _, media, _, _ in manifests)
    entries = []
    for platform, media, size, digest in sorted(manifests, key=lambda m: str(m[0])):
        os_, arch, variant = architectures.parts(platform)
        described = {"architecture": arch, "os": os_, **({"variant": variant} if variant else {})}
        entries.append({"mediaType": media, "size": size, "digest": digest, "platform": described})
    media_type = DOCKER_LIST if docker else OCI_INDEX
    body = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    return json.dumps(body, indent=3).encode(), media_type


_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


@dataclass
class Settings:
    host: str
    url: str
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    tag_format: str = tag_retention.DEFAULT_TAG_FORMAT
    keep: int = tag_retention.DEFAULT_KEEP

    def __repr__(self):  # never print the password
        return f"Settings(host={self.host!r}, url={self.url!r}, username={self.username!r})"


def settings(opts=None, pillar=None, use: str = "push", **overrides) -> Settings:
    """The client's view of ``armswarm:registry``
    (:func:`armswarm_core.registry.registry_settings.settings`: defaults < opts < pillar <
    ``overrides``, key by key, e.g. the host in the master config, the credentials in pillar),
    with the credentials for ``use``: ``push`` (tag moves, index puts), ``delete``
    (retention) or ``pull`` (:func:`armswarm_core.registry.registry_settings.credentials`)."""
    conf = registry_settings.settings(opts, pillar, **overrides)
    username, password = registry_settings.credentials(conf, use)
    host = conf["host"]
    if not host:
        raise ArmswarmError("armswarm:registry:host is not set (e.g. registry.local.lan:5000)")
    return Settings(
        host=host.rstrip("/"),
        url=(conf["url"] or f"https://{host}").rstrip("/"),
        ca_file=conf["ca_file"] or None,
        username=username or None,
        password=password or None,
        tag_format=conf["tag_format"] or tag_retention.DEFAULT_TAG_FORMAT,
        keep=conf["keep"],
    )


# -- the API ----------------------------------------------------------------------------------
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_REPO_PATH = re.compile(r"/v2/(.+?)/(?:manifests|blobs|tags)/")


def challenge(header: str) -> dict | None:
    """``{realm, service, scope, error}`` of a ``WWW-Authenticate: Bearer …`` header, None for
    another scheme (Basic: an htpasswd registry)."""
    scheme, _, params = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = dict(_CHALLENGE.findall(params))
    return found if found.get("realm") else None


def scope_key(method: str, url: str) -> tuple:
    """Which token a request needs, before the registry says so: (repository or catalog,
    read / write / delete). One token per key, so a run asks the token server once per
    repository and kind of access."""
    path = url.split("?", 1)[0]
    if path.endswith("/v2/_catalog"):
        return ("registry:catalog", "read")
    found = _REPO_PATH.search(path)
    kind = {"GET": "read", "HEAD": "read", "DELETE": "delete"}.get(method, "write")
    return (found.group(1) if found else "", kind)


class Registry:
    """A small registry API v2 client (TLS with the cluster CA): basic auth for an htpasswd
    registry, and for a token one the bearer dance (a ``401`` with a ``Bearer`` challenge:
    a token for the challenged scope from its realm, with the credentials, then the request
    again)."""

    def __init__(self, conf: Settings, timeout: float = 30, retries: int = 3):
        if not HAS_REQUESTS:
            raise ArmswarmError("the requests package is not installed")
        self.conf = conf
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        # Passed with every request: a session-wide verify loses to REQUESTS_CA_BUNDLE.
        self.verify = conf.ca_file or True
        self.basic = (conf.username, conf.password or "") if conf.username else None
        self._tokens: dict = {}  # scope key -> (token, expires at)

    def _token(self, found: dict) -> tuple[str, float]:
        """``(token, expires at)`` for the challenge ``found``, from its realm (the token
        server)."""
        params = {"service": found.get("service", "")}
        if found.get("scope"):
            params["scope"] = found["scope"]
        try:
            response = self.session.get(
                found["realm"],
                params=params,
                auth=self.basic,
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.RequestException as exc:
            raise ArmswarmError(
                f"registry token server {found['realm']} unreachable: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            who = f"user {self.conf.username}" if self.conf.username else "no credentials"
            raise ArmswarmError(
                f"registry token server {found['realm']}: HTTP {response.status_code} for "
                f"{who} (scope {found.get('scope') or '-'})"
            )
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise ArmswarmError(f"registry token server {found['realm']} sent no token")
        return token, time.monotonic() + max(int(body.get("expires_in") or 60) - 10, 5)

    def _send(self, method, url, key, **kwargs):
        held = self._tokens.get(key)
        if held and held[1] > time.monotonic():
            # a token, not basic auth: requests' auth= would overwrite this header
            headers = {**(kwargs.get("headers") or {}), "Authorization": f"Bearer {held[0]}"}
            rest = {k: v for k, v in kwargs.items() if k != "headers"}
            return self.session.request(
                method, url, timeout=self.timeout, verify=self.verify, headers=headers, **rest
            )
        return self.session.request(
            method, url, timeout=self.timeout, verify=self.verify, auth=self.basic, **kwargs
        )

    def _request(self, method, path, ok=(200,), **kwargs):
        url = path if path.startswith("http") else f"{self.conf.url}/v2/{path}"
        key = scope_key(method, url)
        delay = 1.0
        bearer_tries = 0
        attempt = 0
        while attempt < self.retries:
            try:
                response = self._send(method, url, key, **kwargs)
                found = (
                    challenge(response.headers.get("WWW-Authenticate", ""))
                    if response.status_code == 401
                    else None
                )
                if found is not None and bearer_tries < 2:
                    # a token registry: fetch a token for what it asked, then again (a second
                    # time when a held token lacked the scope, e.g. it expired early)
                    bearer_tries += 1
                    self._tokens[key] = self._token(found)
                    continue
            except requests.RequestException as exc:
                if attempt + 1 == self.retries:
                    raise ArmswarmError(
                        f"registry {self.conf.url} unreachable after {self.retries} tries: "
                        f"{type(exc).__name__}: {str(exc)[:200]}"
                    ) from None
                attempt += 1
                time.sleep(delay)
                delay *= 2
                continue
            if response.status_code in ok:
                return response
            if response.status_code >= 500 and attempt + 1 < self.retries:
                attempt += 1
                time.sleep(delay)
                delay *= 2
                continue
            raise ArmswarmError(
                f"registry {method} {url.split('?')[0]}: HTTP {response.status_code} "
                f"{response.text[:200].strip()}"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _paged(self, path, key):
        out, url = [], f"{path}?n=1000"
        while url:
            response = self._request("GET", url)
            out.extend(response.json().get(key) or [])
            found = _NEXT.search(response.headers.get("Link", ""))
            url = None
            if found:
                nxt = found.group(1)
                url = nxt if nxt.startswith("http") else self.conf.url + nxt
        return out

    def ping(self) -> bool:
        self._request("GET", "")
        return True

    def catalog(self) -> list:
        return sorted(self._paged("_catalog", "repositories"))

    def tags(self, repo: str) -> list:
        try:
            return sorted(self._paged(f"{repo}/tags/list", "tags"))
        except ArmswarmError as exc:
            if "HTTP 404" in str(exc):
                return []
            raise

    def manifest(self, repo: str, ref: str) -> tuple:
        """``(body bytes, media type, digest)`` of a tag or digest."""
        response = self._request(
            "GET", f"{repo}/manifests/{ref}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        digest = response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(response.content).hexdigest()
        )
        return response.content, response.headers.get("Content-Type", ""), digest

    def digest(self, repo: str, ref: str) -> str | None:
        try:
            response = self._request(
                "HEAD", f"{repo}/manifests/{ref}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
            )
        except ArmswarmError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise
        return response.headers.get("Docker-Content-Digest")

    def tag_digests(self, repo: str) -> dict:
        return {tag: self.digest(repo, tag) for tag in self.tags(repo)}

    def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> str:
        response = self._request(
            "PUT",
            f"{repo}/manifests/{tag}",
            ok=(201,),
            data=body,
            headers={"Content-Type": media_type},
        )
        return response.headers.get("Docker-Content-Digest", "")

    def retag(self, repo: str, source: str, tag: str) -> str:
        """Point ``tag`` at the manifest of ``source`` (no layers move)."""
        body, media_type, _ = self.manifest(repo, source)
        return self.put_manifest(repo, tag, body, media_type)

    def delete(self, repo: str, digest: str):
        if not digest.startswith("sha256:"):
            raise ArmswarmError(f"refusing to delete {repo}:{digest}: not a digest")
        self._request("DELETE", f"{repo}/manifests/{digest}", ok=(202,))

    def untag(self, repo: str, tag: str):
        """Remove ``tag`` without touching the manifest it points to: move it onto a unique
        empty manifest, then delete that one (the registry can only delete by digest)."""
        config_blob = json.dumps(
            {"architecture": "none", "os": "none", "armswarm-untag": f"{tag}@{time.time()}"}
        ).encode()
        config_digest = self._upload_blob(repo, config_blob)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(config_blob),
                    "digest": config_digest,
                },
                "layers": [],
            }
        ).encode()
        digest = self.put_manifest(
            repo, tag, body, "application/vnd.docker.distribution.manifest.v2+json"
        )
        self.delete(repo, digest or "sha256:" + hashlib.sha256(body).hexdigest())

    def _upload_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = self._request("POST", f"{repo}/blobs/uploads/", ok=(202,))
        location = start.headers["Location"]
        if not location.startswith("http"):
            location = self.conf.url + location
        separator = "&" if "?" in location else "?"
        self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            ok=(201,),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def put_index(self, repo: str, tags, manifests: dict) -> str:
        """Put one image index over ``manifests`` (platform → digest of a manifest in
        ``repo``) under each of ``tags``; returns the index's digest."""
        described = []
        for platform, digest in sorted(manifests.items()):
            body, media_type, _ = self.manifest(repo, digest)
            described.append((platform, media_type.split(";")[0].strip(), len(body), digest))
        body, media_type = image_index(described)
        digest = ""
        for tag in tags:
            digest = self.put_manifest(repo, tag, body, media_type) or digest
        return digest or "sha256:" + hashlib.sha256(body).hexdigest()

    def index_children(self, repo: str, ref: str) -> list:
        """The manifest digests an index (or manifest list) references; [] for an image
        manifest or a tag or digest that is gone."""
        try:
            body, media_type, _ = self.manifest(repo, ref)
        except ArmswarmError as exc:
            if "HTTP 404" in str(exc):
                return []
            raise
        try:
            data = json.loads(body)
        except ValueError:
            return []
        if media_type.split(";")[0].strip() not in INDEX_TYPES and data.get("mediaType") not in (
            INDEX_TYPES
        ):
            return []
        return [m["digest"] for m in data.get("manifests") or [] if m.get("digest")]

    def layers(self, repo: str, ref: str) -> list:
        """Layer digests of an image manifest (for a single-platform image)."""
        body, _, _ = self.manifest(repo, ref)
        return [layer["digest"] for layer in json.loads(body).get("layers", [])]
