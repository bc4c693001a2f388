# ruff: noqa: E501 - the samples keep the real files' long lines
"""Kernel command-line editing per boot flavour, on real-format boot files.

The samples below are short excerpts of what the distributions ship (source in the comment
above each); the lab fixtures are real-format files too. Every edit is checked against the
file's own text: only the edited line differs, and removing what was added gives the file back
byte for byte.
"""

import difflib
import shutil
from pathlib import Path

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.node import boot_files, cmdline, node_settings, root_move

pytestmark = pytest.mark.unit

BOARDS = Path(__file__).resolve().parents[2] / "armswarm" / "lab" / "fixtures" / "boards"

# archlinuxarm/PKGBUILDs alarm/uboot-rock64/boot.txt: unquoted, and an unquoted multi-word
# setenv (the MAC address) before it.
ALARM_ROCK64 = """# After modifying, run ./mkscr

# MAC address (use spaces instead of colons)
setenv macaddr da 19 c8 7a 6d f4

part uuid ${devtype} ${devnum}:${bootpart} uuid
setenv bootargs console=ttyS2,1500000 root=PARTUUID=${uuid} rw rootwait earlycon=uart8250,mmio32,0xff130000
setenv fdtfile rockchip/rk3328-rock64.dtb

if load ${devtype} ${devnum}:${bootpart} ${kernel_addr_r} /boot/Image; then
  booti ${kernel_addr_r} - ${fdt_addr_r};
fi
"""

# archlinuxarm/PKGBUILDs alarm/uboot-sunxi/boot.txt: a one-line if before the setter.
ALARM_SUNXI = """# After modifying, run ./mkscr

if test -n ${distro_bootpart}; then setenv bootpart ${distro_bootpart}; else setenv bootpart 1; fi
part uuid ${devtype} ${devnum}:${bootpart} uuid

setenv bootargs console=${console} root=PARTUUID=${uuid} rw rootwait

if load ${devtype} ${devnum}:${bootpart} ${kernel_addr_r} /boot/zImage; then
  bootz ${kernel_addr_r} - ${fdt_addr_r};
fi
"""

# archlinuxarm/PKGBUILDs alarm/uboot-odroid-c2/boot.ini (shortened): consoles in a variable,
# trailing comments, and one argument after the closing quote.
ALARM_C2_INI = """ODROIDC2-UBOOT-CONFIG

# setenv m "1080i60hz" # Interlaced 60Hz
setenv m "1080p60hz" # Progressive 60Hz
setenv condev "console=ttyS0,115200n8 console=tty0"   # on both
setenv maxcpus "4"
if test "${disable_vu7}" = "false"; then setenv hid_quirks "usbhid.quirks=0x0eef:0x0005:0x0004"; fi

setenv bootargs "root=/dev/mmcblk0p1 rootwait rw ${condev} hdmimode=${m} fsck.repair=yes elevator=noop maxcpus=${maxcpus} ${hid_quirks}" SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1

booti ${loadaddr} ${initrd_loadaddr}:${filesize} ${dtb_loadaddr}
"""

# Hardkernel's ODROID-XU4/HC1 boot.ini as Armbian ships it (armbian/build
# config/bootscripts/boot-odroid-xu4.ini, shortened): bootargs built from variables, the console
# ones set conditionally, and the legacy-kernel fallback to the XU3 device tree.
XU4_INI = """ODROIDXU-UBOOT-CONFIG

setenv rootdev "/dev/mmcblk0p1"
setenv console "both"
if test "${console}" = "display" || test "${console}" = "both"; then setenv consoleargs "console=tty1"; fi
if test "${console}" = "serial" || test "${console}" = "both"; then setenv consoleargs "console=ttySAC2,115200n8 ${consoleargs}"; fi
setenv bootrootfs "${consoleargs} consoleblank=0 root=${rootdev} rootwait rw"
setenv governor "performance"
if ext4load mmc 0:1 0x00000000 "/boot/.next"; then echo "Found mainline kernel configuration"; else setenv fdtfile "exynos5422-odroidxu3.dtb"; fi
setenv bootargs "${bootrootfs} ${videoconfig} smsc95xx.macaddr=${macaddr} governor=${governor} ${extraargs}"
bootz 0x40008000 0x42000000 0x44000000
"""

# armbian/build config/bootscripts/boot-rockchip64.cmd (shortened): the docker flags appended
# to bootargs under a condition.
ARMBIAN_CMD = """setenv bootargs "root=${rootdev} rootwait rootfstype=${rootfstype} ${consoleargs} ${extraargs}"
if test "${docker_optimizations}" = "on"; then setenv bootargs "${bootargs} cgroup_enable=cpuset cgroup_memory=1 cgroup_enable=memory"; fi
"""

# MichaIng/DietPi .build/images/U-Boot/dietpiEnv.txt
DIETPI_ENV = """rootdev=/dev/mmcblk0p1
rootfstype=ext4
# The init system logs to the console defined last.
consoleargs=console=ttyAML0,115200 console=tty1
extraargs=fsck.repair=yes net.ifnames=0
overlay_path=amlogic
# Multiple prefixes are supported separated by space
overlay_prefix=meson
overlays=
user_overlays=
"""

# Manjaro ARM's extlinux.conf for the RockPro64: upper-case keywords, one label with spaces in
# its name, initrd given on the APPEND line.
MANJARO_EXTLINUX = """LABEL Manjaro ARM
KERNEL /Image
FDT /dtbs/rockchip/rk3399-rockpro64.dtb
APPEND initrd=/initramfs-linux.img console=tty1 console=ttyS2,1500000 root=PARTUUID=7a1c-02 rw rootwait quiet splash plymouth.ignore-serial-consoles
"""

# Several labels and a DEFAULT naming the second (syslinux grammar U-Boot reads).
MULTI_EXTLINUX = """DEFAULT mainline
TIMEOUT 30
MENU TITLE Boot menu

LABEL legacy
  MENU LABEL Hardkernel 4.14
  KERNEL /boot/zImage-4.14
  APPEND root=UUID=1111 rw rootwait console=ttySAC2,115200n8

LABEL mainline
  MENU LABEL Mainline 6.6
  LINUX /boot/zImage
  FDT /boot/dtbs/exynos5422-odroidhc1.dtb
  APPEND root=UUID=1111 rw rootwait console=ttySAC2,115200n8 console=tty1
"""

# Raspberry Pi OS Bookworm /boot/firmware/cmdline.txt (lab fixture has the same shape), and a
# Bullseye /boot/cmdline.txt without a final newline (as the Imager leaves it).
RPI_BULLSEYE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=738a4d67-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait quiet init=/usr/lib/raspi-config/init_resize.sh"
)

