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


def _unescape(field: str) -> str:
    """A field of /proc/mounts or fstab: ``\\040`` (blank), ``\\011`` (tab), ``\\012``,
    ``\\134`` (backslash) as the kernel and libmount write them."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts(mounts_text: str) -> list[tuple[str, str]]:
    out = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            out.append((_unescape(fields[0]), _unescape(fields[1])))
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


def _name_of_devno(devno: int) -> str | None:
    """The kernel's name of block device ``devno`` (``sda1``, ``dm-0``, ``md0``), or None."""
    link = Path(f"/sys/dev/block/{os.major(devno)}:{os.minor(devno)}")
    return os.path.basename(os.path.realpath(link)) if link.exists() else None


def _name_of(dev: str) -> str | None:
    try:
        st = os.stat(dev)
    except OSError:
        return None
    return _name_of_devno(st.st_rdev) if stat.S_ISBLK(st.st_mode) else None


def _below(name: str, seen=None) -> set:
    """``name`` and every device under it: an LVM volume's or md array's members
    (``slaves``), down to the partitions and disks."""
    seen = set() if seen is None else seen
    if name in seen:
        return seen
    seen.add(name)
    slaves = Path("/sys/class/block") / name / "slaves"
    if slaves.is_dir():
        for slave in slaves.iterdir():
            _below(slave.name, seen)
    return seen


def _holders(name: str) -> list[str]:
    holders = Path("/sys/class/block") / name / "holders"
    return sorted(h.name for h in holders.iterdir()) if holders.is_dir() else []


def _mounted_names(mounts: list) -> list[tuple[str, str, str]]:
    """``(device as listed, mount point, kernel name)`` of block-device mounts. The kernel name
    comes from the mount point's device number: ``/dev/root`` (a root without initramfs)
    and ``/dev/mapper/…`` names are seen through."""
    out = []
    for dev, where in mounts:
        if not dev.startswith("/dev/"):
            continue
        name = None
        try:
            name = _name_of_devno(os.stat(where).st_dev)
        except OSError:
            pass
        name = name or _name_of(dev)
        if name:
            out.append((dev, where, name))
    return out


def _swaps(swaps_text: str) -> list[str]:
    return [line.split()[0] for line in swaps_text.splitlines()[1:] if line.split()]


