"""Board-level node settings: the armnode formula's settings, the kernel command line of each
boot flavour, reboot marker.

A thin façade over :mod:`armswarm_core.node.node_settings` and
:mod:`armswarm_core.node.boot_files`. The boot files are looked up under the minion option
``armnode.boot_root`` (default ``/``; the lab and tests point it elsewhere).
"""

from armswarm_core import ArmswarmError
from armswarm_core.common import password_hashes
from armswarm_core.node import boot_files, node_settings, root_move
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


def move_root(target, dry_run=True, source="/"):
    """
    Move the root file system to ``target`` (a disk, partitioned with one partition, or a
    partition): dry-run unless ``dry_run=False``. Refuses a target that is mounted, holds the
    current root, or is smaller than the used space; then formats it (ext4), copies the root,
    points the copy's fstab and the board's boot configuration at it (``boot.scr`` or
    ``u-boot-update`` regenerated as the boot flavour needs) and sets the reboot-required
    marker. Not part of any state run: a person asks for it.

    CLI Example:

    .. code-block:: bash

        salt node1 armnode.move_root /dev/sda
        salt node1 armnode.move_root /dev/sda dry_run=False
    """
    try:
        return root_move.run(
            str(target), source=source, boot_root=_boot_root(), dry_run=bool(dry_run)
        )
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
