"""Move the root filesystem to another disk (the HC1's SSD), as an explicit, guarded action.

Dry-run by default. Refuses a target that is mounted, holds the current root, or is smaller
than the used space. Otherwise: partition a whole disk (one partition), make an ext4 file
system, copy the root (one file system, hard links, ACLs, xattrs), point the copy's fstab and
the board's boot configuration at it, and say what the next reboot will do. The old root stays
as it was: booting it again only needs the boot file's previous ``root=`` back.
"""

import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.common import files
from armswarm_core.node import boot_files, cmdline

# Free space the copy must have beyond what is used now (logs grow, the copy is not sparse).
MARGIN = 1.1


def _run(argv, **kwargs) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=3600, **kwargs
        )
    except FileNotFoundError as exc:
        raise ArmswarmError(f"{argv[0]} is not installed") from exc
    if proc.returncode != 0:
        raise ArmswarmError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _mounts(mounts_text: str) -> list[tuple[str, str]]:
    out = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            out.append((fields[0], fields[1].replace("\\040", " ")))
    return out


def _real(dev: str) -> str:
    return os.path.realpath(dev)


def _size_bytes(dev: str) -> int:
    return int(_run(["blockdev", "--getsize64", dev]).strip())


def _partitions(dev: str) -> list[str]:
    name = os.path.basename(_real(dev))
    base = Path("/sys/class/block") / name
    parts = [p.name for p in base.iterdir() if p.name.startswith(name)] if base.is_dir() else []
    return [f"/dev/{p}" for p in sorted(parts)]


def _is_whole_disk(dev: str) -> bool:
    return not (Path("/sys/class/block") / os.path.basename(_real(dev)) / "partition").exists()


