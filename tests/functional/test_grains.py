"""The armnode grain loaded through Salt's real grains loader, pointed at the lab fixtures."""

import copy
from pathlib import Path

import pytest
import salt.config
import salt.loader
import yaml

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "armswarm" / "lab" / "fixtures" / "boards"


@pytest.fixture(scope="module")
def base_opts():
    return salt.config.minion_config(None)


def _grains(base_opts, tmp_path, fixture=None, mounts="/dev/mmcblk0p2 / ext4 rw 0 0\n"):
    opts = copy.deepcopy(base_opts)
    mounts_file = tmp_path / "mounts"
    mounts_file.write_text(mounts)
    board_dir = FIXTURES / fixture if fixture else tmp_path / "no-board"
    opts.update(
        {
            "grains_dirs": [str(REPO / "_grains")],
            "utils_dirs": [str(REPO / "_utils")],
            "grains_cache": False,
            "cachedir": str(tmp_path / "cache"),
            "armnode.device_tree": str(board_dir / "device-tree"),
            # An empty sysfs: the CPU layout comes from the board table, as in the lab.
            "armnode.sysfs": str(tmp_path / "sys"),
            "armnode.boot_root": str(board_dir / "rootfs"),
            "armnode.mounts": str(mounts_file),
        }
    )
    if fixture:
        # uname -m of the board played (as the lab sets it): it decides the arch grain.
        opts["armnode.machine"] = yaml.safe_load((board_dir / "board.yaml").read_text())["uname_m"]
    return salt.loader.grains(opts, force_refresh=True)


@pytest.mark.parametrize(
    ("fixture", "board", "flavour"),
    [
        ("odroid-hc1", "odroid-hc1", "boot.txt"),
        ("rockpro64", "rockpro64", "armbianEnv"),
        ("rockpro64-extlinux", "rockpro64", "u-boot-menu"),
        ("sopine", "sopine", "boot.txt"),
        ("rpi4", "rpi4", "rpi-cmdline"),
    ],
)
def test_armnode_grain_from_fixture(base_opts, tmp_path, fixture, board, flavour):
    grains = _grains(base_opts, tmp_path, fixture)
    assert grains["armnode"]["board"] == board
    assert grains["armnode"]["boot_flavour"] == flavour
    assert grains["armnode"]["root_kind"] == "mmc"
    assert "error" not in grains["armnode"]


def test_armnode_grain_hc1_details(base_opts, tmp_path):
    node = _grains(base_opts, tmp_path, "odroid-hc1")["armnode"]
    assert node["soc"] == "exynos5422"
    assert node["arch"] == "armv7"
    assert node["big_cores"] == [4, 5, 6, 7]
    assert node["cmdline_file"] == str(FIXTURES / "odroid-hc1" / "rootfs" / "boot" / "boot.txt")


def test_armnode_grain_unknown_hardware_is_generic(base_opts, tmp_path):
    node = _grains(base_opts, tmp_path, mounts="overlay / overlay rw 0 0\n")["armnode"]
    assert node["board"] == "generic"
    assert node["boot_flavour"] == "unknown"
    assert node["root_kind"] == "other"
    assert node["root_device"] == "overlay"


def test_armnode_grain_armhf_userland_on_the_64bit_pi_kernel(base_opts, tmp_path):
    # Raspberry Pi OS 32-bit on a Pi 4 boots kernel8 (uname -m aarch64, dpkg armhf):
    # procount/pinn#760. The userland's /bin/sh is an ELF32 ARM binary.
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "sh").write_bytes(b"\x7fELF\x01\x01\x01" + b"\0" * 9 + b"\x02\x00\x28\x00")
    opts = copy.deepcopy(base_opts)
    (tmp_path / "mounts").write_text("/dev/mmcblk0p2 / ext4 rw 0 0\n")
    opts.update(
        {
            "grains_dirs": [str(REPO / "_grains")],
            "utils_dirs": [str(REPO / "_utils")],
            "grains_cache": False,
            "cachedir": str(tmp_path / "cache"),
            "armnode.device_tree": str(FIXTURES / "rpi4" / "device-tree"),
            "armnode.sysfs": str(tmp_path / "sys"),
            "armnode.boot_root": str(root),
            "armnode.mounts": str(tmp_path / "mounts"),
            "armnode.machine": "aarch64",
        }
    )
    node = salt.loader.grains(opts, force_refresh=True)["armnode"]
    assert (node["board"], node["machine"], node["arch"]) == ("rpi4", "aarch64", "armv7")
