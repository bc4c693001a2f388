"""armnode.io_scheduler through Salt's real state loader on a test sysfs and rules directory:
check → apply → re-apply → check; legacy and unknown schedulers refused before any change."""

from pathlib import Path

import pytest
from armswarm_core.node import io_schedulers
from loaders import load_states


def _disk(sysfs: Path, name: str, scheduler_line: str, rotational="0"):
    queue = sysfs / "block" / name / "queue"
    queue.mkdir(parents=True)
    (queue / "scheduler").write_text(scheduler_line + "\n")
    (queue / "rotational").write_text(rotational + "\n")


@pytest.fixture
def env(tmp_path):
    sysfs = tmp_path / "sys"
    _disk(sysfs, "mmcblk0", "mq-deadline kyber [none]")
    _disk(sysfs, "sda", "[mq-deadline] bfq none")  # already right
    _disk(sysfs, "sdb", "mq-deadline [bfq] none", rotational="1")  # hdd: not managed here
    rules = tmp_path / "rules.d"
    states = load_states(
        tmp_path, **{"armnode.sysfs": str(sysfs), "armnode.udev_rules_dir": str(rules)}
    )
    return states, sysfs, rules


def _run(env, test, **kwargs):
    states, _, _ = env
    states.opts["test"] = test
    return states["armnode.io_scheduler"](**kwargs)


WANTED = {"mmc": "mq-deadline", "ssd": "mq-deadline"}


def test_check_apply_reapply_check(env):
    _, sysfs, rules = env
    predicted = _run(env, True, schedulers=WANTED)
    assert predicted["result"] is None
    assert predicted["changes"]["devices"] == {"mmcblk0": {"old": "none", "new": "mq-deadline"}}
    assert not rules.exists()
    applied = _run(env, False, schedulers=WANTED)
    assert applied["result"] is True and applied["changes"] == predicted["changes"]
    text = (rules / io_schedulers.RULE_FILE).read_text()
    assert 'KERNEL=="mmcblk[0-9]*"' in text and 'ATTR{queue/scheduler}="mq-deadline"' in text
    assert 'rotational}=="1"' not in text  # no hdd rule was asked for
    assert (sysfs / "block/mmcblk0/queue/scheduler").read_text().strip() == "mq-deadline"
    assert (sysfs / "block/sdb/queue/scheduler").read_text().strip() == "mq-deadline [bfq] none"
    for test in (False, True):
        again = _run(env, test, schedulers=WANTED)
        assert again["result"] is True and again["changes"] == {}, again


@pytest.mark.parametrize(
    ("schedulers", "message"),
    [
        ({"mmc": "deadline"}, "no longer exists in the kernel; use 'mq-deadline'"),
        ({"mmc": "cfq"}, "use 'bfq'"),
        ({"ssd": "fastest"}, "unknown scheduler 'fastest'"),
        ({"floppy": "none"}, "unknown device class 'floppy'"),
    ],
)
def test_bad_scheduler_changes_nothing(env, schedulers, message):
    _, sysfs, rules = env
    ret = _run(env, False, schedulers=schedulers)
    assert ret["result"] is False and message in ret["comment"] and ret["changes"] == {}
    assert not rules.exists()
    assert (
        sysfs / "block/mmcblk0/queue/scheduler"
    ).read_text().strip() == "mq-deadline kyber [none]"


def test_scheduler_the_device_lacks_is_refused(env):
    ret = _run(env, False, schedulers={"mmc": "bfq"})
    assert ret["result"] is False and "mmcblk0 (mmc) does not offer 'bfq'" in ret["comment"]


