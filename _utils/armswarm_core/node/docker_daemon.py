"""dockerd's ``/etc/docker/daemon.json``: checked before it is written, and a change applied
by restarting dockerd one node at a time, the swarm's quorum kept.

A daemon.json dockerd cannot read keeps dockerd from starting at all: on a swarm node that is
a node gone, on a manager a vote gone. So a new file is checked first: ``dockerd --validate
--config-file`` where the engine has it (Docker 23 and later), else JSON, known keys and the
types of the common ones (Debian 12's docker.io is 20.10, without ``--validate``). Nothing is
written when the check fails.

A node in a swarm is not restarted by the state that wrote its file (``salt '*'
state.apply`` would restart every node at once): it is marked, and ``salt-run
armnode_docker.rolling_restart`` restarts the marked nodes one at a time, workers first,
then each manager only when the others keep the quorum without it, waiting until the node
is back in the swarm (ready, a manager reachable) before the next.

The file is merged, not replaced: keys another installer wrote (DietPi's ``data-root:
/mnt/dietpi_userdata/docker-data``: the node's images, volumes and swarm state) stay as they
are, ours are set over them, and a key we set before and no longer set goes (the keys we set
are recorded beside it, :func:`managed_keys_path`). A file that is there but is no JSON
dockerd reads (comments, a trailing comma, a top level that is no object) is refused, naming
the file and the place: rewriting it would drop what it was meant to say.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.common import files

PATH = "/etc/docker/daemon.json"
PENDING = "/var/lib/armswarm/dockerd-restart-pending"  # the file changed; dockerd not yet
MANAGED = "/var/lib/armswarm/dockerd-managed-keys"  # the keys of PATH we set (a JSON list)

# Every key of dockerd's daemon.json (Docker 20.10 to 27, `dockerd --help` and the
# reference's example file). A key outside it is a typo dockerd would refuse at start.
KNOWN_KEYS = frozenset(
    """
    allow-nondistributable-artifacts api-cors-header authorization-plugins bip bip6 bridge
    builder cdi-spec-dirs cgroup-parent cluster-advertise cluster-store cluster-store-opts
    containerd containerd-namespace containerd-plugins-namespace cpu-rt-period cpu-rt-runtime
    cri-containerd data-root debug default-address-pools default-cgroupns-mode
    default-gateway default-gateway-v6 default-ipc-mode default-network-opts default-runtime
    default-shm-size default-ulimits dns dns-opts dns-search exec-opts exec-root experimental
    features fixed-cidr fixed-cidr-v6 group hosts http-proxy https-proxy icc init init-path
    insecure-registries ip ip-forward ip-forward-no-drop ip-masq ip6tables iptables ipv6
    labels live-restore log-driver log-format log-level log-opts max-concurrent-downloads
    max-concurrent-uploads max-download-attempts metrics-addr mtu network-control-plane-mtu
    no-new-privileges no-proxy node-generic-resources oom-score-adjust pidfile raw-logs
    registry-mirrors runtimes seccomp-profile selinux-enabled shutdown-timeout storage-driver
    storage-opts swarm-default-advertise-addr tls tlscacert tlscert tlskey tlsverify
    userland-proxy userland-proxy-path userns-remap host-gateway-ip host-gateway-ips
    proxies firewall-backend
    """.split()
)
_BOOL = (
    "debug experimental icc ip-forward ip-masq ip6tables iptables ipv6 live-restore "
    "no-new-privileges raw-logs selinux-enabled tls tlsverify userland-proxy init"
).split()
_INT = (
    "max-concurrent-downloads max-concurrent-uploads max-download-attempts mtu "
    "shutdown-timeout oom-score-adjust network-control-plane-mtu"
).split()
_LIST = (
    "dns dns-opts dns-search exec-opts hosts insecure-registries labels registry-mirrors "
    "storage-opts authorization-plugins allow-nondistributable-artifacts"
).split()
_MAP = "log-opts runtimes features default-ulimits builder proxies".split()
_STR = (
    "data-root exec-root storage-driver log-driver log-level bip default-runtime "
    "cgroup-parent containerd firewall-backend"
).split()
# Swarm mode refuses these: dockerd of a node in a swarm does not start with them ("failed
# to start cluster component: --live-restore daemon configuration is incompatible with
# swarm mode"); cluster-store/-advertise are 20.10's, gone in 23.
_NOT_IN_SWARM = {
    "live-restore": "swarm mode refuses live-restore: dockerd of a swarm node would not start",
    "cluster-store": "swarm mode refuses cluster-store (and Docker 23 has no such key)",
    "cluster-advertise": "swarm mode refuses cluster-advertise (and Docker 23 has no such key)",
}
# log-opts of the json-file and local drivers, which journald or syslog refuse at start
_ROTATION_OPTS = ("max-size", "max-file", "compress")


def render(dataset: Mapping) -> str:
    """The file's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(dataset, indent=2, sort_keys=True) + "\n"


