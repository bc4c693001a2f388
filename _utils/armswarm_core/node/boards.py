"""Which ARM board a node is, how its CPUs are split, where its root and kernel command line live.

Pure logic behind the ``armnode`` grain: every function takes the paths (device tree, sysfs,
boot root) or texts (mount table, cpuinfo) it reads, so tests and the lab can point them at
fixture trees instead of the real ``/proc/device-tree`` and ``/sys``.
"""

import os
import re

from armswarm_core.common import architectures

GENERIC = "generic"


# Matched against the device-tree ``compatible`` list, most specific entry first, so a board
# string always wins over the SoC string that follows it.
BOARDS = {
    "odroid-hc1": {
        # Hardkernel's legacy (4.14) kernel has no HC1 device tree: its boot.ini (and Armbian's,
        # DietPi's) loads the ODROID-XU3 one for every XU3/XU4/HC1 then. The boards share the
        # SoC and core layout, and nothing in that tree tells them apart, so it counts as an
        # HC1-class board (the model still says "Hardkernel Odroid XU3").
        "compatible": (
            "hardkernel,odroid-hc1",
            "hardkernel,odroid-xu3",
            "hardkernel,odroid-xu3-lite",
        ),
        "soc": "exynos5422",
        "arch": "armv7",
        "cpus": 8,
        "little_cores": [0, 1, 2, 3],  # Cortex-A7
        "big_cores": [4, 5, 6, 7],  # Cortex-A15
    },
    "odroid-xu4": {
        "compatible": ("hardkernel,odroid-xu4",),
        "soc": "exynos5422",
        "arch": "armv7",
        "cpus": 8,
        "little_cores": [0, 1, 2, 3],
        "big_cores": [4, 5, 6, 7],
    },
    "rockpro64": {
        # Mainline: v2.1 boards use rk3399-rockpro64.dts, v2.0 boards rk3399-rockpro64-v2.dts.
        "compatible": ("pine64,rockpro64", "pine64,rockpro64-v2.0", "pine64,rockpro64-v2.1"),
        "soc": "rk3399",
        "arch": "aarch64",
        "cpus": 6,
        "little_cores": [0, 1, 2, 3],  # Cortex-A53
        "big_cores": [4, 5],  # Cortex-A72
    },
    "sopine": {
        # Clusterboard nodes usually run the baseboard device tree too.
        "compatible": ("pine64,sopine-baseboard", "pine64,sopine"),
        "soc": "a64",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],  # 4 x Cortex-A53
        "big_cores": [],
    },
    "pine64": {
        # sun50i-a64-pine64{,-plus,-lts}.dts; the LTS includes the SOPINE baseboard's tree but
        # names itself (and an R18, the A64 in another package) first.
        "compatible": ("pine64,pine64", "pine64,pine64-plus", "pine64,pine64-lts"),
        "soc": "a64",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],  # 4 x Cortex-A53
        "big_cores": [],
    },
    "rock64": {
        "compatible": ("pine64,rock64",),  # rk3328-rock64.dts
        "soc": "rk3328",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],  # 4 x Cortex-A53
        "big_cores": [],
    },
    # Raspberry Pi: the compatible strings of the mainline and Raspberry Pi kernels' trees.
    "rpi2": {
        # v1.1 is a BCM2836 (Cortex-A7), v1.2 a BCM2837 (Cortex-A53) with the same board
        # string: the SoC comes from the tree's own SoC entry.
        "compatible": ("raspberrypi,2-model-b",),
        "arch": "armv7",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],
        "big_cores": [],
    },
    "rpi3": {
        "compatible": (
            "raspberrypi,3-model-b",
            "raspberrypi,3-model-b-plus",
            "raspberrypi,3-model-a-plus",
        ),
        "soc": "bcm2837",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],  # 4 x Cortex-A53
        "big_cores": [],
    },
    "rpi-zero-2w": {
        "compatible": ("raspberrypi,model-zero-2-w",),  # its RP3A0 is a BCM2837
        "soc": "bcm2837",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],
        "big_cores": [],
    },
    "rpi-cm3": {
        "compatible": ("raspberrypi,3-compute-module", "raspberrypi,3-compute-module-lite"),
        "soc": "bcm2837",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],
        "big_cores": [],
    },
    "rpi400": {
        "compatible": ("raspberrypi,400",),
        "soc": "bcm2711",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],  # 4 x Cortex-A72
        "big_cores": [],
    },
    "rpi-cm4": {
        "compatible": ("raspberrypi,4-compute-module", "raspberrypi,4-compute-module-s"),
        "soc": "bcm2711",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],
        "big_cores": [],
    },
    "rpi4": {
        "compatible": ("raspberrypi,4-model-b",),
        "soc": "bcm2711",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],  # 4 x Cortex-A72
        "big_cores": [],
    },
    "rpi5": {
        "compatible": ("raspberrypi,5-model-b",),
        "soc": "bcm2712",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],  # 4 x Cortex-A76
        "big_cores": [],
    },
    "rpi-cm5": {
        # bcm2712-rpi-cm5.dtsi (raspberrypi/linux): "raspberrypi,5-compute-module", "brcm,bcm2712"
        "compatible": ("raspberrypi,5-compute-module",),
        "soc": "bcm2712",
        "arch": "aarch64",
        "cpus": 4,
        "little_cores": [0, 1, 2, 3],
        "big_cores": [],
    },
}


