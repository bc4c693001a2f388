"""The embedded lab cluster: a salt-master and a TLS registry on the host, board nodes.

Each node is a container with its own root filesystem (Debian bookworm), systemd as PID 1, its
own dockerd and its own salt-minion. Everything the lab creates carries the label
``io.armswarm.lab=<lab name>`` (containers, volumes, networks) or lives under the lab's state
directory (master, registry, keys), so ``down`` removes exactly that.
"""

import base64
import io
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests
import salt.crypt
import yaml

from armswarm import paths
from armswarm.lab import binfmt, image, pki, report

log = logging.getLogger(__name__)

LABEL = "io.armswarm.lab"
NODE_LABEL = "io.armswarm.lab.node"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "boards"
STATE_ROOT = Path(os.environ.get("ARMSWARM_LAB_STATE", "/var/lib/armswarm-lab"))
CACHE_DIR = Path(os.environ.get("ARMSWARM_LAB_CACHE", "/var/cache/armswarm-lab"))
# Where a node's minion finds the device tree of the board it impersonates.
NODE_DEVICE_TREE = "/etc/armswarm-lab/device-tree"
# The node's /sys is the host's: states that write block-device settings get a board fixture.
NODE_SYSFS = "/etc/armswarm-lab/sys"
HOST_DOCKER_LOG = CACHE_DIR / "dockerd.log"
# Where ``saltutil.sync_utils`` puts the shared layer on a node.
SYNCED_CORE = "/var/cache/salt/minion/extmods/utils/armswarm_core/__init__.py"
# The lab's "network drive": a host directory under the lab's state directory, bind-mounted at
# this path into every node (what a mounted NFS/SMB share is on real boards).
NODE_BACKUP_SHARE = "/mnt/armswarm-backup"
# A lab-only convenience: root filesystem tarballs that image build scripts made, kept by
# content on the host across lab re-creations (salt/imagebuild/images/base/build.sh reads and
# fills it when the directory exists; on a board it does not, and every build bootstraps).
ROOTFS_CACHE = CACHE_DIR / "rootfs"
NODE_ROOTFS_CACHE = "/var/cache/armswarm/rootfs"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    board: str
    host: int  # last octet of the node's address
    # The node image's Debian release (image.RELEASES): bookworm (Docker 20.10, Python 3.11)
    # or trixie (Docker 26.1, Python 3.13).
    release: str = image.DEFAULT_RELEASE


# The example pillar (pillar/) makes node1-3 managers and node4-5 workers. The second RockPro64
# and the SOPINE run Debian 13, as their Armbian images do: one swarm, engines 20.10 and 26.1.
DEFAULT_NODES = (
    NodeSpec("node1", "odroid-hc1", 11),
    NodeSpec("node2", "rockpro64", 12),
    NodeSpec("node3", "rockpro64-extlinux", 13, release="trixie"),
    NodeSpec("node4", "sopine", 14, release="trixie"),
    NodeSpec("node5", "rpi4", 15),
)


# The boards differ in speed: each node's builds (everything its dockerd runs) get a CPU share in
# proportion to the board's multi-core throughput, ODROID-HC1 = 1.0. The values are issue 16's
# rounded relative throughputs (compare sbc-bench's Results.md, github.com/ThomasKaiser/sbc-bench:
# RK3399 2×A72+4×A53 ahead of Exynos 5422 4×A15+4×A7, then BCM2711 4×A72 at 1.5 GHz, then
# Allwinner A64 4×A53 at 1.15 GHz); the scheduler's board defaults
# (armswarm_core.build.build_settings.BOARD_SPEEDS) are the same table.
#   board               share   cap (CPUs) for builds   relative to a RockPro64
#   rockpro64           1.15    1.15                    1.0
#   odroid-hc1          1.0     1.0                     0.87
#   rpi4                0.8     0.8                     0.70
#   sopine              0.5     0.5                     0.43 (a 1-thread step: 0.5, i.e. 2× as long)
# The cap is a CFS quota on the cgroup the node's dockerd puts its containers in (dockerd
# --cgroup-parent), so the minion and dockerd themselves are never throttled; the node
# container's cpu_shares carry the same proportion when the host's CPUs are contended.
BOARD_CPU = {
    "rockpro64": 1.15,
    "rockpro64-extlinux": 1.15,
    "odroid-hc1": 1.0,
    "rpi4": 0.8,
    "sopine": 0.5,
}
CPU_PERIOD_US = 100_000
BUILD_CGROUP = "armswarm-board"
CPU_SCRIPT = f"""#!/bin/sh
# armswarm lab: cap what this node's dockerd runs at the board's CPU share ($1 µs per
# {CPU_PERIOD_US} µs); the minion and dockerd stay outside the capped cgroup.
set -e
cpu=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ {{print $2; exit}}' /proc/self/mounts)
if [ -n "$cpu" ]; then
    mkdir -p "$cpu/{BUILD_CGROUP}"
    echo {CPU_PERIOD_US} > "$cpu/{BUILD_CGROUP}/cpu.cfs_period_us"
    echo "$1" > "$cpu/{BUILD_CGROUP}/cpu.cfs_quota_us"
else
    echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
    mkdir -p /sys/fs/cgroup/{BUILD_CGROUP}
    echo "$1 {CPU_PERIOD_US}" > /sys/fs/cgroup/{BUILD_CGROUP}/cpu.max
fi
"""


