"""Optional tuning states through Salt's real state loader: the CPU governor (udev rule + live
sysfs) and root mount options in fstab, each check → apply → re-apply → check."""

import errno
import subprocess

import pytest
from armswarm_core.node import boot_files, irqs, tuning
from loaders import load_states

FSTAB = """# /etc/fstab: static file system information.
UUID=1111-2222\t/boot\tvfat\tdefaults\t0\t2
UUID=abcd\t/\text4\tdefaults,relatime\t0\t1
"""


@pytest.fixture
def env(tmp_path):
    sysfs = tmp_path / "sys"
    for cpu, current in (("cpu0", "performance"), ("cpu1", "schedutil")):
        cpufreq = sysfs / "devices/system/cpu" / cpu / "cpufreq"
        cpufreq.mkdir(parents=True)
        (cpufreq / "scaling_governor").write_text(current + "\n")
        (cpufreq / "scaling_available_governors").write_text("performance schedutil ondemand\n")
    (tmp_path / "fstab").write_text(FSTAB)
    states = load_states(
        tmp_path,
        **{
            "armnode.sysfs": str(sysfs),
            "armnode.udev_rules_dir": str(tmp_path / "rules.d"),
            "armnode.boot_root": str(tmp_path),
        },
    )
    return states, tmp_path


def cycle(states, fun, **kwargs):
    results = []
    for test in (True, False, False, True):
        states.opts["test"] = test
        results.append(states[fun](**kwargs))
    predicted, applied, again, check = results
    assert predicted["result"] is None and predicted["changes"]
    assert applied["result"] is True and applied["changes"] == predicted["changes"], applied
    for ret in (again, check):
        assert ret["result"] is True and ret["changes"] == {}, ret
    return applied


def test_cpu_governor_cycle(env):
    states, tmp = env
    applied = cycle(states, "armnode.cpu_governor", governor="schedutil")
    assert applied["changes"]["cpus"] == {"cpu0": {"old": "performance", "new": "schedutil"}}
    assert (
        'scaling_governor}="schedutil"' in (tmp / "rules.d" / tuning.GOVERNOR_RULE_FILE).read_text()
    )


def test_governor_the_cpus_lack_is_refused(env):
    states, tmp = env
    states.opts["test"] = False
    ret = states["armnode.cpu_governor"](governor="powersave")
    assert ret["result"] is False and "does not offer the 'powersave' governor" in ret["comment"]
    assert not (tmp / "rules.d").exists()


def test_root_mount_options_cycle(env):
    states, tmp = env
    cycle(
        states,
        "armnode.mount_options",
        name="/",
        options=["noatime", "lazytime"],
        fstab=str(tmp / "fstab"),
    )
    lines = (tmp / "fstab").read_text().splitlines()
    assert lines[0] == "# /etc/fstab: static file system information."
    assert lines[1] == "UUID=1111-2222\t/boot\tvfat\tdefaults\t0\t2"
    assert lines[2] == "UUID=abcd\t/\text4\tdefaults,noatime,lazytime\t0\t1"
    assert (tmp / "var/lib/armswarm/reboot-required").is_file()


def test_missing_mount_point_is_named(env):
    states, tmp = env
    states.opts["test"] = False
    ret = states["armnode.mount_options"](name="/srv", fstab=str(tmp / "fstab"))
    assert ret["result"] is False and "no entry for /srv" in ret["comment"]


INTERRUPTS = """       CPU0   CPU1   CPU2   CPU3   CPU4   CPU5
 25:   12034      0      0      0      0      0  GICv3  44 Level  eth0
 26:    8000      0      0      0      0      0  GICv3  45 Level  xhci-hcd:usb1
 30:     500    400      0      0      0      0  GICv3  30 Level  arch_timer
IPI0:   1000   1000   1000   1000   1000   1000  Rescheduling interrupts
"""


def _procfs(tmp):
    """A /proc with INTERRUPTS and IRQs 25, 26 and 30 on CPUs 0-5."""
    procfs = tmp / "proc"
    procfs.mkdir()
    (procfs / "interrupts").write_text(INTERRUPTS)
    for number in (25, 26, 30):
        (procfs / "irq" / str(number)).mkdir(parents=True)
        (procfs / "irq" / str(number) / "smp_affinity_list").write_text("0-5\n")
    return procfs


