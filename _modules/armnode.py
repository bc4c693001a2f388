"""Board-level node settings: the armnode formula's settings, the kernel command line of each
boot flavour, reboot marker.

A thin façade over :mod:`armswarm_core.node.node_settings` and
:mod:`armswarm_core.node.boot_files`. The boot files are looked up under the minion option
``armnode.boot_root`` (default ``/``; the lab and tests point it elsewhere).
"""

import subprocess
import time

from armswarm_core import ArmswarmError
from armswarm_core.common import password_hashes
from armswarm_core.node import boot_files, docker_daemon, node_settings, root_move
from salt.exceptions import CommandExecutionError

__virtualname__ = "armnode"


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return False, "armnode: Linux only"
    return __virtualname__


def _boot_root():
    return __opts__.get("armnode.boot_root", "/")


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return value.split(",") if "," in value and " " not in value else value.split()
    return [str(v) for v in value]


def settings(strict=True, show_secrets=False):
    """
    The armnode formula's settings for this node: the defaults < the os_family's < the
    board's < ``armnode:lookup`` < ``armnode`` (minion config, then pillar), key by key,
    validated (an error names every bad key). The admin's password hash is masked unless
    ``show_secrets=True``. The formula's ``map.jinja`` asks with ``strict=False`` (a bad key
    is left at its default and reported by the ``armnode.settings_valid`` state).

    CLI Example:

    .. code-block:: bash

        salt '*' armnode.settings
    """
    try:
        conf = node_settings.settings(
            __opts__, __pillar__, __grains__, _boot_root(), strict=bool(strict)
        )
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    return conf if show_secrets is True else node_settings.masked(conf)


def gen_password(password, crypt_salt=None, algorithm="sha512", rounds=None):
    """
    A crypt(3) hash of ``password`` for ``/etc/shadow`` (``user.present`` with
    ``hash_password: false``, ``chpasswd -e``), as ``shadow.gen_password`` makes, but also on
    Python 3.13 (Debian 13), which has no ``crypt`` module: SHA-512 is computed in Python,
    ``bcrypt`` and ``yescrypt`` by the system's libcrypt. ``crypt_salt`` keeps a hash stable
    (for example the salt of the current one); without it a random salt is drawn.

    CLI Example:

    .. code-block:: bash

        salt node1 armnode.gen_password 'correct horse' crypt_salt=Qx7b0mFq
    """
    if not isinstance(password, str):
        raise CommandExecutionError("armnode.gen_password: the password must be a string")
    try:
        return password_hashes.hash_password(
            password, method=algorithm, salt=crypt_salt, rounds=rounds
        )
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc


def ssh_lockout():
    """
    Why removing the default users (``armnode:remove_default_users``) would lock everyone
    out of SSH, or an empty string: the admin has no password and no SSH key, neither from
    pillar nor already on this node (a usable hash in ``/etc/shadow``, a key in
    ``~/.ssh/authorized_keys``). The formula keeps the default users while it says so.

    CLI Example:

    .. code-block:: bash

        salt '*' armnode.ssh_lockout
    """
    import pwd  # noqa: PLC0415

    conf = node_settings.settings(__opts__, __pillar__, __grains__, _boot_root(), strict=False)
    name = str((conf.get("admin") or {}).get("name") or "")
    try:
        with open("/etc/shadow", encoding="utf-8", errors="replace") as fh:
            password = node_settings.usable_password(fh.read(), name)
    except OSError:
        password = False
    keys = 0
    try:
        home = pwd.getpwnam(name).pw_dir
        with open(f"{home}/.ssh/authorized_keys", encoding="utf-8", errors="replace") as fh:
            keys = node_settings.authorized_keys(fh.read())
    except (KeyError, OSError):
        pass
    return node_settings.ssh_lockout(conf, password, keys)


def docker_restart_pending():
    """
    Whether ``/etc/docker/daemon.json`` changed while this node was in a swarm and dockerd
    still runs the old one (``salt-run armnode_docker.rolling_restart`` restarts it).

    CLI Example:

    .. code-block:: bash

        salt '*' armnode.docker_restart_pending
    """
    return docker_daemon.is_pending()


