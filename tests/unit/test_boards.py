"""armswarm_core.node.boards: board, CPU clusters, root device and boot flavour detection."""

import os
from pathlib import Path

import pytest
import yaml
from armswarm_core.common import architectures
from armswarm_core.node import boards

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "armswarm" / "lab" / "fixtures" / "boards"

# fixture dir → (board, boot flavour, cmdline file relative to rootfs/)
EXPECTED = {
    "odroid-hc1": ("odroid-hc1", "boot.txt", "boot/boot.txt"),
    "rockpro64": ("rockpro64", "armbianEnv", "boot/armbianEnv.txt"),
    "rockpro64-extlinux": ("rockpro64", "u-boot-menu", "etc/default/u-boot"),
    "sopine": ("sopine", "boot.txt", "boot/boot.txt"),
    "rpi4": ("rpi4", "rpi-cmdline", "boot/firmware/cmdline.txt"),
}

# Published facts per fixture, not the code's table (mainline kernel .dts files and the SoC
# vendors' data): the SoC, ``uname -m`` of the OS the fixture images, the CPU count and the
# big cluster (CPU numbers as the kernel's device tree orders them).
FACTS = {
    # exynos5422-odroidhc1.dts: 4x Cortex-A7 (CPU0-3) + 4x Cortex-A15 (CPU4-7); 32-bit ARMv7.
    "odroid-hc1": {"soc": "exynos5422", "uname_m": "armv7l", "cpus": 8, "big": [4, 5, 6, 7]},
    # rk3399.dtsi: 4x Cortex-A53 (CPU0-3) + 2x Cortex-A72 (CPU4-5).
    "rockpro64": {"soc": "rk3399", "uname_m": "aarch64", "cpus": 6, "big": [4, 5]},
    "rockpro64-extlinux": {"soc": "rk3399", "uname_m": "aarch64", "cpus": 6, "big": [4, 5]},
    # sun50i-a64.dtsi: 4x Cortex-A53.
    "sopine": {"soc": "a64", "uname_m": "aarch64", "cpus": 4, "big": []},
    # bcm2711.dtsi: 4x Cortex-A72.
    "rpi4": {"soc": "bcm2711", "uname_m": "aarch64", "cpus": 4, "big": []},
}
# The kernel's architecture names for ``uname -m`` (the trailing ``l`` is little-endian).
KERNEL_ARCH = {"armv7l": "armv7", "aarch64": "aarch64"}
# Mainline compatible strings (the board's first, its SoC's last); the HC1's device tree
# describes the Exynos5422 as compatible with the Exynos5800.
COMPATIBLE = {
    "odroid-hc1": ["hardkernel,odroid-hc1", "samsung,exynos5800", "samsung,exynos5"],
    "rockpro64": ["pine64,rockpro64-v2.1", "pine64,rockpro64", "rockchip,rk3399"],
    "rockpro64-extlinux": ["pine64,rockpro64-v2.0", "pine64,rockpro64", "rockchip,rk3399"],
    "sopine": ["pine64,sopine-baseboard", "pine64,sopine", "allwinner,sun50i-a64"],
    "rpi4": ["raspberrypi,4-model-b", "brcm,bcm2711"],
}

MOUNTS_MMC = "/dev/mmcblk0p2 / ext4 rw,noatime 0 0\nproc /proc proc rw 0 0\n"


def _write(path: Path, text) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _detect_fixture(name, sysfs, uname_m):
    fixture = FIXTURES / name
    return boards.detect(
        devicetree_root=str(fixture / "device-tree"),
        sysfs_root=str(sysfs),
        mounts_text=MOUNTS_MMC,
        root_dir=str(fixture / "rootfs"),
        machine=uname_m,
    )


def test_every_fixture_is_expected():
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_board_detected(name, tmp_path):
    board, flavour, cmdline = EXPECTED[name]
    facts = FACTS[name]
    meta = yaml.safe_load((FIXTURES / name / "board.yaml").read_text())
    assert meta["board"] == board
    # The fixture records what the real board reports.
    assert meta["uname_m"] == facts["uname_m"]
    assert meta["cpus"] == facts["cpus"]
    assert meta["description"]

    # An empty sysfs: the CPU layout cannot come from the host.
    result = _detect_fixture(name, tmp_path, meta["uname_m"])

    assert result["board"] == board
    assert result["compatible"] == COMPATIBLE[name]
    assert result["machine"] == meta["uname_m"]
    assert result["arch"] == KERNEL_ARCH[meta["uname_m"]]
    assert result["soc"] == facts["soc"]
    assert result["cpus"] == facts["cpus"]
    assert result["big_cores"] == facts["big"]
    little = [cpu for cpu in range(facts["cpus"]) if cpu not in facts["big"]]
    assert result["little_cores"] == little
    assert result["boot_flavour"] == flavour
    assert result["cmdline_file"] == os.path.join(str(FIXTURES / name / "rootfs"), cmdline)
    assert result["root_device"] == "mmcblk0p2"
    assert result["root_kind"] == "mmc"