def test_irq_affinity_cycle(env, tmp_path):
    states, tmp = env
    procfs = _procfs(tmp)
    states.opts["armnode.procfs"] = str(procfs)
    applied = cycle(states, "armnode.irq_affinity", pattern="eth|xhci", cpus=[4, 5])
    assert sorted(applied["changes"]["irqs"]) == [25, 26]
    assert (procfs / "irq/25/smp_affinity_list").read_text() == "4-5"
    assert (procfs / "irq/30/smp_affinity_list").read_text() == "0-5\n"  # timer untouched
    conf = tmp / "etc/armswarm/irq-affinity.conf"
    assert conf.read_text().splitlines()[-1] == "4-5 eth|xhci"
    script = tmp / "usr/local/sbin/armswarm-irq-affinity"
    assert script.stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_an_irq_the_kernel_cannot_move_is_left_and_not_tried_again(env, tmp_path, monkeypatch):
    # The kernel answers EIO (a chip without set_affinity: chained, per-CPU) or EPERM (an
    # affinity it manages itself; this machine's IRQ 36 does) to a write it will not do.
    # A regular file cannot answer that: the one write is the kernel's stand-in.
    states, tmp = env
    procfs = _procfs(tmp)
    states.opts["armnode.procfs"] = str(procfs)
    real_open = open

    def kernel_open(path, mode="r", *args, **kwargs):
        if str(path).endswith("irq/30/smp_affinity_list") and "w" in mode:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(irqs, "open", kernel_open, raising=False)
    results = []
    for test in (True, False, False, True):
        states.opts["test"] = test
        results.append(states["armnode.irq_affinity"](pattern="eth|xhci|timer", cpus=[4, 5]))
    predicted, applied, again, check = results
    assert predicted["result"] is None and sorted(predicted["changes"]["irqs"]) == [25, 26, 30]
    assert applied["result"] is True and sorted(applied["changes"]["irqs"]) == [25, 26], applied
    assert "cannot move IRQ 30 (GICv3 30 Level arch_timer)" in applied["comment"], applied
    for ret in (again, check):
        assert ret["result"] is True and ret["changes"] == {}, ret
    assert (procfs / "irq/26/smp_affinity_list").read_text() == "4-5"
    assert (procfs / "irq/30/smp_affinity_list").read_text() == "0-5\n"
    # After a reboot IRQ 30 may be another device: that one is tried.
    (procfs / "interrupts").write_text(INTERRUPTS.replace("arch_timer", "eth1"))
    states.opts["test"] = True
    ret = states["armnode.irq_affinity"](pattern="eth|xhci|timer", cpus=[4, 5])
    assert sorted(ret["changes"]["irqs"]) == [30], ret


def _grain_env(tmp, big_cores):
    """A loader whose ``armnode`` grain lists ``big_cores`` (grains are packed into the
    modules when the loader is built: setting ``opts["grains"]`` later changes nothing)."""
    procfs = _procfs(tmp)
    states = load_states(
        tmp,
        grains={"kernel": "Linux", "armnode": {"big_cores": big_cores}},
        **{"armnode.procfs": str(procfs), "armnode.boot_root": str(tmp)},
    )
    states.opts["test"] = False
    return states, procfs


def test_irq_affinity_defaults_to_the_grains_big_cores(tmp_path):
    states, procfs = _grain_env(tmp_path, [4, 5])
    ret = states["armnode.irq_affinity"](pattern="eth")
    assert ret["result"] is True and sorted(ret["changes"]["irqs"]) == [25], ret
    assert (procfs / "irq/25/smp_affinity_list").read_text() == "4-5"


def test_irq_affinity_without_big_cores_does_nothing(tmp_path):
    states, procfs = _grain_env(tmp_path, [])
    ret = states["armnode.irq_affinity"](pattern="eth")
    assert ret["result"] is True and ret["changes"] == {} and "no big cores" in ret["comment"]
    assert (procfs / "irq/25/smp_affinity_list").read_text() == "0-5\n"


def test_reboot_only_when_required(env):
    states, tmp = env
    states.opts["test"] = False
    ret = states["armnode.rebooted_if_required"]()
    assert ret["result"] is True and ret["changes"] == {} and ret["comment"] == "No reboot required"
    boot_files.mark_reboot_required(str(tmp), "kernel command line changed in /boot/boot.txt")
    states.opts["test"] = True  # a real run would call shutdown -r
    ret = states["armnode.rebooted_if_required"](delay_minutes=5)
    assert ret["result"] is None
    assert ret["changes"] == {
        "reboot_in_minutes": 5,
        "because": ["kernel command line changed in /boot/boot.txt"],
    }


