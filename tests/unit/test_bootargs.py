"""Kernel command-line editing per boot flavour, on the lab's real-format fixture files."""

import difflib
import shutil
from pathlib import Path

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.node import boot_files, cmdline, node_settings

BOARDS = Path(__file__).resolve().parents[2] / "armswarm" / "lab" / "fixtures" / "boards"
FILES = {
    "boot.txt": BOARDS / "odroid-hc1/rootfs/boot/boot.txt",
    "armbianEnv": BOARDS / "rockpro64/rootfs/boot/armbianEnv.txt",
    "extlinux": BOARDS / "rockpro64-extlinux/rootfs/boot/extlinux/extlinux.conf",
    "u-boot-menu": BOARDS / "sopine/rootfs/etc/default/u-boot",
    "rpi-cmdline": BOARDS / "rpi4/rootfs/boot/firmware/cmdline.txt",
}


@pytest.mark.parametrize("flavour", sorted(FILES))
def test_add_once_keeps_the_rest_of_the_file(flavour):
    text = FILES[flavour].read_text()
    edited = cmdline.edit(flavour, text, ["fsck.mode=force", "fsck.repair=yes"])
    args = cmdline.read(flavour, edited)
    assert args.count("fsck.mode=force") == 1 and args.count("fsck.repair=yes") == 1
    # Only the command-line line changed.
    changed = [
        line
        for line in difflib.ndiff(text.splitlines(), edited.splitlines())
        if line.startswith(("+ ", "- "))
    ]
    assert len(changed) == 2, changed
    # Idempotent: a second edit changes nothing.
    assert cmdline.edit(flavour, edited, ["fsck.mode=force", "fsck.repair=yes"]) == edited
    # And removal gives the original arguments back.
    assert cmdline.read(
        flavour, cmdline.edit(flavour, edited, absent=["fsck.mode", "fsck.repair"])
    ) == [a for a in cmdline.read(flavour, text) if not a.startswith(("fsck.mode", "fsck.repair"))]


def test_value_of_an_existing_key_is_replaced_not_duplicated():
    assert cmdline.edit_args(["root=/dev/a", "fsck.repair=no"], ["fsck.repair=yes"]) == [
        "root=/dev/a",
        "fsck.repair=yes",
    ]
    assert cmdline.edit_args(["quiet", "quiet"], ["quiet"]) == ["quiet"]
    # console= may repeat: a new console is added, not substituted.
    assert cmdline.edit_args(["console=tty1"], ["console=ttyS2,1500000"]) == [
        "console=tty1",
        "console=ttyS2,1500000",
    ]


def test_missing_line_is_appended_where_the_flavour_allows_it():
    assert cmdline.edit("armbianEnv", "verbosity=1\n", ["fsck.mode=force"]) == (
        "verbosity=1\nextraargs=fsck.mode=force\n"
    )
    with pytest.raises(ArmswarmError, match="/boot/boot.txt: no kernel command line"):
        cmdline.edit("boot.txt", "echo hi\n", ["quiet"], path="/boot/boot.txt")


@pytest.mark.parametrize("bad", ["two words", 'quote"d', "", "tab\targ"])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ArmswarmError, match="not a single word"):
        cmdline.edit("rpi-cmdline", "root=/dev/x\n", [bad])


def test_unknown_flavour_is_an_error():
    with pytest.raises(ArmswarmError, match="no kernel command line editor"):
        cmdline.read("grub", "")


@pytest.mark.skipif(not shutil.which("mkimage"), reason="mkimage (u-boot-tools) not installed")
def test_boot_scr_from_real_mkimage_decodes_back(tmp_path):
    script = cmdline.edit("boot.txt", FILES["boot.txt"].read_text(), ["fsck.mode=force"])
    (tmp_path / "boot.txt").write_text(script)
    boot_files.regenerate("boot.txt", tmp_path / "boot.txt")  # runs the real mkimage
    data = (tmp_path / "boot.scr").read_bytes()
    assert cmdline.decode_script_image(data) == script
    corrupted = data[:-3] + b"xyz"
    with pytest.raises(ArmswarmError, match="checksum"):
        cmdline.decode_script_image(corrupted)


def test_settings_validation_names_keys_and_hides_secrets():
    settings = {
        "admin": {"name": "admin", "password_hash": "correct horse battery"},
        "mirrors": {"debian": "ftp.example.org/debian", "arch": ["http://a.example/arm"]},
        "io_schedulers": {"mmc": "noop"},
        "kernel_args": {"present": ["quiet"]},
        "mail": {"enabled": True, "relay": "postfix", "host": "", "port": "x"},
        "tuning": {
            "cpu_governor": "Fast!",
            "root_mount_options": ["noatime", "a b"],
            "zram": {"enabled": True, "percent": 150},
        },
    }
    errors = "\n".join(
        node_settings.validate(settings, boot_root=str(FILES["rpi-cmdline"].parents[2]))
    )
    for key in (
        "armnode:admin:password_hash",
        "armnode:mirrors:debian",
        "armnode:io_schedulers",
        "armnode:mail:relay",
        "armnode:mail:host",
        "armnode:mail:port",
        "armnode:tuning:cpu_governor",
        "armnode:tuning:root_mount_options",
        "armnode:tuning:zram:percent",
    ):
        assert key in errors, key
    assert "armnode:mirrors:arch" not in errors and "armnode:kernel_args" not in errors
    assert "correct horse" not in errors
    good = {"admin": {"name": "admin", "password_hash": "$6$salt$abcdefgh"}}
    assert node_settings.validate(good) == []
