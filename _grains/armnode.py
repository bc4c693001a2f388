"""The ``armnode`` grain: which ARM board this minion is and how it boots.

One grain, ``armnode``, a dict from :func:`armswarm_core.node.boards.detect` (board, model,
compatible, soc, arch, machine, cpus, big_cores, little_cores, root_device, root_kind,
root_disk, boot_flavour, cmdline_file, and reboot_required: why a reboot is pending, or []).

Minion config options (the lab points them at a board fixture to impersonate it):

``armnode.device_tree``  device-tree directory, default ``/proc/device-tree``
``armnode.sysfs``        sysfs mount, default ``/sys``
``armnode.boot_root``    root the boot files are looked up under, default ``/``
``armnode.mounts``       mount table file, default ``/proc/self/mounts``
``armnode.machine``      ``uname -m`` to report, default ``platform.machine()``

The arch is ``uname -m``'s but for a 32-bit userland on a 64-bit kernel (ELF class of
``<boot_root>/usr/bin/dockerd`` or ``/bin/sh``): that runs armv7 binaries.
"""

import logging
import platform

try:
    from armswarm_core.node import boards, boot_files

    IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - armswarm_core neither installed nor synced
    boards = boot_files = None
    IMPORT_ERROR = str(exc)

log = logging.getLogger(__name__)

__virtualname__ = "armnode"

DEFAULTS = {
    "armnode.device_tree": "/proc/device-tree",
    "armnode.sysfs": "/sys",
    "armnode.boot_root": "/",
    "armnode.mounts": "/proc/self/mounts",
    "armnode.machine": "",
}


def __virtual__():
    if platform.system() != "Linux":
        return False, "armnode: device tree and sysfs only exist on Linux"
    return __virtualname__


def _option(name):
    # Loaded by Salt, __opts__ is injected; imported directly (tests) it may be absent.
    opts = globals().get("__opts__")
    value = opts.get(name) if opts is not None else None
    return value if value else DEFAULTS[name]


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def armnode():
    """Return ``{"armnode": {...}}``; on any failure board ``generic`` with an ``error`` key."""
    machine = platform.machine()
    if boards is None:
        log.error("armnode grain: cannot import armswarm_core.node.boards: %s", IMPORT_ERROR)
        return {"armnode": {"board": "generic", "machine": machine, "error": IMPORT_ERROR}}
    try:
        machine = str(_option("armnode.machine") or machine)
        data = boards.detect(
            devicetree_root=_option("armnode.device_tree"),
            sysfs_root=_option("armnode.sysfs"),
            mounts_text=_read(_option("armnode.mounts")),
            root_dir=_option("armnode.boot_root"),
            machine=machine,
            cpuinfo_text=_read("/proc/cpuinfo"),
            # Raspberry Pi OS armhf boots the 64-bit kernel on a Pi 4/5: uname -m is not
            # the userland's architecture, its binaries are.
            userland_bits=boards.userland_bits(_option("armnode.boot_root")),
        )
    except Exception as exc:  # noqa: BLE001 - a grain must never break the minion
        log.exception("armnode grain: board detection failed")
        data = boards.empty_result(machine, error=f"{type(exc).__name__}: {exc}")
    # Changes made since this boot that only a reboot applies (kernel command line, new root).
    data["reboot_required"] = boot_files.reboot_required(_option("armnode.boot_root"))
    return {"armnode": data}
