"""The lab's node images: Debian from mmdebstrap, systemd as PID 1, dockerd, a salt-minion.

Two releases: Debian 12 bookworm (Docker 20.10, Python 3.11) and Debian 13 trixie (Docker 26.1
with buildx, Python 3.13, no ``crypt`` module), so one swarm runs both engines as a cluster in
the middle of an upgrade does. No image can be pulled here, so each root filesystem is made with
mmdebstrap (debootstrap where it is missing) and turned into an image with ``docker import``.
An image is tagged with a hash of everything that goes into it, so a second ``up`` (or a CI
run on the same machine) reuses it.
"""

import concurrent.futures
import fcntl
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Bump when the build steps change in a way the hashed inputs below do not show.
# 7: mmdebstrap instead of debootstrap (the same packages, a third of the time).
RECIPE = "7"
# The release of the host's own apt sources (where the Debian mirror is read from) and of the
# MariaDB test image.
SUITE = "bookworm"
# The node images' releases: the Python each ships, for the minion venv's wheels.
RELEASES = {
    "bookworm": {"version": "12", "python": "3.11"},
    "trixie": {"version": "13", "python": "3.13"},
}
DEFAULT_RELEASE = "bookworm"
IMAGE_REPO = "armswarm-lab-node"
LABEL = "io.armswarm.lab.node-image"

PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "docker.io",
    # /bin/busybox: image builds start from scratch (nothing can be pulled here)
    "busybox-static",
    # the example tree's base images: real Debian root filesystems of each board's platform
    "mmdebstrap",
    # mkfs.ext4 for the backup tests' frozen share (trixie's minimal root has no e2fsprogs)
    "e2fsprogs",
    "iproute2",
    "iptables",
    "procps",
    "kmod",
    "python3",
    "python3-venv",
    "ca-certificates",
)
# Per release, on top of PACKAGES: trixie splits the docker CLI out of docker.io (a Recommends,
# which a bootstrap does not install) and ships BuildKit's client (buildx).
RELEASE_PACKAGES = {
    "bookworm": (),
    "trixie": ("docker-cli", "docker-buildx"),
}
# The minion's Python dependencies, pinned to what the host's venv runs so master and minions match.
MINION_DISTRIBUTIONS = ("salt", "docker", "PyYAML", "requests")

# systemd cannot remount the read-only /sys and cgroup mounts Docker gives an unprivileged
# container, and nested containers need them writable: remount, then hand over to systemd.
INIT_SCRIPT = """#!/bin/sh
mount -o remount,rw /sys 2>/dev/null || true
for m in $(awk '$3 == "cgroup" {print $2}' /proc/self/mounts); do
    mount -o remount,bind,rw "$m" || echo "armswarm-lab-init: cannot remount $m rw" >&2
done
exec /lib/systemd/systemd --system
"""

MINION_UNIT = """[Unit]
Description=The Salt Minion (armswarm lab)
After=network.target

[Service]
KillMode=process
Type=simple
LimitNOFILE=8192
ExecStart=/opt/salt/bin/salt-minion
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

# Units that make no sense in a container, or that would race the tests (apt locks).
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "console-getty.service",
    "getty@tty1.service",
    "systemd-remount-fs.service",
    "e2scrub_reap.service",
)


def host_apt_mirror() -> str:
    """The Debian mirror the host's apt uses (the lab must use what the machine can reach)."""
    override = os.environ.get("ARMSWARM_LAB_MIRROR")
    if override:
        return override
    candidates = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        text = path.read_text(errors="replace")
        for stanza in text.split("\n\n"):
            if (
                re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M)
                and "debian-security" not in stanza
            ):
                match = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if match:
                    return match.group(1)
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text(errors="replace").splitlines():
            match = re.match(rf"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", line)
            if match and "security" not in match.group(1):
                return match.group(1)
    raise RuntimeError(
        "cannot find the Debian mirror in the host's apt sources; set ARMSWARM_LAB_MIRROR"
    )


def minion_requirements() -> list[str]:
    """``name==version`` for the minion's Python packages, as installed on the host."""
    return [f"{dist}=={importlib.metadata.version(dist)}" for dist in MINION_DISTRIBUTIONS]


def release_packages(release: str) -> tuple:
    return PACKAGES + RELEASE_PACKAGES[release]