_BY_COMPATIBLE = {compat: board for board, info in BOARDS.items() for compat in info["compatible"]}


# /proc/cpuinfo "CPU part" → relative core performance, used only for boards not in BOARDS
# that expose no cpu_capacity (higher is faster). Part numbers are the implementer's own: these
# are ARM Ltd's ("CPU implementer : 0x41"); another implementer's parts are not ranked.
_ARM_IMPLEMENTER = "0x41"
_CPU_PART_RANK = {
    "0xb76": 5,  # ARM1176 (Raspberry Pi 1/Zero)
    "0xc05": 8,  # Cortex-A5
    "0xc07": 10,  # Cortex-A7
    "0xc08": 12,  # Cortex-A8
    "0xc09": 20,  # Cortex-A9
    "0xc0d": 30,  # Cortex-A12
    "0xc0e": 30,  # Cortex-A17
    "0xc0f": 40,  # Cortex-A15
    "0xd01": 14,  # Cortex-A32
    "0xd02": 14,  # Cortex-A34
    "0xd04": 15,  # Cortex-A35
    "0xd03": 20,  # Cortex-A53
    "0xd05": 25,  # Cortex-A55
    "0xd46": 27,  # Cortex-A510
    "0xd80": 28,  # Cortex-A520
    "0xd06": 35,  # Cortex-A65
    "0xd07": 45,  # Cortex-A57
    "0xd08": 50,  # Cortex-A72
    "0xd09": 55,  # Cortex-A73
    "0xd0a": 60,  # Cortex-A75
    "0xd0b": 65,  # Cortex-A76 (BCM2712, RK3588)
    "0xd0c": 65,  # Neoverse-N1
    "0xd0d": 70,  # Cortex-A77
    "0xd41": 75,  # Cortex-A78
    "0xd4b": 75,  # Cortex-A78C
    "0xd47": 78,  # Cortex-A710
    "0xd4d": 80,  # Cortex-A715
    "0xd81": 82,  # Cortex-A720
    "0xd44": 85,  # Cortex-X1
    "0xd48": 88,  # Cortex-X2
    "0xd4e": 90,  # Cortex-X3
}


BOOT_FLAVOURS = (
    "armbianEnv",
    "dietpiEnv",
    "boot.txt",
    "boot.ini",
    "u-boot-menu",
    "extlinux",
    "rpi-cmdline",
    "unknown",
)


