"""The armnode formula rendered for Arch Linux ARM on an ODROID HC1 (no Arch root is available
here) and for Debian: what map.jinja's os_family and board parameters produce."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from armswarm import paths

BOARDS = Path(__file__).resolve().parents[2] / "armswarm" / "lab" / "fixtures" / "boards"


def show_sls(tmp_path, grains, board="odroid-hc1", pillar=None, sls="armnode", options=None):
    conf = tmp_path / "conf"
    conf.mkdir()
    pillar_root = paths.pillar_root()
    if pillar is not None:
        pillar_dir = tmp_path / "pillar"
        pillar_dir.mkdir()
        (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - p\n")
        (pillar_dir / "p.sls").write_text(json.dumps(pillar))
        pillar_root = str(pillar_dir)
    (conf / "minion").write_text(
        yaml.safe_dump(
            {
                "id": "render-test",
                "file_client": "local",
                "root_dir": str(tmp_path / "root"),
                "file_roots": {"base": paths.file_roots(paths.link_extensions(tmp_path / "ext"))},
                "pillar_roots": {"base": [pillar_root]},
                "grains": grains,
                "armnode.boot_root": str(BOARDS / board / "rootfs"),
                "log_level": "quiet",
                **(options or {}),
            }
        )
    )
    salt_call = Path(sys.executable).parent / "salt-call"
    proc = subprocess.run(
        [str(salt_call), "-c", str(conf), "--local", "--out=json", "state.show_sls", sls],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["local"]


def _arg(state: dict, module: str, key: str):
    for item in state[module]:
        if isinstance(item, dict) and key in item:
            return item[key]
    return None


ARCH = {
    "os_family": "Arch",
    "os": "Arch ARM",
    "oscodename": "",
    "virtual": "physical",
    "armnode": {"board": "odroid-hc1", "boot_flavour": "boot.txt"},
}


def test_arch_linux_arm_on_an_hc1(tmp_path):
    high = show_sls(
        tmp_path,
        ARCH,
        pillar={"armnode": {"mirrors": {"arch": ["http://mirror.example.org/archlinuxarm"]}}},
    )
    packages = _arg(high["armnode-packages-installed"], "pkg", "pkgs")
    assert {"cronie", "logrotate", "uboot-tools"} <= set(packages)
    assert _arg(high["armnode-cron-running"], "service", "name") == "cronie"
    assert _arg(high["armnode-admin-user-present"], "user", "groups") == ["wheel"]
    assert _arg(high["armnode-docker-installed"], "pkg", "name") == "docker"
    # pacman has no Recommends: nothing passed to it
    assert _arg(high["armnode-packages-installed"], "pkg", "install_recommends") is None
    mirror = high["armnode-mirrors-managed"]
    assert _arg(mirror, "file", "name") == "/etc/pacman.d/mirrorlist"
    assert "Server = http://mirror.example.org/archlinuxarm/$arch/$repo" in _arg(
        mirror, "file", "contents"
    )
    # systemd-timesyncd is part of systemd on Arch: a service, no package.
    assert "armnode-timesync-running" in high and "armnode-timesync-installed" not in high
    schedulers = _arg(high["armnode-io-schedulers"], "armnode", "schedulers")
    assert schedulers["usb"] == "mq-deadline"


def test_debian_rpi4_renders_apt_and_sudo(tmp_path):
    grains = {
        **ARCH,
        "os_family": "Debian",
        "os": "Raspbian",
        "oscodename": "bookworm",
        "armnode": {"board": "rpi4", "boot_flavour": "rpi-cmdline"},
    }
    high = show_sls(
        tmp_path,
        grains,
        board="rpi4",
        pillar={"armnode": {"mirrors": {"debian": "http://mirror.example.org/debian"}}},
    )
    packages = _arg(high["armnode-packages-installed"], "pkg", "pkgs")
    assert {"cron", "logrotate"} <= set(packages) and "u-boot-tools" not in packages
    assert _arg(high["armnode-admin-user-present"], "user", "groups") == ["sudo"]
    mirror = high["armnode-mirrors-managed"]
    assert _arg(mirror, "armnode", "debian") == "http://mirror.example.org/debian"
    assert _arg(mirror, "armnode", "codename") == "bookworm"
    assert _arg(mirror, "armnode", "managed") == "/etc/apt/sources.list"
    assert _arg(mirror, "armnode", "security") is None
    assert _arg(high["armnode-timesync-installed"], "pkg", "name") == "systemd-timesyncd"
    # apt's Recommends off by default for the tools and the relay, docker.io keeps its own
    assert _arg(high["armnode-packages-installed"], "pkg", "install_recommends") is False
    assert _arg(high["armnode-docker-installed"], "pkg", "install_recommends") is None


@pytest.mark.parametrize("virtual", ["container"])
def test_no_time_sync_in_a_container(tmp_path, virtual):
    high = show_sls(tmp_path, {**ARCH, "virtual": virtual})
    assert "armnode-timesync-running" not in high


@pytest.mark.parametrize(
    ("family", "package", "service"),
    [
        ("Debian", "zram-tools", "zramswap"),
        ("Arch", "zram-generator", "systemd-zram-setup@zram0"),
    ],
)
def test_optional_tuning_renders_when_asked(tmp_path, family, package, service):
    high = show_sls(
        tmp_path,
        {**ARCH, "os_family": family},
        pillar={
            "armnode": {
                "tuning": {
                    "zram": {"enabled": True},
                    "root_mount_options": ["noatime"],
                    "cpu_governor": "schedutil",
                    "irq_affinity": {"enabled": True},
                }
            }
        },
    )
    assert _arg(high["armnode-zram-installed"], "pkg", "name") == package
    assert _arg(high["armnode-zram-running"], "service", "name") == service
    assert _arg(high["armnode-root-mount-options"], "armnode", "options") == ["noatime"]
    assert _arg(high["armnode-cpu-governor"], "armnode", "governor") == "schedutil"
    assert _arg(high["armnode-irq-affinity"], "armnode", "pattern") == "eth|xhci|ehci|ahci|dwc"
    assert "armnode-irq-affinity-unit-enabled" in high


def test_reboot_is_opt_in(tmp_path):
    assert "armnode-reboot-if-required" not in show_sls(tmp_path, ARCH)
    on = tmp_path / "on"
    on.mkdir()
    high = show_sls(on, ARCH, pillar={"armnode": {"reboot_when_required": True}})
    assert _arg(high["armnode-reboot-if-required"], "armnode", "delay_minutes") == 1


def test_optional_tuning_is_off_by_default(tmp_path):
    high = show_sls(tmp_path, ARCH)
    assert not {
        "armnode-zram-installed",
        "armnode-root-mount-options",
        "armnode-cpu-governor",
    } & set(high)


def test_lookup_reaches_every_sls_of_a_run(tmp_path):
    """Each SLS imports map.jinja; once it popped ``lookup`` out of the pillar, so only the
    first SLS rendered (armnode.valid) saw it. packages.sls and users.sls render later."""
    lookup = {"cron_service": "crond-lookup", "admin_group": "staff-lookup"}
    high = show_sls(tmp_path, ARCH, pillar={"armnode": {"lookup": lookup, "timesync": True}})
    assert _arg(high["armnode-cron-running"], "service", "name") == "crond-lookup"
    assert _arg(high["armnode-admin-user-present"], "user", "groups") == ["staff-lookup"]


def test_backup_formula_renders_with_config_and_pillar(tmp_path):
    pytest.importorskip("docker")
    high = show_sls(
        tmp_path,
        ARCH,
        sls="backup",
        options={"armswarm": {"backup": {"helper_path": "/opt/bin/armswarm-restore"}}},
        pillar={"armswarm": {"backup": {"schedule": {"backup": "15 3 * * *"}}}},
    )
    assert _arg(high["backup-restore-helper"], "file", "name") == "/opt/bin/armswarm-restore"
    assert _arg(high["backup-cron-volumes"], "cron", "minute") == "15"
    assert _arg(high["backup-settings-valid"], "backup", "settings") is None


def test_registry_formula_renders_with_config_and_pillar(tmp_path):
    pytest.importorskip("docker")
    # As a board with Docker reports itself: docker0's address sorts before the LAN's.
    grains = {
        **ARCH,
        "id": "render-test",
        "ipv4": ["127.0.0.1", "172.17.0.1", "192.168.1.20"],
        "ip4_interfaces": {
            "docker0": ["172.17.0.1"],
            "eth0": ["192.168.1.20"],
            "lo": ["127.0.0.1"],
        },
    }
    high = show_sls(
        tmp_path,
        grains,
        sls="registry",
        options={"armswarm": {"registry": {"port": 5001}}},
        pillar={"armswarm": {"registry": {"storage": "/srv/ssd/registry"}}},
    )
    running = high["armswarm-registry-running"]
    assert (
        _arg(running, "docker_registry", "port"),
        _arg(running, "docker_registry", "storage"),
    ) == (
        5001,
        "/srv/ssd/registry",
    )
    sans = _arg(high["armswarm-registry-tls-cert"], "x509", "subjectAltName")
    assert "IP:192.168.1.20" in sans and "172.17" not in sans
    # the default host (the certificate's name) is the LAN address, never docker0's
    assert _arg(high["armswarm-registry-tls-cert"], "x509", "CN") == "192.168.1.20"


def test_registry_formula_refuses_a_bad_key_before_any_state(tmp_path):
    pytest.importorskip("docker")
    with pytest.raises(AssertionError) as err:
        show_sls(
            tmp_path,
            ARCH,
            sls="registry",
            pillar={"armswarm": {"registry": {"users": ["builder"]}}},
        )
    assert "armswarm:registry:users: must be a mapping, not a list" in str(err.value)


def test_removing_default_users_never_locks_out_ssh(tmp_path):
    # `root` stands in for an image's default user: it exists wherever this test runs. The
    # admin (a name no test machine has) gets neither a password nor a key.
    pillar = {"armnode": {"default_users": ["root"], "admin": {"name": "armswarm-t-admin"}}}
    high = show_sls(tmp_path, ARCH, sls="armnode.users", pillar=pillar)
    assert "armnode-default-user-root-absent" not in high
    kept = high["armnode-default-users-kept"]
    name = next(a["name"] for a in kept["test"] if isinstance(a, dict) and "name" in a)
    assert "armnode:remove_default_users" in name and "no password and no SSH key" in name
    # With a key from pillar the admin can log in: the default user goes, after the key.
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx5mJ2C3qk4b8g0sPRb1Q2Yg8l5j2m0Sx9H5b3kP2hX t@x"
    pillar["armnode"]["admin"]["ssh_keys"] = [key]
    (tmp_path / "with-key").mkdir()
    high = show_sls(tmp_path / "with-key", ARCH, sls="armnode.users", pillar=pillar)
    assert "armnode-default-users-kept" not in high
    absent = high["armnode-default-user-root-absent"]
    requires = next(a["require"] for a in absent["user"] if isinstance(a, dict) and "require" in a)
    assert {"ssh_auth": "armnode-admin-ssh-keys-present"} in requires
