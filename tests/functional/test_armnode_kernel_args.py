"""armnode.kernel_args through Salt's real state loader, on copies of the boards' boot files:
check → apply → re-apply → check, boot.scr from a real mkimage, u-boot-menu through the real
u-boot-update (in a private mount namespace, see bin/u-boot-update), originals kept once, and
failures (bad input, a failing mkimage or u-boot-update) leave every file as it was."""

import os
import shutil
from pathlib import Path

import pytest
from armswarm_core.node import boot_files, cmdline
from loaders import load_states

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]
BOARDS = REPO / "armswarm" / "lab" / "fixtures" / "boards"
WRAPPERS = Path(__file__).resolve().parent / "bin"
ARGS = ["fsck.mode=force", "cgroup_enable=memory"]

REAL_U_BOOT_UPDATE = (
    os.geteuid() == 0 and shutil.which("unshare") and os.path.exists("/usr/sbin/u-boot-update")
)
needs_u_boot_update = pytest.mark.skipif(
    not REAL_U_BOOT_UPDATE, reason="needs root, unshare and u-boot-menu (scripts/setup.sh)"
)
needs_mkimage = pytest.mark.skipif(not shutil.which("mkimage"), reason="needs u-boot-tools")


@pytest.fixture
def states(tmp_path, request, monkeypatch):
    board = request.param
    root = tmp_path / "root"
    shutil.copytree(BOARDS / board / "rootfs", root)
    # The real u-boot-update, pointed at this tree instead of the machine's.
    monkeypatch.setenv("ARMSWARM_TEST_ROOT", str(root))
    monkeypatch.setenv("PATH", f"{WRAPPERS}{os.pathsep}{os.environ['PATH']}")
    loaded = load_states(tmp_path, **{"armnode.boot_root": str(root)})
    return loaded, root


def _run(states, test, **kwargs):
    loaded, _ = states
    # The loader keeps its own copy of opts: that is what the state reads as __opts__.
    loaded.opts["test"] = test
    return loaded["armnode.kernel_args"](name="kernel-args", **kwargs)


def _snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "var" not in p.parts}


def _effective(root: Path) -> list:
    return boot_files.current(str(root))["args"]


LAB_BOARDS = [
    pytest.param("odroid-hc1", marks=needs_mkimage),
    "rockpro64",
    pytest.param("rockpro64-extlinux", marks=needs_u_boot_update),
    pytest.param("sopine", marks=needs_mkimage),
    "rpi4",
]


@pytest.mark.parametrize("states", LAB_BOARDS, indirect=True)
def test_check_apply_reapply_check_then_remove_restores(states):
    _, root = states
    before = _snapshot(root)
    old_args = _effective(root)
    predicted = _run(states, True, present=ARGS)
    assert predicted["result"] is None and predicted["changes"]["reboot_required"] is True
    assert _snapshot(root) == before
    applied = _run(states, False, present=ARGS)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"] == predicted["changes"]
    for test in (False, True):
        again = _run(states, test, present=ARGS)
        assert again["result"] is True and again["changes"] == {}, again
    # What the board will boot with: the old arguments, then each new one once.
    assert _effective(root) == old_args + ARGS
    assert (root / boot_files.MARKER).is_file()
    changed = Path(applied["changes"]["file"])
    if changed.name == "boot.txt":
        scr = changed.parent / "boot.scr"
        assert cmdline.decode_script_image(scr.read_bytes()) == changed.read_text()
    if changed.name == "u-boot":
        # u-boot-update wrote the new line into the default label (and the rescue one).
        conf = (root / boot_files.EXTLINUX).read_text()
        assert f"append {' '.join(old_args + ARGS)}\n" in conf
        assert f"append {' '.join(old_args + ARGS)} single\n" in conf
    # Each file armswarm wrote has its original kept beside it, byte for byte.
    for path in applied["changes"]["files"]:
        assert Path(path + boot_files.ORIGINAL_SUFFIX).read_bytes() == before[Path(path)]
    # Removing the arguments again restores every boot file exactly.
    removed = _run(states, False, absent=ARGS)
    assert removed["result"] is True and removed["changes"]["new"] == " ".join(old_args)
    after = {p: b for p, b in _snapshot(root).items() if not p.name.endswith("-orig")}
    for path, data in before.items():
        if path.name in {"boot.scr", "extlinux.conf"}:
            continue  # regenerated (mkimage stamps the time)
        assert after[path] == data, path
    assert set(after) - set(before) <= {changed.parent / "boot.scr"}


