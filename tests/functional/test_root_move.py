"""Moving the root file system to another disk, on loop devices: dry run by default, refusals
before anything changes, and a real move (partition, ext4, copy, fstab, boot configuration)."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.common import files
from armswarm_core.node import boot_files, cmdline, root_move

BOARDS = Path(__file__).resolve().parents[2] / "armswarm" / "lab" / "fixtures" / "boards"
# Boot files of other distributions' images, copied from their repositories (each names its
# source in a comment).
BOOT = Path(__file__).resolve().parent / "fixtures" / "boot"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("rsync"),
    reason="needs root, losetup and rsync (scripts/setup.sh installs them)",
)


def sh(*argv, check_ok=True, input_text=None):
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, input=input_text)
    if check_ok and proc.returncode != 0:
        raise AssertionError(f"{argv}: {proc.stderr}")
    return proc.stdout


def loop(tmp_path, name, mib):
    image = tmp_path / f"{name}.img"
    with open(image, "wb") as fh:
        fh.truncate(mib * 2**20)
    return sh("losetup", "-f", "--show", "-P", str(image)).strip()


def tree_digest(root: Path) -> dict:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith("lost+found") or rel == "etc/fstab":
            continue
        st = path.lstat()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = (
                "file",
                hashlib.sha256(path.read_bytes()).hexdigest(),
                st.st_mode,
                st.st_nlink,
            )
        else:
            out[rel] = ("dir", st.st_mode)
    return out


@pytest.fixture
def disks(tmp_path):
    devices, mounts = [], []
    try:
        source_dev = loop(tmp_path, "source", 64)
        devices.append(source_dev)
        sh("mkfs.ext4", "-q", "-F", source_dev)
        source = tmp_path / "root"
        source.mkdir()
        sh("mount", source_dev, str(source))
        mounts.append(source)
        (source / "etc").mkdir()
        (source / "etc/fstab").write_text("/dev/mmcblk0p1\t/\text4\tdefaults\t0\t1\n")
        (source / "data.bin").write_bytes(os.urandom(3 * 2**20))
        os.link(source / "data.bin", source / "data.link")
        (source / "shortcut").symlink_to("data.bin")
        (source / "secret").write_text("x")
        (source / "secret").chmod(0o600)
        target = loop(tmp_path, "ssd", 128)
        devices.append(target)
        small = loop(tmp_path, "small", 2)
        devices.append(small)
        yield {
            "source": source,
            "source_dev": source_dev,
            "target": target,
            "small": small,
            "tmp": tmp_path,
            "mounts": mounts,
        }
    finally:
        for point in reversed(mounts):
            subprocess.run(["umount", str(point)], check=False, capture_output=True)
        for dev in devices:
            subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)


def boot_root(disks, board):
    root = disks["tmp"] / "boot-root"
    shutil.copytree(BOARDS / board / "rootfs", root)
    return str(root)


def test_dry_run_changes_nothing(disks):
    boot = boot_root(disks, "odroid-hc1")
    before = Path(boot, "boot/boot.txt").read_text()
    report = root_move.run(disks["target"], source=str(disks["source"]), boot_root=boot)
    assert report["whole_disk"] is True and report["boot_flavour"] == "boot.txt"
    assert "Dry run" in report["comment"] and len(report["steps"]) == 5
    assert sh("blkid", "-p", "-o", "export", disks["target"], check_ok=False) == ""
    assert Path(boot, "boot/boot.txt").read_text() == before


def test_refusals(disks):
    source = str(disks["source"])
    boot = boot_root(disks, "odroid-hc1")
    with pytest.raises(ArmswarmError, match="holds the current root"):
        root_move.run(disks["source_dev"], source=source, boot_root=boot)
    with pytest.raises(ArmswarmError, match="MiB, the root uses"):
        root_move.run(disks["small"], source=source, boot_root=boot)
    with pytest.raises(ArmswarmError, match="is not a block device"):
        root_move.run(str(disks["tmp"] / "ssd.img"), source=source, boot_root=boot)
    sh("mkfs.ext4", "-q", "-F", disks["target"])
    elsewhere = disks["tmp"] / "elsewhere"
    elsewhere.mkdir()
    sh("mount", disks["target"], str(elsewhere))
    disks["mounts"].append(elsewhere)
    with pytest.raises(ArmswarmError, match="is mounted"):
        root_move.run(disks["target"], source=source, boot_root=boot)


@pytest.mark.parametrize("board", ["odroid-hc1", "rockpro64", "rpi4"])
def test_move(disks, board):
    boot = boot_root(disks, board)
    report = root_move.run(
        disks["target"], source=str(disks["source"]), boot_root=boot, dry_run=False
    )
    part = report["partition"]
    assert part.startswith(disks["target"]) and report["uuid"]
    copy = disks["tmp"] / "copy"
    copy.mkdir()
    sh("mount", part, str(copy))
    disks["mounts"].append(copy)
    assert tree_digest(copy) == tree_digest(disks["source"])
    assert (copy / "data.link").stat().st_ino == (copy / "data.bin").stat().st_ino
    assert f"UUID={report['uuid']}\t/\text4" in (copy / "etc/fstab").read_text()
    flavour, path = boot_files.locate(boot)
    text = path.read_text()
    if flavour == "armbianEnv":
        assert f"rootdev=UUID={report['uuid']}" in text.splitlines()
    else:
        args = cmdline.read(flavour, text)
        assert f"root=PARTUUID={report['partuuid']}" in args
        assert sum(a.startswith("root=") for a in args) == 1
    if flavour == "boot.txt":
        assert cmdline.decode_script_image(Path(boot, "boot/boot.scr").read_bytes()) == text
    assert any("root moves to" in r for r in boot_files.reboot_required(boot))


def test_a_target_with_data_is_refused_unless_wipe(disks):
    source, target = str(disks["source"]), disks["target"]
    boot = boot_root(disks, "odroid-hc1")
    sh("mkfs.ext4", "-q", "-F", "-L", "precious", target)  # an SSD holding a file system
    with pytest.raises(ArmswarmError, match=r"is not empty \(.*TYPE=ext4.*wipe=True"):
        root_move.run(target, source=source, boot_root=boot)
    sh("wipefs", "-a", target)
    sh("sfdisk", "--quiet", target, input_text="label: gpt\n,,L\n")  # a partition table
    with pytest.raises(ArmswarmError, match="PTTYPE=gpt"):
        root_move.run(target, source=source, boot_root=boot)
    report = root_move.run(target, source=source, boot_root=boot, wipe=True, dry_run=False)
    assert report["uuid"] and "precious" not in sh("blkid", "-p", report["partition"])


def test_the_root_is_seen_through_dev_root(disks):
    # A root mounted without initramfs is listed as /dev/root, which is no device node here.
    source = str(disks["source"])
    mounts = f"/dev/root {source} ext4 rw 0 0\nproc /proc proc rw 0 0\n"
    with pytest.raises(ArmswarmError, match="holds the current root"):
        root_move.check(disks["source_dev"], source=source, mounts_text=mounts)


def test_swap_and_device_mapper_holders_are_refused(disks):
    source, target = str(disks["source"]), disks["target"]
    sh("mkswap", target)
    swaps = f"Filename Type Size Used Priority\n{target} partition 131068 0 -2\n"
    with pytest.raises(ArmswarmError, match="is active swap"):
        root_move.check(target, source=source, swaps_text=swaps, wipe=True)
    sh("wipefs", "-a", target)
    if not shutil.which("dmsetup"):
        pytest.skip("dmsetup is not installed")
    sectors = int(sh("blockdev", "--getsz", target))
    name = f"armswarm-test-{os.getpid()}"
    made = subprocess.run(
        ["dmsetup", "create", name, "--table", f"0 {sectors} linear {target} 0"],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"device mapper unavailable here: {made.stderr.strip()}")
    try:
        # as an LVM volume or a dm-crypt mapping over the SSD would: it holds the disk
        with pytest.raises(ArmswarmError, match=r"held by dm-\d+"):
            root_move.check(target, source=source, wipe=True)
        # and a file system mounted from that mapping counts as the disk being mounted
        sh("mkfs.ext4", "-q", "-F", f"/dev/mapper/{name}")
        point = disks["tmp"] / "on-dm"
        point.mkdir()
        sh("mount", f"/dev/mapper/{name}", str(point))
        disks["mounts"].append(point)
        with pytest.raises(ArmswarmError, match="is mounted"):
            root_move.check(target, source=source, wipe=True)
    finally:
        subprocess.run(["umount", str(disks["tmp"] / "on-dm")], check=False, capture_output=True)
        subprocess.run(["dmsetup", "remove", name], check=False, capture_output=True)


def _mount_as_next_boot(copy: Path, fstab: str):
    """Mount what the copy's fstab adds for the boot files, as the next boot would."""
    done = []
    for line in fstab.splitlines():
        fields = line.split()
        if len(fields) < 4 or line.startswith("#") or fields[1] == "/":
            continue
        where = copy / fields[1].lstrip("/")
        if fields[2] == "none" and "bind" in fields[3].split(","):
            sh("mount", "--bind", str(copy / fields[0].lstrip("/")), str(where))
        else:
            dev = sh("blkid", "-U", fields[0].split("=", 1)[1]).strip()
            sh("mount", dev, str(where))
        done.append(where)
    return done