def _blkid(dev: str) -> dict:
    """What ``blkid -p -o export`` probes on ``dev`` (``{"TYPE": "ext4", "UUID": …}``)."""
    try:
        proc = subprocess.run(
            ["blkid", "-p", "-o", "export", dev],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except FileNotFoundError as exc:
        raise ArmswarmError("blkid is not installed") from exc
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _signatures(dev: str) -> str:
    """What ``blkid -p`` finds on ``dev`` (a file system, RAID or LVM member, partition
    table), as ``TYPE=ext4`` / ``PTTYPE=gpt``; empty when nothing."""
    found = _blkid(dev)
    return ", ".join(f"{key}={found[key]}" for key in ("TYPE", "PTTYPE") if key in found)


def _identities(dev: str) -> set:
    """How an fstab line can name ``dev`` (``UUID=``, ``PARTUUID=``, ``LABEL=``,
    ``PARTLABEL=``), from ``blkid -p``: after a wipe none of them exists any more."""
    found = _blkid(dev)
    names = {"UUID": "UUID", "LABEL": "LABEL", "PART_ENTRY_UUID": "PARTUUID"}
    names["PART_ENTRY_NAME"] = "PARTLABEL"
    return {f"{spec}={found[key]}" for key, spec in names.items() if found.get(key)}


def check(
    target: str,
    source: str = "/",
    mounts_text: str | None = None,
    wipe: bool = False,
    swaps_text: str | None = None,
) -> dict:
    """Refusals first, then what a run would do (nothing is changed). A target is refused
    when it (or a partition of it, or a device built on it: LVM, md, dm-crypt) holds the
    root, is mounted, is active swap or is held by another device; and, unless ``wipe``,
    when it has partitions or any signature (file system, RAID or LVM member, partition
    table)."""
    if mounts_text is None:
        mounts_text = Path("/proc/self/mounts").read_text()
    if swaps_text is None:
        swaps = Path("/proc/swaps")
        swaps_text = swaps.read_text() if swaps.exists() else ""
    try:
        mode = os.stat(target).st_mode
    except OSError as exc:
        raise ArmswarmError(f"target {target}: {exc.strerror}") from exc
    if not stat.S_ISBLK(mode):
        raise ArmswarmError(f"target {target} is not a block device")
    whole = _is_whole_disk(target)
    partitions = _partitions(target) if whole else []
    family = {n for n in (_name_of(target), *map(_name_of, partitions)) if n}
    mounts = _mounts(mounts_text)
    point = source.rstrip("/") or "/"
    source_dev = next((dev for dev, where in reversed(mounts) if where == point), None)
    source_name = _name_of_devno(os.stat(source).st_dev)
    if source_name and _below(source_name) & family:
        shown = source_dev if source_dev and source_dev != "/dev/root" else f"/dev/{source_name}"
        raise ArmswarmError(f"{target} holds the current root ({shown} on {point})")
    if (
        source_dev
        and source_dev.startswith("/dev/")
        and _real(source_dev) in map(_real, [target, *partitions])
    ):
        raise ArmswarmError(f"{target} holds the current root ({source_dev} on {point})")
    for dev, where, name in _mounted_names(mounts):
        if _below(name) & family:
            raise ArmswarmError(f"{target} is mounted ({dev} on {where}): unmount it first")
    for swap in _swaps(swaps_text):
        name = _name_of(swap)
        if name and _below(name) & family:
            raise ArmswarmError(f"{target} is active swap ({swap}): swapoff it first")
    for name in sorted(family):
        holders = _holders(name)
        if holders:
            raise ArmswarmError(
                f"{target} is in use: /dev/{name} is held by {', '.join(holders)} "
                "(LVM, md RAID or dm-crypt); take it out of that first"
            )
    erased = set()
    if wipe:
        for dev in [target, *partitions]:
            erased |= _identities(dev)
    else:
        found = [f"{dev}: {sig}" for dev in [target, *partitions] if (sig := _signatures(dev))]
        if partitions or found:
            what = "; ".join(found) or f"partitions {', '.join(partitions)}"
            raise ArmswarmError(
                f"{target} is not empty ({what}): it would be erased; pass wipe=True to erase it"
            )
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
        "source_device": source_dev if source_dev != "/dev/root" else f"/dev/{source_name}",
        "wipe": bool(wipe),
        # fstab names of what is erased, and its device paths
        "erases": sorted(erased | {target, *partitions}),
    }


def _partition(disk: str) -> str:
    for part in _partitions(disk):  # wipe=True: their signatures go with them
        _run(["wipefs", "--all", "--quiet", part])
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


def _names_erased(spec: str, erased) -> bool:
    """Whether fstab's first field ``spec`` names a device in ``erased`` (fstab names or
    device paths, as :func:`check` lists them)."""
    spec = _unescape(spec)
    if spec in erased:
        return True
    if spec.startswith("/dev/"):
        paths = [e for e in erased if e.startswith("/dev/")]
        return _real(spec) in {_real(e) for e in paths}
    key, _, value = spec.partition("=")
    return key in ("UUID", "PARTUUID") and f"{key}={value.lower()}" in {e.lower() for e in erased}


def fstab_for_copy(text: str, uuid: str, extra=(), erased=(), path="etc/fstab") -> str:
    """The copy's fstab: its ``/`` line names the new file system (``UUID=``; an ext4 one:
    another type's options go), a line for a device the move erases is commented out (the
    boot would wait for it, then stop in emergency mode), ``extra`` lines appended; every
    other byte stays. No ``/`` line (Arch Linux ARM: the root comes from the kernel command
    line) gets one; two are refused (which one counts is a guess)."""
    eol = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    field = re.compile(r"\S+")
    roots = []
    for number, line in enumerate(lines):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) >= 2 and _unescape(fields[1]).rstrip("/") == "":
            roots.append(number)
        elif _names_erased(fields[0], erased):
            lines[number] = f"# erased by the armswarm root move (its device is gone): {line}"
    if len(roots) > 1:
        shown = " and ".join(str(n + 1) for n in roots)
        raise ArmswarmError(
            f"{path}: lines {shown} both mount /; refusing to guess which one the board uses: "
            "leave one, nothing changed"
        )
    if roots:
        line = lines[roots[0]]
        spans = [m.span() for m in field.finditer(line)]
        fields = [line[a:b] for a, b in spans]
        fields[0] = f"UUID={uuid}"
        if len(fields) >= 3 and fields[2] != "ext4":
            fields[2] = "ext4"
            if len(fields) >= 4:
                fields[3] = "defaults,noatime"
        if len(fields) == 2:
            fields.append("ext4")
        rebuilt, last = "", 0
        for (a, b), new in zip(spans, fields, strict=False):
            rebuilt += line[last:a] + new
            last = b
        rebuilt += line[last:] + "".join("\t" + f for f in fields[len(spans) :])
        lines[roots[0]] = rebuilt
    else:
        lines.append(f"UUID={uuid}\t/\text4\tdefaults,noatime\t0\t1")
    lines.extend(extra)
    return eol.join(lines) + eol


