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
"""

import json
import os
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
_MAP = "log-opts runtimes features default-ulimits builder".split()
_STR = "data-root exec-root storage-driver log-driver log-level bip default-runtime".split()


def render(dataset: Mapping) -> str:
    """The file's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(dataset, indent=2, sort_keys=True) + "\n"


def check(dataset) -> list[str]:
    """Problems of a daemon.json dataset, each naming its key (values are not shown)."""
    where = "armnode:docker:daemon"
    if not isinstance(dataset, Mapping):
        return [f"{where}: must be a mapping"]
    problems = []
    for key, value in dataset.items():
        if key not in KNOWN_KEYS:
            problems.append(f"{where}:{key}: not a dockerd daemon.json key")
        elif key in _BOOL and not isinstance(value, bool):
            problems.append(f"{where}:{key}: must be true or false")
        elif key in _INT and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{where}:{key}: must be a whole number")
        elif key in _LIST and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            problems.append(f"{where}:{key}: must be a list of strings")
        elif key in _MAP and not isinstance(value, Mapping):
            problems.append(f"{where}:{key}: must be a mapping")
        elif key in _STR and not isinstance(value, str):
            problems.append(f"{where}:{key}: must be a string")
        elif key == "log-opts" and not all(isinstance(v, str) for v in value.values()):
            problems.append(f'{where}:log-opts: every value must be a string ("10m", "3")')
        elif key in ("data-root", "exec-root") and not value.startswith("/"):
            problems.append(f"{where}:{key}: must be an absolute path")
    return problems


def engine_validates(dockerd: str) -> bool:
    """Whether this dockerd has ``--validate`` (Docker 23+)."""
    try:
        proc = subprocess.run(
            [dockerd, "--help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--validate" in proc.stdout + proc.stderr


def validate(dataset, dockerd: str | None = None) -> str:
    """ArmswarmError naming the problems, before anything is written; returns how it was
    checked (``dockerd --validate`` or ``keys``)."""
    problems = check(dataset)
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
