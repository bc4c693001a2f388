"""Moving the root file system to another disk, on loop devices: dry run by default, refusals
before anything changes, and a real move (partition, ext4, copy, fstab, boot configuration)."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.node import boot_files, cmdline, root_move

BOARDS = Path(__file__).resolve().parents[2] / "armswarm" / "lab" / "fixtures" / "boards"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("rsync"),
    reason="needs root, losetup and rsync (scripts/setup.sh installs them)",
)


def sh(*argv, check_ok=True):
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
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