def content_hash(mirror: str, requirements: list[str], release: str = DEFAULT_RELEASE) -> str:
    recipe = {
        "recipe": RECIPE,
        # The bookworm recipe hashes as it always did: a cached image stays valid.
        "suite": release,
        "mirror": mirror,
        "packages": release_packages(release) if release != "bookworm" else PACKAGES,
        "requirements": requirements,
        "init": INIT_SCRIPT,
        "unit": MINION_UNIT,
        "masked": MASKED_UNITS,
    }
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def image_tag(digest: str, release: str = DEFAULT_RELEASE) -> str:
    # bookworm keeps the bare hash (what a cached image is already tagged with).
    return f"{IMAGE_REPO}:{digest}" if release == "bookworm" else f"{IMAGE_REPO}:{release}-{digest}"


def _run(cmd, **kwargs):
    log.debug("run: %s", cmd)
    return subprocess.run(cmd, check=True, **kwargs)


def _chroot(rootfs: Path, *argv: str, **kwargs):
    # env -i: the host's PIP_* variables and pip config point at paths the chroot lacks.
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
    env.append("DEBIAN_FRONTEND=noninteractive")
    _run(["chroot", str(rootfs), *env, *argv], **kwargs)


def _chroot_quiet(rootfs: Path, *argv: str):
    """``_chroot`` with its output kept for the error (apt in a chroot without /dev/pts
    complains on stderr of a log it cannot write)."""
    try:
        _chroot(rootfs, *argv, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        tail = ((exc.stdout or "") + (exc.stderr or "")).strip()[-3000:]
        raise RuntimeError(f"in {rootfs}: {' '.join(argv)} failed:\n{tail}") from exc


def build_wheelhouse(cache_dir: Path, requirements: list[str]) -> Path:
    """Wheels for the minion venv, built on the host (pip inside a chroot has no index config)."""
    wheelhouse = cache_dir / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--find-links",
        str(wheelhouse),
        "-w",
        str(wheelhouse),
        *requirements,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{proc.stdout}{proc.stderr}")
    return wheelhouse


def _platform_tags(machine: str) -> list[str]:
    # Every manylinux level a glibc of Debian 13 (2.41) runs, newest first.
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(41, 16, -1)]
    return [*tags, f"manylinux2014_{machine}", f"linux_{machine}"]


def _pip_download_for(python: str, wheelhouse: Path, host_wheelhouse: Path, requirements):
    tag = "cp" + python.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        tag,
    ]
    for platform_tag in _platform_tags(os.uname().machine):
        cmd += ["--platform", platform_tag]
    cmd += ["--find-links", str(host_wheelhouse), "--find-links", str(wheelhouse)]
    cmd += ["-d", str(wheelhouse), *requirements]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


# Compilers for the sdists that have no wheel for the target Python (salt's timelib), removed
# from the root filesystem again afterwards.
BUILD_PACKAGES = ("gcc", "libc6-dev", "python3-dev")
BUILD_REQUIREMENTS = ("setuptools", "wheel", "Cython")


def build_wheelhouse_for(
    rootfs: Path, cache_dir: Path, requirements: list[str], python: str, host_wheelhouse: Path
) -> Path:
    """Wheels for a minion venv whose Python is not the host's (trixie's 3.13).

    pip on the host resolves for the target interpreter (``--python-version``, binary wheels
    only); the wheels the host built from sdists (salt itself, pure Python) come from the host's
    wheelhouse. A C extension published only as an sdist (timelib) is compiled inside the
    target root filesystem, as ``pip install salt`` on such a board compiles it, and kept in
    the wheelhouse, so this happens once per machine.
    """
    wheelhouse = cache_dir / f"wheelhouse-cp{python.replace('.', '')}"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    compiled = set()
    while True:
        proc = _pip_download_for(python, wheelhouse, host_wheelhouse, requirements)
        if proc.returncode == 0:
            return wheelhouse
        match = re.search(r"No matching distribution found for ([A-Za-z0-9_.\-]+)", proc.stderr)
        name = match.group(1) if match else None
        if not name or name in compiled:
            raise RuntimeError(
                f"pip download for Python {python} failed:\n{proc.stdout}{proc.stderr}"
            )
        compiled.add(name)
        _compile_in_rootfs(rootfs, name, wheelhouse, python)


