"""common.sysfs on real files in a tmp tree."""

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.common import sysfs


def test_read_absent_and_present(tmp_path):
    assert sysfs.read(tmp_path / "nope") is None
    (tmp_path / "scheduler").write_text("noop deadline [cfq]\n")
    assert sysfs.read(tmp_path / "scheduler") == "noop deadline [cfq]\n"


def test_choice_changes_only_what_differs_and_refuses_what_is_not_offered():
    assert sysfs.choice("cpu0", "ondemand", "ondemand", ["ondemand"], "x") is None
    assert sysfs.choice("cpu0", "ondemand", "performance", ["ondemand", "performance"], "x") == {
        "old": "ondemand",
        "new": "performance",
    }
    with pytest.raises(
        ArmswarmError, match=r"sda \(hdd\) does not offer 'bfq' \(available: none\)"
    ):
        sysfs.choice("sda (hdd)", None, "bfq", [], "'bfq'")


def test_write_in_place_keeps_the_inode_and_names_what_failed(tmp_path):
    path = tmp_path / "scaling_governor"
    path.write_text("ondemand\n")
    inode = path.stat().st_ino
    sysfs.write(path, "performance", "the governor of cpu0")
    assert path.read_text() == "performance" and path.stat().st_ino == inode
    with pytest.raises(ArmswarmError, match="cannot set the governor of cpu9"):
        sysfs.write(
            tmp_path / "missing" / "scaling_governor", "performance", "the governor of cpu9"
        )
