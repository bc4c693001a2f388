"""armnode.kernel_args through Salt's real state loader, on copies of the boards' boot files:
check → apply → re-apply → check, boot.scr from a real mkimage, bad input changes nothing."""

import shutil
from pathlib import Path

import pytest
from armswarm_core.node import boot_files, cmdline
from loaders import load_states

REPO = Path(__file__).resolve().parents[2]
BOARDS = REPO / "armswarm" / "lab" / "fixtures" / "boards"
ARGS = ["fsck.mode=force", "fsck.repair=yes"]


@pytest.fixture
def states(tmp_path, request):
    board = request.param
    root = tmp_path / "root"
    shutil.copytree(BOARDS / board / "rootfs", root)
    loaded = load_states(tmp_path, **{"armnode.boot_root": str(root)})
    opts = loaded.opts
    return loaded, opts, root


def _run(states, test, **kwargs):
    loaded, _, _ = states
    # The loader keeps its own copy of opts: that is what the state reads as __opts__.
    loaded.opts["test"] = test
    return loaded["armnode.kernel_args"](name="fsck-at-boot", **kwargs)


@pytest.mark.parametrize(
    "states", ["odroid-hc1", "rockpro64", "rockpro64-extlinux", "rpi4"], indirect=True
)
def test_check_apply_reapply_check(states):
    _, _, root = states
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    predicted = _run(states, True, present=ARGS)
    assert predicted["result"] is None and predicted["changes"]["reboot_required"] is True
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    applied = _run(states, False, present=ARGS)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"] == predicted["changes"]
    for test in (False, True):
        again = _run(states, test, present=ARGS)
        assert again["result"] is True and again["changes"] == {}, again
    changed = Path(applied["changes"]["file"])
    assert applied["changes"]["new"].split().count("fsck.mode=force") == 1
    assert (root / boot_files.MARKER).is_file()
    if changed.name == "boot.txt":
        scr = changed.parent / "boot.scr"
        assert cmdline.decode_script_image(scr.read_bytes()) == changed.read_text()


@pytest.mark.parametrize("states", ["rpi4"], indirect=True)
def test_bad_argument_changes_nothing(states):
    _, _, root = states
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    ret = _run(states, False, present=["fsck.mode=force", "two words"])
    assert ret["result"] is False and "not a single word" in ret["comment"]
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("states", ["rockpro64"], indirect=True)
def test_missing_boot_file_is_named(states):
    _, _, root = states
    shutil.rmtree(root / "boot")
    ret = _run(states, False, present=ARGS)
    assert ret["result"] is False and "no boot configuration found under" in ret["comment"]