@pytest.mark.parametrize(
    "tree, read_dir, crlf",
    [
        (BOARDS / "odroid-hc1" / "rootfs", "boot", False),
        (BOARDS / "rockpro64" / "rootfs", "boot", False),
        (BOARDS / "rpi4" / "rootfs", "boot/firmware", False),
        # DietPi: the root in dietpiEnv.txt's rootdev=, its boot.scr reads it.
        (BOOT / "dietpi-odroid-c4", "boot", False),
        (BOOT / "dietpi-odroid-c4", "boot", True),
        # ODROID boot.ini: DietPi sets root= in a variable bootargs use, ALARM in bootargs
        # itself (with an argument after the closing quote).
        (BOOT / "dietpi-odroid-xu4", "boot", False),
        (BOOT / "dietpi-odroid-xu4", "boot", True),
        (BOOT / "alarm-odroid-c2", "boot", False),
        # Plain extlinux.conf (no u-boot-menu): root=/dev/… and root=UUID=…, comments inside
        # the label; U-Boot reads the kernel beside extlinux/, in /boot.
        (BOOT / "dietpi-quartz64", "boot", False),
        # CRLF: U-Boot's parser keeps reading the label (a CR-only blank line would end it,
        # so Armbian's aml-s9xx file saved with CRLF is refused: test_bootargs).
        (BOOT / "dietpi-quartz64", "boot", True),
        (BOOT / "armbian-aml-s9xx", "boot", False),
    ],
    ids=lambda v: (
        (v.parent.name if v.name == "rootfs" else v.name)
        if isinstance(v, Path)
        else {True: "crlf", False: "lf"}.get(v)
    ),
)
def test_after_the_move_boot_edits_land_where_u_boot_reads(disks, tree, read_dir, crlf):
    # The boot files on the root itself (no /boot partition): as on an HC1's SD card.
    source = disks["source"]
    shutil.copytree(tree, source, dirs_exist_ok=True)
    flavour, before = boot_files.locate(str(source))
    if crlf:  # saved on another system (the FAT partition of many images)
        before.write_bytes(before.read_bytes().replace(b"\n", b"\r\n"))
    old_text = before.read_bytes().decode()
    report = root_move.run(
        disks["target"], source=str(source), boot_root=str(source), dry_run=False
    )
    assert report["boot_files_on_root"] is True
    # The boot file U-Boot reads names the new root, once, and nothing else changed.
    moved = before.read_bytes()
    assert (b"\r\n" in moved) == crlf and moved.count(b"\n") == old_text.count("\n")
    assert moved.count(b"\r\n") == (moved.count(b"\n") if crlf else 0)
    changed = [
        (a, b)
        for a, b in zip(old_text.splitlines(), moved.decode().splitlines(), strict=True)
        if a != b
    ]
    assert len(changed) == 1, changed
    new_ids = {
        "UUID": sh("blkid", "-s", "UUID", "-o", "value", report["partition"]).strip(),
        "PARTUUID": sh("blkid", "-s", "PARTUUID", "-o", "value", report["partition"]).strip(),
    }
    if flavour in ("armbianEnv", "dietpiEnv"):
        roots = [line for line in moved.decode().splitlines() if line.startswith("rootdev=")]
        assert roots == [f"rootdev=UUID={new_ids['UUID']}"]
    else:
        # What U-Boot will pass, ${variables} of the script expanded where it defines them.
        found = cmdline.site(flavour, moved.decode(), str(before))
        text = moved.decode()
        args = [text[s:e] for s, e in found.tokens] + list(found.fixed)
        assert [a for a in args if a.startswith("root=")] == [
            f"root=PARTUUID={new_ids['PARTUUID']}"
        ]
        assert "rootwait" in args
    copy = disks["tmp"] / "copy"
    copy.mkdir()
    sh("mount", report["partition"], str(copy))
    disks["mounts"].append(copy)
    fstab = (copy / "etc/fstab").read_text()
    assert f"{root_move.OLD_ROOT}/{read_dir}\t/{read_dir}\tnone\tbind" in fstab
    disks["mounts"].extend(_mount_as_next_boot(copy, fstab))
    # A later kernel-argument edit on the moved system, with / = the copy:
    flavour, path = boot_files.locate(str(copy))
    new = cmdline.edit(flavour, path.read_text(), ["fsck.mode=force"], path=str(path))
    files.write(path, new)
    boot_files.regenerate(flavour, path)
    # ... is in the files U-Boot reads, on the old root (the SD card):
    _, on_sd = boot_files.locate(str(source))
    assert "fsck.mode=force" in cmdline.read(flavour, on_sd.read_text())
    if flavour == "boot.txt":
        scr = cmdline.decode_script_image((source / "boot/boot.scr").read_bytes())
        assert "fsck.mode=force" in scr