def test_legacy_kernel_gets_the_single_queue_names(tmp_path):
    # Hardkernel's 4.14 on the HC1 (the lab's odroid-hc1 sysfs): only noop, deadline, cfq.
    sysfs = tmp_path / "sys"
    _disk(sysfs, "mmcblk0", "noop deadline [cfq]")
    _disk(sysfs, "sda", "noop [deadline] cfq")
    rules = tmp_path / "rules.d"
    states = load_states(
        tmp_path, **{"armnode.sysfs": str(sysfs), "armnode.udev_rules_dir": str(rules)}
    )
    env = (states, sysfs, rules)
    wanted = {"mmc": "mq-deadline", "ssd": "none"}
    predicted = _run(env, True, schedulers=wanted)
    assert predicted["result"] is None
    assert predicted["changes"]["devices"] == {
        "mmcblk0": {"old": "cfq", "new": "deadline"},
        "sda": {"old": "deadline", "new": "noop"},
    }
    applied = _run(env, False, schedulers=wanted)
    assert applied["result"] is True and applied["changes"] == predicted["changes"]
    text = (rules / io_schedulers.RULE_FILE).read_text()
    # The rule speaks the kernel's language too, or udev's write would fail at the next boot.
    assert 'ATTR{queue/scheduler}="deadline"' in text and 'ATTR{queue/scheduler}="noop"' in text
    assert "mq-deadline" not in text
    assert (sysfs / "block/mmcblk0/queue/scheduler").read_text().strip() == "deadline"
    for test in (False, True):
        again = _run(env, test, schedulers=wanted)
        assert again["result"] is True and again["changes"] == {}, again
    # bfq has no single-queue twin: refused, nothing changed.
    ret = _run(env, False, schedulers={"mmc": "bfq"})
    assert ret["result"] is False and "does not offer 'bfq'" in ret["comment"]


def _legacy_env(tmp_path, disks):
    sysfs = tmp_path / "sys"
    for name, line in disks.items():
        _disk(sysfs, name, line)
    rules = tmp_path / "rules.d"
    states = load_states(
        tmp_path, **{"armnode.sysfs": str(sysfs), "armnode.udev_rules_dir": str(rules)}
    )
    return (states, sysfs, rules)


def test_legacy_kernel_with_zram_and_loop_devices(tmp_path):
    # A real 4.14 /sys/block holds more than the disks: a bio-based zram swap (Armbian,
    # DietPi) prints a bare "none" and loop devices, blk-mq since Linux 4.0, offer the mq
    # schedulers (4.14 block/elevator.c elv_iosched_show). Neither says what the MMC and
    # SCSI disks, still single-queue there, accept.
    env = _legacy_env(
        tmp_path,
        {
            "mmcblk0": "noop deadline [cfq]",
            "mmcblk0boot0": "noop deadline [cfq]",  # eMMC boot partition: not a disk we manage
            "sda": "noop [deadline] cfq",
            "zram0": "none",
            "loop0": "[mq-deadline] kyber none",
        },
    )
    wanted = {"mmc": "mq-deadline", "ssd": "none"}
    applied = _run(env, False, schedulers=wanted)
    assert applied["result"] is True, applied
    text = (env[2] / io_schedulers.RULE_FILE).read_text()
    assert 'ATTR{queue/scheduler}="deadline"' in text and 'ATTR{queue/scheduler}="noop"' in text
    assert "mq-deadline" not in text
    assert (env[1] / "block/zram0/queue/scheduler").read_text().strip() == "none"
    assert (env[1] / "block/loop0/queue/scheduler").read_text().strip() == (
        "[mq-deadline] kyber none"
    )


def test_single_queue_mmc_beside_blk_mq_scsi(tmp_path):
    # 4.14 with scsi_mod.use_blk_mq=1 (or CONFIG_SCSI_MQ_DEFAULT): SCSI disks are blk-mq
    # while MMC stays single-queue until 4.16. Each class's rule uses its driver's names.
    env = _legacy_env(
        tmp_path, {"mmcblk0": "noop deadline [cfq]", "sda": "[mq-deadline] kyber none"}
    )
    ret = _run(env, False, schedulers={"mmc": "mq-deadline", "ssd": "mq-deadline"})
    assert ret["result"] is True, ret
    lines = (env[2] / io_schedulers.RULE_FILE).read_text().splitlines()
    mmc = [line for line in lines if "mmcblk" in line]
    ssd = [line for line in lines if 'rotational}=="0"' in line]
    assert mmc and mmc[0].endswith('ATTR{queue/scheduler}="deadline"')
    assert ssd and ssd[0].endswith('ATTR{queue/scheduler}="mq-deadline"')


def test_blk_mq_kernel_with_a_bio_based_device(tmp_path):
    # 6.x: zram still prints a bare "none"; the disks are blk-mq: nothing is legacy.
    sysfs = tmp_path / "sys"
    _disk(sysfs, "mmcblk0", "[mq-deadline] kyber bfq none")
    _disk(sysfs, "zram0", "none")
    assert not io_schedulers.legacy_kernel(str(sysfs))
    rules = io_schedulers.render_rules(
        {"mmc": "mq-deadline"}, io_schedulers.legacy_kernel(str(sysfs))
    )
    assert 'ATTR{queue/scheduler}="mq-deadline"' in rules