def restart_docker(timeout=120):
    """
    Restart dockerd on this node now and wait until it answers again (and, when the node was
    in a swarm, until it is back in it, as a manager when it was one); clears the pending
    mark. Called one node at a time by ``salt-run armnode_docker.rolling_restart``: restarting
    several managers at once loses the swarm's quorum.

    CLI Example:

    .. code-block:: bash

        salt node4 armnode.restart_docker
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise CommandExecutionError(f"timeout must be a number of seconds > 0, not {timeout!r}")
    before = docker_daemon.swarm_info() or {}
    was_active = before.get("LocalNodeState") == "active"
    was_manager = bool(before.get("ControlAvailable"))
    started = time.monotonic()
    try:
        proc = subprocess.run(
            ["systemctl", "restart", "docker"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"systemctl restart docker took over {timeout} s"}
    if proc.returncode != 0:
        return {"ok": False, "error": f"systemctl restart docker: {proc.stderr.strip()[-300:]}"}
    deadline = started + float(timeout)
    while time.monotonic() < deadline:
        info = docker_daemon.swarm_info()
        if was_active and (info or {}).get("LocalNodeState") == "locked":
            # an autolocked manager comes back locked after every restart; it runs the new
            # daemon.json already
            docker_daemon.clear_pending()
            return {
                "ok": False,
                "locked": True,
                "error": "dockerd is back but the swarm is locked (autolock): unlock it with "
                f"salt-run swarm_keys.unlock {__opts__['id']} <a running manager>",
            }
        if info is not None and (
            not was_active
            or (
                info.get("LocalNodeState") == "active"
                and (not was_manager or info.get("ControlAvailable"))
            )
        ):
            docker_daemon.clear_pending()
            return {"ok": True, "seconds": round(time.monotonic() - started, 1)}
        time.sleep(1)
    return {"ok": False, "error": f"dockerd is not back after {timeout} s"}


def kernel_args():
    """
    The kernel command line in the boot configuration (not ``/proc/cmdline``, which shows the
    running kernel's): boot flavour, file and arguments.

    CLI Example:

    .. code-block:: bash

        salt '*' armnode.kernel_args
    """
    try:
        return boot_files.current(_boot_root())
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc


def set_kernel_args(present=None, absent=None, test=False):
    """
    Make each ``present`` argument appear exactly once and no ``absent`` one, in the file of
    the board's boot flavour; regenerate ``boot.scr`` (u-boot script) or run ``u-boot-update``
    (u-boot-menu) and set the reboot-required marker. Returns the change (empty when none).

    CLI Example:

    .. code-block:: bash

        salt node1 armnode.set_kernel_args present='[fsck.mode=force, fsck.repair=yes]'
    """
    try:
        change = boot_files.plan(_boot_root(), _as_list(present), _as_list(absent))
        if change and not test:
            boot_files.apply(_boot_root(), change)
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    return {k: v for k, v in change.items() if k != "writes"} | (
        {"files": sorted(change["writes"])} if change else {}
    )


def reboot_required():
    """
    Why this node needs a reboot (changes made since it booted), or an empty list.

    CLI Example:

    .. code-block:: bash

        salt '*' armnode.reboot_required
    """
    return boot_files.reboot_required(_boot_root())


def move_root(target, dry_run=True, source="/", wipe=False):
    """
    Move the root file system to ``target`` (a disk, partitioned with one partition, or a
    partition): dry-run unless ``dry_run=False``. Refuses a target that is mounted, holds the
    current root (also through ``/dev/root``, LVM or md), is active swap, is held by LVM, md
    or dm-crypt, or is smaller than the used space; and one with partitions or any signature
    (a file system, RAID or LVM member, a partition table) unless ``wipe=True``. Then formats
    it (ext4), copies the root, points the copy's fstab and the board's boot configuration at
    it (``boot.scr`` or ``u-boot-update`` regenerated as the boot flavour needs) and sets the
    reboot-required marker. When the boot files are on the root itself, the copy's fstab
    mounts the old root and binds their directory, so later boot edits land where U-Boot
    reads them. Not part of any state run: a person asks for it.

    CLI Example:

    .. code-block:: bash

        salt node1 armnode.move_root /dev/sda
        salt node1 armnode.move_root /dev/sda dry_run=False
        salt node1 armnode.move_root /dev/sda dry_run=False wipe=True
    """
    if not isinstance(wipe, bool) or not isinstance(dry_run, bool):
        raise CommandExecutionError("move_root: dry_run and wipe must be true or false")
    try:
        return root_move.run(
            str(target), source=source, boot_root=_boot_root(), dry_run=dry_run, wipe=wipe
        )
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