def test_u_boot_menu_output_stays_on_the_old_root(disks):
    # u-boot-menu edits /etc (moved with the root) and writes /boot/extlinux (must stay).
    source = disks["source"]
    shutil.copytree(BOARDS / "rockpro64-extlinux" / "rootfs", source, dirs_exist_ok=True)
    flavour, path = boot_files.locate(str(source))
    assert flavour == "u-boot-menu"
    read_dir = root_move.boot_read_dir(str(source), flavour, path)
    assert read_dir == (source / "boot").resolve()
    lines = root_move._boot_fstab_lines(read_dir, str(source), str(source), "1234-abcd")
    assert lines[1] == f"UUID=1234-abcd\t{root_move.OLD_ROOT}\text4\tdefaults,noatime\t0\t2"
    assert lines[2].startswith(f"{root_move.OLD_ROOT}/boot\t/boot\tnone\tbind")
    # a /boot of its own (another file system): nothing to add, the copied fstab mounts it
    other = disks["tmp"] / "bootfs"
    other.mkdir()
    assert root_move._boot_fstab_lines(other, str(disks["tmp"]), str(source), "x") == []


@pytest.mark.skipif(
    not (shutil.which("unshare") and os.path.exists("/usr/sbin/u-boot-update")),
    reason="needs unshare and u-boot-menu (scripts/setup.sh)",
)
def test_u_boot_menu_after_the_move_regenerates_onto_the_old_root(disks, monkeypatch):
    source = disks["source"]
    shutil.copytree(BOARDS / "rockpro64-extlinux" / "rootfs", source, dirs_exist_ok=True)
    report = root_move.run(
        disks["target"], source=str(source), boot_root=str(source), dry_run=False
    )
    assert report["boot_flavour"] == "u-boot-menu" and report["boot_files_on_root"] is True
    copy = disks["tmp"] / "copy"
    copy.mkdir()
    sh("mount", report["partition"], str(copy))
    disks["mounts"].append(copy)
    uuid = sh("blkid", "-s", "UUID", "-o", "value", report["partition"]).strip()
    assert f'U_BOOT_ROOT="root=UUID={uuid}"' in (copy / "etc/default/u-boot").read_text()
    disks["mounts"].extend(_mount_as_next_boot(copy, (copy / "etc/fstab").read_text()))
    # A later kernel-argument edit on the moved system runs the real u-boot-update there …
    monkeypatch.setenv("ARMSWARM_TEST_ROOT", str(copy))
    monkeypatch.setenv("PATH", f"{Path(__file__).parent / 'bin'}{os.pathsep}{os.environ['PATH']}")
    boot_files.apply(str(copy), boot_files.plan(str(copy), ["fsck.mode=force"]))
    # … whose extlinux.conf is on the old root, where U-Boot reads it, booting the new root.
    conf = (source / "boot/extlinux/extlinux.conf").read_text()
    labels, default = cmdline.extlinux_labels(conf)
    (start, end), *_ = labels[default]
    args = conf[start:end].split()
    assert "fsck.mode=force" in args
    assert [a for a in args if a.startswith("root=")] == [f"root=UUID={uuid}"]