def test_fixture_device_tree_files_are_kernel_format():
    for name in EXPECTED:
        for prop in ("model", "compatible"):
            data = (FIXTURES / name / "device-tree" / prop).read_bytes()
            assert data.endswith(b"\0") and not data.endswith(b"\0\0"), (name, prop)
            assert b"\n" not in data, (name, prop)


def test_hc1_fixture_values(tmp_path):
    result = _detect_fixture("odroid-hc1", tmp_path, "armv7l")
    assert result["model"] == "Hardkernel Odroid HC1"
    assert result["compatible"] == [
        "hardkernel,odroid-hc1",
        "samsung,exynos5800",
        "samsung,exynos5",
    ]
    assert result["arch"] == "armv7"
    assert result["little_cores"] == [0, 1, 2, 3]
    assert result["big_cores"] == [4, 5, 6, 7]


def test_rockpro64_table_clusters(tmp_path):
    result = _detect_fixture("rockpro64-extlinux", tmp_path, "aarch64")
    assert result["model"] == "Pine64 RockPro64 v2.0"
    assert (result["little_cores"], result["big_cores"]) == ([0, 1, 2, 3], [4, 5])


def test_sopine_has_no_big_cores(tmp_path):
    result = _detect_fixture("sopine", tmp_path, "aarch64")
    assert result["big_cores"] == []
    assert result["little_cores"] == [0, 1, 2, 3]


# --- NUL handling ----------------------------------------------------------------------------


def test_parse_dt_strings_nul_separated_and_terminated():
    data = b"pine64,rockpro64-v2.1\0pine64,rockpro64\0rockchip,rk3399\0"
    assert boards.parse_dt_strings(data) == [
        "pine64,rockpro64-v2.1",
        "pine64,rockpro64",
        "rockchip,rk3399",
    ]


def test_parse_dt_strings_tolerates_missing_terminator_and_padding():
    assert boards.parse_dt_strings(b"raspberrypi,4-model-b\0brcm,bcm2711") == [
        "raspberrypi,4-model-b",
        "brcm,bcm2711",
    ]
    assert boards.parse_dt_strings(b"a,b\0\0\0") == ["a,b"]
    assert boards.parse_dt_strings(b"") == []


def test_parse_dt_string_model():
    assert boards.parse_dt_string(b"Hardkernel Odroid HC1\0") == "Hardkernel Odroid HC1"
    assert boards.parse_dt_string("SoPine with baseboard\0") == "SoPine with baseboard"
    assert boards.parse_dt_string(b"") == ""


# --- unknown / generic -----------------------------------------------------------------------


def test_unknown_board_is_generic(tmp_path):
    dt = tmp_path / "dt"
    _write(dt / "model", b"Radxa ROCK 5B\0")
    _write(dt / "compatible", b"radxa,rock-5b\0rockchip,rk3588\0")
    result = boards.detect(str(dt), str(tmp_path / "sys"), "", str(tmp_path / "root"), "aarch64")
    assert result["board"] == "generic"
    assert result["model"] == "Radxa ROCK 5B"
    assert result["soc"] == "rk3588"
    assert result["arch"] == "aarch64"
    assert result["boot_flavour"] == "unknown"
    assert result["cmdline_file"] == ""
    assert result["root_kind"] == "other"


def test_unknown_board_keeps_its_soc_and_core_layout(tmp_path):
    # An ODROID-XU4 successor nobody listed: SoC from the first SoC maker's entry, clusters
    # from the kernel's cpu_capacity.
    dt = tmp_path / "dt"
    _write(dt / "model", b"Example Exynos board\0")
    _write(dt / "compatible", b"example,board\0samsung,exynos5800\0samsung,exynos5\0")
    sys = tmp_path / "sys"
    _write(sys / "devices/system/cpu/present", "0-7\n")
    for cpu in range(8):
        _write(sys / f"devices/system/cpu/cpu{cpu}/cpu_capacity", "1024\n" if cpu > 3 else "446\n")
    result = boards.detect(str(dt), str(sys), "", str(tmp_path / "root"), "armv7l")
    assert (result["board"], result["soc"], result["arch"]) == ("generic", "exynos5800", "armv7")
    assert (result["little_cores"], result["big_cores"]) == ([0, 1, 2, 3], [4, 5, 6, 7])