SAMPLES = {
    "odroid-hc1 boot.txt (quoted)": ("boot.txt", (BOARDS / "odroid-hc1/rootfs/boot/boot.txt")),
    "sopine boot.txt (unquoted)": ("boot.txt", (BOARDS / "sopine/rootfs/boot/boot.txt")),
    "rock64 boot.txt": ("boot.txt", ALARM_ROCK64),
    "sunxi boot.txt": ("boot.txt", ALARM_SUNXI),
    "odroid-c2 boot.ini": ("boot.ini", ALARM_C2_INI),
    "xu4 boot.ini": ("boot.ini", XU4_INI),
    "armbian boot.cmd": ("boot.txt", ARMBIAN_CMD),
    "armbianEnv": ("armbianEnv", (BOARDS / "rockpro64/rootfs/boot/armbianEnv.txt")),
    "dietpiEnv": ("dietpiEnv", DIETPI_ENV),
    "manjaro extlinux": ("extlinux", MANJARO_EXTLINUX),
    "multi-label extlinux": ("extlinux", MULTI_EXTLINUX),
    "rpi bookworm": ("rpi-cmdline", (BOARDS / "rpi4/rootfs/boot/firmware/cmdline.txt")),
    "rpi bullseye": ("rpi-cmdline", RPI_BULLSEYE),
}
ARGS = ["cgroup_enable=memory", "fsck.repair=yes", "console=ttyS0,115200"]


def _text(sample):
    return sample.read_text() if isinstance(sample, Path) else sample


def _changed_lines(old, new):
    return [
        line
        for line in difflib.ndiff(old.splitlines(), new.splitlines())
        if line.startswith(("+ ", "- "))
    ]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_add_once_then_remove_restores_the_file(name):
    flavour, sample = SAMPLES[name]
    text = _text(sample)
    before = cmdline.read(flavour, text)
    edited = cmdline.edit(flavour, text, ARGS)
    after = cmdline.read(flavour, edited)
    # Each argument once (already there counts, also via a u-boot variable the line uses).
    effective = [*after, *cmdline.site(flavour, edited).fixed]
    assert all(effective.count(a) == 1 for a in ARGS), effective
    # Nothing that was there went away, and only one line changed.
    assert after[: len(before)] == before
    assert len(_changed_lines(text, edited)) == 2, _changed_lines(text, edited)
    assert cmdline.edit(flavour, edited, ARGS) == edited
    # Removing exactly what was added (key=value) gives the file back byte for byte.
    found = cmdline.site(flavour, text)
    added = [a for a in ARGS if a not in before and a not in found.fixed]
    if any(a in found.maybe for a in added):
        # Armbian's conditional docker flags: removing them is refused (tested below).
        added = [a for a in added if a not in found.maybe]
        assert cmdline.edit(flavour, edited, absent=added) != text
        return
    assert cmdline.edit(flavour, edited, absent=added) == text


def test_unquoted_arch_boot_txt_is_found_and_kept_unquoted():
    edited = cmdline.edit("boot.txt", ALARM_ROCK64, ["fsck.mode=force"])
    assert (
        "setenv bootargs console=ttyS2,1500000 root=PARTUUID=${uuid} rw rootwait "
        "earlycon=uart8250,mmio32,0xff130000 fsck.mode=force\n" in edited
    )
    assert "setenv macaddr da 19 c8 7a 6d f4\n" in edited


def test_argument_after_the_closing_quote_counts_and_new_ones_go_last():
    args = cmdline.read("boot.ini", ALARM_C2_INI)
    assert args[0] == "root=/dev/mmcblk0p1" and args[-1] == "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1"
    edited = cmdline.edit("boot.ini", ALARM_C2_INI, ["fsck.mode=force"])
    assert '${hid_quirks}" SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1 fsck.mode=force\n' in edited
    assert 'setenv condev "console=ttyS0,115200n8 console=tty0"   # on both' in edited


def test_arguments_from_a_variable_count_but_are_not_removed_behind_its_back():
    # console=tty0 comes from ${condev}: present already, and not removable from bootargs.
    assert cmdline.edit("boot.ini", ALARM_C2_INI, ["console=tty0"]) == ALARM_C2_INI
    with pytest.raises(ArmswarmError, match=r"console=tty0: it comes from .*:5 \(\$\{condev\}\)"):
        cmdline.edit("boot.ini", ALARM_C2_INI, absent=["console=tty0"])
    # ${bootrootfs} is set once, unconditionally: its rootwait counts.
    assert cmdline.edit("boot.ini", XU4_INI, ["rootwait"]) == XU4_INI
    # ${consoleargs} is set conditionally: unknown, so console=tty1 is added to the setter.
    assert "${extraargs} console=tty1" in cmdline.edit("boot.ini", XU4_INI, ["console=tty1"])


def test_conditional_appender_is_not_the_setter_and_its_words_are_not_removable():
    edited = cmdline.edit("boot.txt", ARMBIAN_CMD, ["quiet"])
    assert edited.splitlines()[0].endswith('${extraargs} quiet"')
    assert edited.splitlines()[1] == ARMBIAN_CMD.splitlines()[1]
    with pytest.raises(ArmswarmError, match="cannot remove cgroup_enable=cpuset: .*:2 adds it"):
        cmdline.edit("boot.txt", ARMBIAN_CMD, absent=["cgroup_enable"])


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("echo hi\n", "no line sets bootargs"),
        (
            'setenv bootargs "a root=/x"\nsetenv bootargs "b root=/y"\n',
            "several lines set bootargs",
        ),
        (
            'if test -e mmc 0:1 x; then\n  setenv bootargs "root=/a"\nelse\n'
            '  setenv bootargs "root=/b"\nfi\n',
            "several lines set bootargs",
        ),
        ('if test -e x; then setenv bootargs "root=/a rootwait"; fi\n', "only set conditionally"),
        ("setenv bootcmd 'setenv bootargs root=/a; boot'\nrun bootcmd\n", "sets bootargs when"),
        ('setenv bootargs ""\n', "set empty"),
        ('setenv bootargs "root=/a x"y\n', "quotes inside an argument"),
    ],
)
def test_u_boot_script_refuses_when_unsure(script, message):
    with pytest.raises(ArmswarmError, match=message):
        cmdline.edit("boot.txt", script, ["quiet"], path="/boot/boot.txt")


def test_extlinux_upper_case_keywords_and_default_label():
    edited = cmdline.edit("extlinux", MULTI_EXTLINUX, ["quiet"])
    changed = _changed_lines(MULTI_EXTLINUX, edited)
    assert (
        changed[1]
        == "+   APPEND root=UUID=1111 rw rootwait console=ttySAC2,115200n8 console=tty1 quiet"
    )
    # The other label stays as it was: a way back when the new arguments do not boot.
    assert "console=ttySAC2,115200n8\n\nLABEL mainline" in edited