@pytest.mark.parametrize("states", [pytest.param("sopine", marks=needs_mkimage)], indirect=True)
def test_originals_are_kept_once(states):
    _, root = states
    boot_txt = root / "boot/boot.txt"
    first = boot_txt.read_bytes()
    assert _run(states, False, present=["quiet"])["result"] is True
    assert _run(states, False, present=["fsck.mode=force"])["result"] is True
    assert (root / "boot/boot.txt.armswarm-orig").read_bytes() == first


@pytest.mark.parametrize("states", [pytest.param("sopine", marks=needs_mkimage)], indirect=True)
def test_failing_mkimage_changes_nothing_and_stays_pending(states, tmp_path, monkeypatch):
    _, root = states
    (root / "boot/boot.scr").write_bytes(b"the old image")
    before = _snapshot(root)
    broken = tmp_path / "broken-bin"
    broken.mkdir()
    (broken / "mkimage").write_text("#!/bin/sh\necho 'mkimage: disk full' >&2\nexit 1\n")
    (broken / "mkimage").chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}{os.pathsep}{os.environ['PATH']}")
    ret = _run(states, False, present=ARGS)
    assert ret["result"] is False and "disk full" in ret["comment"] and ret["changes"] == {}
    after = _snapshot(root)
    # boot.txt and boot.scr as they were; at most the untouched originals were kept.
    assert {p: b for p, b in after.items() if not p.name.endswith("-orig")} == before
    assert not [p for p in (root / "boot").iterdir() if p.name.startswith(".")]
    assert not (root / boot_files.MARKER).exists()
    monkeypatch.undo()
    monkeypatch.setenv("PATH", os.environ["PATH"])
    pending = _run(states, True, present=ARGS)
    assert pending["result"] is None and pending["changes"]["new"].endswith(" ".join(ARGS))


@pytest.mark.parametrize("states", [pytest.param("odroid-hc1", marks=needs_mkimage)], indirect=True)
def test_stale_boot_scr_is_regenerated(states):
    _, root = states
    # Someone edited boot.txt and forgot ./mkscr: the board would still boot the old script.
    assert _run(states, False, present=["quiet"])["result"] is True
    boot_txt = root / "boot/boot.txt"
    boot_txt.write_text(boot_txt.read_text().replace(" quiet", " quiet loglevel=4"))
    ret = _run(states, False, present=["quiet"])
    assert ret["result"] is True and ret["changes"]["regenerate"] == (
        "boot.scr does not match boot.txt"
    )
    assert cmdline.decode_script_image((root / "boot/boot.scr").read_bytes()) == (
        boot_txt.read_text()
    )


@pytest.mark.parametrize(
    "states", [pytest.param("rockpro64-extlinux", marks=needs_u_boot_update)], indirect=True
)
def test_u_boot_menu_stock_defaults_keep_what_was_in_effect(states):
    _, root = states
    # Without /etc/kernel/cmdline the parameters are u-boot-menu's built-in "ro quiet".
    (root / "etc/kernel/cmdline").unlink()
    (root / "etc/fstab").write_text("UUID=2b8e61d0 / ext4 defaults,noatime 0 1\n")
    stock = (root / "etc/default/u-boot").read_text()
    ret = _run(states, False, present=["console=ttyS2,1500000n8"])
    assert ret["result"] is True, ret["comment"]
    conf = (root / boot_files.EXTLINUX).read_text()
    assert "append root=UUID=2b8e61d0 ro quiet console=ttyS2,1500000n8\n" in conf
    ret = _run(states, False, absent=["console=ttyS2,1500000n8"])
    assert ret["result"] is True, ret["comment"]
    # No U_BOOT_PARAMETERS="ro quiet" left behind.
    assert (root / "etc/default/u-boot").read_text() == stock
    assert "append root=UUID=2b8e61d0 ro quiet\n" in (root / boot_files.EXTLINUX).read_text()