def test_hc1_on_the_legacy_kernel_with_the_xu3_device_tree(tmp_path):
    # Hardkernel's 4.14 boot.ini loads exynos5422-odroidxu3.dtb on every XU3/XU4/HC1; its
    # model and compatible are the mainline exynos5422-odroidxu3.dts ones.
    dt = tmp_path / "dt"
    _write(dt / "model", b"Hardkernel Odroid XU3\0")
    _write(dt / "compatible", b"hardkernel,odroid-xu3\0samsung,exynos5800\0samsung,exynos5\0")
    # The legacy kernel exposes no cpu_capacity: the layout comes from the board table.
    result = boards.detect(str(dt), str(tmp_path / "sys"), "", str(tmp_path), "armv7l")
    assert result["board"] == "odroid-hc1" and result["model"] == "Hardkernel Odroid XU3"
    assert (result["soc"], result["arch"], result["cpus"]) == ("exynos5422", "armv7", 8)
    assert (result["little_cores"], result["big_cores"]) == ([0, 1, 2, 3], [4, 5, 6, 7])


@pytest.mark.parametrize(("machine", "arch"), [("armv7l", "armv7"), ("aarch64", "aarch64")])
def test_pi4_arch_follows_uname(tmp_path, machine, arch):
    # 32-bit Raspberry Pi OS on a Pi 4 says armv7l: its containers must be armv7 ones.
    result = _detect_fixture("rpi4", tmp_path, machine)
    assert (result["board"], result["arch"], result["machine"]) == ("rpi4", arch, machine)
    # Without uname -m (nothing read) the board table's answer stands.
    assert _detect_fixture("rpi4", tmp_path, "")["arch"] == "aarch64"


def test_no_device_tree_at_all(tmp_path):
    result = boards.detect(
        str(tmp_path / "missing"), str(tmp_path / "missing"), "", str(tmp_path), "x86_64"
    )
    assert result["board"] == "generic"
    assert result["model"] == ""
    assert result["compatible"] == []
    assert result["soc"] == ""
    assert result["arch"] == "x86_64"
    assert result["cpus"] == 0
    assert (result["big_cores"], result["little_cores"]) == ([], [])


def test_result_keys_are_stable(tmp_path):
    result = boards.detect(str(tmp_path), str(tmp_path), "", str(tmp_path), "armv7l")
    assert set(result) == set(boards.empty_result())
    assert result["arch"] == "armv7"


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("armv7l", "armv7"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("x86_64", "x86_64"),
        ("armhf", "armv7"),
        ("armv7h", "armv7"),
        ("armv8l", "armv7"),
        ("AMD64", "x86_64"),
    ],
)
def test_one_architecture_vocabulary(machine, arch):
    assert architectures.canonical(machine) == arch


@pytest.mark.parametrize(
    ("spelling", "platform"),
    [
        ("aarch64", "linux/arm64"),
        ("armhf", "linux/arm/v7"),
        ("amd64", "linux/amd64"),
        ("mips", None),
    ],
)
def test_oci_platform(spelling, platform):
    assert architectures.oci_platform(spelling) == platform


def test_generic_clusters_from_cpuinfo(tmp_path):
    cpuinfo = "".join(
        f"processor\t: {cpu}\nCPU implementer\t: 0x41\nCPU part\t: {part}\n\n"
        for cpu, part in enumerate(["0xd03"] * 4 + ["0xd08"] * 2)
    )
    topo = boards.cpu_topology(str(tmp_path), "generic", cpuinfo)
    assert topo == {"cpus": 6, "big_cores": [4, 5], "little_cores": [0, 1, 2, 3]}


# --- big.LITTLE from sysfs -------------------------------------------------------------------


def _sysfs_cpus(root: Path, capacities, present=True):
    cpu_dir = root / "devices" / "system" / "cpu"
    if present:
        _write(cpu_dir / "present", f"0-{len(capacities) - 1}\n")
    for cpu, capacity in enumerate(capacities):
        _write(cpu_dir / f"cpu{cpu}" / "cpu_capacity", f"{capacity}\n")
    return root


def test_big_little_from_cpu_capacity(tmp_path):
    sysfs = _sysfs_cpus(tmp_path / "sys", [381, 381, 381, 381, 1024, 1024])
    topo = boards.cpu_topology(str(sysfs))
    assert topo == {"cpus": 6, "big_cores": [4, 5], "little_cores": [0, 1, 2, 3]}