@pytest.mark.parametrize(
    ("head", "edited_label"),
    [
        ("", "one"),  # no default: U-Boot boots the labels in order
        ("default missing\n", "one"),  # a default naming no label: the same
        ("default two\n", "two"),
        ("ontimeout two\n", "two"),
    ],
)
def test_extlinux_default_resolution(head, edited_label):
    conf = (
        head
        + "label one\n\tlinux /a\n\tappend root=/dev/a\nlabel two\n\tlinux /b\n\tappend root=/dev/b\n"
    )
    edited = cmdline.edit("extlinux", conf, ["quiet"])
    dev = "a" if edited_label == "one" else "b"
    assert f"append root=/dev/{dev} quiet\n" in edited and edited.count("quiet") == 1


def test_extlinux_menu_default_marks_a_label():
    conf = "label one\n\tappend root=/dev/a\nlabel two\n\tmenu default\n\tappend root=/dev/b\n"
    assert "root=/dev/b quiet" in cmdline.edit("extlinux", conf, ["quiet"])


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ("label one\n\tappend root=/a\n\tappend root=/b\n", "2 APPEND lines"),
        ("label one\n\tlinux /a\n", "0 APPEND lines"),
        ("include other.conf\nlabel one\n\tappend root=/a\n", "includes another file"),
        ("timeout 5\n", "no label"),
    ],
)
def test_extlinux_refuses_when_unsure(conf, message):
    with pytest.raises(ArmswarmError, match=message):
        cmdline.edit("extlinux", conf, ["quiet"])


def test_repeated_keys_are_separate_arguments():
    line = "console=serial0,115200 console=tty1 root=/dev/a video=HDMI-A-1:1920x1080@60 rootwait\n"
    edited = cmdline.edit(
        "rpi-cmdline", line, ["cgroup_enable=cpuset", "cgroup_enable=memory", "video=DSI-1:800x480"]
    )
    assert edited.split() == [
        *line.split(),
        "cgroup_enable=cpuset",
        "cgroup_enable=memory",
        "video=DSI-1:800x480",
    ]
    # key=value removes exactly that one; a bare key every one of them.
    assert (
        cmdline.edit("rpi-cmdline", edited, absent=["cgroup_enable=cpuset"])
        .split()
        .count("cgroup_enable=memory")
        == 1
    )
    assert "video=" not in cmdline.edit("rpi-cmdline", edited, absent=["video"])
    # A bare key spares what present lists: changing a value converges in one run.
    changed = cmdline.edit("rpi-cmdline", line, ["console=ttyS0,115200"], ["console"])
    assert [a for a in changed.split() if a.startswith("console")] == ["console=ttyS0,115200"]
    assert cmdline.edit("rpi-cmdline", changed, ["console=ttyS0,115200"], ["console"]) == changed
    # An exact duplicate of a present argument goes.
    assert cmdline.edit("rpi-cmdline", "root=/a quiet quiet\n", ["quiet"]) == "root=/a quiet\n"


def test_root_and_rootwait_are_never_all_removed():
    for absent in (["root"], ["rootwait"], ["root=PARTUUID=738a4d67-02"]):
        with pytest.raises(ArmswarmError, match="would not boot"):
            cmdline.edit("rpi-cmdline", RPI_BULLSEYE, absent=absent)
    # Replacing root= is fine (what root_move does).
    moved = cmdline.edit("rpi-cmdline", RPI_BULLSEYE, ["root=PARTUUID=ffff-01"], ["root"])
    assert [a for a in moved.split() if a.startswith("root=")] == ["root=PARTUUID=ffff-01"]


def test_rpi_first_line_only_and_no_final_newline_kept():
    edited = cmdline.edit("rpi-cmdline", RPI_BULLSEYE, ["quiet", "fsck.mode=force"])
    assert edited == RPI_BULLSEYE + " fsck.mode=force"
    two = "root=/dev/a rootwait\n# the firmware ignores this line\n"
    assert cmdline.edit("rpi-cmdline", two, ["quiet"]) == "root=/dev/a rootwait quiet\n" + two[21:]
    with pytest.raises(ArmswarmError, match="empty"):
        cmdline.edit("rpi-cmdline", "\n", ["quiet"])


def test_env_file_line_added_goes_away_again():
    original = "verbosity=1\nconsole=serial\n"
    edited = cmdline.edit("armbianEnv", original, ["fsck.mode=force"])
    assert edited == original + "extraargs=fsck.mode=force\n"
    assert cmdline.edit("armbianEnv", edited, absent=["fsck.mode"], original=original) == original
    # A line that was there (Armbian ships extraargs=) stays, empty.
    fixture = (BOARDS / "rockpro64/rootfs/boot/armbianEnv.txt").read_text()
    edited = cmdline.edit("armbianEnv", fixture, ["a=1"])
    assert cmdline.edit("armbianEnv", edited, absent=["a"], original=fixture) == fixture
    with pytest.raises(ArmswarmError, match="several extraargs"):
        cmdline.edit("armbianEnv", "extraargs=a\nextraargs=b\n", ["c"])


def test_dietpi_consoleargs_count_but_are_not_ours():
    assert cmdline.edit("dietpiEnv", DIETPI_ENV, ["console=tty1"]) == DIETPI_ENV
    with pytest.raises(ArmswarmError, match="consoleargs="):
        cmdline.edit("dietpiEnv", DIETPI_ENV, absent=["console"])


@pytest.mark.parametrize("bad", ["two words", 'quote"d', "", "tab\targ", "$(reboot)", "a;b", "x#y"])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ArmswarmError, match="not a single word"):
        cmdline.edit("rpi-cmdline", "root=/dev/x\n", [bad])


def test_lists_only_and_no_contradiction():
    with pytest.raises(ArmswarmError, match="must be a list"):
        cmdline.edit("rpi-cmdline", "root=/dev/x\n", "quiet")
    with pytest.raises(ArmswarmError, match="both present and absent: quiet"):
        cmdline.edit("rpi-cmdline", "root=/dev/x\n", ["quiet"], ["quiet"])


def test_unknown_flavour_is_an_error():
    with pytest.raises(ArmswarmError, match="no kernel command line editor"):
        cmdline.read("grub", "")


# -- u-boot-menu --------------------------------------------------------------------------------
# /etc/default/u-boot exactly as Debian's u-boot-menu 4.2.2 ships it: all commented out.
STOCK = (BOARDS / "rockpro64-extlinux/rootfs/etc/default/u-boot").read_text()
KERNEL_CMDLINE = (BOARDS / "rockpro64-extlinux/rootfs/etc/kernel/cmdline").read_text()
FSTAB = "UUID=9d1e / ext4 defaults,noatime 0 1\n"


