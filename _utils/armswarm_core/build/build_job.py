"""One image build on one node: unpack the context, pin parents, build, push.

The runner packs the image's directory as a compressed tar and serves it from the master's
file server under its SHA-256 (the job names it and its hash, never carries it); the node
fetches it, refuses it unless its hash is the one named, builds it with its own dockerd, pushes
the dated tag and answers with the pushed digest. Errors that another try may
cure (the registry or the network) are marked ``transient`` so the runner retries them.
"""

import base64
import gzip
import hashlib
import io
import json
import os
import platform as host_platform
import re
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

from armswarm_core import ArmswarmError
from armswarm_core.build import dockerfile
from armswarm_core.common import architectures, files

try:
    import docker.errors
except ImportError:  # pragma: no cover - the module's __virtual__ reports it
    docker = None


LOG_TAIL = 40
SCRATCH_HINT = (
    "Docker's classic builder records the engine's own platform for an ARG, ENV or LABEL "
    "step directly after FROM scratch: put an ADD or COPY first, e.g. "
    "FROM scratch / COPY README / / ARG TARGETARCH / ADD rootfs-${TARGETARCH}.tar /"
)
PUSH_TRIES = 4


# Messages of failures that are about reaching something, not about the image.
TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "i/o timeout",
    "tls handshake timeout",
    "no route to host",
    "temporary failure",
    "service unavailable",
    "502 bad gateway",
    "503 service",
    "eof",
    "timeout",
    "too many requests",
)


def is_transient(message: str) -> bool:
    lower = message.lower()
    return any(marker in lower for marker in TRANSIENT_MARKERS)


def pack_bytes(directory) -> bytes:
    """A build context as a gzip tar (what the runner serves). A symlink whose target could not
    be unpacked safely (absolute, or through ``..``) is sent as what it points to when that is
    inside the context, and left out otherwise (the tree's plan lists it): the node refuses
    such links."""
    directory = Path(directory).resolve()
    buf = io.BytesIO()
    # mtime=0: the same tree packs to the same bytes (its hash names it) in any second.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w") as tar:
            tar.add(str(directory), arcname=".", filter=_safe_links(directory))
    return buf.getvalue()


def pack(directory) -> str:
    """:func:`pack_bytes` as base64 (a context given by hand to ``imagebuild.build``)."""
    return base64.b64encode(pack_bytes(directory)).decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value) -> bool:
    return isinstance(value, str) and bool(_SHA256.match(value))


def verified(data: bytes, expected) -> bytes:
    """``data`` when its SHA-256 is ``expected`` (64 hex digits); else ArmswarmError: a
    context that is not the one the job names is never unpacked."""
    if not is_sha256(expected):
        raise ArmswarmError(f"context_sha256 must be 64 lowercase hex digits, not {expected!r}")
    got = sha256(data)
    if got != expected:
        raise ArmswarmError(
            f"build context: its sha256 is {got}, the job names {expected}: refused"
        )
    return data


def _safe_links(directory: Path):
    def check(member):
        if not member.issym():
            return member
        link = PurePosixPath(member.linkname)
        if not link.is_absolute() and ".." not in link.parts:
            return member
        try:
            target = (directory / member.name).resolve()
        except (RuntimeError, OSError):  # a symlink loop
            return None
        if not (target == directory or directory in target.parents) or not target.exists():
            return None
        if target.is_dir():
            return None  # a directory is not copied through a link (it could loop)
        # a regular file now: tarfile reads it through the link, i.e. the target's content
        member.type, member.linkname = tarfile.REGTYPE, ""
        member.size = target.stat().st_size
        return member

    return check