# -- fstab as images ship it -------------------------------------------------------------------
# Armbian (build/lib/functions/image/partitioning.sh writes the root line, tmpfs /tmp)
ARMBIAN = (
    "UUID=0d9c2f7a-4a4e-4c43-9a39-6a3e4f8a1b2c / ext4 defaults,noatime,commit=600,"
    "errors=remount-ro 0 1\ntmpfs /tmp tmpfs defaults,nosuid 0 0\n"
)
# Raspberry Pi OS (pi-gen stage1/01-sys-tweaks/files/fstab, BOOTDEV/ROOTDEV filled in)
PIOS = (
    "proc            /proc           proc    defaults          0       0\n"
    "PARTUUID=6c586e13-01  /boot/firmware  vfat    defaults          0       2\n"
    "PARTUUID=6c586e13-02  /               ext4    defaults,noatime  0       1\n"
)
# DietPi (dietpi-drive_manager: Get_Fstab_Entry, its tmpfs lines, a drive it mounted)
DIETPI = """# You can use "dietpi-drive_manager" to setup mounts.
# NB: It overwrites and re-creates physical drive mount entries on use.
#----------------------------------------------------------------
# NETWORK
#----------------------------------------------------------------


#----------------------------------------------------------------
# TMPFS
#----------------------------------------------------------------
tmpfs /tmp tmpfs noatime,lazytime,nodev,nosuid,mode=1777
tmpfs /var/log tmpfs size=50M,noatime,lazytime,nodev,nosuid

#----------------------------------------------------------------
# MISC: ecryptfs, vboxsf (VirtualBox shared folder), gluster, bind mounts
#----------------------------------------------------------------

#----------------------------------------------------------------
# SWAP SPACE
#----------------------------------------------------------------
/var/swap none swap sw

#----------------------------------------------------------------
# PHYSICAL DRIVES
#----------------------------------------------------------------
UUID=5d3bb6f4-8f8e-4c1a-a1d8-2f0b3c6f3e11 / ext4 noatime,lazytime,rw 0 1
UUID=8a0f-1c2d /boot vfat noatime,lazytime,rw 0 2
UUID=2b7e3c1d-aaaa-4bbb-8ccc-0123456789ab /mnt/ssd ext4 noatime,lazytime,rw,nofail
"""
# Arch Linux ARM: the root comes from the kernel command line
ALARM = (
    "# Static information about the filesystems.\n# See fstab(5) for details.\n\n"
    "# <file system> <dir> <type> <options> <dump> <pass>\n"
)


