"""Optional board tuning: CPU frequency governor, root mount options.

Pure functions over a sysfs root and fstab text, so tests (and the lab) point them at
fixtures. The governor is made persistent with a udev rule, like the I/O schedulers.
"""

import os
import re

from armswarm_core import ArmswarmError
from armswarm_core.common import sysfs

GOVERNOR_RULE_FILE = "61-armswarm-cpufreq.rules"
_GOVERNOR = re.compile(r"^[a-z0-9_]+$")


def governor_rule(governor: str) -> str:
    return (
        "# Managed by Salt (armnode): CPU frequency governor.\n"
        'ACTION=="add", SUBSYSTEM=="cpu", KERNEL=="cpu[0-9]*", '
        f'ATTR{{cpufreq/scaling_governor}}="{governor}"\n'
    )


def governor_plan(sysfs_root: str, governor: str) -> dict:
    """``{cpuN: {"old", "new"}}`` for CPUs whose governor differs; a governor a CPU does
    not offer is an error naming the ones it does."""
    if not _GOVERNOR.match(governor or ""):
        raise ArmswarmError(f"governor {governor!r} is not a governor name")
    base = os.path.join(sysfs_root, "devices", "system", "cpu")
    changes = {}
    try:
        cpus = sorted(
            (c for c in os.listdir(base) if re.fullmatch(r"cpu\d+", c)), key=lambda c: int(c[3:])
        )
    except OSError:
        return {}
    for cpu in cpus:
        cpufreq = os.path.join(base, cpu, "cpufreq")
        current = sysfs.read(os.path.join(cpufreq, "scaling_governor"))
        available = sysfs.read(os.path.join(cpufreq, "scaling_available_governors"))
        if current is None or available is None:
            continue  # no cpufreq for this CPU (or this kernel)
        what = f"the {governor!r} governor"
        change = sysfs.choice(cpu, current.strip(), governor, available.split(), what)
        if change:
            changes[cpu] = change
    return changes


def governor_apply(sysfs_root: str, changes: dict):
    for cpu, change in changes.items():
        path = os.path.join(
            sysfs_root, "devices", "system", "cpu", cpu, "cpufreq", "scaling_governor"
        )
        sysfs.write(path, change["new"], f"the governor of {cpu}")


_MOUNT_OPTION = re.compile(r"^[a-z0-9_=.-]+$")


def check_mount_options(options) -> list:
    """``options`` as a list, or ArmswarmError: a string is not a list (``noatime`` would
    become ``n,o,a,t,i,m,e`` in fstab), and each option is one fstab word."""
    if not isinstance(options, list | tuple):
        raise ArmswarmError("mount options must be a list, not a single value")
    for option in options:
        if not isinstance(option, str) or not _MOUNT_OPTION.match(option):
            raise ArmswarmError(f"{option!r} is not a mount option")
    return list(options)


def _unescape(field: str) -> str:
    # fstab(5) writes blanks (and backslashes) in a path as octal escapes: \040 is a space.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fstab_with_options(text: str, mount_point: str, options: list[str]) -> str:
    """``text`` with ``options`` added to the entry of ``mount_point`` (others untouched).
    ``atime``-family options replace each other (noatime wins over relatime)."""
    out, found = [], False
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if (
            len(fields) >= 4
            and not line.lstrip().startswith("#")
            and mount_point in (fields[1], _unescape(fields[1]))
        ):
            found = True
            original = fields[3].split(",")
            kept = original
            if "noatime" in options:
                kept = [o for o in original if o not in ("atime", "relatime", "strictatime")]
            merged = kept + [o for o in options if o not in kept]
            if merged != original:
                fields[3] = ",".join(merged)
                line = "\t".join(fields) + ("\n" if line.endswith("\n") else "")  # noqa: PLW2901
        out.append(line)
    if not found:
        raise ArmswarmError(f"/etc/fstab has no entry for {mount_point}")
    return "".join(out)