def test_cpu_capacity_overrides_table(tmp_path):
    # Real topology wins over the table (here: an unusual numbering, big cluster first).
    sysfs = _sysfs_cpus(tmp_path / "sys", [1024] * 4 + [446] * 4, present=False)
    topo = boards.cpu_topology(str(sysfs), "odroid-hc1")
    assert topo == {"cpus": 8, "big_cores": [0, 1, 2, 3], "little_cores": [4, 5, 6, 7]}


def test_equal_capacities_mean_no_big_cores(tmp_path):
    sysfs = _sysfs_cpus(tmp_path / "sys", [1024] * 4)
    assert boards.cpu_topology(str(sysfs)) == {
        "cpus": 4,
        "big_cores": [],
        "little_cores": [0, 1, 2, 3],
    }


def test_foreign_sysfs_does_not_override_known_board(tmp_path):
    # A lab node impersonating an HC1 on a 16-CPU host: the host's sysfs is not the board's.
    sysfs = _sysfs_cpus(tmp_path / "sys", [1024] * 8 + [512] * 8)
    topo = boards.cpu_topology(str(sysfs), "odroid-hc1")
    assert topo == {"cpus": 8, "big_cores": [4, 5, 6, 7], "little_cores": [0, 1, 2, 3]}


def test_flat_capacities_do_not_hide_known_big_little(tmp_path):
    # Kernels without capacity-dmips-mhz in the device tree report 1024 for every CPU.
    sysfs = _sysfs_cpus(tmp_path / "sys", [1024] * 6)
    topo = boards.cpu_topology(str(sysfs), "rockpro64")
    assert topo == {"cpus": 6, "big_cores": [4, 5], "little_cores": [0, 1, 2, 3]}


def test_parse_cpu_list():
    assert boards.parse_cpu_list("0-3,6\n") == [0, 1, 2, 3, 6]
    assert boards.parse_cpu_list("0") == [0]


# --- root device -----------------------------------------------------------------------------


def _root(mounts, sysfs):
    return boards.root_device(mounts, str(sysfs), "/nonexistent")


def test_root_mmc(tmp_path):
    assert _root(MOUNTS_MMC, tmp_path) == {
        "root_device": "mmcblk0p2",
        "root_kind": "mmc",
        "root_disk": "mmcblk0",
    }


def test_root_nvme(tmp_path):
    assert _root("/dev/nvme0n1p1 / ext4 rw 0 0\n", tmp_path) == {
        "root_device": "nvme0n1p1",
        "root_kind": "nvme",
        "root_disk": "nvme0n1",
    }


def test_root_sata_ssd(tmp_path):
    sysfs = tmp_path / "sys"
    disk = sysfs / "devices" / "platform" / "ahci" / "ata1" / "host0" / "block" / "sda"
    _write(disk / "queue" / "rotational", "0\n")
    (sysfs / "block").mkdir(parents=True)
    (sysfs / "block" / "sda").symlink_to(disk)
    assert _root("/dev/sda1 / ext4 rw 0 0\n", sysfs) == {
        "root_device": "sda1",
        "root_kind": "ssd",
        "root_disk": "sda",
    }


def test_root_hdd(tmp_path):
    sysfs = tmp_path / "sys"
    _write(sysfs / "block" / "sdb" / "queue" / "rotational", "1\n")
    assert _root("/dev/sdb2 / ext4 rw 0 0\n", sysfs)["root_kind"] == "hdd"


def test_root_usb(tmp_path):
    sysfs = tmp_path / "sys"
    disk = (
        sysfs
        / "devices/platform/soc/12110000.usb/usb4/4-1/4-1:1.0/host0/target0:0:0/0:0:0:0/block/sda"
    )
    # USB-SATA bridges often claim rotational=1: USB must still win.
    _write(disk / "queue" / "rotational", "1\n")
    (sysfs / "block").mkdir(parents=True)
    (sysfs / "block" / "sda").symlink_to(disk)
    assert _root("/dev/sda1 / ext4 rw 0 0\n", sysfs) == {
        "root_device": "sda1",
        "root_kind": "usb",
        "root_disk": "sda",
    }


def test_root_overlay_keeps_raw_source(tmp_path):
    mounts = (
        "overlay / overlay rw,relatime,lowerdir=/var/lib/docker/overlay2/l/X 0 0\n"
        "proc /proc proc rw,nosuid 0 0\n"
    )
    assert _root(mounts, tmp_path) == {
        "root_device": "overlay",
        "root_kind": "other",
        "root_disk": "",
    }


def test_root_virtio_is_other(tmp_path):
    assert _root("/dev/vda1 / ext4 rw 0 0\n", tmp_path)["root_kind"] == "other"
    assert _root("/dev/vda1 / ext4 rw 0 0\n", tmp_path)["root_device"] == "/dev/vda1"