def test_logrotate_compress_cycle_keeps_the_file_mode(env):
    states, tmp = env
    conf = tmp / "logrotate.conf"
    conf.write_text("weekly\n#compress\ninclude /etc/logrotate.d\n")
    conf.chmod(0o640)
    applied = cycle(states, "armnode.logrotate_compress", name=str(conf))
    assert applied["changes"] == {"compress": True}
    assert conf.read_text() == "weekly\ncompress\ninclude /etc/logrotate.d\n"
    assert conf.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []


def test_mount_options_from_a_single_string_are_refused(env):
    # list("noatime") would write n,o,a,t,i,m,e into fstab.
    states, tmp = env
    states.opts["test"] = False
    for options in ("noatime", ["noatime\n/dev/sdb /srv ext4"]):
        ret = states["armnode.mount_options"](name="/", options=options, fstab=str(tmp / "fstab"))
        assert ret["result"] is False and ret["changes"] == {}, ret
    assert ret["comment"].endswith("is not a mount option")
    assert (tmp / "fstab").read_text() == FSTAB


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": "eth\n0 .*", "cpus": [4]}, "irq_affinity: pattern must be a one-line string"),
        ({"pattern": "eth", "cpus": "45"}, "irq_affinity: cpus must be a list of CPU numbers"),
        ({"pattern": "eth", "cpus": ["x"]}, "irq_affinity: cpus must be a list of CPU numbers"),
    ],
)
def test_irq_affinity_bad_arguments_fail_cleanly(env, kwargs, message):
    states, tmp = env
    states.opts["test"] = False
    ret = states["armnode.irq_affinity"](**kwargs)
    assert ret["result"] is False and ret["comment"] == message and ret["changes"] == {}
    assert not (tmp / "etc").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"host": "smtp.example.org\nhost evil.example"},
            "mail_relay: host must be a string on one line",
        ),
        ({"host": "smtp.example.org", "user": "a b"}, "mail_relay: user must be one word"),
        ({"host": "smtp.example.org", "tls": "false"}, "mail_relay: tls must be true or false"),
        ({"host": "smtp.example.org", "port": True}, "mail_relay: port must be a port number"),
    ],
)
def test_mail_relay_values_that_would_break_its_files_fail_cleanly(env, kwargs, message):
    states, _ = env
    states.opts["test"] = True
    ret = states["armnode.mail_relay"](**kwargs)
    assert ret["result"] is False and ret["comment"] == message and ret["changes"] == {}


def test_mail_relay_password_with_a_newline_is_refused_unshown(tmp_path):
    states = load_states(tmp_path, pillar={"relay_pw": "s3cret\nhost evil.example"})
    states.opts["test"] = True
    ret = states["armnode.mail_relay"](
        host="smtp.example.org", user="u", password_pillar="relay_pw"
    )
    assert (
        ret["result"] is False
        and ret["comment"] == "mail_relay: password must be a string on one line"
    )
    assert "s3cret" not in repr(ret)


def test_irq_descriptions_starting_with_digits():
    # gpio-brcmstb names its irq chip after its device (the Pi 5's BCM2712 GPIO block is
    # 107d508500.gpio), so a description can start with digits; only as many count columns
    # as the header has CPUs (online ones only) precede it.
    text = (
        "           CPU0       CPU1       CPU2       CPU3\n"
        "  9:          0          0          0          0     GICv2  25 Level     vgic\n"
        " 36:          0          0          0          0  107d508500.gpio  20 Edge  pwr_button\n"
        "105:     123456          0          0          0  GICv2 189 Level     eth0\n"
        "IPI0:      2000       2100       1900       2000       Rescheduling interrupts\n"
    )
    assert irqs.matching(text, r"^107d508500\.gpio ") == {36: "107d508500.gpio 20 Edge pwr_button"}
    assert irqs.matching(text, r"Level eth0$") == {105: "GICv2 189 Level eth0"}
    assert irqs.matching(text, "Rescheduling") == {}


def test_fstab_mount_point_with_an_escaped_space():
    # fstab(5): a blank in a mount point is written \040, as in /proc/mounts.
    text = "UUID=abcd\t/\text4\tdefaults\t0\t1\nLABEL=usb /mnt/usb\\040disk ext4 defaults 0 2\n"
    out = tuning.fstab_with_options(text, "/mnt/usb disk", ["noatime"])
    assert out.splitlines()[1] == "LABEL=usb\t/mnt/usb\\040disk\text4\tdefaults,noatime\t0\t2"
    assert out.splitlines()[0] == "UUID=abcd\t/\text4\tdefaults\t0\t1"