def cpu_share(board: str) -> float:
    """The board's CPU share (HC1 = 1.0); an unknown board gets 1.0."""
    return BOARD_CPU.get(board, 1.0)


REGISTRY_USER = "lab"


def _bcrypt(password: str) -> str:
    # the htpasswd hash docker-registry accepts, from the host's libcrypt (through ctypes, as
    # the nodes do: Python 3.13 has no crypt module)
    from armswarm_core import ArmswarmError  # noqa: PLC0415 - the tree's shared layer
    from armswarm_core.common import password_hashes  # noqa: PLC0415
    from armswarm_core.registry import registry_settings  # noqa: PLC0415

    # the cost the registry formula uses: the registry checks the hash on every request
    cost = registry_settings.DEFAULTS["htpasswd_cost"]
    try:
        hashed = password_hashes.hash_password(password, "bcrypt", rounds=cost)
    except ArmswarmError as exc:
        raise LabError(f"cannot write the registry's htpasswd: {exc}") from exc
    if not hashed or not hashed.startswith("$2"):
        raise LabError("the host's crypt() has no bcrypt: cannot write the registry's htpasswd")
    return hashed


class LabError(RuntimeError):
    pass


def _log_progress(message):
    print(f"armswarm-lab: {message}", flush=True)


@dataclass
class Lab:
    """One lab, named so that several (a user's and the tests') can coexist."""

    name: str = "armswarm-lab"
    subnet: str = "10.77.0.0/24"
    nodes: tuple = DEFAULT_NODES
    registry_port: int = 5443
    progress: object = field(default=_log_progress, repr=False)
    # The pillar tree the master serves (default: the package's example pillar).
    pillar_root: str | None = None

    def __post_init__(self):
        net = ipaddress.ip_network(self.subnet)
        self.gateway = str(net.network_address + 1)
        self.state_dir = STATE_ROOT / self.name
        self.master_root = self.state_dir / "master"
        self.master_conf_dir = self.master_root / "etc"
        self.registry_dir = self.state_dir / "registry"
        self.pki_dir = self.state_dir / "pki"
        self.backup_share = self.state_dir / "backup-share"
        self._client = None

    # -- small helpers --------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = docker.from_env(timeout=120)
        return self._client

    @property
    def registry(self) -> str:
        return f"{self.gateway}:{self.registry_port}"

    @property
    def registry_auth(self) -> tuple[str, str]:
        """The lab registry's login (it is closed, like a deployed one): made once per lab,
        kept 0600 in its state directory; the master, every node's root and the tests use it."""
        path = self.state_dir / "registry-password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(18))
        return REGISTRY_USER, path.read_text().strip()

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    def node_address(self, node: NodeSpec) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + node.host)

    @property
    def subnet6(self) -> str:
        """The lab network's IPv6 (unique-local) subnet, made from the IPv4 one so that labs
        side by side get different ones: 10.77.9.0/24 → fd0a:4d09::/64."""
        a, b, c, _ = ipaddress.ip_network(self.subnet).network_address.packed
        return f"fd{a:02x}:{b:02x}{c:02x}::/64"

    def node_address6(self, node: NodeSpec) -> str:
        return str(ipaddress.ip_network(self.subnet6).network_address + node.host)

    def container_name(self, node: NodeSpec) -> str:
        return f"{self.name}-{node.name}"

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabError(f"no node {name!r} in lab {self.name} (nodes: {self.node_names()})")

    def node_names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def _labels(self, **extra) -> dict:
        return {LABEL: self.name, **extra}

    def _salt_bin(self, tool: str) -> str:
        return str(Path(sys.executable).parent / tool)

    # -- host dockerd ---------------------------------------------------------------------
    @staticmethod
    def ensure_host_dockerd(timeout: float = 60) -> bool:
        """Start the host's dockerd when none answers; leave a running one alone.

        Returns True when this call started it.
        """
        try:
            docker.from_env(timeout=5).ping()
            return False
        except docker.errors.DockerException:
            pass
        if not shutil.which("dockerd"):
            raise LabError("dockerd is not installed (apt-get install docker.io)")
        HOST_DOCKER_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(HOST_DOCKER_LOG, "ab") as logf:
            subprocess.Popen(
                ["dockerd"],
                stdout=logf,
                stderr=logf,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                docker.from_env(timeout=5).ping()
                return True
            except docker.errors.DockerException:
                time.sleep(0.5)
        raise LabError(f"dockerd did not come up within {timeout}s (see {HOST_DOCKER_LOG})")

    # -- state ----------------------------------------------------------------------------
    def containers(self):
        return self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.name}"})

    def is_up(self) -> bool:
        try:
            containers = self.containers()
        except docker.errors.DockerException:
            # No host dockerd answers (a freshly booted machine): nothing of the lab runs.
            return False
        running = [c for c in containers if c.status == "running"]
        return bool(
            len(running) == len(self.nodes)
            and self._pid_alive("master")
            and self._pid_alive("registry")
        )

    def _pidfile(self, what: str) -> Path:
        return self.state_dir / f"{what}.pid"

    def _pid_alive(self, what: str) -> int | None:
        """The pid of the lab's ``what`` process if it is running (checked by its command line)."""
        pidfile = self._pidfile(what)
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if self._mentions_state_dir(cmdline) else None

    def _spawn(self, what: str, argv: list[str], logfile: Path):
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "ab") as logf:
            proc = subprocess.Popen(
                argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._pidfile(what).write_text(f"{proc.pid}\n")
        return proc

    def _stop(self, what: str, timeout: float = 30):
        pid = self._pid_alive(what)
        if pid:
            # The process leads its own session: signal the whole group (salt-master forks).
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _group_alive(pid):
                time.sleep(0.2)
            if _group_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        self._pidfile(what).unlink(missing_ok=True)

    # -- network --------------------------------------------------------------------------
    def _ensure_network(self):
        # By label and exact name: docker's name filter matches parts of names, so lab
        # "armswarm-test" would take lab "armswarm-test-b"'s network for its own.
        for network in self.client.networks.list(filters={"label": f"{LABEL}={self.name}"}):
            if network.name == self.name:
                return network
        for family, subnet in (("-4", self.subnet), ("-6", self.subnet6)):
            # (check only for IPv4: a kernel without IPv6 has no IPv6 routes to list)
            for route in subprocess.run(
                ["ip", family, "route"], capture_output=True, text=True, check=family == "-4"
            ).stdout.splitlines():
                try:  # "default", and route types ("unreachable …") are no destination
                    dest = ipaddress.ip_network(route.split()[0], strict=False)
                except ValueError:
                    continue
                if dest.overlaps(ipaddress.ip_network(subnet)):
                    raise LabError(f"subnet {subnet} overlaps an existing route: {route}")
        # IPv6 too: swarms on IPv6 advertise addresses are tested on it. A host without IPv6
        # gets an IPv4-only lab (the IPv6 test then skips, saying why).
        ipv4 = docker.types.IPAMPool(subnet=self.subnet, gateway=self.gateway)
        try:
            return self.client.networks.create(
                self.name,
                driver="bridge",
                ipam=docker.types.IPAMConfig(
                    pool_configs=[ipv4, docker.types.IPAMPool(subnet=self.subnet6)]
                ),
                enable_ipv6=True,
                labels=self._labels(),
                check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            self.progress(f"lab network without IPv6 ({exc.explanation or exc})")
        return self.client.networks.create(
            self.name,
            driver="bridge",
            ipam=docker.types.IPAMConfig(pool_configs=[ipv4]),
            labels=self._labels(),
            check_duplicate=True,
        )

    def has_ipv6(self) -> bool:
        """The lab network carries IPv6 (see :meth:`_ensure_network`)."""
        return bool(self.client.networks.get(self.name).attrs.get("EnableIPv6"))

    # -- registry -------------------------------------------------------------------------
    def _start_registry(self):
        if self._pid_alive("registry"):
            return
        binary = shutil.which("docker-registry")
        if not binary:
            raise LabError("docker-registry is not installed (apt-get install docker-registry)")
        cert, key = pki.issue_server_cert(self.pki_dir, "registry", self.gateway)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.registry_dir / "data")},
                "delete": {"enabled": True},
            },
            "http": {
                "addr": self.registry,
                "tls": {"certificate": str(cert), "key": str(key)},
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {
                "htpasswd": {
                    "realm": "armswarm-lab",
                    "path": str(self.registry_dir / "htpasswd"),
                }
            },
        }
        conf_file = self.registry_dir / "config.yml"
        conf_file.parent.mkdir(parents=True, exist_ok=True)
        user, password = self.registry_auth
        htpasswd = self.registry_dir / "htpasswd"
        htpasswd.write_text(f"{user}:{_bcrypt(password)}\n")
        htpasswd.chmod(0o600)
        conf_file.write_text(yaml.safe_dump(config))
        self._spawn("registry", [binary, "serve", str(conf_file)], self.registry_dir / "log")
        self._wait(
            lambda: (
                requests.get(
                    f"https://{self.registry}/v2/",
                    auth=self.registry_auth,
                    verify=str(self.ca_file),
                    timeout=2,
                ).status_code
                == 200
            ),
            30,
            "registry",
        )

    # -- master ---------------------------------------------------------------------------
    def master_config(self) -> dict:
        root = self.master_root
        return {
            "id": f"{self.name}-master",
            "interface": self.gateway,
            "user": "root",
            "root_dir": str(root),
            "pki_dir": str(root / "pki"),
            "cachedir": str(root / "cache"),
            "sock_dir": str(root / "sock"),
            "pidfile": str(root / "salt-master.pid"),
            "log_file": str(root / "log" / "master"),
            "key_logfile": str(root / "log" / "key"),
            "log_level_logfile": "info",
            "file_roots": {
                "base": self._file_roots(root),
                # imagebuild's contexts, served by hash to the node of each job
                "armswarm_contexts": [str(root / "cache" / "armswarm" / "imagebuild" / "contexts")],
            },
            "pillar_roots": {"base": [self.pillar_root or paths.pillar_root()]},
            "worker_threads": 4,
            "timeout": 30,
            "gather_job_timeout": 20,
            "state_output": "changes",
            # The lab registry's address depends on the lab's subnet: the master config says
            # where it is (pillar's registry keys merge over it, key by key).
            "armswarm": {
                "registry": {
                    "host": self.registry,
                    "ca_file": str(self.ca_file),
                    "username": self.registry_auth[0],
                    "password": self.registry_auth[1],
                }
            },
        }

    def served_tree(self) -> Path | None:
        """The checkout whose modules and formulas the running master serves (None: unknown)."""
        try:
            conf = yaml.safe_load((self.master_conf_dir / "master").read_text())
            first = Path(conf["file_roots"]["base"][0])  # <tree>/salt, see _file_roots
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
            return None
        extensions = self.master_root / "extensions"
        linked = {
            (extensions / f"_{ext_type}").resolve().parent
            for ext_type in paths.EXT_TYPES
            if (extensions / f"_{ext_type}").is_symlink()
        }
        tree = first.parent
        return tree if linked == {tree} else None

    @staticmethod
    def _file_roots(root) -> list:
        roots = paths.file_roots(paths.link_extensions(root / "extensions"))
        # The worked examples (docs/examples/<name>/…) as salt://<name>/…, in a checkout.
        examples = paths.tree_root() / "docs" / "examples"
        if examples.is_dir():
            roots.append(str(examples))
        return roots

    def _start_master(self):
        if self._pid_alive("master"):
            return
        self.master_conf_dir.mkdir(parents=True, exist_ok=True)
        # 0600: it holds the lab registry's password
        conf = self.master_conf_dir / "master"
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        conf.write_text(yaml.safe_dump(self.master_config()))
        accepted = self.master_root / "pki" / "minions"
        accepted.mkdir(parents=True, exist_ok=True)
        # Keys are made by the lab and accepted up front: no auto-accept, and re-created nodes
        # never meet a stale key.
        for node in self.nodes:
            priv, pub = self._minion_keys(node)
            (accepted / node.name).write_text(pub)
        self._spawn(
            "master",
            [self._salt_bin("salt-master"), "-c", str(self.master_conf_dir), "-l", "quiet"],
            self.master_root / "log" / "console",
        )
        sock = self.master_root / "sock"
        self._wait(lambda: any(sock.glob("master_event_pub*")), 60, "salt-master")

    def _minion_keys(self, node: NodeSpec) -> tuple[str, str]:
        keydir = self.state_dir / "minion-keys"
        priv_path, pub_path = keydir / f"{node.name}.pem", keydir / f"{node.name}.pub"
        if not priv_path.exists():
            keydir.mkdir(parents=True, exist_ok=True)
            priv, pub = salt.crypt.gen_keys(2048)
            priv_path.write_text(priv)
            priv_path.chmod(0o600)
            pub_path.write_text(pub)
        return priv_path.read_text(), pub_path.read_text()

    # -- nodes ----------------------------------------------------------------------------
    def _node_files(self, node: NodeSpec) -> dict:
        """Files placed into a node before it boots: minion config and keys, board fixtures."""
        priv, pub = self._minion_keys(node)
        board_dir = FIXTURES / node.board
        if not board_dir.is_dir():
            raise LabError(f"no fixtures for board {node.board!r} in {FIXTURES}")
        board = yaml.safe_load((board_dir / "board.yaml").read_text())
        minion_conf = {
            "master": self.gateway,
            "id": node.name,
            "acceptance_wait_time": 1,
            "random_reauth_delay": 0,
            "log_level_logfile": "info",
            "armnode.device_tree": NODE_DEVICE_TREE,
            "armnode.sysfs": NODE_SYSFS,
            # The node's CPU is the host's; report the architecture of the board it plays.
            "armnode.machine": board["uname_m"],
        }
        files = {
            "etc/salt/minion.d/armswarm-lab.conf": yaml.safe_dump(minion_conf),
            "etc/salt/pki/minion/minion.pem": (priv, 0o400),
            "etc/salt/pki/minion/minion.pub": pub,
            f"etc/docker/certs.d/{self.registry}/ca.crt": self.ca_file.read_bytes(),
            "usr/local/sbin/armswarm-lab-cpu": (CPU_SCRIPT, 0o755),
            "etc/systemd/system/docker.service.d/armswarm-lab-cpu.conf": (
                "[Service]\n"
                f"ExecStartPre=/usr/local/sbin/armswarm-lab-cpu {self.cpu_quota(node)}\n"
                f"Environment=DOCKER_OPTS=--cgroup-parent=/{BUILD_CGROUP}\n"
            ),
        }
        for src in sorted(p for p in board_dir.rglob("*") if p.is_file()):
            rel = src.relative_to(board_dir)
            content = (src.read_bytes(), src.stat().st_mode & 0o777)
            if rel.parts[0] == "device-tree":
                files[f"{NODE_DEVICE_TREE.lstrip('/')}/{'/'.join(rel.parts[1:])}"] = content
            elif rel.parts[0] == "sysfs":
                files[f"{NODE_SYSFS.lstrip('/')}/{'/'.join(rel.parts[1:])}"] = content
            elif rel.parts[0] == "rootfs":
                files["/".join(rel.parts[1:])] = content
        return files

    @staticmethod
    def cpu_quota(node: NodeSpec) -> int:
        """The CFS quota (µs per period) of the node's containers: its board's share."""
        return int(round(cpu_share(node.board) * CPU_PERIOD_US))

    def _docker_login(self) -> bytes:
        """root's docker login to the lab registry (the CLI, the SDK and stack deploys with
        --with-registry-auth on every node read it), as a tar for ``put_archive``: /root and
        /root/.docker 0700, the file 0600."""
        secret = base64.b64encode(":".join(self.registry_auth).encode()).decode()
        data = json.dumps({"auths": {self.registry: {"auth": secret}}}).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, mode in (("root", 0o700), ("root/.docker", 0o700)):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            info = tarfile.TarInfo("root/.docker/config.json")
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def _endpoint_addresses(self, node: NodeSpec) -> dict:
        """The node's fixed addresses: IPv4, and IPv6 where the lab network has it (one made
        before the lab had IPv6 is used as it is until the lab goes down)."""
        addresses = {"ipv4_address": self.node_address(node)}
        if self.has_ipv6():
            addresses["ipv6_address"] = self.node_address6(node)
        return addresses

    def _create_node(self, node: NodeSpec, tag: str):
        name = self.container_name(node)
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            pass
        volume = self.client.volumes.create(
            f"{name}-docker", labels=self._labels(**{NODE_LABEL: node.name})
        )
        api = self.client.api
        host_config = api.create_host_config(
            # --privileged fails on this VM; this set is what works (see docs/lab.rst).
            cap_add=["ALL"],
            cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            device_cgroup_rules=["a *:* rwm"],
            cgroupns="private",
            tmpfs={"/run": "rw,exec,mode=755", "/run/lock": "rw", "/tmp": "rw,exec,mode=1777"},
            binds={
                volume.name: {"bind": "/var/lib/docker", "mode": "rw"},
                str(self.backup_share): {"bind": NODE_BACKUP_SHARE, "mode": "rw"},
                **self._rootfs_cache_bind(),
            },
            network_mode=self.name,
            # the board's weight when the host's CPUs are contended (the cap is inside)
            cpu_shares=int(round(1024 * cpu_share(node.board))),
        )
        # `--security-opt systempaths=unconfined` of the CLI: the SDK has no option for it.
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
        created = api.create_container(
            tag,
            name=name,
            hostname=node.name,
            labels=self._labels(**{NODE_LABEL: node.name}),
            stop_signal="SIGRTMIN+3",
            host_config=host_config,
            networking_config=api.create_networking_config(
                {self.name: api.create_endpoint_config(**self._endpoint_addresses(node))}
            ),
        )
        container = self.client.containers.get(created["Id"])
        container.put_archive("/", image.tar_bytes(self._node_files(node)))
        container.put_archive("/", self._docker_login())
        return container

    # -- ARM emulation --------------------------------------------------------------------
    def _ensure_binfmt(self):
        """The kernel runs arm and aarch64 binaries through qemu-user-static (in every node)."""
        try:
            binfmt.ensure(self.state_dir, log=self.progress)
        except binfmt.BinfmtError as exc:
            raise LabError(str(exc)) from exc

    def _release_binfmt(self):
        """Unregister the handlers this lab registered (another lab up keeps them)."""
        if not self.state_dir.is_dir():
            return
        others = [
            d
            for d in sorted(STATE_ROOT.glob(f"*/{binfmt.STATE_FILE}"))
            if d.parent != self.state_dir
        ]
        try:
            binfmt.release(self.state_dir, [d.parent for d in others], log=self.progress)
        except binfmt.BinfmtError as exc:
            raise LabError(str(exc)) from exc

    @staticmethod
    def _rootfs_cache_bind() -> dict:
        ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
        return {str(ROOTFS_CACHE): {"bind": NODE_ROOTFS_CACHE, "mode": "rw"}}

    # -- salt -----------------------------------------------------------------------------
    def salt_argv(self, tool: str, *args: str) -> list[str]:
        return [self._salt_bin(tool), "-c", str(self.master_conf_dir), *args]

    def run_salt(self, tool: str, *args: str, check=True, capture=True):
        proc = subprocess.run(
            self.salt_argv(tool, *args), capture_output=capture, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise LabError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout or ''}{proc.stderr or ''}"
            )
        return proc

    def salt_json(self, *args: str, tool="salt", check=True):
        """``tool --out=json …``: the minions' returns as one ``{minion: return}`` dict (salt),
        or the runner's return (salt-run).

        ``check`` raises :class:`LabError` when salt exits non-zero: a minion that failed (a
        state with result False, an error, a non-zero retcode) or did not return. ``--static``
        is not used: it prints one document but exits 0 whatever the minions did.
        """
        proc = self.run_salt(tool, "--out=json", *args, check=check)
        return json_returns(proc.stdout)

    def wait_minions(self, timeout: float = 120):
        """Wait until every minion has authenticated, then check they all answer a ping.

        Pinging a booting minion costs the master's gather_job_timeout per round, so readiness
        is read from each minion's log first (cheap), and the ping comes once.
        """
        expected = set(self.node_names())
        deadline = time.monotonic() + timeout
        ready = set()
        while time.monotonic() < deadline and ready != expected:
            for name in sorted(expected - ready):
                code, _ = self.exec(
                    name, ["grep", "-q", "ready to receive requests", "/var/log/salt/minion"]
                )
                if code == 0:
                    ready.add(name)
            time.sleep(0.5)
        # A restarted node's log already says "ready" from its last boot: ping until it answers.
        answering: set = set()
        while True:
            missing = ",".join(sorted(expected - answering))
            ret = self.salt_json("-L", missing, "test.ping", "--timeout=10", check=False)
            answering |= {mid for mid, ok in ret.items() if ok is True}
            if answering == expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        if answering != expected:
            raise LabError(
                f"minions not answering after {timeout}s: {sorted(expected - answering)}"
            )

    # -- lifecycle ------------------------------------------------------------------------
    def up(self, main_job: bool = True, verbose: bool = False) -> dict:
        """Bring the lab up (idempotent) and run the main job; return the status.

        One line per step with its time; the main job's full Salt output goes to
        :attr:`main_job_log` (and to the terminal too with ``verbose``). A failing step raises
        :class:`LabError` with the failing states' comments.
        """
        started = time.monotonic()
        self.ensure_host_dockerd()
        if self.is_up():
            served = self.served_tree()
            if served == paths.tree_root():
                self._ensure_binfmt()  # someone may have removed the handlers meanwhile
                self.progress(f"lab {self.name} is already up")
                return self.status()
            # Its master serves another checkout's modules and formulas: tests would run those.
            self.progress(f"lab {self.name} serves {served}, not {paths.tree_root()}: restarting")
            self.down()
        if any(self.leftovers().values()):
            # A half-up lab (a crash, a reboot, a killed session): start again from clean.
            self.progress(f"lab {self.name} is partly up: removing it first")
            self.down()
        tags = self._step("node images", self._node_images)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.backup_share.mkdir(exist_ok=True)
        self._step("binfmt handlers (arm, aarch64)", self._ensure_binfmt)
        self._step(f"registry https://{self.registry}", self._start_network_and_registry)
        self._step("salt-master", self._start_master)
        self._step(f"nodes {', '.join(self.node_names())}", lambda: self._start_nodes(tags))
        self._step("minions answering", self.wait_minions)
        self._step("modules synced", self.sync)
        if main_job:
            self.main_job(verbose=verbose)
        self.progress(f"lab up in {time.monotonic() - started:.0f}s")
        return self.status()

    def _step(self, title: str, func):
        """Run one step of ``up`` and print one line with its time."""
        begun = time.monotonic()
        try:
            result = func()
        except Exception:
            self.progress(f"{title:<44} FAILED after {time.monotonic() - begun:.1f}s")
            raise
        self.progress(f"{title:<44} {time.monotonic() - begun:6.1f}s")
        return result

    def _start_network_and_registry(self):
        self._ensure_network()
        pki.ensure_ca(self.pki_dir, self.name)
        self._start_registry()

    def _start_nodes(self, tags: dict):
        for node in self.nodes:
            container = self._create_node(node, tags[node.release])
            if container.status != "running":
                container.start()

    def _node_images(self) -> dict:
        """``{release: image tag}`` for every release a node of this lab runs (each cached by
        its content hash; missing ones are built side by side)."""
        try:
            return image.ensure_node_images(
                self.client, CACHE_DIR, [node.release for node in self.nodes], self.progress
            )
        except ValueError as exc:
            raise LabError(f"node release: {exc}") from exc

    def sync(self) -> list[str]:
        """Ship the tree's modules to the minions and to the master (orchestration states).

        A running minion keeps the ``armswarm_core`` it imported first (``sys.modules``) even
        after the sync reloads its loader modules, and every job it forks inherits that copy.
        So each minion that already had the shared layer and got a changed one is restarted:
        afterwards every minion runs this tree's code. Returns the restarted minions.
        """
        had_core = [
            n for n in self.node_names() if self.exec(n, ["test", "-e", SYNCED_CORE])[0] == 0
        ]
        # The master's own sync (runners, orchestration) runs beside the minions' (~1 s).
        with ThreadPoolExecutor(max_workers=1) as pool:
            master = pool.submit(self.run_salt, "salt-run", "saltutil.sync_all")
            synced = self.salt_json("*", "saltutil.sync_all", "--timeout=60")
            master.result()
        stale = [n for n in had_core if (synced.get(n) or {}).get("utils")]
        if stale:
            self.progress(f"restarting minions with a changed armswarm_core: {', '.join(stale)}")
            for name in stale:
                code, out = self.exec(name, ["systemctl", "restart", "salt-minion"])
                if code != 0:
                    raise LabError(f"{name}: systemctl restart salt-minion failed:\n{out}")
            self.wait_minions()
        return stale

    @property
    def main_job_log(self) -> Path:
        return self.state_dir / "main-job.log"

    def main_job_steps(self) -> list:
        root = paths.tree_root()
        return [
            (
                "state.apply armnode",
                root / "salt/armnode/init.sls",
                ("salt", "*", "state.apply", "armnode"),
            ),
            (
                "state.orch swarm.init",
                root / "salt/swarm/init.sls",
                ("salt-run", "state.orch", "swarm.init"),
            ),
            ("imagebuild.run", root / "_runners/imagebuild.py", ("salt-run", "imagebuild.run")),
        ]

    def main_job(self, verbose: bool = False) -> dict:
        """The package's main job: apply armnode, form the swarm, build the images.

        Each step runs with ``--out=json``; its full output is appended to
        :attr:`main_job_log` (printed as well with ``verbose``) and the returns are kept in
        :attr:`main_job_returns` for :meth:`summary`. A step that fails raises
        :class:`LabError` naming the failing states and their comments.
        """
        steps = self.main_job_steps()
        # Every step's file first: a moved or deleted one stops the job before it changes
        # anything, instead of a step silently not running.
        missing = [f"{title} needs {marker}" for title, marker, _ in steps if not marker.exists()]
        if missing:
            raise LabError("main job: missing from the tree: " + "; ".join(missing))
        self.main_job_log.parent.mkdir(parents=True, exist_ok=True)
        self.main_job_log.write_text("")
        self.progress(f"main job: full Salt output in {self.main_job_log}")
        self.main_job_returns = {}
        for title, _, argv in steps:
            self._step(
                f"main job: {title}", lambda a=argv, t=title: self._main_job_step(t, a, verbose)
            )
        return self.main_job_returns

    def _main_job_step(self, title: str, argv: tuple, verbose: bool):
        proc = self.run_salt(argv[0], "--out=json", *argv[1:], check=False)
        text = (
            f"== {title}: {' '.join(argv)} (exit {proc.returncode})\n{proc.stdout}{proc.stderr}\n"
        )
        with open(self.main_job_log, "a") as logf:
            logf.write(text)
        if verbose:
            sys.stdout.write(text)
        try:
            ret = json_returns(proc.stdout) if proc.stdout.strip() else {}
        except ValueError:
            ret = {}
        self.main_job_returns[title] = ret
        if proc.returncode == 0:
            return
        if argv[0] == "salt":
            failed = report.failures(ret)
        elif title.startswith("state.orch"):
            failed = report.failures(report.orch_returns(ret))
        else:
            failed = [" ".join(str(ret).split())[:1000]] if ret else []
        detail = "\n  ".join(failed or [(proc.stderr or proc.stdout).strip()[-2000:]])
        raise LabError(
            f"main job: {title} failed (exit {proc.returncode}); full output in "
            f"{self.main_job_log}:\n  {detail}"
        )

    def down(self):
        """Remove every container, volume and network with the lab's label, its processes
        and its state directory. The node image stays cached (``purge_image`` removes it)."""
        started = time.monotonic()
        # The lab's containers outlive a stopped dockerd (a reboot): start it to remove them.
        self.ensure_host_dockerd()
        # Side by side: each node's removal waits on its own dockerd data (seconds apiece).
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda c: c.remove(force=True, v=True), self.containers()))
        for volume in self.client.volumes.list(filters={"label": f"{LABEL}={self.name}"}):
            volume.remove(force=True)
        for network in self.client.networks.list(filters={"label": f"{LABEL}={self.name}"}):
            network.remove()
        self._stop("master")
        self._stop("registry")
        self._release_binfmt()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.progress(f"lab {self.name} down in {time.monotonic() - started:.0f}s")

    def _mentions_state_dir(self, cmdline: bytes) -> bool:
        """A process command line (NUL-separated) names this lab's state directory or a path
        under it; lab armswarm-test-b's directory does not count for lab armswarm-test."""
        path = re.escape(str(self.state_dir).encode())
        return re.search(path + rb"(?:/|\x00|$)", cmdline) is not None

    def leftovers(self) -> dict:
        """What of this lab still exists (empty lists after a clean ``down``)."""
        flt = {"label": f"{LABEL}={self.name}"}
        procs = []
        for pid_dir in Path("/proc").iterdir():
            if pid_dir.name.isdigit():
                try:
                    cmdline = (pid_dir / "cmdline").read_bytes()
                except OSError:
                    continue
                if self._mentions_state_dir(cmdline):
                    procs.append(int(pid_dir.name))
        return {
            "containers": [c.name for c in self.client.containers.list(all=True, filters=flt)],
            "volumes": [v.name for v in self.client.volumes.list(filters=flt)],
            "networks": [n.name for n in self.client.networks.list(filters=flt)],
            "processes": procs,
            "state_dir": [str(self.state_dir)] if self.state_dir.exists() else [],
        }

    def status(self) -> dict:
        nodes = []
        try:
            containers = {c.labels.get(NODE_LABEL): c for c in self.containers()}
        except docker.errors.DockerException:
            containers = {}  # no host dockerd answers: every node is absent
        for node in self.nodes:
            container = containers.get(node.name)
            nodes.append(
                {
                    "name": node.name,
                    "board": node.board,
                    "address": self.node_address(node),
                    "container": self.container_name(node),
                    "state": container.status if container else "absent",
                    "release": node.release,
                    **self._node_versions(container),
                }
            )
        return {
            "name": self.name,
            "up": self.is_up(),
            "subnet": self.subnet,
            "master": {
                "address": self.gateway,
                "config_dir": str(self.master_conf_dir),
                "cache_dir": str(self.master_root / "cache"),
                "running": bool(self._pid_alive("master")),
            },
            "registry": {
                "url": f"https://{self.registry}",
                "ca_file": str(self.ca_file),
                "running": bool(self._pid_alive("registry")),
            },
            "nodes": nodes,
            "binfmt": binfmt.status(self.state_dir),
        }

    # What each node really runs (read on the node, not from the spec).
    _VERSIONS_SCRIPT = (
        '. /etc/os-release; echo "os=$PRETTY_NAME"; '
        'echo "engine=$(docker version --format "{{.Server.Version}}" 2>/dev/null)"; '
        'echo "python=$(/opt/salt/bin/python -c '
        '"import platform; print(platform.python_version())")"; '
        'echo "salt=$(/opt/salt/bin/python -c '
        '"import salt.version; print(salt.version.__version__)")"'
    )

    @classmethod
    def _node_versions(cls, container) -> dict:
        versions = {"os": None, "engine": None, "python": None, "salt": None}
        if container is None or container.status != "running":
            return versions
        try:
            result = container.exec_run(["sh", "-c", cls._VERSIONS_SCRIPT])
        except docker.errors.DockerException:
            return versions
        for line in result.output.decode(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key in versions:
                versions[key] = value.strip() or None
        return versions

    # -- exec -----------------------------------------------------------------------------
    def exec(self, node_name: str, argv: list[str]) -> tuple[int, str]:
        """Run ``argv`` on a node; return (exit code, combined output)."""
        node = self.node(node_name)
        container = self.client.containers.get(self.container_name(node))
        result = container.exec_run(argv, demux=False)
        return result.exit_code, result.output.decode(errors="replace")

    # -- summary --------------------------------------------------------------------------
    def summary(self) -> str:
        """Nodes (board, OS, engine, Python, the main job's state counts), the swarm, the
        registry's images with tags and platforms, the build report, the backups."""
        returns = getattr(self, "main_job_returns", {}) or {}
        applied = returns.get("state.apply armnode") or {}
        # The salt calls and the registry's HTTP run in threads (each ~0.7 s, mostly waiting)
        # while this thread reads the nodes (docker execs, ~1 s together).
        with ThreadPoolExecutor(max_workers=3) as pool:
            grains_call = pool.submit(
                self.salt_json, "*", "grains.item", "armnode", "--timeout=15", check=False
            )
            backups_call = pool.submit(
                self.salt_json,
                self.nodes[0].name,
                "backup.list_backups",
                "--timeout=15",
                check=False,
            )
            registry_call = pool.submit(self.registry_listing)
            by_name = {n["name"]: n for n in self.status()["nodes"]}
            swarm = self.swarm_table()
            grains = grains_call.result()
            listing = backups_call.result()
            registry_lines = registry_call.result()
        rows = []
        for node in self.nodes:
            info = (grains.get(node.name) or {}).get("armnode") or {}
            versions = by_name.get(node.name) or {}
            rows.append(
                {
                    "node": node.name,
                    "board": info.get("board"),
                    "os": versions.get("os"),
                    "engine": versions.get("engine"),
                    "python": versions.get("python"),
                    "counts": report.state_counts(applied[node.name])
                    if node.name in applied
                    else None,
                }
            )
        lines = [f"lab {self.name}: master {self.gateway}, registry https://{self.registry}"]
        lines.extend(report.node_table(rows))
        lines.append("swarm:")
        lines.extend("  " + line for line in swarm)
        lines.append("registry:")
        lines.extend("  " + line for line in registry_lines)
        if "imagebuild.run" in returns:
            lines.append("build:")
            lines.extend("  " + line for line in report.build_lines(returns["imagebuild.run"]))
        lines.append("backups:")
        lines.extend(
            "  " + line for line in report.backup_lines(listing.get(self.nodes[0].name, listing))
        )
        if returns:
            lines.append(f"full main job output: {self.main_job_log}")
        return "\n".join(lines)

    def swarm_table(self) -> list[str]:
        for node in self.nodes:
            code, out = self.exec(
                node.name, ["docker", "info", "--format", "{{.Swarm.ControlAvailable}}"]
            )
            if code == 0 and out.strip() == "true":
                code, out = self.exec(
                    node.name,
                    [
                        "docker",
                        "node",
                        "ls",
                        "--format",
                        "table {{.Hostname}}\t{{.Status}}\t{{.Availability}}\t"
                        "{{.ManagerStatus}}\t{{.EngineVersion}}",
                    ],
                )
                return out.rstrip().splitlines()
        return ["no swarm formed (no node is a manager)"]

    def registry_listing(self) -> list[str]:
        """``repo: tag (platforms), …`` for every repository in the lab registry."""
        base = f"https://{self.registry}/v2"
        verify, auth = str(self.ca_file), self.registry_auth
        try:
            repos = requests.get(f"{base}/_catalog", auth=auth, verify=verify, timeout=10).json()
        except (requests.RequestException, ValueError) as exc:
            return [f"registry not reachable: {exc}"]
        lines = []
        for repo in repos.get("repositories") or []:
            tags = requests.get(
                f"{base}/{repo}/tags/list", auth=auth, verify=verify, timeout=10
            ).json()
            shown = [
                f"{tag} ({self._tag_platforms(base, repo, tag, verify, auth)})"
                for tag in sorted(tags.get("tags") or [])
            ]
            lines.append(f"{repo}: {', '.join(shown)}")
        return lines or ["(empty)"]

    @staticmethod
    def _tag_platforms(base: str, repo: str, tag: str, verify: str, auth=None) -> str:
        """The platforms of a tag: a manifest list's entries, or one image's config."""
        accept = ", ".join(
            (
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.oci.image.manifest.v1+json",
            )
        )
        try:
            manifest = requests.get(
                f"{base}/{repo}/manifests/{tag}",
                headers={"Accept": accept},
                auth=auth,
                verify=verify,
                timeout=10,
            ).json()
            if manifest.get("manifests"):
                platforms = [m.get("platform") or {} for m in manifest["manifests"]]
            else:
                digest = manifest["config"]["digest"]
                platforms = [
                    requests.get(
                        f"{base}/{repo}/blobs/{digest}", auth=auth, verify=verify, timeout=10
                    ).json()
                ]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return "?"
        names = []
        for plat in platforms:
            if plat.get("os") == "unknown":  # BuildKit's attestation manifests
                continue
            name = f"{plat.get('os', '?')}/{plat.get('architecture', '?')}"
            names.append(name + (f"/{plat['variant']}" if plat.get("variant") else ""))
        return " ".join(sorted(set(names))) or "?"

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _wait(predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
            time.sleep(0.3)
        raise LabError(f"{what} not ready after {timeout}s ({last})")


def json_returns(text: str):
    """The JSON documents ``--out=json`` printed, one per minion as it returned, merged into
    one dict; a single document (a runner's return) as it is; ``{}`` for none."""
    decoder = json.JSONDecoder()
    docs, pos, text = [], 0, text.strip()
    while pos < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if len(docs) == 1:
        return docs[0]
    merged = {}
    for doc in docs:
        if not isinstance(doc, dict):
            raise LabError(f"expected one JSON object per minion, got: {text[:500]}")
        merged.update(doc)
    return merged


def _group_alive(pgid: int) -> bool:
    try:
        # Reap our own child first, or its zombie keeps the group "alive".
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