def _point_fstab(clone: Path, uuid: str, extra=(), erased=()):
    fstab = clone / "etc/fstab"
    if not fstab.exists():
        files.write(fstab, "\n".join([f"UUID={uuid} / ext4 defaults,noatime 0 1", *extra]) + "\n")
        return
    text = fstab.read_bytes().decode("utf-8", errors="surrogateescape")
    new = fstab_for_copy(text, uuid, extra, erased, str(fstab))
    files.write(fstab, new.encode("utf-8", errors="surrogateescape"))


OLD_ROOT = "/mnt/armswarm-oldroot"  # where the moved-from root stays mounted (boot files)


def boot_read_dir(boot_root: str, flavour: str, path: Path) -> Path:
    """The directory U-Boot (or the Pi firmware) reads: the boot file's own directory when it
    is under /boot (boot.txt, boot.ini, armbianEnv.txt, firmware/cmdline.txt), else /boot
    (u-boot-menu edits /etc and writes /boot/extlinux; an extlinux.conf names the kernel and
    device tree in /boot, which kernel updates write, beside its own directory)."""
    boot = Path(boot_root) / "boot"
    if flavour == "extlinux":
        return boot.resolve()
    try:
        path.resolve().relative_to(boot.resolve())
        return path.resolve().parent
    except ValueError:
        return boot


def _boot_fstab_lines(
    read_dir: Path, boot_root: str, source: str, old_uuid: str, fstype: str = "ext4"
) -> list:
    """fstab lines for the new root so that the boot files stay those U-Boot reads: when they
    are on the old root itself (not a partition of their own), the old root is mounted at
    :data:`OLD_ROOT` and their directory bound over the copy's."""
    if os.stat(read_dir).st_dev != os.stat(source).st_dev:
        return []  # a /boot (or /boot/firmware) of its own: the copied fstab mounts it
    rel = read_dir.resolve().relative_to(Path(boot_root).resolve())
    return [
        "# the boot files U-Boot reads stay on the old root (armswarm root move)",
        f"UUID={old_uuid}\t{OLD_ROOT}\t{fstype}\tdefaults,noatime\t0\t2",
        f"{OLD_ROOT}/{rel}\t/{rel}\tnone\tbind,x-systemd.requires-mounts-for={OLD_ROOT}\t0\t0",
    ]


# Where a script's fixed argument comes from: "<path>:<line> (${<name>})" (cmdline._expand).
_ORIGIN = re.compile(r":(\d+) \(\$\{\w+\}\)$")


def _script_root(flavour: str, text: str, path: Path, root: str) -> str:
    """A u-boot script (boot.txt, boot.ini) with ``root`` as its root: where bootargs set it,
    or, when they take it from a variable the script defines once (DietPi's and Armbian's
    ODROID boot.ini: ``setenv bootrootfs "root=/dev/mmcblk0p1 …"``, ``setenv bootargs
    "${bootrootfs} …"``), in that definition; no other byte changes."""
    found = cmdline.site(flavour, text, str(path))
    direct = any(text[s:e].startswith("root=") for s, e in found.tokens)
    inherited = [arg for arg in found.fixed if arg.startswith("root=")]
    if direct or not inherited:
        # Keys repeat on a command line: the old root= goes explicitly.
        return cmdline.edit(flavour, text, [root, "rootwait"], ["root"], path=str(path))
    origin = _ORIGIN.search(found.fixed[inherited[0]])
    if len(inherited) > 1 or not origin:
        raise ArmswarmError(f"{path}: root= comes from several places; refusing to guess")
    lines = text.splitlines(keepends=True)  # numbered as cmdline numbers them
    number = int(origin.group(1))
    # The word alone (blank or quote on either side), not a longer one it is part of.
    word = r"(?<![^\s\"'])" + re.escape(inherited[0]) + r"(?![^\s\"'])"
    line, count = re.subn(word, root, lines[number - 1], count=1)
    if count != 1:
        raise ArmswarmError(f"{path}:{number}: cannot find {inherited[0]} to change")
    lines[number - 1] = line
    return cmdline.edit(flavour, "".join(lines), ["rootwait"], [], path=str(path))