def _unpack(context, dest: Path):
    """Unpack a context: the gzip tar's bytes, or their base64 (given by hand)."""
    data = context if isinstance(context, bytes) else base64.b64decode(context)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            # Refused: absolute names, "..", devices, and links that are absolute or use "..".
            # Without ".." no link can point above the build directory, whatever the order in
            # which links and files are extracted (a check by resolving paths could not see
            # links that the archive itself creates).
            parts = PurePosixPath(member.name).parts
            if member.name.startswith("/") or ".." in parts or member.isdev():
                raise ArmswarmError(f"build context: refusing {member.name}")
            if member.issym() or member.islnk():
                link = PurePosixPath(member.linkname)
                if link.is_absolute() or ".." in link.parts:
                    raise ArmswarmError(
                        f"build context: refusing link {member.name} -> {member.linkname}"
                    )
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.11.4 (Debian 12's node Python) has no extraction filters
            tar.extractall(dest)  # noqa: S202 - members checked above


def _inside(workdir: Path, name: str) -> Path:
    """``workdir / name`` for a relative name that stays in the build directory."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ArmswarmError(f"{name}: must be a file name inside the build context")
    return workdir / rel


def _split(ref: str) -> tuple:
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        raise ArmswarmError(f"{ref}: expected repository:tag")
    return name, tag


class Job:
    """One build. ``log`` keeps the last lines of output for the report."""

    def __init__(
        self, client, ref, registry=None, auth=None, log_tail=LOG_TAIL, platform=None, args=None
    ):
        self.client = client
        self.platform = platform  # linux/arm64 …, or None: the engine's own, unchecked
        self.platform_args = dict(args or {})  # TARGETPLATFORM … (BuildKit's values)
        self.ref = ref
        self.registry = registry
        self.auth = auth  # {"username", "password"} or None; never returned
        self.lines: list = []
        self.log_tail = log_tail
        self.push_tries = 0
        self.base_ready = None  # when the build's base was there (pulled or local)

    def _log(self, text):
        for line in str(text).splitlines():
            if line.strip():
                self.lines.append(line.rstrip())
        del self.lines[: -self.log_tail]

    def build_dockerfile(self, workdir: Path, name: str, pins: dict, build_args: dict, timeout):
        source = _inside(workdir, name)
        # bytes in, bytes out: CRLF line ends and the final newline stay as they were
        text = source.read_bytes().decode("utf-8")
        everything = {**self.platform_args, **build_args}
        pinned = dockerfile.pin(text, pins, self.registry, everything)
        parsed = dockerfile.parse(text, everything)
        # Only the platform arguments the Dockerfile declares: others would be "not consumed".
        declared = parsed.declared
        build_args = {
            **{k: v for k, v in self.platform_args.items() if k in declared},
            **build_args,
        }
        target = workdir / ".armswarm.Dockerfile"
        target.write_bytes(pinned.encode("utf-8"))
        api = self.client.api
        if self.auth and self.registry:
            # Parents come from the registry: the build's pulls use the client's stored login.
            try:
                self.client.login(registry=self.registry, **self.auth)
            except docker.errors.APIError as exc:
                raise ArmswarmError(f"login to {self.registry} failed: {exc.explanation}") from exc
        saved, api.timeout = api.timeout, timeout  # a build may take long between outputs
        try:
            stream = api.build(
                path=str(workdir),
                dockerfile=target.name,
                tag=self.ref,
                buildargs=build_args or None,
                platform=self.platform,
                # The classic builder's cache ignores the platform: the first step on scratch
                # of another platform's build would be taken, with its architecture.
                nocache=bool(self.platform and parsed.from_scratch),
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "stream" in chunk:
                    # the classic builder prints " ---> <id>" once FROM's image is there
                    if self.base_ready is None and chunk["stream"].startswith(" ---> "):
                        self.base_ready = time.time()
                    self._log(chunk["stream"])
                if "error" in chunk:
                    message = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    self._log(message)
                    if "does not match the specified platform" in message and parsed.from_scratch:
                        message += f" ({SCRATCH_HINT})"
                    raise ArmswarmError(f"build failed: {message.strip()}")
        except docker.errors.DockerException as exc:
            raise ArmswarmError(f"build failed: {exc}") from exc
        finally:
            api.timeout = saved

    def build_script(self, workdir: Path, script: str, timeout):
        path = _inside(workdir, script)
        argv = [str(path)] if os.access(path, os.X_OK) else ["/bin/sh", str(path)]
        env = {
            **os.environ,
            **self.platform_args,
            "ARMSWARM_IMAGE": self.ref,
            "ARMSWARM_REGISTRY": self.registry or "",
        }
        # The login for the docker CLI in the script lives outside the build context: a
        # script that sends its directory to `docker build` never ships the credentials.
        with tempfile.TemporaryDirectory(prefix="armswarm-docker-") as config:
            if self.auth and self.registry:
                secret = f"{self.auth['username']}:{self.auth['password']}".encode()
                auths = {"auths": {self.registry: {"auth": base64.b64encode(secret).decode()}}}
                files.write(Path(config) / "config.json", json.dumps(auths), 0o600)
                env["DOCKER_CONFIG"] = config
            try:
                proc = subprocess.run(
                    argv,
                    cwd=path.parent,  # the image's directory, also when the context is above it
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise ArmswarmError(f"build script {script} ran longer than {timeout} s") from exc
        self._log(proc.stdout)
        self._log(proc.stderr)
        if proc.returncode != 0:
            raise ArmswarmError(f"build script {script} exited {proc.returncode}")
        try:
            self.client.images.get(self.ref)
        except docker.errors.ImageNotFound:
            raise ArmswarmError(
                f"build script {script} succeeded but made no image {self.ref} "
                "(it must create the image named in $ARMSWARM_IMAGE)"
            ) from None

    def check_platform(self):
        """The built image's config must say the platform asked for (an engine that ignored
        it, or a script that imported a root filesystem of another architecture)."""
        if not self.platform:
            return
        attrs = self.client.images.get(self.ref).attrs
        got = "/".join(
            str(attrs.get(k) or "") for k in ("Os", "Architecture", "Variant") if attrs.get(k)
        )
        if not architectures.matches(
            self.platform, attrs.get("Architecture"), attrs.get("Variant"), attrs.get("Os")
        ):
            message = (
                f"platform check: {self.ref} was built as {got or 'no platform'}, but "
                f"{self.platform} was asked for (its config says architecture "
                f"{attrs.get('Architecture')!r}, variant {attrs.get('Variant') or ''!r}); "
                "not pushed"
            )
            self._log(message)
            raise ArmswarmError(message)

    def push(self) -> str:
        """Push with retries and backoff; returns the pushed manifest digest."""
        repo, tag = _split(self.ref)
        delay, last = 2.0, ""
        for attempt in range(1, PUSH_TRIES + 1):
            self.push_tries = attempt
            digest, error = None, None
            try:
                for chunk in self.client.api.push(
                    repo, tag=tag, stream=True, decode=True, auth_config=self.auth
                ):
                    if "error" in chunk:
                        error = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    digest = (chunk.get("aux") or {}).get("Digest") or digest
            except docker.errors.DockerException as exc:
                error = str(exc)
            if not error and digest:
                return digest
            last = (error or "no digest in the push answer").strip()
            self._log(f"push {attempt}/{PUSH_TRIES} failed: {last}")
            if attempt < PUSH_TRIES:
                time.sleep(delay)
                delay *= 2
        raise ArmswarmError(f"push of {self.ref} failed {PUSH_TRIES} times: {last}")


def build_platform(client) -> str | None:
    """The platform the node's engine runs natively (BUILDPLATFORM): what dockerd reports,
    else this machine's."""
    try:
        machine = client.info().get("Architecture") or ""
    except docker.errors.DockerException:
        machine = ""
    return architectures.oci_platform(machine or host_platform.machine())


