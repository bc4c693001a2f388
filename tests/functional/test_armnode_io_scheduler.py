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