def _assign(text: str, key: str, line: str, commented: bool = False) -> str:
    """``text`` with every ``key=`` line replaced by ``line`` (the last one counts, in
    ``env import`` as in sh), else the first ``#key=`` line (``commented``), else ``line``
    appended; the file's line ending kept (an ``*Env.txt`` or ``/etc/default/u-boot`` saved
    with CRLF stays CRLF)."""
    eol = "\r\n" if "\r\n" in text else "\n"
    active = re.compile(rf"^{key}=[^\r\n]*", re.M)
    if active.search(text):
        return active.sub(lambda _: line, text)
    disabled = re.compile(rf"^#{key}=[^\r\n]*", re.M)
    if commented and disabled.search(text):
        return disabled.sub(lambda _: line, text, count=1)
    return text + ("" if not text or text.endswith("\n") else eol) + line + eol


def _on_copy(copy: Path, boot_root: str, path: Path, read_dir: Path) -> Path | None:
    """``path`` (a boot file under ``boot_root``) in the copy, when the copy has it (not on a
    partition of its own, which the copy does not hold) and it is not among the files U-Boot
    reads (those stay the old root's, see :func:`_boot_fstab_lines`)."""
    try:
        rel = path.resolve().relative_to(Path(boot_root).resolve())
    except ValueError:
        return None
    if path.resolve().is_relative_to(read_dir.resolve()):
        return None
    mirrored = copy / rel
    return mirrored if mirrored.is_file() and not mirrored.is_symlink() else None


# Mount options of btrfs, f2fs and xfs (the other roots these boards run) that ext4 refuses.
_NOT_EXT4 = {
    *("subvol", "subvolid", "compress", "compress-force", "space_cache", "ssd", "nossd"),
    *("ssd_spread", "autodefrag", "nodatacow", "nodatasum", "degraded", "device"),
    *("flushoncommit", "background_gc", "inline_xattr", "inline_data"),
    *("compress_algorithm", "compress_extension", "atgc", "gc_merge", "checkpoint_merge"),
    *("logbsize", "logbufs", "inode64", "allocsize", "largeio", "swalloc"),
}


def _option_name(option: str) -> str:
    return option.split("=", 1)[0].strip().lower()


