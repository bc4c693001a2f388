"""The example tree's base image script (salt/imagebuild/images/base/build.sh), rendered: with
``ARMSWARM_DRY_RUN=1`` it prints what it would run for the platform the build farm gives it
(Debian's mmdebstrap per architecture, or pacstrap for Arch Linux ARM boards). The lab tests
run it for real."""

import os
import re
import subprocess

import pytest

from armswarm import paths

pytestmark = pytest.mark.unit

SCRIPT = paths.tree_root() / "salt/imagebuild/images/base/build.sh"


def render(tmp_path, **env):
    full = {
        "PATH": os.environ["PATH"],
        "ARMSWARM_DRY_RUN": "1",
        "ARMSWARM_IMAGE": "reg:5000/base:20261201",
        "ARMSWARM_ROOTFS_CACHE": str(tmp_path / "no-cache"),
        **env,
    }
    proc = subprocess.run(
        ["sh", str(SCRIPT)], env=full, capture_output=True, text=True, check=False
    )
    return proc


def commands(proc):
    assert proc.returncode == 0, proc.stderr
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize(
    ("env", "debarch", "platform"),
    [
        ({"TARGETARCH": "arm", "TARGETVARIANT": "v7"}, "armhf", "linux/arm/v7"),
        ({"TARGETARCH": "arm64", "TARGETVARIANT": ""}, "arm64", "linux/arm64"),
        # BuildKit gives both; TARGETARCH wins over a TARGETPLATFORM that disagrees
        ({"TARGETPLATFORM": "linux/arm64", "TARGETARCH": "arm64"}, "arm64", "linux/arm64"),
        ({"TARGETPLATFORM": "linux/arm/v7"}, "armhf", "linux/arm/v7"),
        ({"TARGETPLATFORM": "linux/arm/v6"}, "armel", "linux/arm/v6"),
    ],
)
def test_debian_rootfs_per_platform(tmp_path, env, debarch, platform):
    cmds = commands(render(tmp_path, **env))
    mmdebstrap = next(c for c in cmds if c.startswith("mmdebstrap "))
    assert f"--arch={debarch} " in mmdebstrap
    assert "--variant=minbase" in mmdebstrap and "--include=busybox" in mmdebstrap
    # the rootfs' own dpkg writes its architecture (a program of that platform)
    assert 'chroot "$1" dpkg --print-architecture' in mmdebstrap
    assert re.search(r" bookworm \S+/context/rootfs\.tar https?://\S+$", mmdebstrap), mmdebstrap
    assert cmds[-1].startswith(f"docker build --platform {platform} -t reg:5000/base:20261201 ")
    # no cache directory: nothing is copied into one
    assert not any(c.startswith(("cp ", "mv ")) for c in cmds)
    # slim by default: dpkg leaves out manuals, translations, documentation but the copyrights
    for opt in (
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    ):
        assert opt in mmdebstrap.split(), mmdebstrap
    # the include comes after its exclude: dpkg's last matching filter wins
    assert mmdebstrap.index("path-include=/usr/share/doc/*/copyright") > mmdebstrap.index(
        "path-exclude=/usr/share/doc/*"
    )


def test_merged_usr_comes_from_mmdebstraps_hook_where_it_has_one(tmp_path):
    # without it, bookworm's init-system-helpers pulls usrmerge, and usrmerge perl (50 MB)
    hook = "/usr/share/mmdebstrap/hooks/maybe-merged-usr"
    cmds = commands(render(tmp_path, TARGETPLATFORM="linux/arm64"))
    mmdebstrap = next(c for c in cmds if c.startswith("mmdebstrap "))
    assert (f"--hook-dir={hook}" in mmdebstrap.split()) is os.path.isdir(hook), mmdebstrap