def test_last_root_mount_wins(tmp_path):
    mounts = "/dev/mmcblk0p2 / ext4 rw 0 0\n/dev/sda1 /mnt/ssd ext4 rw 0 0\n"
    mounts += "/dev/nvme0n1p2 / ext4 rw 0 0\n"
    assert _root(mounts, tmp_path)["root_device"] == "nvme0n1p2"


def test_no_root_mount(tmp_path):
    assert _root("", tmp_path) == {"root_device": "", "root_kind": "other", "root_disk": ""}


# --- boot flavour ----------------------------------------------------------------------------


def test_armbian_wins_over_boot_scr(tmp_path):
    _write(tmp_path / "boot" / "armbianEnv.txt", "verbosity=1\n")
    _write(tmp_path / "boot" / "boot.scr", b"\x27\x05\x19\x56")
    _write(tmp_path / "boot" / "boot.cmd", "setenv load_addr 0x9000000\n")
    assert boards.boot_flavour(str(tmp_path)) == (
        "armbianEnv",
        str(tmp_path / "boot" / "armbianEnv.txt"),
    )


@pytest.mark.parametrize(
    ("relative", "flavour"),
    [
        ("boot/dietpiEnv.txt", "dietpiEnv"),
        ("boot/boot.ini", "boot.ini"),  # DietPi, Armbian, Arch on ODROIDs
        ("media/boot/boot.ini", "boot.ini"),  # Hardkernel's Ubuntu: the FAT partition
    ],
)
def test_dietpi_and_hardkernel_boot_files(tmp_path, relative, flavour):
    path = _write(tmp_path / relative, "x=1\n")
    _write(tmp_path / "boot" / "boot.scr", b"\x27\x05\x19\x56")
    assert boards.boot_flavour(str(tmp_path)) == (flavour, str(path))


def test_extlinux_without_u_boot_menu(tmp_path):
    conf = _write(tmp_path / "boot" / "extlinux" / "extlinux.conf", "default l0\n")
    assert boards.boot_flavour(str(tmp_path)) == ("extlinux", str(conf))


def test_extlinux_generated_by_u_boot_update_is_u_boot_menu(tmp_path):
    # Even without /etc/default/u-boot: u-boot-update would overwrite an edited extlinux.conf.
    header = "## Do not edit this file manually, use: u-boot-update\ndefault l0\n"
    _write(tmp_path / "boot" / "extlinux" / "extlinux.conf", header)
    assert boards.boot_flavour(str(tmp_path)) == (
        "u-boot-menu",
        os.path.join(str(tmp_path), "etc/default/u-boot"),
    )


def test_rpi_legacy_cmdline(tmp_path):
    cmdline = _write(tmp_path / "boot" / "cmdline.txt", "console=tty1 root=/dev/mmcblk0p2\n")
    assert boards.boot_flavour(str(tmp_path)) == ("rpi-cmdline", str(cmdline))


def test_rpi_do_not_edit_stub_alone_is_unknown(tmp_path):
    _write(tmp_path / "boot" / "cmdline.txt", "DO NOT EDIT THIS FILE\n")
    assert boards.boot_flavour(str(tmp_path)) == ("unknown", "")


# --- real constructs from boards' kernels ------------------------------------------------------


def test_pi_32bit_userland_on_the_64bit_kernel_is_armv7(tmp_path):
    # Raspberry Pi OS 32-bit (armhf) boots the 64-bit kernel on a Pi 4/5 by default: uname -m
    # says aarch64 while dpkg says armhf (procount/pinn#760; raspberrypi/firmware#1795, where
    # the firmware maintainer points at `getconf LONG_BIT` instead of uname). Its Docker engine
    # is an armhf binary, so the node runs linux/arm/v7 images.
    result = _detect_fixture_bits("rpi4", tmp_path, "aarch64", 32)
    assert (result["machine"], result["arch"]) == ("aarch64", "armv7")
    # A 64-bit userland (Raspberry Pi OS 64-bit) stays aarch64, an unknown width too.
    assert _detect_fixture_bits("rpi4", tmp_path, "aarch64", 64)["arch"] == "aarch64"
    assert _detect_fixture_bits("rpi4", tmp_path, "aarch64", None)["arch"] == "aarch64"


def _detect_fixture_bits(name, sysfs, uname_m, bits):
    fixture = FIXTURES / name
    return boards.detect(
        devicetree_root=str(fixture / "device-tree"),
        sysfs_root=str(sysfs),
        mounts_text=MOUNTS_MMC,
        root_dir=str(fixture / "rootfs"),
        machine=uname_m,
        userland_bits=bits,
    )