def test_u_boot_menu_stock_defaults_take_etc_kernel_cmdline():
    files = {cmdline.U_BOOT_DEFAULT: STOCK, cmdline.KERNEL_CMDLINE: KERNEL_CMDLINE}
    eff = cmdline.u_boot_menu_effective(files)
    # root= moves to U_BOOT_ROOT, the rest are the parameters (u-boot-update's two seds).
    assert eff.source == "kernel-cmdline" and eff.args == KERNEL_CMDLINE.split()
    change = cmdline.u_boot_menu(files, ["cgroup_enable=memory"])
    assert change["files"] == {
        cmdline.KERNEL_CMDLINE: KERNEL_CMDLINE.rstrip("\n") + " cgroup_enable=memory\n"
    }
    again = cmdline.u_boot_menu({**files, **change["files"]}, absent=["cgroup_enable"])
    assert again["files"] == {cmdline.KERNEL_CMDLINE: KERNEL_CMDLINE}


def test_u_boot_menu_builtin_defaults_are_kept_and_the_line_goes_again():
    files = {cmdline.U_BOOT_DEFAULT: STOCK, "etc/fstab": FSTAB}
    assert cmdline.u_boot_menu_effective(files).args == ["root=UUID=9d1e", "ro", "quiet"]
    change = cmdline.u_boot_menu(files, ["cgroup_enable=memory"])
    assert change["new"] == ["root=UUID=9d1e", "ro", "quiet", "cgroup_enable=memory"]
    assert change["files"][cmdline.U_BOOT_DEFAULT] == (
        STOCK + 'U_BOOT_PARAMETERS="ro quiet cgroup_enable=memory"\n'
    )
    edited = {**files, **change["files"]}
    back = cmdline.u_boot_menu(
        edited, absent=["cgroup_enable=memory"], originals={cmdline.U_BOOT_DEFAULT: STOCK}
    )
    # No U_BOOT_PARAMETERS="ro quiet" left behind: the file is the package's again.
    assert back["files"] == {cmdline.U_BOOT_DEFAULT: STOCK}
    with pytest.raises(ArmswarmError, match="quiet: it comes from u-boot-menu's defaults"):
        cmdline.u_boot_menu(files, absent=["quiet"])


def test_u_boot_menu_explicit_parameters_edited_in_place():
    explicit = STOCK.replace(
        '#U_BOOT_PARAMETERS="ro quiet"', 'U_BOOT_PARAMETERS="rw rootwait console=ttyS0,115200n8"'
    ).replace('#U_BOOT_ROOT=""', 'U_BOOT_ROOT="root=UUID=c41f"')
    files = {cmdline.U_BOOT_DEFAULT: explicit}
    change = cmdline.u_boot_menu(files, ["console=tty1"], ["rootwait=1"])
    new = change["files"][cmdline.U_BOOT_DEFAULT]
    assert 'U_BOOT_PARAMETERS="rw rootwait console=ttyS0,115200n8 console=tty1"\n' in new
    assert len(_changed_lines(explicit, new)) == 2
    assert change["new"][0] == "root=UUID=c41f"
    with pytest.raises(ArmswarmError, match="would not boot"):
        cmdline.u_boot_menu(files, absent=["rootwait"])
    with pytest.raises(ArmswarmError, match="U_BOOT_ROOT"):
        cmdline.u_boot_menu(files, ["root=/dev/sda1"])


def test_u_boot_menu_fragments_later_wins():
    vendor = "usr/share/u-boot-menu/conf.d/rockpro64.conf"
    files = {
        cmdline.U_BOOT_DEFAULT: STOCK.replace(
            '#U_BOOT_PARAMETERS="ro quiet"', 'U_BOOT_PARAMETERS="quiet"'
        ),
        vendor: 'U_BOOT_PARAMETERS="console=ttyS2,1500000 rootwait"\nU_BOOT_FDT="rk3399.dtb"\n',
        cmdline.KERNEL_CMDLINE: KERNEL_CMDLINE,  # not used: the parameters are set
        "etc/fstab": FSTAB,
    }
    eff = cmdline.u_boot_menu_effective(files)
    # Parameters set, so /etc/kernel/cmdline is not read at all: root= from /etc/fstab.
    assert eff.args == [
        "root=UUID=9d1e",
        "console=ttyS2,1500000",
        "rootwait",
    ]
    # The package's fragment is not edited (an upgrade would undo it): armswarm's own /etc one.
    change = cmdline.u_boot_menu(files, ["fsck.mode=force"])
    assert set(change["files"]) == {cmdline.OWN_FRAGMENT}
    assert change["files"][cmdline.OWN_FRAGMENT].endswith(
        'U_BOOT_PARAMETERS="console=ttyS2,1500000 rootwait fsck.mode=force"\n'
    )
    back = cmdline.u_boot_menu({**files, **change["files"]}, absent=["fsck.mode"])
    assert back["files"] == {cmdline.OWN_FRAGMENT: None}
    # A user's /etc fragment extending the value is edited where it adds.
    mine = "etc/u-boot-menu/conf.d/50-mine.conf"
    files[mine] = 'U_BOOT_PARAMETERS="${U_BOOT_PARAMETERS} quiet" # mine\n'
    change = cmdline.u_boot_menu(files, ["fsck.mode=force"], ["quiet"])
    assert change["files"] == {
        mine: 'U_BOOT_PARAMETERS="${U_BOOT_PARAMETERS} fsck.mode=force" # mine\n'
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('U_BOOT_UPDATE="false"\n', "U_BOOT_UPDATE is not true"),
        ('if true; then U_BOOT_PARAMETERS="x"; fi\n', "not a plain assignment"),
        ('U_BOOT_PARAMETERS="$(cat /proc/cmdline)"\n', "command substitution"),
    ],
)
def test_u_boot_menu_refuses_what_it_cannot_evaluate(extra, message):
    files = {cmdline.U_BOOT_DEFAULT: STOCK + extra, "etc/fstab": FSTAB}
    with pytest.raises(ArmswarmError, match=message):
        cmdline.u_boot_menu(files, ["quiet"])