def check(dataset, kept=(), path: str = PATH) -> list[str]:
    """Problems of a daemon.json dataset, each naming its key (values are not shown). Keys in
    ``kept`` come from the file at ``path`` as it is (another installer's): named as there,
    and a key this list does not know is left to dockerd (a newer engine's key)."""
    pillar = "armnode:docker:daemon"
    if not isinstance(dataset, Mapping):
        return [f"{pillar}: must be a mapping"]
    problems = []
    for key, value in dataset.items():
        where = f"{path}: {key}" if key in kept else f"{pillar}:{key}"
        if key not in KNOWN_KEYS:
            if key not in kept:
                problems.append(f"{where}: not a dockerd daemon.json key")
        elif key in _BOOL and not isinstance(value, bool):
            problems.append(f"{where}: must be true or false")
        elif key in _INT and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{where}: must be a whole number")
        elif key in _LIST and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            problems.append(f"{where}: must be a list of strings")
        elif key in _MAP and not isinstance(value, Mapping):
            problems.append(f"{where}: must be a mapping")
        elif key in _STR and not isinstance(value, str):
            problems.append(f"{where}: must be a string")
        elif key == "log-opts" and not all(isinstance(v, str) for v in value.values()):
            problems.append(f'{where}: every value must be a string ("10m", "3")')
        elif key == "features" and not all(isinstance(v, bool) for v in value.values()):
            problems.append(f"{where}: every value must be true or false")
        elif key in ("data-root", "exec-root") and not value.startswith("/"):
            problems.append(f"{where}: must be an absolute path")
        elif key in _NOT_IN_SWARM and value not in (False, "", None):
            problems.append(f"{where}: {_NOT_IN_SWARM[key]}")
        elif key == "registry-mirrors" and not all(
            re.match(r"^https?://[^/\s]+", v) for v in value
        ):
            problems.append(f"{where}: every mirror must be an http:// or https:// URL")
        elif key == "default-address-pools" and not (
            isinstance(value, list)
            and all(
                isinstance(v, Mapping)
                and isinstance(v.get("base"), str)
                and isinstance(v.get("size"), int)
                and not isinstance(v.get("size"), bool)
                for v in value
            )
        ):
            problems.append(
                f'{where}: must be a list of {{"base": "10.10.0.0/16", "size": 24}} mappings'
            )
    if dataset.get("firewall-backend") == "nftables" and dataset.get("iptables", True) is not False:
        where = "firewall-backend"
        where = f"{path}: {where}" if where in kept else f"{pillar}:{where}"
        problems.append(f"{where}: swarm mode refuses nftables (unless iptables is false)")
    driver = dataset.get("log-driver", "json-file")
    opts = dataset.get("log-opts")
    if isinstance(opts, Mapping) and driver not in ("json-file", "local"):
        rotation = sorted(k for k in opts if k in _ROTATION_OPTS)
        if rotation:
            both = "log-driver" in kept and "log-opts" in kept
            where = f"{path}: log-opts" if both else f"{pillar}:log-opts"
            problems.append(
                f"{where}: {', '.join(rotation)} is no option of the {driver} log driver "
                "(dockerd would not start); set log-driver json-file or local with it"
            )
    return problems


