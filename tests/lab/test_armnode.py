"""`state.apply armnode` on the five board nodes (`up` applied it once already): a second run
changes nothing, boot files carry each argument once with the rest untouched, boot.scr decodes
back, and bad input changes nothing."""

import difflib
import io
import json
import subprocess
import tarfile

import pytest
from armswarm_core.node import cmdline

from armswarm.lab.cluster import FIXTURES

ARGS = ["fsck.mode=force", "fsck.repair=yes"]
BOOT_FILES = {
    "node1": ("boot.txt", "boot/boot.txt"),  # quoted bootargs
    "node2": ("armbianEnv", "boot/armbianEnv.txt"),
    # u-boot-menu with the stock (commented) defaults: the parameters are the cmdline file's.
    "node3": ("rpi-cmdline", "etc/kernel/cmdline"),
    "node4": ("boot.txt", "boot/boot.txt"),  # Arch's unquoted bootargs
    "node5": ("rpi-cmdline", "boot/firmware/cmdline.txt"),
}


def apply(lab, target="*", *args, check=True):
    """``state.apply armnode``; ``check=False`` when a state is meant to fail (salt then exits
    non-zero)."""
    tgt = ["-L", target[2:]] if target.startswith("L@") else [target]
    ret = lab.salt_json(*tgt, "state.apply", "armnode", *args, "--timeout=600", check=check)
    assert ret, "no minion returned"
    return ret


def changes(states: dict) -> dict:
    return {sid: s["changes"] for sid, s in states.items() if s["changes"]}


def read(lab, node, path) -> bytes:
    container = lab.client.containers.get(lab.container_name(lab.node(node)))
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return tar.extractfile(tar.getmembers()[0]).read()


def test_second_apply_and_check_change_nothing(lab):
    for extra in ((), ("test=True",)):
        ret = apply(lab, "*", *extra)
        assert sorted(ret) == lab.node_names()
        for node, states in ret.items():
            assert isinstance(states, dict), (node, states)
            assert all(s["result"] is True for s in states.values()), (node, states)
            assert changes(states) == {}, (node, changes(states))


@pytest.mark.parametrize("node", sorted(BOOT_FILES))
def test_boot_file_has_each_argument_once_and_nothing_else_changed(lab, node):
    flavour, rel = BOOT_FILES[node]
    board = lab.node(node).board
    original = (FIXTURES / board / "rootfs" / rel).read_text()
    edited = read(lab, node, f"/{rel}").decode()
    args = cmdline.read(flavour, edited)
    assert all(args.count(a) == 1 for a in ARGS), args
    diff = [
        d
        for d in difflib.ndiff(original.splitlines(), edited.splitlines())
        if d.startswith(("+ ", "- "))
    ]
    assert len(diff) == 2, diff
    if flavour == "boot.txt":
        scr = read(lab, node, "/boot/boot.scr")
        assert cmdline.decode_script_image(scr) == edited
    if rel == "etc/kernel/cmdline":
        # The real u-boot-update regenerated extlinux.conf: the default label boots with the
        # arguments, nothing that was in effect (root=, rootwait, console=) went missing.
        conf = read(lab, node, "/boot/extlinux/extlinux.conf").decode()
        labels, default = cmdline.extlinux_labels(conf)
        start, end = labels[default][0]
        assert conf[start:end].split() == [*original.split(), *ARGS], conf
        assert (
            read(lab, node, "/etc/default/u-boot")
            == (FIXTURES / board / "rootfs/etc/default/u-boot").read_bytes()
        )
    # The original is kept beside the edited file, byte for byte.
    assert read(lab, node, f"/{rel}.armswarm-orig").decode() == original
    code, out = lab.exec(node, ["cat", "/var/lib/armswarm/reboot-required"])
    assert code == 0 and "kernel command line changed" in out


def test_node_settings_in_place(lab):
    code, out = lab.exec("node2", ["cat", "/etc/systemd/journald.conf.d/armswarm.conf"])
    assert "Storage=volatile" in out and "RuntimeMaxUse=50M" in out
    code, out = lab.exec("node2", ["cat", "/etc/docker/daemon.json"])
    daemon = json.loads(out)
    assert daemon["storage-driver"] == "overlay2" and "insecure-registries" not in daemon
    code, out = lab.exec("node2", ["id", "clusteradm"])
    assert code == 0 and "(sudo)" in out
    code, out = lab.exec("node2", ["systemctl", "is-active", "cron", "docker"])
    assert out.split() == ["active", "active"]
    # The HC1 runs a 4.14 kernel: mq-deadline is set under its legacy name.
    code, out = lab.exec("node1", ["cat", "/etc/armswarm-lab/sys/block/mmcblk0/queue/scheduler"])
    assert out.strip() == "deadline"
    code, out = lab.exec("node1", ["cat", "/etc/udev/rules.d/60-armswarm-io-schedulers.rules"])
    assert 'ATTR{queue/scheduler}="deadline"' in out and "mq-deadline" not in out
    # A `compress` directive, not stock Debian's `#compress` comment.
    code, out = lab.exec(
        "node1", ["grep", "-E", "^[[:space:]]*compress([[:space:]]|$)", "/etc/logrotate.conf"]
    )
    assert code == 0, out
    # The pending reboot shows in the grain too.
    lab.salt_json("node1", "saltutil.refresh_grains", "--timeout=60")
    pending = lab.salt_json("node1", "grains.get", "armnode:reboot_required")["node1"]
    assert any("kernel command line changed" in reason for reason in pending), pending