def _cpuinfo(cores):
    """arm64 /proc/cpuinfo blocks (no "model name", no "Hardware" line), one per CPU."""
    return "".join(
        f"processor\t: {cpu}\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        f"CPU implementer\t: {impl}\nCPU architecture: 8\nCPU variant\t: 0x0\n"
        f"CPU part\t: {part}\nCPU revision\t: 4\n\n"
        for cpu, (impl, part) in cores.items()
    )


def test_cpuinfo_parts_of_another_implementer_are_not_ranked(tmp_path):
    # Qualcomm Kryo cores (CPU implementer 0x51) reuse part numbers of their own: ARM Ltd's
    # ranks do not apply, and parts unknown to us say nothing about which cluster is faster.
    cores = {0: ("0x51", "0x805"), 1: ("0x51", "0x805"), 2: ("0x51", "0x804"), 3: ("0x51", "0x804")}
    topo = boards.cpu_topology(str(tmp_path), "generic", _cpuinfo(cores))
    assert topo["cpus"] == 4 and topo["big_cores"] == []
    # A Qualcomm part numbered like an ARM Cortex-A72 (0xd08) is not a Cortex-A72.
    cores = {0: ("0x41", "0xd03"), 1: ("0x41", "0xd03"), 2: ("0x51", "0xd08"), 3: ("0x51", "0xd08")}
    assert boards.cpu_topology(str(tmp_path), "generic", _cpuinfo(cores))["big_cores"] == []


def test_cpuinfo_identical_unknown_parts_are_one_cluster(tmp_path):
    cores = {cpu: ("0x51", "0x801") for cpu in range(4)}
    topo = boards.cpu_topology(str(tmp_path), "generic", _cpuinfo(cores))
    assert topo == {"cpus": 4, "big_cores": [], "little_cores": [0, 1, 2, 3]}


def test_armv7_cpuinfo_of_the_exynos5422(tmp_path):
    # Hardkernel's 4.14 kernel on an ODROID-XU4: "model name" lines, Cortex-A7 = 0xc07 on
    # CPU0-3, Cortex-A15 = 0xc0f on CPU4-7, one trailing Hardware/Revision/Serial block.
    blocks = [
        f"processor\t: {cpu}\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 84.00\n"
        "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x{0 if cpu < 4 else 2}\n"
        f"CPU part\t: {'0xc07' if cpu < 4 else '0xc0f'}\nCPU revision\t: 3\n\n"
        for cpu in range(8)
    ]
    text = "".join(blocks) + "Hardware\t: ODROID-XU4\nRevision\t: 0100\nSerial\t\t: 0000\n"
    topo = boards.cpu_topology(str(tmp_path), "generic", text)
    assert topo == {"cpus": 8, "big_cores": [4, 5, 6, 7], "little_cores": [0, 1, 2, 3]}


def _offline(sysfs: Path, present: str, online: str, capacities: dict):
    cpu_dir = sysfs / "devices" / "system" / "cpu"
    _write(cpu_dir / "present", present + "\n")
    _write(cpu_dir / "online", online + "\n")
    for cpu in boards.parse_cpu_list(present):
        (cpu_dir / f"cpu{cpu}").mkdir(parents=True, exist_ok=True)
    for cpu, capacity in capacities.items():
        _write(cpu_dir / f"cpu{cpu}" / "cpu_capacity", f"{capacity}\n")
    return sysfs


def test_offline_cores_without_cpu_capacity(tmp_path):
    # Since Linux 6.2 (arch_topology: cpu_capacity added/removed by CPU hotplug) an offline
    # CPU has no cpu_capacity file, and /proc/cpuinfo lists online CPUs only. An RK3399 board
    # nobody listed, CPU3 and CPU5 offline (online "0-2,4").
    sysfs = _offline(tmp_path / "sys", "0-5", "0-2,4", {0: 381, 1: 381, 2: 381, 4: 1024})
    topo = boards.cpu_topology(str(sysfs), "generic")
    # The online A72 is big; what the offline ones are cannot be read: not claimed big.
    assert topo == {"cpus": 6, "big_cores": [4], "little_cores": [0, 1, 2, 3, 5]}


def test_offline_cores_seen_only_in_cpuinfo(tmp_path):
    # Same board, kernel without cpu_capacity: /proc/cpuinfo has blocks for CPU0-2 and 4.
    sysfs = _offline(tmp_path / "sys", "0-5", "0-2,4", {})
    cores = {0: ("0x41", "0xd03"), 1: ("0x41", "0xd03"), 2: ("0x41", "0xd03"), 4: ("0x41", "0xd08")}
    topo = boards.cpu_topology(str(sysfs), "generic", _cpuinfo(cores))
    assert topo == {"cpus": 6, "big_cores": [4], "little_cores": [0, 1, 2, 3, 5]}