def test_u_boot_menu_root_like_u_boot_update():
    # sed removes the first root=… anywhere (here inside nfsroot=), and takes the last one.
    files = {
        cmdline.U_BOOT_DEFAULT: STOCK,
        cmdline.KERNEL_CMDLINE: "console=tty1 nfsroot=10.0.0.1:/srv root=/dev/nfs rw\n",
    }
    eff = cmdline.u_boot_menu_effective(files)
    assert eff.root == "root=/dev/nfs"
    assert [w for w, *_ in eff.params] == ["console=tty1", "nfs", "root=/dev/nfs", "rw"]
    with pytest.raises(
        ArmswarmError, match="nfs: it comes from u-boot-menu's defaults|cannot remove nfs"
    ):
        cmdline.u_boot_menu(files, absent=["nfs"])


# -- boot.scr -----------------------------------------------------------------------------------
@pytest.mark.skipif(not shutil.which("mkimage"), reason="mkimage (u-boot-tools) not installed")
def test_boot_scr_from_real_mkimage_decodes_back(tmp_path):
    script = cmdline.edit("boot.txt", ALARM_ROCK64, ["fsck.mode=force"])
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
    errors = "\n".join(node_settings.validate(settings, boot_root=str(BOARDS / "rpi4" / "rootfs")))
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


def test_settings_kernel_args_must_be_lists():
    errors = node_settings.validate({"kernel_args": {"present": "quiet"}})
    assert any("armnode:kernel_args" in e and "must be a list" in e for e in errors), errors


def test_a_created_extraargs_line_keeps_a_crlf_files_line_ending():
    # dietpiEnv.txt as DietPi ships it (github:MichaIng/DietPi .build/images/U-Boot/
    # dietpiEnv.txt), without its extraargs= line, saved with CRLF on another system.
    text = (
        "rootdev=/dev/mmcblk0p1\r\nrootfstype=ext4\r\n"
        "consoleargs=console=ttyAML0,115200 console=tty1\r\noverlay_path=amlogic\r\n"
    )
    new = cmdline.edit("dietpiEnv", text, ["fsck.mode=force"], path="dietpiEnv.txt")
    assert new == text + "extraargs=fsck.mode=force\r\n"
    assert cmdline.edit("dietpiEnv", text.rstrip("\r\n"), ["quiet"]).endswith(
        "amlogic\r\nextraargs=quiet\r\n"
    )


