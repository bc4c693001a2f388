"""I/O schedulers per device class: a persistent udev rule plus a live switch through sysfs.

Legacy ``deadline``, ``cfq`` and ``noop`` left the kernel in 2018 (blk-mq offers
``mq-deadline``, ``bfq``, ``kyber``, ``none``), and the ``elevator=`` kernel argument is no
longer reliable, so the rule is what makes a choice survive reboots and hot-plugs. Older
kernels still in use (Hardkernel's 4.14 on the ODROID HC1/XU4) offer only the legacy ones:
there ``mq-deadline`` means ``deadline`` and ``none`` means ``noop``, both live and in the rule.
"""

import os

from armswarm_core import ArmswarmError
from armswarm_core.common import sysfs
from armswarm_core.node import boards

SCHEDULERS = ("mq-deadline", "bfq", "kyber", "none")
LEGACY = {"deadline": "mq-deadline", "cfq": "bfq", "noop": "none"}
# The same elevator under its single-queue name (bfq and kyber have no legacy twin).
LEGACY_NAME = {"mq-deadline": "deadline", "none": "noop"}
RULE_FILE = "60-armswarm-io-schedulers.rules"


# Later lines win in udev: USB disks (the HC1's SATA bridge) after the generic sd rules.
_MATCHES = {
    "mmc": 'KERNEL=="mmcblk[0-9]*", ENV{DEVTYPE}=="disk"',
    "nvme": 'KERNEL=="nvme[0-9]*n[0-9]*", ENV{DEVTYPE}=="disk"',
    "ssd": 'KERNEL=="sd[a-z]*", ENV{DEVTYPE}=="disk", ATTR{queue/rotational}=="0"',
    "hdd": 'KERNEL=="sd[a-z]*", ENV{DEVTYPE}=="disk", ATTR{queue/rotational}=="1"',
    "usb": 'KERNEL=="sd[a-z]*", ENV{DEVTYPE}=="disk", SUBSYSTEMS=="usb"',
}


CLASSES = tuple(_MATCHES)


def validate(schedulers: dict) -> dict:
    """The mapping class → scheduler, checked; errors name the class and the value."""
    if not isinstance(schedulers, dict):
        raise ArmswarmError("schedulers must map device classes to schedulers")
    out = {}
    for device_class, scheduler in schedulers.items():
        if device_class not in _MATCHES:
            raise ArmswarmError(
                f"unknown device class {device_class!r} (known: {', '.join(CLASSES)})"
            )
        if scheduler in LEGACY:
            raise ArmswarmError(
                f"{device_class}: scheduler {scheduler!r} no longer exists in the kernel; "
                f"use {LEGACY[scheduler]!r} (on kernels that only have the legacy schedulers "
                "armswarm maps mq-deadline to deadline and none to noop)"
            )
        if scheduler not in SCHEDULERS:
            raise ArmswarmError(
                f"{device_class}: unknown scheduler {scheduler!r} (one of {', '.join(SCHEDULERS)})"
            )
        out[device_class] = scheduler
    return out


def render_rules(schedulers: dict, legacy_kernel=False) -> str:
    """The udev rules; on a legacy kernel with the names that kernel knows.

    ``legacy_kernel`` is what :func:`legacy_kernel` returns (the classes whose disks are
    single-queue), or True for every class.
    """
    lines = ["# Managed by Salt (armnode): I/O scheduler per device class."]
    for device_class in CLASSES:
        if device_class in schedulers:
            name = schedulers[device_class]
            if legacy_kernel is True or (
                not isinstance(legacy_kernel, bool) and device_class in legacy_kernel
            ):
                name = LEGACY_NAME.get(name, name)
            lines.append(
                f'ACTION=="add|change", {_MATCHES[device_class]}, ATTR{{queue/scheduler}}="{name}"'
            )
    return "\n".join(lines) + "\n"


# The block driver behind each class: its disks share one queue type. SCSI (sd) is blk-mq or
# not as scsi_mod.use_blk_mq says (default on from 5.0), MMC went blk-mq in 4.16, NVMe
# always was; zram, loop, dm … say nothing about them (a bio-based zram prints a bare
# "none", loop is blk-mq since 4.0) and are not looked at.
_DRIVER = {"mmc": "mmc", "nvme": "nvme", "ssd": "sd", "hdd": "sd", "usb": "sd"}


def _single_queue(names) -> bool:
    return bool(set(names) & set(LEGACY)) and not set(names) & set(SCHEDULERS)


def legacy_kernel(sysfs_root: str) -> frozenset:
    """The device classes whose disks offer only single-queue schedulers (a pre-5.0 kernel);
    empty, so false, on a blk-mq kernel.

    Judged per driver from the whole disks present; a class none of whose disks is present
    (a USB disk not plugged yet) goes with the other disks when they agree, and is taken as
    blk-mq when nothing is known.
    """
    offered = {}
    block = os.path.join(sysfs_root, "block")
    try:
        devices = sorted(os.listdir(block))
    except OSError:
        return frozenset()
    for device in devices:
        kind, disk = boards.classify_block_device(device, sysfs_root)
        if disk != device or kind not in _DRIVER:
            continue
        text = sysfs.read(os.path.join(block, device, "queue", "scheduler"))
        if text is not None:
            offered.setdefault(_DRIVER[kind], set()).update(_parse_scheduler_file(text)[1])
    verdicts = {driver: _single_queue(names) for driver, names in offered.items() if names}
    absent = bool(verdicts) and all(verdicts.values())
    return frozenset(
        device_class
        for device_class, driver in _DRIVER.items()
        if driver != "nvme" and verdicts.get(driver, absent)
    )


def _parse_scheduler_file(text: str) -> tuple[str | None, list[str]]:
    """``"mq-deadline [none] bfq"`` → ``("none", ["mq-deadline", "none", "bfq"])``."""
    words = text.split()
    if len(words) == 1 and not words[0].startswith("["):
        # What a plain write leaves in a file that is not the kernel's (a test sysfs).
        return words[0], words
    available, current = [], None
    for word in words:
        name = word.strip("[]")
        if name != word:
            current = name
        available.append(name)
    return current, available


def live_plan(sysfs_root: str, schedulers: dict) -> dict:
    """``{device: {"old", "new"}}`` for whole disks whose class has a scheduler and whose
    current one differs. A scheduler the device does not offer is an error."""
    block = os.path.join(sysfs_root, "block")
    try:
        devices = sorted(os.listdir(block))
    except OSError:
        return {}
    changes = {}
    for device in devices:
        kind, disk = boards.classify_block_device(device, sysfs_root)
        if disk != device or kind not in schedulers:
            continue
        text = sysfs.read(os.path.join(block, device, "queue", "scheduler"))
        if text is None:
            continue
        current, available = _parse_scheduler_file(text)
        wanted = schedulers[kind]
        if wanted not in available and LEGACY_NAME.get(wanted) in available:
            wanted = LEGACY_NAME[wanted]
        change = sysfs.choice(f"{device} ({kind})", current, wanted, available, repr(wanted))
        if change:
            changes[device] = change
    return changes


def apply_live(sysfs_root: str, changes: dict):
    for device, change in changes.items():
        path = os.path.join(sysfs_root, "block", device, "queue", "scheduler")
        sysfs.write(path, change["new"], f"the scheduler of {device}")