# A disk behind a USB host sits under a ``usbN`` bus directory in its sysfs device path.
_USB_BUS = re.compile(r"/usb\d+/")
_PARTITION_PATTERNS = (
    # (regex on the partition or disk name, kind) – group 1 is the whole disk.
    (re.compile(r"^(mmcblk\d+)(?:p\d+)?$"), "mmc"),
    (re.compile(r"^(nvme\d+n\d+)(?:p\d+)?$"), "nvme"),
    (re.compile(r"^(sd[a-z]+)\d*$"), "sd"),
)


def parse_dt_strings(data) -> list[str]:
    """Split a device-tree string property (NUL-terminated, NUL-separated) into its strings."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    return [item for item in data.split("\0") if item.strip()]


def parse_dt_string(data) -> str:
    """Return the first string of a device-tree string property (e.g. ``model``), or ``""``."""
    items = parse_dt_strings(data)
    return items[0].strip() if items else ""


def _read_bytes(path) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _read_text(path) -> str | None:
    data = _read_bytes(path)
    return None if data is None else data.decode("utf-8", errors="replace")


def read_device_tree(devicetree_root) -> tuple[str, list[str]]:
    """Return ``(model, compatible)`` read from a device-tree directory (missing → ``("", [])``)."""
    model = _read_bytes(os.path.join(devicetree_root, "model"))
    compatible = _read_bytes(os.path.join(devicetree_root, "compatible"))
    return (
        parse_dt_string(model) if model is not None else "",
        parse_dt_strings(compatible) if compatible is not None else [],
    )


def match_board(compatible) -> str:
    """Return the board id for a compatible list, ``generic`` when no entry is known."""
    for entry in compatible:
        board = _BY_COMPATIBLE.get(entry.strip())
        if board:
            return board
    return GENERIC


# Device-tree vendor prefixes of SoC makers: their entry in a compatible list names the SoC.
_SOC_VENDORS = (
    "allwinner",
    "amlogic",
    "brcm",
    "fsl",
    "mediatek",
    "nxp",
    "qcom",
    "rockchip",
    "samsung",
    "starfive",
    "ti",
)


def soc_from_compatible(compatible) -> str:
    """Guess the SoC of an unknown board: its first SoC maker's entry after the board's own
    (``samsung,exynos5800`` before the family ``samsung,exynos5``), else the last entry."""
    if len(compatible) < 2:
        return ""
    for entry in compatible[1:]:
        vendor, _, name = entry.partition(",")
        if vendor in _SOC_VENDORS and name:
            return name
    return compatible[-1].split(",", 1)[-1]


def parse_cpu_list(text: str) -> list[int]:
    """Parse a sysfs CPU list such as ``0-3,6`` into ``[0, 1, 2, 3, 6]``."""
    cpus = []
    for raw in (text or "").strip().split(","):
        part = raw.strip()
        if not part:
            continue
        if "-" in part:
            low, high = part.split("-", 1)
            cpus.extend(range(int(low), int(high) + 1))
        else:
            cpus.append(int(part))
    return sorted(set(cpus))


def sysfs_cpus(sysfs_root) -> list[int]:
    """CPU ids the kernel knows about (``present``, which still counts offlined cores)."""
    cpu_dir = os.path.join(sysfs_root, "devices", "system", "cpu")
    text = _read_text(os.path.join(cpu_dir, "present"))
    if text:
        try:
            return parse_cpu_list(text)
        except ValueError:
            pass
    try:
        names = os.listdir(cpu_dir)
    except OSError:
        return []
    return sorted(int(name[3:]) for name in names if re.fullmatch(r"cpu\d+", name))


def sysfs_capacities(sysfs_root, cpus) -> dict[int, int]:
    """``{cpu: cpu_capacity}``, empty unless every CPU has a readable capacity."""
    capacities = {}
    for cpu in cpus:
        text = _read_text(
            os.path.join(sysfs_root, "devices", "system", "cpu", f"cpu{cpu}", "cpu_capacity")
        )
        try:
            capacities[cpu] = int((text or "").strip())
        except ValueError:
            return {}
    return capacities


def split_by_rank(ranks: dict[int, int]) -> tuple[list[int], list[int]]:
    """``(big, little)``: the top-ranked CPUs are big only when ranks differ."""
    if not ranks:
        return [], []
    top = max(ranks.values())
    if min(ranks.values()) == top:
        return [], sorted(ranks)
    big = sorted(cpu for cpu, rank in ranks.items() if rank == top)
    little = sorted(cpu for cpu, rank in ranks.items() if rank != top)
    return big, little


def cpuinfo_parts(cpuinfo_text: str) -> dict[int, str]:
    """``{cpu: "CPU part"}`` from /proc/cpuinfo text (ARM kernels only print it)."""
    return {cpu: part for cpu, (_, part) in cpuinfo_cores(cpuinfo_text).items()}


def cpuinfo_cores(cpuinfo_text: str) -> dict[int, tuple[str, str]]:
    """``{cpu: ("CPU implementer", "CPU part")}`` from /proc/cpuinfo text.

    Only online CPUs have a block. Kernels before 3.8 printed one implementer/part block for
    all processors (after a "Processor : ARMv7 …" header): it names only the last CPU then.
    """
    cores, current, implementer = {}, None, ""
    for line in (cpuinfo_text or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip().lower()
        if key == "processor":
            implementer = ""
            try:
                current = int(value)
            except ValueError:
                current = None
        elif key == "cpu implementer":
            implementer = value
        elif key == "cpu part" and current is not None:
            cores[current] = (implementer, value)
    return cores


def sysfs_online(sysfs_root) -> list[int] | None:
    """Online CPU ids (``cpu/online``, e.g. ``0-3,6-7``), None when unreadable."""
    text = _read_text(os.path.join(sysfs_root, "devices", "system", "cpu", "online"))
    try:
        return parse_cpu_list(text) if text and text.strip() else None
    except ValueError:
        return None


def _split_seen(ranks: dict[int, int], cpus: list[int]) -> tuple[list[int], list[int]] | None:
    """``(big, little)`` over ``cpus`` from the ranks of the CPUs that could be read.

    All read → the split as it is. Some unread (offline: since Linux 6.2 an offline CPU has
    no cpu_capacity and /proc/cpuinfo lists online CPUs only) → the read CPUs that rank
    highest are big when the read ones differ, the unread ones stay among the little ("not
    known to be big"); alike read ones prove nothing about the others: None (unknown).
    """
    if not ranks or not set(ranks) <= set(cpus):
        return None
    big, little = split_by_rank(ranks)
    unread = sorted(set(cpus) - set(ranks))
    if unread and not big:
        return None
    return big, sorted(little + unread)


def cpu_topology(sysfs_root, board=GENERIC, cpuinfo_text=None) -> dict:
    """Return ``{"cpus", "big_cores", "little_cores"}``.

    ``big_cores`` are the fastest cluster of a big.LITTLE SoC and empty on homogeneous SoCs
    or where the split cannot be read, ``little_cores`` are all other CPUs (so together they
    list every CPU). Sources, first usable wins: sysfs ``cpu_capacity`` (unless it shows no
    big cores where the table has some); for a known board, the board table; for an unknown
    one, the capacities of the online CPUs, /proc/cpuinfo "CPU implementer"/"CPU part" (ARM
    Ltd's parts only), else the sysfs CPU list as one cluster.
    """
    info = BOARDS.get(board)
    cpus = sysfs_cpus(sysfs_root)
    # A known board whose sysfs disagrees on the CPU count is being impersonated (lab node on
    # a foreign host): the table is then the truth for the board.
    if cpus and (info is None or len(cpus) == info["cpus"]):
        capacities = sysfs_capacities(sysfs_root, cpus)
        if capacities:
            big, little = split_by_rank(capacities)
            # Flat capacities prove little: a device tree without capacity-dmips-mhz makes
            # every CPU read 1024, so only trust them where the table agrees there is no big.
            if big or (info is not None and not info["big_cores"]):
                return {"cpus": len(cpus), "big_cores": big, "little_cores": little}
    if info is not None:
        return {
            "cpus": info["cpus"],
            "big_cores": list(info["big_cores"]),
            "little_cores": list(info["little_cores"]),
        }
    if cpus:
        online = sysfs_online(sysfs_root)
        if online and set(online) < set(cpus):
            capacities = sysfs_capacities(sysfs_root, online)
            split = _split_seen(capacities, cpus) if capacities else None
            if split:
                return {"cpus": len(cpus), "big_cores": split[0], "little_cores": split[1]}
    cores = cpuinfo_cores(cpuinfo_text)
    if cores and (not cpus or set(cores) <= set(cpus)):
        ranks = _cpuinfo_ranks(cores)
        if ranks is not None:
            split = _split_seen(ranks, cpus or sorted(cores))
            if split:
                total = len(cpus) if cpus else len(cores)
                return {"cpus": total, "big_cores": split[0], "little_cores": split[1]}
    if not cpus and cores:
        cpus = sorted(cores)  # no sysfs: the CPUs cpuinfo lists, their split unknown
    return {"cpus": len(cpus), "big_cores": [], "little_cores": list(cpus)}


def _cpuinfo_ranks(cores: dict[int, tuple[str, str]]) -> dict[int, int] | None:
    """Ranks of cpuinfo cores; identical cores rank alike whatever they are; None when they
    differ and one of them is not an ARM Ltd part we know (its speed cannot be read)."""
    if len(set(cores.values())) == 1:
        return {cpu: 0 for cpu in cores}
    ranks = {}
    for cpu, (implementer, part) in cores.items():
        rank = _CPU_PART_RANK.get(part) if implementer == _ARM_IMPLEMENTER else None
        if rank is None:
            return None
        ranks[cpu] = rank
    return ranks


def _unescape_mount_field(field: str) -> str:
    # The kernel octal-escapes space, tab, newline and backslash in /proc/*/mounts.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _root_entry(mounts_text: str) -> tuple[str, str]:
    """``(source, fstype)`` of the ``/`` mount; the last entry wins (it shadows others)."""
    entry = ("", "")
    for line in (mounts_text or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and _unescape_mount_field(fields[1]) == "/":
            entry = (_unescape_mount_field(fields[0]), fields[2] if len(fields) > 2 else "")
    return entry


def root_source(mounts_text: str) -> str:
    """Source of the ``/`` mount in mount-table text; the last entry wins (it shadows others)."""
    return _root_entry(mounts_text)[0]


def _btrfs_only_device(sysfs_root) -> str:
    """The device of the only btrfs filesystem (``<sysfs>/fs/btrfs/<fsid>/devices/``) when
    there is one with one device; ``""`` otherwise (which one is ``/`` cannot be told)."""
    base = os.path.join(sysfs_root, "fs", "btrfs")
    try:
        filesystems = [
            name for name in os.listdir(base) if os.path.isdir(os.path.join(base, name, "devices"))
        ]
    except OSError:
        return ""
    if len(filesystems) != 1:
        return ""
    try:
        devices = os.listdir(os.path.join(base, filesystems[0], "devices"))
    except OSError:
        return ""
    return devices[0] if len(devices) == 1 else ""


def _device_of_path(path, sysfs_root) -> str:
    """Block device name holding ``path``, via its st_dev and ``<sysfs>/dev/block/MAJ:MIN``."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return ""
    link = os.path.join(sysfs_root, "dev", "block", f"{os.major(dev)}:{os.minor(dev)}")
    if not os.path.exists(link):
        return ""
    return os.path.basename(os.path.realpath(link))


def resolve_block_name(source: str, sysfs_root="/sys", root_dir="/") -> str:
    """Turn a mount source into a block device name (``/dev/mmcblk0p2`` → ``mmcblk0p2``).

    ``/dev/root`` (what the kernel calls a root given as ``root=PARTUUID=…``) and udev symlinks
    are resolved; anything that is not a ``/dev`` path gives ``""``.
    """
    if not source.startswith("/dev/"):
        return ""
    if source == "/dev/root":
        return _device_of_path(root_dir, sysfs_root)
    if source.startswith(("/dev/disk/", "/dev/mapper/")):
        source = os.path.realpath(source)
    return os.path.basename(source)


def classify_block_device(name: str, sysfs_root="/sys") -> tuple[str, str]:
    """Return ``(kind, disk)`` for a block device name; kind is mmc/nvme/ssd/hdd/usb/other."""
    for pattern, kind in _PARTITION_PATTERNS:
        match = pattern.match(name)
        if not match:
            continue
        disk = match.group(1)
        if kind != "sd":
            return kind, disk
        block = os.path.join(sysfs_root, "block", disk)
        # USB first: USB-SATA bridges (the HC1's included) often report rotational=1 for SSDs.
        if _USB_BUS.search(os.path.realpath(block)):
            return "usb", disk
        if (_read_text(os.path.join(block, "queue", "rotational")) or "").strip() == "1":
            return "hdd", disk
        return "ssd", disk
    return "other", ""


def root_device(mounts_text: str, sysfs_root="/sys", root_dir="/") -> dict:
    """``{"root_device", "root_kind", "root_disk"}`` for the ``/`` mount.

    For kind ``other`` (overlay, tmpfs, virtio …) ``root_device`` is the raw mount source.
    """
    source, fstype = _root_entry(mounts_text)
    name = resolve_block_name(source, sysfs_root, root_dir)
    if not name and source == "/dev/root" and fstype == "btrfs":
        # A btrfs file's st_dev is an anonymous device (major 0), not the partition.
        name = _btrfs_only_device(sysfs_root)
    kind, disk = classify_block_device(name, sysfs_root) if name else ("other", "")
    if kind == "other":
        return {"root_device": source, "root_kind": "other", "root_disk": ""}
    return {"root_device": name, "root_kind": kind, "root_disk": disk}


def _is_file(root_dir, relative) -> bool:
    return os.path.isfile(os.path.join(root_dir, relative))


def _is_rpi_stub(path) -> bool:
    # Raspberry Pi OS Bookworm leaves /boot/cmdline.txt saying the file moved to /boot/firmware.
    return "DO NOT EDIT" in (_read_text(path) or "")


def boot_flavour(root_dir="/") -> tuple[str, str]:
    """Return ``(flavour, cmdline_file)`` for the boot files under ``root_dir``.

    ``cmdline_file`` is the file to edit to change the kernel command line (joined onto
    ``root_dir``; ``""`` when unknown). For ``u-boot-menu`` that is ``/etc/default/u-boot``
    (``U_BOOT_PARAMETERS``), since extlinux.conf is regenerated from it by ``u-boot-update``.
    The order settles images carrying several: Armbian and DietPi ship a boot.scr or boot.ini
    that reads their ``*Env.txt``, and an u-boot script overrides whatever a Raspberry Pi
    firmware cmdline.txt says. ``boot.ini`` is Hardkernel's u-boot's plain-text script (ODROID
    images; Hardkernel's Ubuntu keeps it on the FAT partition mounted at /media/boot). That
    u-boot (hardkernel/u-boot odroidxu4-v2017.05 cmd/cfgload.c) tries ``/boot.ini`` before
    ``/boot/boot.ini``, partition 1 before 2: a /media/boot/boot.ini wins over /boot/boot.ini.
    """
    join = os.path.join
    for flavour, relative in (
        ("armbianEnv", "boot/armbianEnv.txt"),
        ("dietpiEnv", "boot/dietpiEnv.txt"),
        ("boot.txt", "boot/boot.txt"),
        ("boot.ini", "media/boot/boot.ini"),
        ("boot.ini", "boot/boot.ini"),
    ):
        if _is_file(root_dir, relative):
            return flavour, join(root_dir, relative)
    if _is_file(root_dir, "boot/extlinux/extlinux.conf"):
        # u-boot-update's header: the file is generated (even if /etc/default/u-boot was
        # deleted), so editing it would be undone by the next kernel update.
        generated = "use: u-boot-update" in (
            _read_text(join(root_dir, "boot/extlinux/extlinux.conf")) or ""
        )
        if _is_file(root_dir, "etc/default/u-boot") or generated:
            return "u-boot-menu", join(root_dir, "etc/default/u-boot")
        return "extlinux", join(root_dir, "boot/extlinux/extlinux.conf")
    if _is_file(root_dir, "boot/firmware/cmdline.txt"):
        return "rpi-cmdline", join(root_dir, "boot/firmware/cmdline.txt")
    legacy = join(root_dir, "boot/cmdline.txt")
    if os.path.isfile(legacy) and not _is_rpi_stub(legacy):
        return "rpi-cmdline", legacy
    return "unknown", ""


def empty_result(machine: str = "", error: str = "") -> dict:
    """The shape :func:`detect` returns, for a node nothing could be read about."""
    result = {
        "board": GENERIC,
        "model": "",
        "compatible": [],
        "soc": "",
        "arch": architectures.canonical(machine),
        "machine": machine or "",
        "cpus": 0,
        "big_cores": [],
        "little_cores": [],
        "root_device": "",
        "root_kind": "other",
        "root_disk": "",
        "boot_flavour": "unknown",
        "cmdline_file": "",
    }
    if error:
        result["error"] = error
    return result


# The binaries whose ELF class tells the userland's width: the Docker engine's (its Go
# architecture decides which image variant it pulls), else the system shell's.
_USERLAND_PROBES = ("usr/bin/dockerd", "bin/sh", "usr/bin/sh")


def userland_bits(root_dir="/") -> int | None:
    """32 or 64 from the ELF class (EI_CLASS) of the userland's binaries, None if unreadable.

    ``uname -m`` names the kernel, and the interpreter running Salt may not be the system's
    (a 64-bit onedir on an armhf Raspberry Pi OS): the system's own binaries tell.
    """
    for relative in _USERLAND_PROBES:
        try:
            with open(os.path.join(root_dir, relative), "rb") as handle:
                header = handle.read(5)
        except OSError:
            continue
        if header[:4] == b"\x7fELF" and header[4:5] in (b"\x01", b"\x02"):
            return 32 if header[4:5] == b"\x01" else 64
    return None


def _userland_arch(machine, userland_bits) -> str:
    # uname -m first: a Pi 4 on a 32-bit kernel says armv7l and runs armv7 binaries; on the
    # 64-bit kernel with a 32-bit userland it says aarch64, and only the userland tells.
    arch = architectures.canonical(machine)
    if arch == "aarch64" and userland_bits == 32:
        return "armv7"
    return arch


def detect(
    devicetree_root="/proc/device-tree",
    sysfs_root="/sys",
    mounts_text="",
    root_dir="/",
    machine="",
    *,
    cpuinfo_text=None,
    userland_bits=None,
) -> dict:
    """Describe the node: board, SoC, CPU clusters, root device and boot flavour.

    Unknown hardware is never an error: it is board ``generic`` with what could be read.
    ``userland_bits`` is the width of the userland's pointers (32 or 64, None unknown):
    a 32-bit userland on a 64-bit kernel (Raspberry Pi OS armhf on a Pi 4/5, whose firmware
    boots the 64-bit kernel by default) runs armv7 binaries although ``uname -m`` says
    ``aarch64``.
    """
    model, compatible = read_device_tree(devicetree_root)
    board = match_board(compatible)
    info = BOARDS.get(board, {})
    result = empty_result(machine)
    result.update(
        board=board,
        model=model,
        compatible=compatible,
        soc=info.get("soc") or soc_from_compatible(compatible),
        arch=_userland_arch(machine, userland_bits) or info.get("arch", ""),
    )
    result.update(cpu_topology(sysfs_root, board, cpuinfo_text))
    result.update(root_device(mounts_text, sysfs_root, root_dir))
    flavour, cmdline_file = boot_flavour(root_dir)
    result.update(boot_flavour=flavour, cmdline_file=cmdline_file)
    return result