# -- the file as it is ------------------------------------------------------------------------
def parse(data: bytes | str | None, path: str = PATH) -> dict:
    """The settings of daemon.json's content ``data`` (None: no file), as dockerd reads them.

    A UTF-8 byte order mark is skipped (Docker 23+ skips it; 20.10 refuses it: the rewrite
    drops it), and an empty file (0 bytes, or blanks) or ``null`` holds no setting (23+ takes
    an empty file, 20.10 does not start with it: the rewrite fixes it). A duplicated key
    counts with its last value, as in dockerd. Anything else dockerd could not read
    (comments, a trailing comma, NaN, a list or a string at the top) is an ArmswarmError
    naming the file and the place: nothing is written over it."""
    if data is None:
        return {}
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArmswarmError(
                f"{path}: not UTF-8 (byte {exc.start}); fix it by hand, nothing changed"
            ) from exc
    text = data.removeprefix("\ufeff")
    if not text.strip():
        return {}

    def refuse_constant(name):
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as exc:
        hint = ""
        if re.search(r",\s*[}\]]", text):
            hint = " (a trailing comma?)"
        elif re.search(r"^\s*(#|//)|/\*", text, re.M):
            hint = " (a comment? JSON has none)"
        raise ArmswarmError(
            f"{path}: dockerd cannot read it: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}{hint}; fix it by hand (dockerd does not start with it), nothing "
            "changed"
        ) from exc
    except ValueError as exc:
        raise ArmswarmError(f"{path}: dockerd cannot read it: {exc}; nothing changed") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArmswarmError(
            f"{path}: the top level is {type(value).__name__}, not an object; dockerd cannot "
            "read it: fix it by hand, nothing changed"
        )
    return value