def _compile_in_rootfs(rootfs: Path, requirement: str, wheelhouse: Path, python: str):
    sdists = rootfs / "tmp/sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            # Only this package as an sdist: ":all:" would also reach the build environment
            # pip sets up to read its metadata, and compile Cython from source (minutes).
            f"--no-binary={requirement}",
            "-d",
            str(sdists),
            requirement,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip download of {requirement}'s sdist failed:\n{proc.stderr}")
    # Its build backend as wheels for the target Python (timelib's setup needs Cython).
    proc = _pip_download_for(python, sdists, sdists, BUILD_REQUIREMENTS)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download of {BUILD_REQUIREMENTS} failed:\n{proc.stderr}")
    _chroot_quiet(
        rootfs, "apt-get", "install", "-y", "-q", "--no-install-recommends", *BUILD_PACKAGES
    )
    try:
        out = rootfs / "tmp/built"
        out.mkdir(exist_ok=True)
        _chroot(rootfs, "python3", "-m", "venv", "/tmp/buildenv")
        _chroot(
            rootfs,
            # -O0: timelib is one large generated parser, used only to parse dates; an
            # optimised build takes minutes of a first `up`.
            "env",
            "CFLAGS=-O0",
            "/tmp/buildenv/bin/pip",
            "wheel",
            "--quiet",
            "--no-index",
            "--find-links",
            "/tmp/sdists",
            "--no-deps",
            "-w",
            "/tmp/built",
            requirement,
        )
        for wheel in out.glob("*.whl"):
            shutil.copy2(wheel, wheelhouse / wheel.name)
    finally:
        _chroot_quiet(rootfs, "apt-get", "purge", "-y", "-q", "--autoremove", *BUILD_PACKAGES)
        for leftover in ("tmp/sdists", "tmp/built", "tmp/buildenv"):
            shutil.rmtree(rootfs / leftover, ignore_errors=True)


def _write(rootfs: Path, path: str, text: str, mode: int = 0o644):
    target = rootfs / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def _configure_rootfs(rootfs: Path):
    _write(rootfs, "/usr/local/sbin/armswarm-lab-init", INIT_SCRIPT, 0o755)
    _write(rootfs, "/etc/systemd/system/salt-minion.service", MINION_UNIT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "salt-minion.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/salt-minion.service")
    for unit in MASKED_UNITS:
        masked = rootfs / "etc/systemd/system" / unit
        if not masked.is_symlink():
            masked.symlink_to("/dev/null")
    # dpkg without fsync, as in Docker's own Debian images: a node's disk goes with its
    # container, and five nodes unpacking at once on a small host spend a fifth of armnode's
    # apt time in syncs (measured: 13.7 s -> 11.9 s for the mail relay's packages).
    _write(rootfs, "/etc/dpkg/dpkg.cfg.d/armswarm-lab-unsafe-io", "force-unsafe-io\n")
    # An empty machine-id makes systemd create a fresh one per node at boot.
    (rootfs / "etc/machine-id").write_text("")
    for link_name in ("salt-call", "salt-minion"):
        target = rootfs / "usr/local/bin" / link_name
        if not target.is_symlink():
            target.symlink_to(f"/opt/salt/bin/{link_name}")
    (rootfs / "etc/salt/minion.d").mkdir(parents=True, exist_ok=True)


# mmdebstrap's hook that merges /usr as debootstrap does (usr-is-merged), not with the usrmerge
# package, which pulls perl into the root; bookworm's mmdebstrap has it.
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/maybe-merged-usr")


def bootstrap_argv(
    rootfs: Path, suite: str, packages, mirror: str, keep_lists: bool = False
) -> list[str]:
    """A minbase Debian root of ``suite`` with ``packages``: mmdebstrap (apt downloads in
    parallel and dpkg unpacks once: 22 s against debootstrap's 51 s for a node's packages,
    measured here) where it is installed, debootstrap otherwise; the same packages either way.

    ``keep_lists``: the root keeps apt's package lists, as debootstrap leaves them and as a
    board's image has them after its first ``apt update``."""
    include = f"--include={','.join(packages)}"
    if shutil.which("mmdebstrap"):
        hooks = [f"--hook-dir={MERGED_USR_HOOK}"] if MERGED_USR_HOOK.is_dir() else []
        skip = ["--skip=cleanup/apt/lists"] if keep_lists else []
        return [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            *hooks,
            *skip,
            include,
            suite,
            str(rootfs),
            mirror,
        ]
    return ["debootstrap", "--variant=minbase", include, suite, str(rootfs), mirror]