def _root_lines(text):
    return [ln for ln in text.splitlines() if ln.split()[1:2] == ["/"] and ln[0] != "#"]


@pytest.mark.parametrize("text", [ARMBIAN, PIOS, DIETPI], ids=["armbian", "pios", "dietpi"])
def test_the_copys_fstab_changes_the_root_line_only(text):
    new = root_move.fstab_for_copy(text, "1111-new")
    old_lines, new_lines = text.splitlines(), new.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert len(changed) == 1, changed
    old, line = changed[0]
    # only the device: the separators (pi-gen's aligned columns) and options stay
    assert line == old.replace(old.split()[0], "UUID=1111-new")
    assert new.endswith("\n")


def test_fstab_variants():
    # Arch Linux ARM: no / line: one is added, the comments stay
    new = root_move.fstab_for_copy(ALARM, "u1")
    assert new.startswith(ALARM) and _root_lines(new) == [
        "UUID=u1\t/\text4\tdefaults,noatime\t0\t1"
    ]
    # tabs, LABEL=, a swap file, \040 in a mount point, no final newline
    text = (
        "LABEL=rootfs\t/\text4\tdefaults\t0\t1\n/swapfile none swap sw 0 0\n"
        "/dev/sdb1 /mnt/my\\040disk ext4 nofail 0 2"
    )
    new = root_move.fstab_for_copy(text, "u2")
    assert new.splitlines() == ["UUID=u2\t/\text4\tdefaults\t0\t1", *text.splitlines()[1:]]
    assert new.endswith("\n")
    # CRLF stays CRLF
    assert root_move.fstab_for_copy(ARMBIAN.replace("\n", "\r\n"), "u3").count("\r\n") == 2
    # a btrfs root: the copy is ext4, btrfs options would fail its mount
    btrfs = "UUID=abc / btrfs defaults,noatime,compress=lzo,subvol=@ 0 1\n"
    assert root_move.fstab_for_copy(btrfs, "u4") == "UUID=u4 / ext4 defaults,noatime 0 1\n"
    # two lines for /: which one counts is a guess
    with pytest.raises(ArmswarmError, match=r"/x/etc/fstab: lines 1 and 5 both mount /"):
        root_move.fstab_for_copy(ARMBIAN + PIOS, "u5", path="/x/etc/fstab")
    # a line for the erased disk (DietPi mounted the SSD before) is commented out
    erased = ["UUID=2b7e3c1d-aaaa-4bbb-8ccc-0123456789ab", "/dev/sda", "/dev/sda1"]
    new = root_move.fstab_for_copy(DIETPI, "u6", erased=erased)
    assert "\n# erased by the armswarm root move (its device is gone): UUID=2b7e3c1d" in new
    assert "/var/swap none swap sw\n" in new and "UUID=8a0f-1c2d /boot vfat" in new
    # /proc/mounts escapes
    assert root_move._mounts("/dev/sda1 /mnt/my\\040disk\\011x ext4 rw 0 0\n") == [
        ("/dev/sda1", "/mnt/my disk\tx")
    ]