def check(target: str, source: str = "/", mounts_text: str | None = None) -> dict:
    """Refusals first, then what a run would do (nothing is changed)."""
    if mounts_text is None:
        mounts_text = Path("/proc/self/mounts").read_text()
    try:
        mode = os.stat(target).st_mode
    except OSError as exc:
        raise ArmswarmError(f"target {target}: {exc.strerror}") from exc
    if not stat.S_ISBLK(mode):
        raise ArmswarmError(f"target {target} is not a block device")
    whole = _is_whole_disk(target)
    family = {_real(target), *map(_real, _partitions(target))}
    mounts = _mounts(mounts_text)
    point = source.rstrip("/") or "/"
    source_dev = next((dev for dev, where in reversed(mounts) if where == point), None)
    if source_dev and source_dev.startswith("/dev/") and _real(source_dev) in family:
        raise ArmswarmError(f"{target} holds the current root ({source_dev} on {point})")
    for dev, where in mounts:
        if dev.startswith("/dev/") and _real(dev) in family:
            raise ArmswarmError(f"{target} is mounted ({dev} on {where}): unmount it first")
    usage = os.statvfs(source)
    used = (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    size = _size_bytes(target)
    if size < used * MARGIN:
        raise ArmswarmError(
            f"{target} has {size // 2**20} MiB, the root uses {used // 2**20} MiB "
            f"(needs {int(used * MARGIN) // 2**20} MiB with margin)"
        )
    return {
        "target": target,
        "whole_disk": whole,
        "size_mib": size // 2**20,
        "used_mib": used // 2**20,
        "source": source,
        "source_device": source_dev,
    }


def _partition(disk: str) -> str:
    _run(["sfdisk", "--quiet", "--wipe", "always", disk], input="label: gpt\n,,L\n")
    if not _partitions(disk):
        # The kernel did not re-read the table by itself (a busy disk): ask it.
        _run(["partx", "-u", disk])
    parts = _partitions(disk)
    if not parts:
        raise ArmswarmError(f"{disk}: the new partition did not appear")
    return parts[0]


def _ids(dev: str) -> dict:
    out = _run(["blkid", "-o", "export", dev])
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _point_fstab(clone: Path, uuid: str):
    fstab = clone / "etc/fstab"
    if not fstab.exists():
        files.write(fstab, f"UUID={uuid} / ext4 defaults,noatime 0 1\n")
        return
    lines, found = [], False
    for line in fstab.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.lstrip().startswith("#") and fields[1] == "/":
            fields[0] = f"UUID={uuid}"
            lines.append("\t".join(fields))
            found = True
        else:
            lines.append(line)
    if not found:
        lines.append(f"UUID={uuid}\t/\text4\tdefaults,noatime\t0\t1")
    files.write(fstab, "\n".join(lines) + "\n")


def boot_change(boot_root: str, ids: dict) -> dict:
    """The boot configuration change that makes the next boot use the new root."""
    flavour, path = boot_files.locate(boot_root)
    text = path.read_text()
    if flavour in ("armbianEnv", "dietpiEnv"):
        line = f"rootdev=UUID={ids['UUID']}"
        new = (
            re.sub(r"^rootdev=.*$", line, text, flags=re.M)
            if re.search(r"^rootdev=", text, re.M)
            else text + ("" if text.endswith("\n") else "\n") + line + "\n"
        )
    elif flavour == "u-boot-menu":
        line = f'U_BOOT_ROOT="root=UUID={ids["UUID"]}"'
        new = (
            re.sub(r"^#?U_BOOT_ROOT=.*$", line, text, count=1, flags=re.M)
            if re.search(r"^#?U_BOOT_ROOT=", text, re.M)
            else text + line + "\n"
        )
    else:
        # u-boot scripts and the Pi firmware read PARTUUID without an initramfs.
        root = (
            f"root=PARTUUID={ids['PARTUUID']}"
            if ids.get("PARTUUID")
            else f"root=UUID={ids['UUID']}"
        )
        # Keys repeat on a command line: the old root= goes explicitly.
        new = cmdline.edit(flavour, text, [root, "rootwait"], ["root"], path=str(path))
    return {
        "file": str(path),
        "flavour": flavour,
        "text": new,
        "root": line if flavour in ("armbianEnv", "dietpiEnv", "u-boot-menu") else root,
    }


def run(
    target: str,
    source: str = "/",
    boot_root: str = "/",
    dry_run: bool = True,
    mounts_text: str | None = None,
    progress=lambda step: None,
) -> dict:
    """Check, then (unless ``dry_run``) move. Returns what was (or would be) done."""
    report = check(target, source, mounts_text)
    flavour, path = boot_files.locate(boot_root)
    tool = boot_files.TOOLS.get(flavour)
    report.update({"boot_flavour": flavour, "boot_file": str(path)})
    steps = [
        *(["partition the disk (one GPT partition)"] if report["whole_disk"] else []),
        "make an ext4 file system",
        f"copy {source} (one file system)",
        "point the copy's /etc/fstab at it",
        f"set the new root in {path}" + (f" and run {tool}" if tool else ""),
    ]
    report["steps"] = steps
    if dry_run:
        report["comment"] = "Dry run: nothing changed. Run with dry_run=False to move the root."
        return report
    part = _partition(target) if report["whole_disk"] else target
    progress("partitioned")
    _run(["mkfs.ext4", "-q", "-F", "-L", "armroot", part])
    ids = _ids(part)
    progress("formatted")
    with tempfile.TemporaryDirectory(prefix="armswarm-newroot-") as mnt:
        _run(["mount", part, mnt])
        try:
            # -x: stay on the root file system (no /proc, /sys, /run, other mounts).
            _run(["rsync", "-aHAXx", "--numeric-ids", f"{source.rstrip('/')}/", f"{mnt}/"])
            progress("copied")
            _point_fstab(Path(mnt), ids["UUID"])
        finally:
            _run(["umount", mnt])
    change = boot_change(boot_root, ids)
    files.write(change["file"], change["text"])
    boot_files.regenerate(change["flavour"], Path(change["file"]))
    boot_files.mark_reboot_required(boot_root, f"root moves to {part} (UUID={ids['UUID']})")
    report.update(
        {
            "partition": part,
            "uuid": ids.get("UUID"),
            "partuuid": ids.get("PARTUUID"),
            "comment": f"Root copied to {part}. At the next reboot the board mounts it as / "
            f"({change['file']} now says {change['root']}); the old root stays intact.",
        }
    )
    return report