def test_offline_cores_of_one_kind_prove_nothing(tmp_path):
    # Online CPUs all alike (the A53s) while two are offline: the offline ones may be big.
    sysfs = _offline(tmp_path / "sys", "0-5", "0-3", {0: 381, 1: 381, 2: 381, 3: 381})
    topo = boards.cpu_topology(str(sysfs), "generic")
    assert topo == {"cpus": 6, "big_cores": [], "little_cores": [0, 1, 2, 3, 4, 5]}


def test_offline_cores_of_a_known_board_follow_the_table(tmp_path):
    # An HC1 with its A15s switched off (online "0-3"): the table still knows CPU4-7.
    sysfs = _offline(tmp_path / "sys", "0-7", "0-3", {0: 377, 1: 377, 2: 377, 3: 377})
    topo = boards.cpu_topology(str(sysfs), "odroid-hc1")
    assert topo == {"cpus": 8, "big_cores": [4, 5, 6, 7], "little_cores": [0, 1, 2, 3]}


def test_mount_point_with_escaped_space_and_btrfs_subvolume(tmp_path):
    # /proc/mounts octal-escapes spaces (\040); a btrfs root on a subvolume names it in the
    # options (subvol=/@), not in the source.
    mounts = (
        "/dev/sda1 /mnt/usb\\040disk ext4 rw 0 0\n"
        "/dev/mmcblk1p2 / btrfs rw,noatime,ssd,space_cache=v2,subvolid=256,subvol=/@ 0 0\n"
    )
    assert _root(mounts, tmp_path) == {
        "root_device": "mmcblk1p2",
        "root_kind": "mmc",
        "root_disk": "mmcblk1",
    }


# ELF identification bytes (magic, EI_CLASS 1 = 32-bit / 2 = 64-bit, little-endian, version 1).
ELF32_ARM = b"\x7fELF\x01\x01\x01" + b"\0" * 9 + b"\x02\x00\x28\x00"
ELF64_AARCH64 = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\xb7\x00"


def test_userland_bits_from_the_systems_binaries(tmp_path):
    assert boards.userland_bits(str(tmp_path)) is None
    _write(tmp_path / "usr/bin/dash", ELF32_ARM)
    (tmp_path / "bin").symlink_to("usr/bin")  # merged /usr, as on Debian bookworm
    (tmp_path / "usr/bin/sh").symlink_to("dash")
    assert boards.userland_bits(str(tmp_path)) == 32
    # The Docker engine's own class wins (its GOARCH picks the image variant).
    _write(tmp_path / "usr/bin/dockerd", ELF64_AARCH64)
    assert boards.userland_bits(str(tmp_path)) == 64
    _write(tmp_path / "usr/bin/dockerd", "#!/bin/sh\n")  # a wrapper script says nothing
    assert boards.userland_bits(str(tmp_path)) == 32


def _btrfs(sysfs: Path, fsid: str, device: str):
    devices = sysfs / "fs" / "btrfs" / fsid / "devices"
    devices.mkdir(parents=True)
    (devices / device).symlink_to(f"../../../../devices/platform/mmc/block/{device}")


def test_dev_root_on_btrfs(tmp_path):
    # root=PARTUUID=… without an initramfs: /proc/mounts says /dev/root, and a btrfs file's
    # st_dev is an anonymous device (major 0), not the partition, so /sys/dev/block cannot
    # name it. /sys/fs/btrfs/<fsid>/devices/ lists each filesystem's member devices.
    sysfs = tmp_path / "sys"
    _btrfs(sysfs, "6a1d4a1e-0000-4000-8000-000000000001", "mmcblk0p2")
    (sysfs / "fs" / "btrfs" / "features").mkdir()
    mounts = "/dev/root / btrfs rw,relatime,ssd,space_cache=v2,subvolid=5,subvol=/ 0 0\n"
    assert boards.root_device(mounts, str(sysfs), str(tmp_path)) == {
        "root_device": "mmcblk0p2",
        "root_kind": "mmc",
        "root_disk": "mmcblk0",
    }


def test_dev_root_on_one_of_several_btrfs_is_unknown(tmp_path):
    # Two btrfs filesystems (SD card and USB SSD): which one is / cannot be read there.
    sysfs = tmp_path / "sys"
    _btrfs(sysfs, "6a1d4a1e-0000-4000-8000-000000000001", "mmcblk0p2")
    _btrfs(sysfs, "6a1d4a1e-0000-4000-8000-000000000002", "sda1")
    mounts = "/dev/root / btrfs rw,relatime 0 0\n"
    assert boards.root_device(mounts, str(sysfs), str(tmp_path)) == {
        "root_device": "/dev/root",
        "root_kind": "other",
        "root_disk": "",
    }