def bootstrap(rootfs: Path, suite: str, packages, mirror: str, keep_lists: bool = False):
    argv = bootstrap_argv(rootfs, suite, packages, mirror, keep_lists)
    proc = subprocess.run(
        argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-3000:]
        raise RuntimeError(f"{argv[0]} {suite} failed (exit {proc.returncode}):\n{tail}")


def build_rootfs(
    rootfs: Path,
    mirror: str,
    wheelhouse: Path,
    requirements: list[str],
    release: str = DEFAULT_RELEASE,
    cache_dir: Path | None = None,
):
    bootstrap(rootfs, release, release_packages(release), mirror, keep_lists=True)
    python = RELEASES[release]["python"]
    if python != f"{sys.version_info.major}.{sys.version_info.minor}":
        wheelhouse = build_wheelhouse_for(
            rootfs, cache_dir or wheelhouse.parent, requirements, python, wheelhouse
        )
    staged = rootfs / "tmp/wheelhouse"
    shutil.copytree(wheelhouse, staged)
    proc = rootfs / "proc"
    _run(["mount", "-t", "proc", "proc", str(proc)])
    try:
        _chroot(rootfs, "python3", "-m", "venv", "/opt/salt")
        _chroot(
            rootfs,
            "/opt/salt/bin/pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            "/tmp/wheelhouse",
            *requirements,
        )
    finally:
        _run(["umount", str(proc)])
    shutil.rmtree(staged)
    _configure_rootfs(rootfs)
    _run(["chroot", str(rootfs), "apt-get", "clean"])


def _import(rootfs: Path, tag: str, digest: str):
    """``tar | docker import`` with the init as CMD and the hash as a label.

    The stop signal (SIGRTMIN+3, systemd's halt) is set when the node container is created:
    ``docker import --change`` does not accept STOPSIGNAL.
    """
    changes = [
        'CMD ["/usr/local/sbin/armswarm-lab-init"]',
        "ENV container=docker",
        f"LABEL {LABEL}={digest}",
    ]
    cmd = ["docker", "import"]
    for change in changes:
        cmd += ["--change", change]
    cmd += ["-", tag]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        _run(cmd, stdin=tar.stdout, stdout=subprocess.DEVNULL)
    except BaseException:
        tar.kill()
        raise
    finally:
        tar.stdout.close()
    if tar.wait() != 0:
        raise RuntimeError("tar of the node root filesystem failed")


def ensure_node_image(
    client, cache_dir: Path, progress=print, release: str = DEFAULT_RELEASE
) -> str:
    """Return the node image tag of ``release``, building it only when no image has this
    content hash."""
    return ensure_node_images(client, cache_dir, [release], progress)[release]