def boot_change(boot_root: str, ids: dict) -> dict:
    """The boot configuration change that makes the next boot use the new root."""
    flavour, path = boot_files.locate(boot_root)
    # As it is on disk: read_text() would turn a CRLF file into LF, changing every line.
    text = path.read_bytes().decode()
    # The new root is ext4: a boot file that names another type (a btrfs root) would have
    # the kernel mount it as that, and the board would not boot.
    if flavour in ("armbianEnv", "dietpiEnv", "u-boot-menu"):
        fstypes = re.findall(r"(?:^|[\s\"'])rootfstype=([^\s\"']*)", text, re.M)
        rootflags = re.findall(r"(?:^|[\s\"'])rootflags=([^\s\"']*)", text, re.M)
    else:
        found = cmdline.site(flavour, text, str(path))
        args = [text[s:e] for s, e in found.tokens] + list(found.fixed)
        fstypes = [a.split("=", 1)[1] for a in args if a.startswith("rootfstype=")]
        rootflags = [a.split("=", 1)[1] for a in args if a.startswith("rootflags=")]
    # Mount options of the old root's type (btrfs subvol=@, compress=): ext4 refuses what it
    # does not know, and the kernel could not mount the new root. Options of ext4 itself stay
    # (Armbian's aml-s9xx extlinux.conf has rootflags=data=writeback).
    other_type = any(t not in ("ext4", "ext3", "ext2", "") for t in fstypes)
    flags = ",".join(
        f
        for f in rootflags
        if f and (other_type or any(_option_name(o) in _NOT_EXT4 for o in f.split(",")))
    )
    if flags:
        raise ArmswarmError(
            f"{path}: rootflags={flags}: the new root is ext4, which may refuse these mount "
            "options and leave the board without a root; remove rootflags= first, nothing "
            "changed"
        )
    if any(t != "ext4" for t in fstypes):
        if flavour in ("armbianEnv", "dietpiEnv") and re.search(r"^rootfstype=", text, re.M):
            text = _assign(text, "rootfstype", "rootfstype=ext4")
        else:
            other = ",".join(t for t in fstypes if t != "ext4")
            raise ArmswarmError(
                f"{path}: rootfstype={other}: the kernel would mount the new root (ext4) as "
                f"{other} and the board would not boot; refusing to guess where to change "
                "it, nothing changed"
            )
    if flavour in ("armbianEnv", "dietpiEnv"):
        line = f"rootdev=UUID={ids['UUID']}"
        new = _assign(text, "rootdev", line)
    elif flavour == "u-boot-menu":
        line = f'U_BOOT_ROOT="root=UUID={ids["UUID"]}"'
        new = _assign(text, "U_BOOT_ROOT", line, commented=True)
    else:
        # u-boot scripts and the Pi firmware read PARTUUID without an initramfs.
        root = (
            f"root=PARTUUID={ids['PARTUUID']}"
            if ids.get("PARTUUID")
            else f"root=UUID={ids['UUID']}"
        )
        if flavour in ("boot.txt", "boot.ini"):
            new = _script_root(flavour, text, path, root)
        else:
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
    wipe: bool = False,
) -> dict:
    """Check, then (unless ``dry_run``) move. Returns what was (or would be) done. ``wipe``
    allows a target with partitions or signatures (it is erased)."""
    report = check(target, source, mounts_text, wipe=wipe)
    erased = report.pop("erases")
    # What cannot be edited safely is refused before anything changes (a dry run says it).
    fstab = Path(source) / "etc/fstab"
    if fstab.is_file():
        fstab_for_copy(
            fstab.read_bytes().decode("utf-8", errors="surrogateescape"),
            "0" * 8,
            erased=erased,
            path=str(fstab),
        )
    boot_change(boot_root, {"UUID": "0" * 8, "PARTUUID": "0" * 8})
    flavour, path = boot_files.locate(boot_root)
    tool = boot_files.TOOLS.get(flavour)
    read_dir = boot_read_dir(boot_root, flavour, path)
    boot_on_root = os.stat(read_dir).st_dev == os.stat(source).st_dev
    report.update(
        {"boot_flavour": flavour, "boot_file": str(path), "boot_files_on_root": boot_on_root}
    )
    steps = [
        *(["partition the disk (one GPT partition)"] if report["whole_disk"] else []),
        "make an ext4 file system",
        f"copy {source} (one file system)",
        "point the copy's /etc/fstab at it"
        + (
            f" and keep {read_dir} from the old root (mounted at {OLD_ROOT})"
            if boot_on_root
            else ""
        ),
        f"set the new root in {path}" + (f" and run {tool}" if tool else ""),
    ]
    report["steps"] = steps
    if dry_run:
        report["comment"] = "Dry run: nothing changed. Run with dry_run=False to move the root."
        return report
    extra = []
    if boot_on_root:
        old = _name_of_devno(os.stat(source).st_dev)
        old_ids = _ids(f"/dev/{old}") if old else {}
        old_uuid = old_ids.get("UUID")
        if not old_uuid:
            raise ArmswarmError(
                f"the boot files in {read_dir} are on the root, whose UUID is unknown: after "
                "the move later boot edits could not reach them; nothing changed"
            )
        extra = _boot_fstab_lines(
            read_dir, boot_root, source, old_uuid, old_ids.get("TYPE") or "ext4"
        )
    part = _partition(target) if report["whole_disk"] else target
    progress("partitioned")
    _run(["mkfs.ext4", "-q", "-F", "-L", "armroot", part])
    ids = _ids(part)
    progress("formatted")
    change = boot_change(boot_root, ids)
    with tempfile.TemporaryDirectory(prefix="armswarm-newroot-") as mnt:
        _run(["mount", part, mnt])
        try:
            # -x: stay on the root file system (no /proc, /sys, /run, other mounts).
            _run(["rsync", "-aHAXx", "--numeric-ids", f"{source.rstrip('/')}/", f"{mnt}/"])
            progress("copied")
            _point_fstab(Path(mnt), ids["UUID"], extra, erased)
            if extra:
                (Path(mnt) / OLD_ROOT.lstrip("/")).mkdir(parents=True, exist_ok=True)
            # The boot file as the copy has it says the same: u-boot-menu's /etc/default/u-boot
            # moves with the root, and the next u-boot-update (a kernel update, a kernel
            # argument) on the new root reads that one.
            on_copy = _on_copy(Path(mnt), boot_root, Path(change["file"]), read_dir)
            if on_copy is not None:
                files.write(on_copy, change["text"])
        finally:
            _run(["umount", mnt])
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