def test_hardkernel_fat_boot_ini_wins_over_one_in_boot(tmp_path):
    # Hardkernel's Ubuntu for the XU4/HC1: /media/boot is partition 1 (FAT), and its u-boot
    # (hardkernel/u-boot odroidxu4-v2017.05 cmd/cfgload.c) loads partition 1's /boot.ini
    # before anything on the root partition, so a leftover /boot/boot.ini is not what boots.
    _write(tmp_path / "boot" / "boot.ini", "ODROIDXU-UBOOT-CONFIG\n")
    fat = _write(tmp_path / "media" / "boot" / "boot.ini", "ODROIDXU-UBOOT-CONFIG\n")
    assert boards.boot_flavour(str(tmp_path)) == ("boot.ini", str(fat))


# Boards beyond the lab's, with the model and compatible of their kernels' device trees
# (mainline arch/arm*/boot/dts and the Raspberry Pi kernel's bcm27xx trees).
@pytest.mark.parametrize(
    ("model", "compatible", "machine", "board", "soc"),
    [
        (
            "Pine64 PINE A64+",
            ["pine64,pine64-plus", "allwinner,sun50i-a64"],
            "aarch64",
            "pine64",
            "a64",
        ),
        # sun50i-a64-pine64-lts.dts includes the SOPINE baseboard's tree: it is no SOPINE
        (
            "Pine64 PINE A64 LTS",
            ["pine64,pine64-lts", "allwinner,sun50i-r18", "allwinner,sun50i-a64"],
            "aarch64",
            "pine64",
            "a64",
        ),
        ("Pine64 Rock64", ["pine64,rock64", "rockchip,rk3328"], "aarch64", "rock64", "rk3328"),
        (
            "Raspberry Pi 2 Model B Rev 1.1",
            ["raspberrypi,2-model-b", "brcm,bcm2836"],
            "armv7l",
            "rpi2",
            "bcm2836",
        ),
        # v1.2: the same board string on a BCM2837 (bcm2710-rpi-2-b.dts)
        (
            "Raspberry Pi 2 Model B Rev 1.2",
            ["raspberrypi,2-model-b", "brcm,bcm2837"],
            "armv7l",
            "rpi2",
            "bcm2837",
        ),
        (
            "Raspberry Pi 3 Model B Rev 1.2",
            ["raspberrypi,3-model-b", "brcm,bcm2837"],
            "aarch64",
            "rpi3",
            "bcm2837",
        ),
        (
            "Raspberry Pi 3 Model B Plus Rev 1.3",
            ["raspberrypi,3-model-b-plus", "brcm,bcm2837"],
            "armv7l",
            "rpi3",
            "bcm2837",
        ),
        (
            "Raspberry Pi Zero 2 W Rev 1.0",
            ["raspberrypi,model-zero-2-w", "brcm,bcm2837"],
            "aarch64",
            "rpi-zero-2w",
            "bcm2837",
        ),
        (
            "Raspberry Pi Compute Module 3 Plus Rev 1.0",
            ["raspberrypi,3-compute-module", "brcm,bcm2837"],
            "aarch64",
            "rpi-cm3",
            "bcm2837",
        ),
        (
            "Raspberry Pi 400 Rev 1.0",
            ["raspberrypi,400", "brcm,bcm2711"],
            "aarch64",
            "rpi400",
            "bcm2711",
        ),
        (
            "Raspberry Pi Compute Module 4 Rev 1.1",
            ["raspberrypi,4-compute-module", "brcm,bcm2711"],
            "aarch64",
            "rpi-cm4",
            "bcm2711",
        ),
    ],
)
def test_more_boards_of_the_families(tmp_path, model, compatible, machine, board, soc):
    dt = tmp_path / "dt"
    _write(dt / "model", model.encode() + b"\0")
    _write(dt / "compatible", b"\0".join(c.encode() for c in compatible) + b"\0")
    sys = tmp_path / "sys"
    _write(sys / "devices/system/cpu/present", "0-3\n")
    result = boards.detect(str(dt), str(sys), "", str(tmp_path / "root"), machine)
    assert (result["board"], result["soc"], result["model"]) == (board, soc, model)
    assert result["arch"] == ("armv7" if machine == "armv7l" else "aarch64")
    assert (result["cpus"], result["big_cores"]) == (4, [])