def read(path: str = PATH) -> dict:
    """:func:`parse` of the file at ``path`` ({} when there is none)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        data = None
    except IsADirectoryError as exc:
        raise ArmswarmError(f"{path} is a directory") from exc
    return parse(data, path)


def managed_keys_path(path: str = PATH) -> str:
    """Where the keys of ``path`` that armswarm set are recorded (dockerd reads only
    daemon.json itself; another daemon.json, a test's, has it beside it)."""
    return MANAGED if path == PATH else f"{path}.armswarm-keys"


def read_managed(path: str = PATH) -> set:
    """The keys of ``path`` armswarm set last time (empty when never recorded: every key of
    the file then counts as another installer's, and stays)."""
    try:
        keys = json.loads(Path(managed_keys_path(path)).read_text())
    except (FileNotFoundError, ValueError):
        return set()
    return {k for k in keys if isinstance(k, str)} if isinstance(keys, list) else set()


def write_managed(keys, path: str = PATH):
    files.write(managed_keys_path(path), json.dumps(sorted(keys)) + "\n", 0o644)


def merge(current: Mapping, ours: Mapping, managed=()) -> tuple[dict, set]:
    """``ours`` over the file's ``current`` settings: the file's keys that are not ours and
    that we did not set before (``managed``) stay, as they are. Returns the settings and the
    keys kept from the file."""
    kept = {k for k in current if k not in ours and k not in managed}
    merged = {k: v for k, v in current.items() if k in kept}
    merged.update(ours)
    return merged, kept


DEFAULT_DATA_ROOT = "/var/lib/docker"


def _entries(path: Path) -> list:
    try:
        return [p.name for p in path.iterdir()]
    except OSError:
        return []


def _holds_data(path: str) -> bool:
    """Whether data-root ``path`` holds anything of the node's: swarm state, a container, an
    image, a volume (a fresh dockerd's empty skeleton is no data)."""
    root = Path(path)
    if _entries(root / "swarm") or _entries(root / "containers"):
        return True
    if [v for v in _entries(root / "volumes") if v not in ("metadata.db", "backingFsBlockDev")]:
        return True
    return any(
        _entries(driver / "imagedb" / "content" / "sha256") for driver in (root / "image").glob("*")
    )


def data_root_problem(current: Mapping, merged: Mapping, path: str = PATH) -> str:
    """Why the new file would move dockerd's data-root away from its data, or ``""``. dockerd
    started on another data-root finds none of the node's images, volumes or swarm state
    (``<data-root>/swarm``): in a swarm the node is gone. A move to a directory that holds
    data already (moved there by hand) is no problem."""
    old = current.get("data-root") or DEFAULT_DATA_ROOT
    new = merged.get("data-root") or DEFAULT_DATA_ROOT
    if not isinstance(old, str) or not isinstance(new, str):
        return ""
    if os.path.normpath(old) == os.path.normpath(new):
        return ""
    if not _holds_data(old) or _holds_data(new):
        return ""
    return (
        f"{path}: data-root would change from {old} to {new}, which is empty: dockerd would "
        f"start without the node's images, volumes and swarm state (they stay in {old}). "
        f"Stop dockerd, copy {old} to {new} (rsync -aHAX), then apply again"
    )


# -- dockerd's own flags -------------------------------------------------------------------------
# Flags whose daemon.json key is not their name (dockerd: "the following directives are
# specified both as a flag and in the configuration file").
_FLAG_KEYS = {
    "-H": "hosts",
    "--host": "hosts",
    "-D": "debug",
    "-l": "log-level",
    "-s": "storage-driver",
    "-g": "data-root",
    "--graph": "data-root",
    "-G": "group",
    "-p": "pidfile",
    "-b": "bridge",
    "--insecure-registry": "insecure-registries",
    "--registry-mirror": "registry-mirrors",
    "--label": "labels",
    "--storage-opt": "storage-opts",
    "--exec-opt": "exec-opts",
    "--log-opt": "log-opts",
    "--dns-opt": "dns-opts",
    "--authorization-plugin": "authorization-plugins",
    "--default-ulimit": "default-ulimits",
    "--default-address-pool": "default-address-pools",
    "--node-generic-resource": "node-generic-resources",
    "--cdi-spec-dir": "cdi-spec-dirs",
}
# dockerd merges these from both places (runtimes) or has no file key (config-file)
_FLAG_FREE = {"runtimes", "config-file", "validate", "add-runtime"}


def flag_keys(argv) -> dict:
    """The daemon.json keys dockerd's command line ``argv`` sets (key → flag as given)."""
    keys = {}
    for arg in argv[1:]:
        if not arg.startswith("-") or arg == "-":
            continue
        flag = arg.split("=", 1)[0]
        key = _FLAG_KEYS.get(flag)
        if key is None and flag.startswith("--"):
            key = flag[2:]
        if key and key in KNOWN_KEYS and key not in _FLAG_FREE:
            keys.setdefault(key, flag)
    return keys


def flag_conflicts(
    dataset: Mapping, argv, kept=(), path: str = PATH, unit: str = "docker.service"
) -> list[str]:
    """The keys of ``dataset`` that dockerd's command line ``argv`` also sets: dockerd does
    not start with a setting given both ways (``-H fd://`` of the packaged unit and
    ``hosts``; docker-ce's ``--containerd`` and ``containerd``)."""
    given = flag_keys(argv or [])
    return [
        f"{f'{path}: {key}' if key in kept else f'armnode:docker:daemon:{key}'}: {unit} "
        f"already gives it as {given[key]} on dockerd's "
        "command line: dockerd does not start with a setting given both ways (drop the key, "
        "or the flag in a systemd drop-in)"
        for key in dataset
        if key in given
    ]


def service_argv(unit: str = "docker.service", environ_file: str = "/etc/default/docker"):
    """dockerd's command line in the docker unit with its drop-ins (``systemctl show``), with
    ``$DOCKER_OPTS`` of ``environ_file`` (Debian's docker.io) expanded; [] when unknown."""
    try:
        proc = subprocess.run(
            ["systemctl", "show", unit, "-p", "ExecStart"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    found = re.search(r"argv\[\]=(.*?) ;", proc.stdout)
    if not found:
        return []
    try:
        argv = shlex.split(found.group(1))
    except ValueError:
        return []
    if any(a in ("$DOCKER_OPTS", "${DOCKER_OPTS}") for a in argv):
        opts = _environ_value(environ_file, "DOCKER_OPTS")
        expanded = []
        for arg in argv:
            expanded.extend(opts if arg in ("$DOCKER_OPTS", "${DOCKER_OPTS}") else [arg])
        argv = expanded
    return argv


def _environ_value(path: str, name: str) -> list:
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    value = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if words and words[0].startswith(f"{name}="):
            try:
                value = shlex.split(words[0].split("=", 1)[1])
            except ValueError:
                value = []
    return value


def engine_validates(dockerd: str) -> bool:
    """Whether this dockerd has ``--validate`` (Docker 23+)."""
    try:
        proc = subprocess.run(
            [dockerd, "--help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--validate" in proc.stdout + proc.stderr


def validate(dataset, dockerd: str | None = None, kept=(), path: str = PATH, argv=None) -> str:
    """ArmswarmError naming the problems, before anything is written; returns how it was
    checked (``dockerd --validate`` or ``keys``). ``kept``: the keys that come from the file
    at ``path`` as it is; ``argv``: dockerd's command line in its unit (its flags must not be
    keys of the file too)."""
    problems = check(dataset, kept, path)
    if not problems and argv:
        problems = flag_conflicts(dataset, argv, kept, path)
    if problems:
        raise ArmswarmError("; ".join(problems))
    dockerd = dockerd or shutil.which("dockerd")
    if not dockerd or not engine_validates(dockerd):
        return "keys"
    with tempfile.TemporaryDirectory(prefix="armswarm-daemon-json-") as tmp:
        path = Path(tmp) / "daemon.json"
        path.write_text(render(dataset))
        proc = subprocess.run(
            [dockerd, "--validate", "--config-file", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().replace(str(path), "daemon.json")
        raise ArmswarmError(f"armnode:docker:daemon: dockerd refuses it: {message[-400:]}")
    return "dockerd --validate"


def write(dataset, path: str = PATH) -> bool:
    """Write the file when its text differs (after :func:`validate`); True when it did."""
    text = render(dataset)
    try:
        if Path(path).read_text() == text:
            return False
    except FileNotFoundError:
        pass
    files.write(path, text, 0o644)
    return True


def mark_pending(pending: str = PENDING):
    files.write(pending, f"{time.time():.0f}\n", 0o644)


def is_pending(pending: str = PENDING) -> bool:
    return os.path.exists(pending)


def clear_pending(pending: str = PENDING):
    Path(pending).unlink(missing_ok=True)


def swarm_info() -> dict | None:
    """The engine's ``docker info`` Swarm section (``LocalNodeState``, ``ControlAvailable``,
    …), or None when no dockerd answers (not installed, stopped, or too slow)."""
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{json .Swarm}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


# -- rolling restart ----------------------------------------------------------------------------
def quorum_problem(nodes: list, restarting: str) -> str:
    """Why restarting the engine of swarm node ``restarting`` (node ID) would lose the raft
    quorum, or ``""``. ``nodes`` as ``docker_swarm.nodes`` lists them (from another manager)."""
    managers = [n for n in nodes if n["role"] == "manager"]
    if not any(n["id"] == restarting for n in managers):
        return ""
    reachable = [
        n
        for n in managers
        if n["reachability"] == "reachable" and n["state"] == "ready" and n["id"] != restarting
    ]
    need = len(managers) // 2 + 1
    if len(reachable) < need:
        return (
            f"restarting {restarting} would leave {len(reachable)} of {len(managers)} managers "
            f"reachable, fewer than the quorum of {need}"
        )
    return ""


def back_in_swarm(nodes: list, node_id: str) -> bool:
    """The node is ready again, and reachable when a manager."""
    for node in nodes:
        if node["id"] == node_id:
            return node["state"] == "ready" and (
                node["role"] != "manager" or node["reachability"] == "reachable"
            )
    return False


def not_ready(nodes: list, ids: set) -> list:
    """Which of the node IDs ``ids`` the listing does not show ready (absent ones too)."""
    ready = {n["id"] for n in nodes if n["state"] == "ready"}
    return sorted(ids - ready)


def restart_order(pending: list, roles: Mapping) -> list:
    """Workers (and nodes outside the swarm) first, then managers, each group by name."""
    return sorted(pending, key=lambda m: (roles.get(m) == "manager", m))


def rolling_restart(transport, pending: list, timeout: float = 180, progress=None) -> dict:
    """Restart the engines of ``pending`` (minion ids) one at a time.

    ``transport`` gives ``roles() -> {minion: "manager"|"worker"|None}`` (None: outside a
    swarm; a minion missing there did not answer), ``node_id(minion)``,
    ``nodes(exclude) -> list`` (the swarm as a manager other than ``exclude`` lists it; None
    when none answers), ``restart(minion) -> dict`` (the node restarts its engine and waits for
    it; ``locked: True`` when an autolocked manager came back locked), ``unlock(minion) ->
    dict`` (``ok``/``error``: the master sends it the unlock key, sealed for it) and
    ``sleep(seconds)``. Before each node it waits up to ``timeout`` for the swarm to
    be safe without it; stops at the first node that cannot be restarted safely or does not
    come back; the rest stay pending."""
    progress = progress or (lambda message: None)
    roles = transport.roles()
    done: list = []
    result = {"restarted": done, "pending": [], "error": None}
    order = restart_order(pending, roles)
    # the nodes ready now must be ready again before the next restart and at the end: a
    # manager's restart makes workers reconnect, and they read "down" for a few heartbeats
    ready_before: set = set()
    if any(roles.get(m) in ("manager", "worker") for m in order):
        listed = transport.nodes(None) or []
        ready_before = {n["id"] for n in listed if n["state"] == "ready"}
    for index, minion in enumerate(order):
        if minion not in roles:  # its engine did not answer: it may be a manager
            result["error"] = f"{minion}: no swarm state (is dockerd running?); not restarted"
            result["pending"] = order[index:]
            return result
        in_swarm = roles.get(minion) in ("manager", "worker")
        node_id = transport.node_id(minion) if in_swarm else None
        if in_swarm:
            # A manager restarted a moment ago still sees the others as unreachable for a
            # few heartbeats: wait for a safe swarm, give up only when it stays unsafe.
            deadline = time.monotonic() + timeout
            while True:
                nodes = transport.nodes(minion)
                if nodes is None:
                    problem = f"no other manager answers: {minion} is not restarted"
                else:
                    problem = quorum_problem(nodes, node_id)
                if not problem:
                    break
                if time.monotonic() > deadline:
                    result["error"] = problem
                    result["pending"] = order[index:]
                    return result
                transport.sleep(2)
        progress(f"restarting dockerd on {minion} ({roles.get(minion) or 'no swarm'})")
        answer = transport.restart(minion) or {}
        if answer.get("locked"):
            # An autolocked manager comes back locked: unlocked with the master-sealed key.
            progress(f"{minion} came back locked (autolock): unlocking it")
            answer = transport.unlock(minion) or {}
        if not answer.get("ok"):
            result["error"] = f"{minion}: {answer.get('error') or 'no answer'}"
            result["pending"] = order[index:]
            return result
        if in_swarm:
            deadline = time.monotonic() + timeout
            while True:
                nodes = transport.nodes(minion)
                if nodes and back_in_swarm(nodes, node_id):
                    break
                if time.monotonic() > deadline:
                    result["error"] = f"{minion} is not back in the swarm after {timeout} s"
                    result["pending"] = order[index + 1 :]
                    return result
                transport.sleep(2)
        done.append(minion)
        if in_swarm and ready_before:
            deadline = time.monotonic() + timeout
            while True:
                nodes = transport.nodes(None)
                missing = not_ready(nodes, ready_before) if nodes else ["(no manager answers)"]
                if not missing:
                    break
                if time.monotonic() > deadline:
                    result["error"] = (
                        f"after the restart of {minion}, not ready again after {timeout} s: "
                        + ", ".join(missing)
                    )
                    result["pending"] = order[index + 1 :]
                    return result
                transport.sleep(2)
    return result