def test_the_root_move_sets_every_active_root_line_and_a_commented_one_only_when_alone(tmp_path):
    ids = {"UUID": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", "PARTUUID": "1234abcd-01"}
    env = tmp_path / "env"
    (env / "boot").mkdir(parents=True)
    # env import: the last rootdev= counts, so both change.
    (env / "boot/armbianEnv.txt").write_text("rootdev=/dev/mmcblk0p1\nverbosity=1\nrootdev=x\n")
    new = root_move.boot_change(str(env), ids)["text"]
    assert new == f"rootdev=UUID={ids['UUID']}\nverbosity=1\nrootdev=UUID={ids['UUID']}\n"
    menu = tmp_path / "menu"
    (menu / "etc/default").mkdir(parents=True)
    (menu / "boot/extlinux").mkdir(parents=True)
    (menu / "boot/extlinux/extlinux.conf").write_text("## /boot/extlinux/extlinux.conf\n")
    line = f'U_BOOT_ROOT="root=UUID={ids["UUID"]}"'
    # sh: the active line counts, a commented example above it stays a comment.
    (menu / "etc/default/u-boot").write_text('#U_BOOT_ROOT="root=/dev/sda1"\nU_BOOT_ROOT="x"\n')
    new = root_move.boot_change(str(menu), ids)["text"]
    assert new == f'#U_BOOT_ROOT="root=/dev/sda1"\n{line}\n'
    (menu / "etc/default/u-boot").write_text('U_BOOT_TIMEOUT="50"\n#U_BOOT_ROOT=""\n')
    assert root_move.boot_change(str(menu), ids)["text"] == f'U_BOOT_TIMEOUT="50"\n{line}\n'


# -- real constructs found in the distributions' boot files -----------------------------------
FIXTURES = Path(__file__).resolve().parents[1] / "functional" / "fixtures" / "boot"
REAL_FILES = {
    # (flavour, file under tests/functional/fixtures/boot); sources in each file's header.
    "dietpi odroid-xu4 boot.ini": ("boot.ini", "dietpi-odroid-xu4/boot/boot.ini"),
    "alarm odroid-c2 boot.ini": ("boot.ini", "alarm-odroid-c2/boot/boot.ini"),
    "dietpi odroid-c4 dietpiEnv": ("dietpiEnv", "dietpi-odroid-c4/boot/dietpiEnv.txt"),
    "dietpi quartz64 extlinux": ("extlinux", "dietpi-quartz64/boot/extlinux/extlinux.conf"),
    "armbian aml-s9xx extlinux": ("extlinux", "armbian-aml-s9xx/boot/extlinux/extlinux.conf"),
}


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_boot_files_edit_one_line_and_come_back(name):
    flavour, rel = REAL_FILES[name]
    text = (FIXTURES / rel).read_text()
    edited = cmdline.edit(flavour, text, ["fsck.mode=force"])
    assert len(_changed_lines(text, edited)) == 2
    assert cmdline.read(flavour, edited)[-1] == "fsck.mode=force"
    assert cmdline.edit(flavour, edited, absent=["fsck.mode=force"]) == text


# armbian/build config/bootscripts/boot-meson64.cmd: the legacy and the mainline kernel get
# their bootargs in the two branches of a multi-line if (here with the mainline branch gone,
# as a user trimming it leaves it): the one setter only runs for a legacy kernel.
MESON64_LEGACY_ONLY = """if test -e ${devtype} ${devnum} ${prefix}zImage; then
	echo "Booting legacy kernel..."
	setenv bootargs "root=${rootdev} rootwait rootfstype=${rootfstype} ${consoleargs} consoleblank=0"
	booti ${loadaddr} ${initrd_loadaddr} ${dtb_loadaddr}
fi
"""


def test_a_setter_inside_a_multi_line_if_block_is_conditional():
    with pytest.raises(ArmswarmError, match=r"boot.cmd:3: bootargs is only set conditionally"):
        cmdline.edit("boot.txt", MESON64_LEGACY_ONLY, ["quiet"], path="boot.cmd")
    # while/until blocks too, and the block ends at fi/done: a setter after it counts.
    after = MESON64_LEGACY_ONLY.replace("\tsetenv bootargs", "\tsetenv legacyargs") + (
        'setenv bootargs "root=${rootdev} rootwait"\n'
    )
    assert cmdline.edit("boot.txt", after, ["quiet"]).endswith('rootwait quiet"\n')
    loop = "while itest ${i} < 2; do\n  setenv bootargs root=/dev/sda1 rootwait\ndone\n"
    with pytest.raises(ArmswarmError, match="only set conditionally"):
        cmdline.edit("boot.txt", loop, ["quiet"])


@pytest.mark.parametrize(
    ("script", "message"),
    [
        # DietPi's OdroidXU4 boot.ini chains loads with ||: a setter there runs only sometimes.
        ('load mmc 0:1 0x44000000 /boot/x || setenv bootargs "root=/dev/mmcblk0p1 rootwait"\n',
         "only set conditionally"),
        ('test -n "${rescue}" && setenv bootargs "root=/dev/mmcblk0p1 rootwait single"\n',
         "only set conditionally"),
        # ... and beside an unconditional one it is a second setter, not something to ignore.
        ('setenv bootargs "root=/dev/mmcblk0p1 rootwait"\n'
         'test -e mmc 0:1 /boot/.next || setenv bootargs "root=/dev/mmcblk0p2 rootwait"\n',
         r"several lines set bootargs \(1, 2\)"),
    ],
)  # fmt: skip
def test_setters_after_and_or_are_conditional(script, message):
    with pytest.raises(ArmswarmError, match=message):
        cmdline.edit("boot.txt", script, ["quiet"])


def test_a_setter_followed_by_or_still_counts():
    script = 'setenv bootargs "root=/dev/mmcblk0p1 rootwait" || echo "cannot set bootargs"\n'
    assert cmdline.edit("boot.txt", script, ["quiet"]) == script.replace(
        "rootwait", "rootwait quiet"
    )


# archlinuxarm/PKGBUILDs alarm/uboot-raspberrypi/boot.txt.v3 (Arch Linux ARM AArch64 on the
# Raspberry Pi 3/4 with U-Boot): the MAC address quoted inside the last argument.
ALARM_RPI_V3 = """part uuid ${devtype} ${devnum}:2 uuid

setenv bootargs console=ttyS1,115200 console=tty0 root=PARTUUID=${uuid} rw rootwait smsc95xx.macaddr="${usbethaddr}"

if load ${devtype} ${devnum}:${bootpart} ${kernel_addr_r} /Image; then
  booti ${kernel_addr_r} - ${fdt_addr_r};
fi
"""


def test_a_quote_inside_one_argument_is_that_argument():
    assert cmdline.read("boot.txt", ALARM_RPI_V3)[-1] == "smsc95xx.macaddr=${usbethaddr}"
    edited = cmdline.edit("boot.txt", ALARM_RPI_V3, ["cgroup_enable=memory"])
    assert 'rootwait smsc95xx.macaddr="${usbethaddr}" cgroup_enable=memory\n' in edited
    assert cmdline.edit("boot.txt", edited, absent=["cgroup_enable"]) == ALARM_RPI_V3
    # It goes as a whole word, quotes and all.
    gone = cmdline.edit("boot.txt", ALARM_RPI_V3, absent=["smsc95xx.macaddr"])
    assert (
        "setenv bootargs console=ttyS1,115200 console=tty0 root=PARTUUID=${uuid} rw rootwait\n"
        in gone
    )


def test_env_files_root_and_rootwait_come_from_the_boot_script():
    # Armbian appends rootdev=UUID=… to armbianEnv.txt (lib/functions/image/partitioning.sh);
    # its boot.cmd and DietPi's boot.cmd set root=${rootdev} rootwait: never in extraargs.
    armbian = (BOARDS / "rockpro64/rootfs/boot/armbianEnv.txt").read_text()
    for absent in (["rootwait"], ["root"], ["root=UUID=7f3c9a52-1d4e-4b8a-9c61-2e5f0d8a3b17"]):
        with pytest.raises(ArmswarmError, match="cannot remove root"):
            cmdline.edit("armbianEnv", armbian, absent=absent, path="/boot/armbianEnv.txt")
    assert cmdline.edit("armbianEnv", armbian, ["rootwait"]) == armbian
    with pytest.raises(ArmswarmError, match="rootdev="):
        cmdline.edit("armbianEnv", armbian, ["root=/dev/sda1"])
    with pytest.raises(ArmswarmError, match="cannot remove rootwait"):
        cmdline.edit("dietpiEnv", DIETPI_ENV, absent=["rootwait"])


def test_a_created_extraargs_line_goes_again_from_a_crlf_file():
    # armbianEnv.txt saved with CRLF (edited on Windows), without an extraargs= line.
    original = "verbosity=1\r\nconsole=serial\r\nrootdev=UUID=7f3c\r\n"
    edited = cmdline.edit("armbianEnv", original, ["quiet"])
    assert edited == original + "extraargs=quiet\r\n"
    assert cmdline.edit("armbianEnv", edited, absent=["quiet"], original=original) == original
    # Without a final line ending (an editor that leaves none): it comes back without one.
    bare = original.rstrip("\r\n")
    edited = cmdline.edit("armbianEnv", bare, ["quiet"])
    assert edited == bare + "\r\nextraargs=quiet\r\n"
    assert cmdline.edit("armbianEnv", edited, absent=["quiet"], original=bare) == bare


# -- boot files on disk -------------------------------------------------------------------------
def test_a_crlf_boot_ini_with_latin1_bytes_stays_as_it_is_but_the_one_line(tmp_path):
    # Hardkernel's boot.ini is on the FAT partition and gets edited on Windows: CRLF, and a
    # comment in the PC's code page (a byte that is not UTF-8).
    text = (FIXTURES / "dietpi-odroid-xu4/boot/boot.ini").read_text()
    data = text.replace("\n", "\r\n").encode().replace(b"# U-Boot parameters", b"# R\xe9glages")
    ini = tmp_path / "boot/boot.ini"
    ini.parent.mkdir()
    ini.write_bytes(data)
    change = boot_files.plan(str(tmp_path), ["fsck.mode=force"])
    assert change["new"][-1] == "fsck.mode=force"
    boot_files.apply(str(tmp_path), change)
    new = ini.read_bytes()
    assert new == data.replace(b'${hid_quirks}"', b'${hid_quirks} fsck.mode=force"')
    assert (tmp_path / "boot/boot.ini.armswarm-orig").read_bytes() == data
    back = boot_files.plan(str(tmp_path), absent=["fsck.mode=force"])
    boot_files.apply(str(tmp_path), back)
    assert ini.read_bytes() == data


def test_env_file_the_boot_script_ignores_is_refused(tmp_path):
    # armbian/build config/bootscripts/boot-mt7623.cmd (BananaPi R2) imports armbianEnv.txt
    # but builds bootargs without ${extraargs}: an edit would not reach the kernel.
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "armbianEnv.txt").write_text("verbosity=1\nrootdev=UUID=7f3c\nextraargs=\n")
    (boot / "boot.cmd").write_text(
        "env import -t ${loadaddr} ${filesize}\n"
        'setenv bootargs "console=ttyS2,115200n1 root=${rootdev} rw rootfstype=${rootfs} '
        'rootwait audit=0 loglevel=${verbosity}"\n'
    )
    with pytest.raises(ArmswarmError, match=r"armbianEnv.txt: the boot script .*boot.cmd"):
        boot_files.plan(str(tmp_path), ["quiet"])
    # Armbian's usual script puts ${extraargs} last: editable.
    (boot / "boot.cmd").write_text(ARMBIAN_CMD)
    assert boot_files.plan(str(tmp_path), ["quiet"])["new"] == ["quiet"]