def _pillar(data) -> str:
    return "pillar=" + json.dumps({"armnode": data})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"admin": {"password_hash": "hunter2-plaintext"}}, "armnode:admin:password_hash"),
        ({"io_schedulers": {"mmc": "deadline"}}, "armnode:io_schedulers"),
        ({"mirrors": {"debian": "deb.example/debian"}}, "armnode:mirrors:debian"),
        ({"kernel_args": {"present": ["two words"]}}, "armnode:kernel_args"),
    ],
)
def test_bad_input_stops_before_any_change(lab, override, message):
    ret = apply(lab, "node2", _pillar(override), check=False)["node2"]
    valid = next(s for sid, s in ret.items() if "settings_valid" in sid)
    assert valid["result"] is False and message in valid["comment"], valid["comment"]
    assert "hunter2" not in json.dumps(ret)
    assert changes(ret) == {}


def test_missing_boot_file_is_named_and_nothing_changes(lab):
    lab.exec("node5", ["mv", "/boot/firmware/cmdline.txt", "/root/cmdline.txt"])
    try:
        ret = apply(lab, "node5", check=False)["node5"]
    finally:
        lab.exec("node5", ["mv", "/root/cmdline.txt", "/boot/firmware/cmdline.txt"])
    valid = next(s for sid, s in ret.items() if "settings_valid" in sid)
    assert valid["result"] is False and "no boot configuration found" in valid["comment"]
    assert changes(ret) == {}


def test_mail_relay_configured_and_password_never_returned(lab):
    code, out = lab.exec("node3", ["stat", "-c", "%a %U", "/etc/msmtprc"])
    assert out.split() == ["600", "root"]
    code, out = lab.exec("node3", ["cat", "/etc/msmtprc"])
    assert "password lab-relay-password-not-a-secret" in out and "host smtp.example.org" in out
    code, out = lab.exec("node3", ["cat", "/etc/aliases"])
    assert "root: admins@example.org" in out
    code, out = lab.exec("node3", ["readlink", "-f", "/usr/sbin/sendmail"])
    assert "msmtp" in out
    # Not in the master's job cache (every return) or logs, nor in the minions' logs and job
    # files. (The master's per-minion pillar cache holds pillar, secrets included, by design.)
    places = [str(lab.master_root / "cache" / "jobs"), str(lab.master_root / "log")]
    hits = subprocess.run(
        ["grep", "-rl", "lab-relay-password", *places],
        capture_output=True,
        text=True,
        check=False,
    )
    assert hits.stdout == "", hits.stdout
    for node in lab.node_names():
        code, out = lab.exec(
            node,
            ["grep", "-rl", "lab-relay-password", "/var/log/salt", "/var/cache/salt/minion/proc"],
        )
        assert out.strip() == "", (node, out)


def test_default_users_removed_never_the_admin(lab):
    # Raspberry Pi OS's `pi` (node5 bookworm, node4 trixie), and on Armbian (node2) the first
    # user, UID 1000, whatever its name.
    for node in ("node4", "node5"):
        lab.exec(node, ["useradd", "-M", "pi"])
    lab.exec("node2", ["useradd", "-M", "-o", "-u", "1000", "armbianfirst"])
    ret = apply(lab, "L@node2,node4,node5")
    for node in ("node4", "node5"):
        assert any("default-user-pi-absent" in sid for sid in changes(ret[node])), node
        assert lab.exec(node, ["id", "pi"])[0] != 0
    assert any("default-user-armbianfirst-absent" in sid for sid in changes(ret["node2"]))
    for node in ("node2", "node4", "node5"):
        code, _ = lab.exec(node, ["id", "clusteradm"])
        assert code == 0, f"the admin must stay on {node}"
    assert lab.exec("node2", ["id", "armbianfirst"])[0] != 0
    assert all(not changes(states) for states in apply(lab, "L@node2,node4,node5").values())