@pytest.mark.parametrize(
    "states", [pytest.param("rockpro64-extlinux", marks=needs_u_boot_update)], indirect=True
)
def test_u_boot_menu_fragment_in_etc_wins(states):
    _, root = states
    # Parameters set: u-boot-update takes root= from /etc/fstab, no longer the cmdline.
    (root / "etc/fstab").write_text("UUID=2b8e61d0 / ext4 defaults,noatime 0 1\n")
    fragment = root / "etc/u-boot-menu/conf.d/rockpro64.conf"
    fragment.parent.mkdir(parents=True)
    fragment.write_text('U_BOOT_PARAMETERS="rw rootwait console=ttyS2,1500000n8 quiet"\n')
    ret = _run(states, False, present=["fsck.mode=force"])
    assert ret["result"] is True, ret["comment"]
    assert fragment.read_text() == (
        'U_BOOT_PARAMETERS="rw rootwait console=ttyS2,1500000n8 quiet fsck.mode=force"\n'
    )
    conf = (root / boot_files.EXTLINUX).read_text()
    assert (
        "append root=UUID=2b8e61d0 rw rootwait console=ttyS2,1500000n8 quiet fsck.mode=force\n"
        in conf
    )
    # The rescue entry drops quiet, as u-boot-update does.
    assert "console=ttyS2,1500000n8 fsck.mode=force single\n" in conf


@pytest.mark.parametrize(
    "states", [pytest.param("rockpro64-extlinux", marks=needs_u_boot_update)], indirect=True
)
def test_u_boot_update_that_does_not_apply_puts_everything_back(states, tmp_path, monkeypatch):
    _, root = states
    before = _snapshot(root)
    # A u-boot-update that "succeeds" without writing anything (U_BOOT_UPDATE off elsewhere,
    # a wrong root): the state must not report success.
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "u-boot-update").write_text("#!/bin/sh\nexit 0\n")
    (fake / "u-boot-update").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    ret = _run(states, False, present=ARGS)
    assert ret["result"] is False and "all files put back" in ret["comment"]
    after = {p: b for p, b in _snapshot(root).items() if not p.name.endswith("-orig")}
    assert after == before
    assert _run(states, True, present=ARGS)["result"] is None  # still pending


@pytest.mark.parametrize("states", ["rpi4"], indirect=True)
def test_bad_argument_changes_nothing(states):
    _, root = states
    before = _snapshot(root)
    for kwargs, message in (
        ({"present": ["fsck.mode=force", "two words"]}, "not a single word"),
        ({"present": "quiet"}, "must be a list"),
        ({"absent": ["root"]}, "would not boot"),
    ):
        ret = _run(states, False, **kwargs)
        assert ret["result"] is False and message in ret["comment"], ret
    assert _snapshot(root) == before


@pytest.mark.parametrize("states", ["rockpro64"], indirect=True)
def test_missing_boot_file_is_named(states):
    _, root = states
    shutil.rmtree(root / "boot")
    ret = _run(states, False, present=ARGS)
    assert ret["result"] is False and "no boot configuration found under" in ret["comment"]


@pytest.mark.parametrize("states", [pytest.param("sopine", marks=needs_mkimage)], indirect=True)
def test_boot_files_linked_into_another_partition_are_edited_there(states):
    _, root = states
    # /boot/boot.txt and boot.scr as links into the boot partition (what U-Boot reads)
    part = root / "bootpart"
    part.mkdir()
    for name in ("boot.txt", "boot.scr"):
        link = root / "boot" / name
        if link.exists():
            shutil.move(link, part / name)
        else:
            (part / name).write_bytes(b"")
        link.symlink_to(part / name)
    assert _run(states, False, present=ARGS)["result"] is True
    for name in ("boot.txt", "boot.scr"):
        assert (root / "boot" / name).is_symlink(), name
    text = (part / "boot.txt").read_text()
    assert " ".join(ARGS) in text
    assert cmdline.decode_script_image((part / "boot.scr").read_bytes()) == text
    assert _run(states, True, present=ARGS)["changes"] == {}