def failed(image: str, ref: str, error: str, transient: bool) -> dict:
    """The answer of a job that could not start its build (its context was not fetched or
    not the one named): as :func:`run` answers a failed build."""
    now = time.time()
    return {
        "image": image,
        "ref": ref,
        "status": "failed",
        "transient": transient,
        "error": error,
        "started": now,
        "finished": now,
        "seconds": 0.0,
        "push_tries": 0,
        "log": [],
    }


def run(
    client,
    image: str,
    ref: str,
    context,
    dockerfile_name=None,
    script=None,
    pins=None,
    build_args=None,
    registry=None,
    auth=None,
    timeout=1800,
    on_built=None,
    platform=None,
) -> dict:
    """Build ``image`` as ``ref`` for ``platform`` from ``context`` (the gzip tar's bytes, or
    their base64) and push it. Never raises for a failed
    build: the answer says ``status`` (``ok`` or ``failed``), ``error`` and whether it is
    ``transient``. ``on_built()`` is called between the build and the push (the runner may
    then start a child here on the local image); its failure only costs that head start."""
    started = time.time()
    answer = {"image": image, "ref": ref, "status": "failed", "transient": False}
    job = Job(client, ref, registry=registry, auth=auth)
    phase = "build"
    try:
        if platform:
            wanted = architectures.platform(platform)
            if wanted is None:
                raise ArmswarmError(f"{platform!r} is not a known platform")
            job.platform = answer["platform"] = wanted
            job.platform_args = architectures.build_args(wanted, build_platform(client))
        with tempfile.TemporaryDirectory(prefix="armswarm-build-") as tmp:
            workdir = Path(tmp)
            _unpack(context, workdir)
            if script:
                job.build_script(workdir, script, timeout)
            else:
                job.build_dockerfile(
                    workdir, dockerfile_name or "Dockerfile", pins or {}, build_args or {}, timeout
                )
            job.check_platform()
        built = time.time()
        phase = "push"
        if on_built is not None:
            try:
                on_built()
            except Exception as exc:  # noqa: BLE001 - a lost notice only costs time
                job._log(f"could not announce the finished build: {exc}")
        answer["digest"] = job.push()
        answer["status"] = "ok"
        answer["build_seconds"] = round(built - started, 3)
        if job.base_ready is not None:
            answer["pull_seconds"] = round(job.base_ready - started, 3)
        answer["push_seconds"] = round(time.time() - built, 3)
    except (
        ArmswarmError,
        OSError,
        tarfile.TarError,
        ValueError,
        docker.errors.DockerException,
    ) as exc:
        answer["error"] = str(exc)
        # A push that keeps failing, or a build that could not fetch its base, is about the
        # network or the registry; a failing RUN step is not.
        about_registry = any(w in str(exc).lower() for w in ("pull", "manifest", "login"))
        answer["transient"] = phase == "push" or about_registry and is_transient(str(exc))
    answer["started"] = started
    answer["finished"] = time.time()
    answer["seconds"] = round(answer["finished"] - started, 3)
    answer["push_tries"] = job.push_tries
    answer["log"] = job.lines
    return answer