# -- extlinux.conf as U-Boot's parser reads it (boot/pxe_utils.c) ------------------------------
# Armbian's aml-s9xx-box extlinux.conf has blank lines inside its one label, and lives on a FAT
# partition its users edit on a PC: saved with CRLF, a blank line is "\r\n". U-Boot's lexer eats
# only blanks (space, tab) before a keyword, so "\r" reads as an empty unknown keyword: the label
# ends there, and the fdt/append lines after it are ignored top-level commands.
AML_CRLF = (
    "label Armbian\r\n  kernel /Image\r\n  initrd /uInitrd\r\n\r\n"
    "  fdt /dtb/amlogic/meson-gxl-s905w-tx3-mini.dtb\r\n"
    "  append root=UUID=5ba3 rootflags=data=writeback console=ttyAML0,115200n8 rw\r\n"
)


def test_extlinux_a_crlf_blank_line_ends_the_label():
    with pytest.raises(ArmswarmError, match="0 APPEND lines"):
        cmdline.edit("extlinux", AML_CRLF, ["quiet"])
    # Without the blank line a CRLF file is edited before the CR, and comes back.
    text = AML_CRLF.replace("\r\n\r\n", "\r\n")
    edited = cmdline.edit("extlinux", text, ["quiet"])
    assert edited.endswith(" rw quiet\r\n")
    assert cmdline.edit("extlinux", edited, absent=["quiet"]) == text