def ensure_node_images(client, cache_dir: Path, releases, progress=print) -> dict:
    """``{release: image tag}``, building the missing images side by side (the bootstrap and
    apt wait on the mirror much of the time), after the host's wheelhouse they share."""
    unknown = [r for r in releases if r not in RELEASES]
    if unknown:
        raise ValueError(f"release: {unknown} not among {sorted(RELEASES)}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Labs brought up side by side (a test run beside another) build each image once.
    with open(cache_dir / ".node-images.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("waiting for another lab's node image build")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_node_images(client, cache_dir, releases, progress)


def _ensure_node_images(client, cache_dir: Path, releases, progress) -> dict:
    mirror = host_apt_mirror()
    requirements = minion_requirements()
    tags, missing = {}, {}
    for release in sorted(set(releases)):
        digest = content_hash(mirror, requirements, release)
        tags[release] = image_tag(digest, release)
        if client.images.list(filters={"label": f"{LABEL}={digest}"}):
            progress(f"node image {tags[release]} is cached")
        else:
            missing[release] = digest
    if not missing:
        return tags
    wheelhouse = build_wheelhouse(cache_dir, requirements)

    def build(release):
        tag, digest = tags[release], missing[release]
        progress(f"building node image {tag} ({release} root filesystem, minion venv)")
        begun = time.monotonic()
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f"rootfs-{release}-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            build_rootfs(rootfs, mirror, wheelhouse, requirements, release, cache_dir)
            _import(rootfs, tag, digest)
        progress(f"node image {tag} built in {time.monotonic() - begun:.0f}s")

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(missing)) as pool:
        for future in [pool.submit(build, release) for release in missing]:
            future.result()
    return tags


def tar_bytes(files: dict, mode: int = 0o644) -> bytes:
    """An in-memory tar of ``{relative path: content or (content, mode)}`` for ``put_archive``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = set()
        for name in sorted(files):
            parts = Path(name).parts
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in dirs:
                    info = tarfile.TarInfo(parent)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                    dirs.add(parent)
            data, file_mode = files[name] if isinstance(files[name], tuple) else (files[name], mode)
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = file_mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- MariaDB test image --------------------------------------------------------------------
# A database image for the backup tests: Debian's mariadb-server on a bootstrapped root (no
# image can be pulled), with the restore-on-first-start helper as image authors use it.
# 2: bootstrapped with mmdebstrap
MARIADB_RECIPE = "2"
MARIADB_PACKAGES = ("mariadb-server", "mariadb-client")
MARIADB_ENTRYPOINT = """#!/bin/sh
# Initialise an empty data directory (root password from MARIADB_ROOT_PASSWORD), then run
# mariadbd in the foreground.
set -e
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
    chown mysql:mysql /var/lib/mysql
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
    mariadbd --user=mysql --datadir=/var/lib/mysql --bootstrap <<SQL
FLUSH PRIVILEGES;
ALTER USER 'root'@'localhost' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD:?set MARIADB_ROOT_PASSWORD}';
SQL
fi
exec mariadbd --user=mysql --datadir=/var/lib/mysql --bind-address=0.0.0.0 --skip-name-resolve
"""


def helper_script() -> Path:
    """The restore-on-first-start helper shipped with the backup formula."""
    from armswarm import paths  # noqa: PLC0415 - paths imports nothing from the lab

    return paths.tree_root() / "salt" / "backup" / "files" / "armswarm-restore"


def mariadb_context(cache_dir: Path, progress=print) -> tuple[Path, str]:
    """A tar holding ``rootfs.tar`` (the MariaDB root filesystem) for ``put_archive`` into a
    node, and its content hash. Built once per hash and kept in ``cache_dir``."""
    mirror = host_apt_mirror()
    helper = helper_script().read_text()
    recipe = {
        "recipe": MARIADB_RECIPE,
        "suite": SUITE,
        "mirror": mirror,
        "packages": MARIADB_PACKAGES,
        "entrypoint": MARIADB_ENTRYPOINT,
        "helper": helper,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    context = cache_dir / f"mariadb-{digest}.tar"
    if context.exists():
        progress(f"mariadb image {digest} is cached")
        return context, digest
    progress(f"building mariadb image {digest} ({SUITE} root filesystem + mariadb-server)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="mariadb-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        bootstrap(rootfs, SUITE, MARIADB_PACKAGES, mirror)
        _run(["chroot", str(rootfs), "apt-get", "clean"])
        shutil.rmtree(rootfs / "var/lib/mysql", ignore_errors=True)
        (rootfs / "var/lib/mysql").mkdir()
        _write(rootfs, "/usr/local/bin/mariadb-entrypoint", MARIADB_ENTRYPOINT, 0o755)
        _write(rootfs, "/usr/local/bin/armswarm-restore", helper, 0o755)
        inner = Path(tmp) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "-cf", str(inner), "."])
        # Made beside it and renamed: another lab's test may be building the same one.
        partial = Path(tmp) / context.name
        with tarfile.open(partial, "w") as tar:
            tar.add(inner, arcname="rootfs.tar")
        partial.replace(context)
    progress(f"mariadb image {digest} built")
    return context, digest


MARIADB_CHANGES = (
    'ENTRYPOINT ["/usr/local/bin/armswarm-restore", "--", "/usr/local/bin/mariadb-entrypoint"]',
    "ENV ARMSWARM_BACKUP_DIR=/armswarm-backup",
    "VOLUME /var/lib/mysql",
)