def test_fstab_refusals_come_before_the_target_is_touched(disks):
    source, target = disks["source"], disks["target"]
    boot = boot_root(disks, "odroid-hc1")
    (source / "etc/fstab").write_text(ARMBIAN + PIOS)
    for dry_run in (True, False):
        with pytest.raises(ArmswarmError, match="both mount /"):
            root_move.run(target, source=str(source), boot_root=boot, dry_run=dry_run)
    assert sh("blkid", "-p", "-o", "export", target, check_ok=False) == ""


def test_a_boot_file_naming_another_root_type_is_refused(disks):
    boot = boot_root(disks, "rpi4")
    flavour, path = boot_files.locate(boot)
    text = path.read_text()
    assert "rootfstype=ext4" in text
    path.write_text(text.replace("rootfstype=ext4", "rootfstype=btrfs"))
    with pytest.raises(ArmswarmError, match=r"rootfstype=btrfs: the kernel would mount"):
        root_move.run(disks["target"], source=str(disks["source"]), boot_root=boot)
    # armbianEnv.txt says it in a line of its own: that line follows
    shutil.rmtree(boot)
    boot = boot_root(disks, "rockpro64")
    env = Path(boot, "boot/armbianEnv.txt")
    env.write_text(env.read_text().replace("rootfstype=ext4", "rootfstype=btrfs"))
    change = root_move.boot_change(boot, {"UUID": "u7", "PARTUUID": "p7"})
    assert change["flavour"] == "armbianEnv"
    assert "rootfstype=ext4" in change["text"].splitlines()
    assert "rootdev=UUID=u7" in change["text"].splitlines()


def test_a_boot_file_with_the_old_roots_mount_options_is_refused(disks):
    # A btrfs root's rootflags=subvol=@ on the kernel command line: ext4 refuses subvol=, so
    # the new root would not mount. Refused before the target is touched.
    boot = boot_root(disks, "rpi4")
    flavour, path = boot_files.locate(boot)
    path.write_text(path.read_text().replace("rootwait", "rootwait rootflags=subvol=@"))
    with pytest.raises(ArmswarmError, match=r"rootflags=subvol=@: the new root is ext4"):
        root_move.run(disks["target"], source=str(disks["source"]), boot_root=boot)
    assert sh("blkid", "-p", "-o", "export", disks["target"], check_ok=False) == ""
    # ext4's own options are the new root's too: they stay (the change is planned)
    path.write_text(path.read_text().replace("rootflags=subvol=@", "rootflags=data=writeback"))
    change = root_move.boot_change(boot, {"UUID": "u7", "PARTUUID": "p7"})
    assert "rootflags=data=writeback" in change["text"]


def test_wiped_disks_fstab_line_is_commented_out_in_the_copy(disks):
    source, target = disks["source"], disks["target"]
    sh("mkfs.ext4", "-q", "-F", target)
    uuid = sh("blkid", "-s", "UUID", "-o", "value", target).strip()
    (source / "etc/fstab").write_text(
        f"/dev/mmcblk0p1 / ext4 defaults 0 1\nUUID={uuid} /mnt/ssd ext4 defaults 0 2\n"
    )
    boot = boot_root(disks, "odroid-hc1")
    report = root_move.run(target, source=str(source), boot_root=boot, wipe=True, dry_run=False)
    copy = disks["tmp"] / "copy"
    copy.mkdir()
    sh("mount", report["partition"], str(copy))
    disks["mounts"].append(copy)
    fstab = (copy / "etc/fstab").read_text().splitlines()
    assert fstab[0] == f"UUID={report['uuid']} / ext4 defaults 0 1"
    gone = "# erased by the armswarm root move (its device is gone): "
    assert fstab[1] == f"{gone}UUID={uuid} /mnt/ssd ext4 defaults 0 2"