def test_the_root_move_refuses_a_crlf_aml_s9xx_file_whose_append_u_boot_ignores(tmp_path):
    conf = FIXTURES / "armbian-aml-s9xx/boot/extlinux/extlinux.conf"
    (tmp_path / "boot/extlinux").mkdir(parents=True)
    (tmp_path / EXTLINUX_REL).write_bytes(conf.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(ArmswarmError, match="0 APPEND lines"):
        root_move.boot_change(str(tmp_path), {"UUID": "0b1c", "PARTUUID": "1234-01"})


EXTLINUX_REL = "boot/extlinux/extlinux.conf"


def test_extlinux_names_keep_their_cr_like_u_boot():
    # A "default" line added with CRLF to an LF file (Windows editor on the FAT partition): U-Boot
    # keeps the CR in the name, which then matches no label: it boots the first one.
    conf = "default two\r\nlabel one\n\tappend root=/dev/a\nlabel two\n\tappend root=/dev/b\n"
    assert "append root=/dev/a quiet\n" in cmdline.edit("extlinux", conf, ["quiet"])
    crlf = conf.replace("\n", "\r\n").replace("\r\r", "\r")
    assert "append root=/dev/b quiet\r\n" in cmdline.edit("extlinux", crlf, ["quiet"])


@pytest.mark.parametrize(
    "conf",
    [
        # A box's second FDT line uncommented (Armbian aml-s9xx's template lists examples): U-Boot
        # takes the first, leaves the second unread, and that ends the label.
        "label a\n  fdt /dtb/one.dtb\n  fdt /dtb/two.dtb\n  append root=/dev/a\n",
        # kaslrseed takes no value: a word after it is an unknown keyword.
        "label a\n  kaslrseed yes\n  append root=/dev/a\n",
    ],
)
def test_extlinux_a_line_u_boot_does_not_take_ends_the_label(conf):
    with pytest.raises(ArmswarmError, match=r"0 APPEND lines|2 APPEND lines"):
        cmdline.edit("extlinux", conf, ["quiet"])


def test_extlinux_an_initrd_line_after_append_initrd_ends_the_label():
    # Manjaro/Fedora put initrd= on APPEND; an INITRD line after it is not read (the initrd is
    # set), so the label ends there and the second APPEND is an ignored top-level command.
    conf = "label a\n  append initrd=/i.img root=/dev/a\n  initrd /i.img\n  append root=/dev/b\n"
    assert "append initrd=/i.img root=/dev/a quiet\n" in cmdline.edit("extlinux", conf, ["quiet"])


def test_extlinux_devicetree_overlay_is_a_label_keyword():
    # "devicetree-overlay" (U-Boot's alias of fdtoverlays, since 2022.10) inside the label.
    conf = "label a\n  linux /Image\n  devicetree-overlay /o.dtbo\n  append root=/dev/a\n"
    assert cmdline.edit("extlinux", conf, ["quiet"]).endswith("append root=/dev/a quiet\n")


@pytest.mark.parametrize(
    ("conf", "absent", "message"),
    [
        # An empty APPEND is a parse error: U-Boot would boot no label of the file at all.
        ("label a\n  append quiet\n", ["quiet"], r"extlinux.conf:2: .*empty APPEND"),
        # "#" first on the value is a comment to U-Boot: the same parse error.
        ("label a\n  append quiet #x root=/dev/a\n", ["quiet"], r"extlinux.conf:2: .*'#'"),
        # pxe_utils.c reads an APPEND's initrd= up to the next space (strchr): none there is
        # a wild length. Manjaro-style APPEND initrd=… with the words after it removed.
        (
            "label a\n  append root=/dev/a initrd=/initramfs-linux.img quiet\n",
            ["quiet"],
            r"extlinux.conf:2: .*initrd=",
        ),
    ],
)
def test_extlinux_edits_u_boot_could_not_parse_are_refused(conf, absent, message):
    with pytest.raises(ArmswarmError, match=message):
        cmdline.edit("extlinux", conf, absent=absent, path="/boot/extlinux/extlinux.conf")


def test_extlinux_initrd_line_before_append_makes_initrd_words_harmless():
    conf = "label a\n  initrd /i.img\n  append root=/dev/a initrd=/x quiet\n"
    assert cmdline.edit("extlinux", conf, absent=["quiet"]).endswith("initrd=/x\n")


# -- u-boot-menu as u-boot-update 4.2.2 (Debian 12) evaluates it --------------------------------
def test_u_boot_menu_blank_parameters_are_not_the_defaults():
    # ${U_BOOT_PARAMETERS:-ro quiet} only replaces an empty value: " " stays (no parameters).
    files = {cmdline.U_BOOT_DEFAULT: 'U_BOOT_PARAMETERS=" "\n', "etc/fstab": FSTAB}
    assert cmdline.u_boot_menu_effective(files).args == ["root=UUID=9d1e"]


def test_u_boot_menu_a_semicolon_ends_the_assignment():
    files = {cmdline.U_BOOT_DEFAULT: 'U_BOOT_PARAMETERS="ro quiet";\n', "etc/fstab": FSTAB}
    assert cmdline.u_boot_menu_effective(files).args == ["root=UUID=9d1e", "ro", "quiet"]
    change = cmdline.u_boot_menu(files, ["rootwait"])
    assert change["files"][cmdline.U_BOOT_DEFAULT] == 'U_BOOT_PARAMETERS="ro quiet rootwait";\n'
    files[cmdline.U_BOOT_DEFAULT] = 'U_BOOT_PARAMETERS="ro" && U_BOOT_ROOT=x\n'
    with pytest.raises(ArmswarmError, match="u-boot:1: "):
        cmdline.u_boot_menu_effective(files)


def test_u_boot_menu_multi_line_kernel_cmdline_is_refused():
    # u-boot-update's $(cat | sed) keeps the inner newline: the second line would be a line of
    # its own in extlinux.conf, not part of append.
    files = {cmdline.KERNEL_CMDLINE: "root=/dev/a rw\nquiet\n"}
    with pytest.raises(ArmswarmError, match=r"/etc/kernel/cmdline:2: "):
        cmdline.u_boot_menu(files, ["rootwait"])


def _generated(labels):
    """An extlinux.conf in u-boot-update 4.2.2's layout (header, default, l0/l0r labels)."""
    head, default = (
        "## /boot/extlinux/extlinux.conf\n##\n## Do not edit this file manually, use: u-boot-update\n\n",
        labels[0][0],
    )
    out = head + f"default {default}\nmenu title U-Boot menu\nprompt 0\ntimeout 50\n"
    for name, append in labels[1:]:
        out += f"\n\nlabel {name}\n\tmenu label Debian 6.1\n\tlinux /vmlinuz-6.1\n\t\n\tappend {append}"
    return out + "\n"


def _menu_root(tmp_path, fragment, extlinux):
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/default/u-boot").write_text(STOCK)
    (tmp_path / "etc/fstab").write_text(FSTAB)
    conf = tmp_path / "usr/share/u-boot-menu/conf.d"
    conf.mkdir(parents=True)
    (conf / "board.conf").write_text(fragment)
    (tmp_path / "boot/extlinux").mkdir(parents=True)
    (tmp_path / boot_files.EXTLINUX).write_text(extlinux)


@pytest.mark.parametrize(
    ("fragment", "labels"),
    [
        # u-boot-menu's README.Debian: a device package's fragment may set U_BOOT_DEFAULT=l0r;
        # the rescue entry drops " quiet" (sed 's| quiet||') and adds single.
        (
            'U_BOOT_DEFAULT="l0r"\nU_BOOT_PARAMETERS="rw quiet rootwait"\n',
            [
                ("l0r",),
                ("l0", "root=UUID=9d1e rw quiet rootwait"),
                ("l0r", "root=UUID=9d1e rw rootwait single"),
            ],
        ),
        # Only rescue entries: "default l0" names none, U-Boot boots the first label.
        (
            'U_BOOT_ALTERNATIVES="recovery"\nU_BOOT_PARAMETERS="rw quiet rootwait"\n',
            [("l0",), ("l0r", "root=UUID=9d1e rw rootwait single")],
        ),
    ],
)
def test_u_boot_menu_default_entry_as_configured(tmp_path, fragment, labels, monkeypatch):
    _menu_root(tmp_path, fragment, _generated(labels))
    # extlinux.conf is what u-boot-update makes of the configuration: nothing to do.
    assert boot_files.plan(str(tmp_path)) == {}
    change = boot_files.plan(str(tmp_path), ["fsck.mode=force"])
    assert change["new"][-1] == "fsck.mode=force"

    def u_boot_update(argv, cwd=None):
        new = [
            (
                n,
                a + " fsck.mode=force"
                if n == "l0"
                else a.replace(" single", " fsck.mode=force single"),
            )
            for n, *a in labels[1:]
            for a in a
        ]
        (tmp_path / boot_files.EXTLINUX).write_text(_generated([labels[0], *new]))

    monkeypatch.setattr(boot_files, "_run", u_boot_update)
    monkeypatch.setattr(boot_files.shutil, "which", lambda tool: "/usr/sbin/" + tool)
    boot_files._apply_u_boot_menu(
        str(tmp_path), {Path(p): t for p, t in change["writes"].items()}, change["new"]
    )
    assert "fsck.mode=force single" in (tmp_path / boot_files.EXTLINUX).read_text()


def test_u_boot_menu_no_entry_at_all_is_refused():
    files = {cmdline.U_BOOT_DEFAULT: 'U_BOOT_ALTERNATIVES="none"\n', "etc/fstab": FSTAB}
    with pytest.raises(ArmswarmError, match="U_BOOT_ALTERNATIVES"):
        cmdline.u_boot_menu(files, ["quiet"])


def test_u_boot_menu_hidden_fragments_are_not_sourced(tmp_path):
    # sh's * skips dot files (an editor's or a package manager's leftovers); pathlib's does not.
    _menu_root(
        tmp_path, 'U_BOOT_PARAMETERS="rw"\n', _generated([("l0",), ("l0", "root=UUID=9d1e rw")])
    )
    mine = tmp_path / "etc/u-boot-menu/conf.d"
    mine.mkdir(parents=True)
    (mine / ".old.conf").write_text('U_BOOT_PARAMETERS="x"\n')
    assert boot_files.current(str(tmp_path))["args"] == ["root=UUID=9d1e", "rw"]


def test_u_boot_menu_hand_edited_extlinux_conf_is_due(tmp_path):
    # extlinux.conf edited by hand into something u-boot-update never writes (a label twice):
    # it is not "up to date", the run regenerates it (u-boot-update rewrites it anyway).
    fragment = 'U_BOOT_PARAMETERS="rw quiet rootwait"\n'
    generated = _generated([("l0",), ("l0", "root=UUID=9d1e rw quiet rootwait")])
    _menu_root(tmp_path, fragment, generated)
    assert boot_files.plan(str(tmp_path)) == {}
    doubled = generated + "\nlabel l0\n\tlinux /vmlinuz-old\n\tappend root=/dev/sda1\n"
    (tmp_path / boot_files.EXTLINUX).write_text(doubled)
    change = boot_files.plan(str(tmp_path))
    assert change and change.get("reason") == "extlinux.conf is out of date", change
