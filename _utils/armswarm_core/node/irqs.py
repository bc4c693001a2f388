"""IRQ affinity: interrupts of busy devices (network, USB/SATA) on the big cores.

Interrupts are chosen by a regular expression over their description in ``/proc/interrupts``
(what follows the per-CPU counts: controller, type, device names). The setting is applied
live through ``<procfs>/irq/<n>/smp_affinity_list`` and kept for the next boots by a oneshot
unit that reads the same patterns from ``CONF``.
"""

import errno
import json
import os
import re

from armswarm_core import ArmswarmError
from armswarm_core.node import boards

CONF = "/etc/armswarm/irq-affinity.conf"
# IRQs the kernel would not move (``{irq: description}``), so a re-run does not try again.
REFUSED = "/var/lib/armswarm/irq-affinity-refused.json"
# What the kernel answers for an interrupt whose affinity cannot be set: EIO for a chip
# without set_affinity (chained, per-CPU), EPERM for one whose affinity it manages itself.
_CANNOT_MOVE = (errno.EIO, errno.EPERM)
SCRIPT = "/usr/local/sbin/armswarm-irq-affinity"
UNIT = "/etc/systemd/system/armswarm-irq-affinity.service"
BOOT_SCRIPT = """#!/bin/sh
# Managed by Salt (armnode): IRQ affinity from /etc/armswarm/irq-affinity.conf, at boot.
conf=/etc/armswarm/irq-affinity.conf
[ -r "$conf" ] || exit 0
grep -v '^#' "$conf" | while read -r cpus pattern; do
    [ -n "$pattern" ] || continue
    # "<irq> <description>": the description follows one count per CPU of the header line
    # (it may start with digits: gpio-brcmstb names its chip 107d508500.gpio).
    awk 'NR == 1 { n = NF; next }
        $1 ~ /^[0-9]+:$/ {
            d = ""
            for (i = n + 2; i <= NF; i++) d = d (d == "" ? "" : " ") $i
            print substr($1, 1, length($1) - 1), d
        }' /proc/interrupts |
    while read -r irq desc; do
        if echo "$desc" | grep -Eq "$pattern"; then
            echo "$cpus" > "/proc/irq/$irq/smp_affinity_list" 2>/dev/null || true
        fi
    done
done
"""


UNIT_TEXT = f"""[Unit]
Description=IRQ affinity for busy devices (armswarm)
After=network.target

[Service]
Type=oneshot
ExecStart={SCRIPT}
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""


_IRQ = re.compile(r"^(\d+):$")


def check(pattern, cpus) -> None:
    """ArmswarmError unless ``pattern`` is a one-line regular expression and ``cpus`` a list of
    CPU numbers (the state's arguments go into the unit's configuration file as they are)."""
    if not isinstance(pattern, str) or re.search(r"[\x00-\x1f\x7f]", pattern):
        raise ArmswarmError("irq_affinity: pattern must be a one-line string")
    if not isinstance(cpus, list | tuple) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus
    ):
        raise ArmswarmError("irq_affinity: cpus must be a list of CPU numbers")


def cpu_list(cpus) -> str:
    """``[4, 5, 6, 7]`` → ``"4-7"`` (the smp_affinity_list format)."""
    cpus = sorted(set(int(c) for c in cpus))
    ranges, start = [], None
    for i, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            ranges.append(f"{start}-{cpu}" if cpu != start else str(cpu))
            start = None
    return ",".join(ranges)


def matching(interrupts_text: str, pattern: str) -> dict:
    """``{irq: description}`` of the interrupts whose description matches ``pattern``.

    The description is what follows the per-CPU counts, one per CPU of the header line
    (online CPUs only), with its blanks collapsed to single spaces (as the boot script
    reads it); it may start with digits (gpio-brcmstb's chip is named after its device).
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ArmswarmError(f"IRQ pattern {pattern!r} is not a regular expression: {exc}") from exc
    lines = interrupts_text.splitlines()
    columns = len(lines[0].split()) if lines else 0
    out = {}
    for line in lines[1:]:
        fields = line.split()
        match = _IRQ.match(fields[0]) if fields else None
        if not match:
            continue  # IPI0:, Err:, NMI: … are per-CPU counters, not IRQs
        description = " ".join(fields[columns + 1 :])
        if regex.search(description):
            out[int(match.group(1))] = description
    return out


def read_refused(path: str) -> dict:
    """``{irq: description}`` recorded in ``path`` ({} when none or unreadable)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def plan(procfs_root: str, pattern: str, cpus, refused=None) -> dict:
    """``{irq: {"device", "old", "new"}}`` for matching IRQs not yet on ``cpus``, but the ones
    the kernel refused to move before (``refused``, while their description is the same: an
    IRQ number may name another device after a reboot)."""
    refused = refused or {}
    wanted = cpu_list(cpus)
    try:
        with open(os.path.join(procfs_root, "interrupts"), encoding="ascii") as fh:
            interrupts = fh.read()
    except OSError as exc:
        raise ArmswarmError(f"cannot read {procfs_root}/interrupts: {exc}") from exc
    changes = {}
    for irq, description in matching(interrupts, pattern).items():
        path = os.path.join(procfs_root, "irq", str(irq), "smp_affinity_list")
        try:
            with open(path, encoding="ascii") as fh:
                current = fh.read().strip()
        except OSError:
            continue  # per-CPU or chained interrupts have no affinity to set
        if refused.get(str(irq)) == description:
            continue
        if boards.parse_cpu_list(current) != boards.parse_cpu_list(wanted):
            changes[irq] = {"device": description, "old": current, "new": wanted}
    return changes


def apply(procfs_root: str, changes: dict) -> dict:
    """Move the IRQs of ``changes``; return ``{irq: description}`` of those the kernel cannot
    move (left where they are). Any other refusal (no online CPU in the list) is an error."""
    refused = {}
    for irq, change in changes.items():
        path = os.path.join(procfs_root, "irq", str(irq), "smp_affinity_list")
        try:
            with open(path, "w", encoding="ascii") as fh:
                fh.write(change["new"])
        except OSError as exc:
            if exc.errno in _CANNOT_MOVE:
                refused[irq] = change["device"]
                continue
            raise ArmswarmError(f"cannot set the affinity of IRQ {irq}: {exc}") from exc
    return refused


def conf_text(pattern: str, cpus) -> str:
    return f"# Managed by Salt (armnode): <cpu list> <pattern>\n{cpu_list(cpus)} {pattern}\n"
