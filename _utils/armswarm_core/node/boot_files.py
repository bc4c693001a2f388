"""Apply kernel command-line changes to a board's boot configuration on disk.

Finds the file of the detected boot flavour under ``boot_root``, edits it with
:mod:`armswarm_core.node.cmdline`, regenerates what the flavour needs (``boot.scr`` with ``mkimage``
like ``mkscr`` does; ``u-boot-update`` for u-boot-menu) and records that a reboot is required.
"""

import shutil
import subprocess
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.common import files
from armswarm_core.node import boards, cmdline

MARKER = "var/lib/armswarm/reboot-required"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def locate(boot_root: str = "/") -> tuple[str, Path]:
    """``(flavour, file)`` of the kernel command line, or ArmswarmError naming what is missing."""
    flavour, cmdline_file = boards.boot_flavour(boot_root)
    if flavour == "unknown" or not cmdline_file:
        raise ArmswarmError(
            f"no boot configuration found under {boot_root} (looked for /boot/boot.txt, "
            "/boot/armbianEnv.txt, /etc/default/u-boot, /boot/extlinux/extlinux.conf, "
            "/boot/firmware/cmdline.txt)"
        )
    if flavour not in cmdline.FLAVOURS:
        raise ArmswarmError(f"boot flavour {flavour} has no editor")
    path = Path(cmdline_file)
    if not path.is_file():
        raise ArmswarmError(f"{path}: the {flavour} boot file is missing")
    return flavour, path


def current(boot_root: str = "/") -> dict:
    flavour, path = locate(boot_root)
    return {"flavour": flavour, "file": str(path), "args": cmdline.read(flavour, path.read_text())}


# What each flavour runs after its file changed: checked before anything is written.
TOOLS = {"boot.txt": "mkimage", "u-boot-menu": "u-boot-update"}


def plan(boot_root: str, present=(), absent=()) -> dict:
    """``{}`` when converged, else ``{"file", "flavour", "old", "new", "text"}``."""
    flavour, path = locate(boot_root)
    text = path.read_text()
    new_text = cmdline.edit(flavour, text, present, absent, path=str(path))
    if new_text == text:
        return {}
    tool = TOOLS.get(flavour)
    return {
        "file": str(path),
        "flavour": flavour,
        "old": cmdline.read(flavour, text),
        "new": cmdline.read(flavour, new_text),
        "text": new_text,
        # What the flavour runs afterwards, when it is not installed (yet): apply refuses then,
        # a prediction notes it (the same state run may install it first).
        "missing_tool": tool if tool and not shutil.which(tool) else None,
    }


def _run(argv, cwd=None):
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=120
        )
    except FileNotFoundError as exc:
        raise ArmswarmError(f"{argv[0]} is not installed") from exc
    if proc.returncode != 0:
        raise ArmswarmError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")


def regenerate(flavour: str, path: Path):
    """What the flavour needs after its file changed."""
    if flavour == "boot.txt":
        # What Arch Linux ARM's /boot/mkscr does.
        _run(
            [
                "mkimage",
                "-A",
                "arm",
                "-O",
                "linux",
                "-T",
                "script",
                "-C",
                "none",
                "-n",
                "U-Boot boot script",
                "-d",
                path.name,
                "boot.scr",
            ],
            cwd=path.parent,
        )
    elif flavour == "u-boot-menu":
        _run(["u-boot-update"])


def apply(boot_root: str, change: dict):
    path = Path(change["file"])
    tool = TOOLS.get(change["flavour"])
    if tool and not shutil.which(tool):
        raise ArmswarmError(
            f"{path}: changing a {change['flavour']} command line needs {tool}, which is not "
            f"installed ({'u-boot-tools' if tool == 'mkimage' else 'u-boot-menu'} package)"
        )
    files.write(path, change["text"])
    regenerate(change["flavour"], path)
    mark_reboot_required(boot_root, f"kernel command line changed in {path}")


def _boot_id() -> str:
    try:
        return Path(BOOT_ID).read_text().strip()
    except OSError:
        return ""


def mark_reboot_required(boot_root: str, reason: str):
    """A marker valid for this boot only: after a reboot it no longer counts."""
    marker = Path(boot_root) / MARKER
    lines = marker.read_text().splitlines() if marker.exists() else []
    if not lines or lines[0] != _boot_id():
        lines = [_boot_id()]
    if reason not in lines[1:]:
        lines.append(reason)
    files.write(marker, "\n".join(lines) + "\n")


def reboot_required(boot_root: str = "/") -> list[str]:
    """Why a reboot is required (empty when it is not)."""
    marker = Path(boot_root) / MARKER
    try:
        lines = marker.read_text().splitlines()
    except OSError:
        return []
    if not lines or lines[0] != _boot_id():
        return []
    return lines[1:]