def test_base_slim_0_keeps_the_documentation_under_another_cache_key(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    slim, full = (
        commands(
            render(tmp_path, ARMSWARM_ROOTFS_CACHE=str(cache), TARGETPLATFORM="linux/arm64", **env)
        )
        for env in ({}, {"BASE_SLIM": "0"})
    )
    mmdebstrap = next(c for c in full if c.startswith("mmdebstrap "))
    assert "--dpkgopt" not in mmdebstrap and "path-exclude" not in mmdebstrap
    assert slim[-2].split()[-1] != full[-2].split()[-1]  # the cached roots' names


def test_foreign_platform_skips_mmdebstraps_qemu_check_native_does_not(tmp_path):
    native = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    foreign = "arm64" if native != "arm64" else "amd64"
    for arch, skipped in ((native, False), (foreign, True)):
        cmds = commands(render(tmp_path, TARGETARCH=arch, TARGETVARIANT=""))
        mmdebstrap = next(c for c in cmds if c.startswith("mmdebstrap "))
        assert ("--skip=check/qemu" in mmdebstrap) is skipped, (arch, mmdebstrap)


def test_without_a_platform_the_nodes_own(tmp_path):
    machine = os.uname().machine
    want = {"x86_64": "linux/amd64", "aarch64": "linux/arm64", "armv7l": "linux/arm/v7"}[machine]
    cmds = commands(render(tmp_path))
    assert cmds[-1].startswith(f"docker build --platform {want} ")


def test_a_cache_directory_keeps_the_rootfs_by_content(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cmds = commands(
        render(tmp_path, ARMSWARM_ROOTFS_CACHE=str(cache), TARGETPLATFORM="linux/arm/v7")
    )
    copy, move = cmds[-3], cmds[-2]
    assert copy.startswith("cp ") and move.startswith("mv ")
    target = move.split()[-1]
    assert re.fullmatch(rf"{cache}/debian-bookworm-armhf-[0-9a-f]{{16}}\.tar", target)
    assert move.split()[1] == copy.split()[-1]  # written aside, then renamed into place
    # another architecture, another package set: other keys; the same input: the same key
    others = {
        "arm64": render(tmp_path, ARMSWARM_ROOTFS_CACHE=str(cache), TARGETPLATFORM="linux/arm64"),
        "pkgs": render(
            tmp_path,
            ARMSWARM_ROOTFS_CACHE=str(cache),
            TARGETPLATFORM="linux/arm/v7",
            BASE_PACKAGES="busybox curl",
        ),
        "same": render(tmp_path, ARMSWARM_ROOTFS_CACHE=str(cache), TARGETPLATFORM="linux/arm/v7"),
    }
    keys = {name: commands(proc)[-2].split()[-1] for name, proc in others.items()}
    assert keys["same"] == target and keys["arm64"] != target and keys["pkgs"] != target
    # a cached rootfs is used instead of bootstrapping
    (cache / target.rsplit("/", 1)[-1]).write_bytes(b"")
    cached = commands(
        render(tmp_path, ARMSWARM_ROOTFS_CACHE=str(cache), TARGETPLATFORM="linux/arm/v7")
    )
    assert not any(c.startswith("mmdebstrap") for c in cached)
    assert cached[0].startswith(f"cp {target} ")


@pytest.mark.parametrize(
    ("platform", "alarch"), [("linux/arm/v7", "armv7h"), ("linux/arm64", "aarch64")]
)
def test_arch_linux_arm_boards_get_pacstrap(tmp_path, platform, alarch):
    proc = render(tmp_path, BASE_DISTRO="archlinuxarm", TARGETPLATFORM=platform)
    cmds = commands(proc)
    pacstrap = next(c for c in cmds if c.startswith("pacstrap "))
    assert re.fullmatch(r"pacstrap -C \S+/pacman\.conf -c -G -M \S+/root base busybox", pacstrap)
    conf = [line[2:] for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert f"Architecture = {alarch}" in conf
    assert "Server = http://mirror.archlinuxarm.org/$arch/$repo" in conf
    assert (
        "NoExtract = usr/share/man/* usr/share/info/* usr/share/doc/* usr/share/locale/*"
        " !usr/share/locale/locale.alias"
    ) in conf
    assert not any(c.startswith("mmdebstrap") for c in cmds)
    assert cmds[-1].startswith(f"docker build --platform {platform} ")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TARGETARCH": "riscv64"}, "no root filesystem recipe for platform linux/riscv64"),
        ({"TARGETPLATFORM": "linux/arm/v7", "BASE_DISTRO": "alpine"}, "BASE_DISTRO must be"),
        ({"TARGETPLATFORM": "linux/amd64", "BASE_DISTRO": "archlinuxarm"}, "Arch Linux ARM has no"),
        ({"ARMSWARM_IMAGE": ""}, "ARMSWARM_IMAGE"),
        ({"TARGETPLATFORM": "linux/arm64", "BASE_SLIM": "yes"}, "BASE_SLIM must be 1 or 0"),
    ],
)
def test_bad_input_is_refused_naming_it(tmp_path, env, message):
    proc = render(tmp_path, **env)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "+ " not in proc.stdout  # nothing ran
