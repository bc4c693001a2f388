"""Apply kernel command-line changes to a board's boot configuration on disk.

Finds the file(s) of the detected boot flavour under ``boot_root``, edits them with
:mod:`armswarm_core.node.cmdline`, regenerates what the flavour needs (``boot.scr`` with ``mkimage``
like ``mkscr`` does; ``u-boot-update`` for u-boot-menu) and records that a reboot is required.

Nothing here may leave a board unbootable: every file is written to a temporary file beside it
and renamed into place; a new ``boot.scr`` is made from the new ``boot.txt`` before either is
renamed (``boot.scr`` first, so a crash in between still shows the change as pending); a failing
``u-boot-update``, or one whose ``extlinux.conf`` does not carry the planned command line, puts
every file back. The first time armswarm edits a boot file it keeps the original beside it as
``<file>.armswarm-orig`` (never overwritten afterwards).
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from struct import error as struct_error

from armswarm_core import ArmswarmError
from armswarm_core.common import files
from armswarm_core.node import boards, cmdline

MARKER = "var/lib/armswarm/reboot-required"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
ORIGINAL_SUFFIX = ".armswarm-orig"
EXTLINUX = "boot/extlinux/extlinux.conf"

# What each flavour runs after its file changed: checked before anything is written.
TOOLS = {"boot.txt": "mkimage", "u-boot-menu": "u-boot-update"}
_PACKAGES = {"mkimage": "u-boot-tools", "u-boot-update": "u-boot-menu"}


def locate(boot_root: str = "/") -> tuple[str, Path]:
    """``(flavour, file)`` of the kernel command line, or ArmswarmError naming what is missing."""
    flavour, cmdline_file = boards.boot_flavour(boot_root)
    if flavour == "unknown" or not cmdline_file:
        raise ArmswarmError(
            f"no boot configuration found under {boot_root} (looked for /boot/armbianEnv.txt, "
            "/boot/dietpiEnv.txt, /boot/boot.txt, /boot/boot.ini, /media/boot/boot.ini, "
            "/etc/default/u-boot, /boot/extlinux/extlinux.conf, /boot/firmware/cmdline.txt, "
            "/boot/cmdline.txt)"
        )
    if flavour not in cmdline.FLAVOURS:
        raise ArmswarmError(f"boot flavour {flavour} has no editor")
    path = Path(cmdline_file)
    # u-boot-update runs on its defaults without /etc/default/u-boot.
    if not path.is_file() and flavour != "u-boot-menu":
        raise ArmswarmError(f"{path}: the {flavour} boot file is missing")
    return flavour, path


def _read(path: Path):
    """``path``'s text exactly as on disk: no newline translation (a CRLF boot.ini stays CRLF
    when written back) and bytes that are not UTF-8 (a Latin-1 comment) kept as they are."""
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None


def _encode(text):
    """What :func:`_read` decoded, as the same bytes again."""
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text


def _check_env_is_read(flavour: str, path: Path):
    """An ``*Env.txt``'s ``extraargs`` only matters when the boot script puts it on the command
    line: Armbian's boot-mt7623.cmd and boot-macchiatobin-doubleshot.cmd import armbianEnv.txt
    but build bootargs without ``${extraargs}``; an edit there would change nothing."""
    if flavour not in ("armbianEnv", "dietpiEnv"):
        return
    scripts = {}
    scr = path.with_name("boot.scr")
    try:
        scripts[scr] = cmdline.decode_script_image(scr.read_bytes())
    except (OSError, ArmswarmError, UnicodeDecodeError, struct_error):
        pass
    for name in ("boot.ini", "boot.cmd"):
        text = _read(path.with_name(name))
        if text is not None:
            scripts[path.with_name(name)] = text
    if scripts and not any("extraargs" in text for text in scripts.values()):
        raise ArmswarmError(
            f"{path}: the boot script ({', '.join(str(p) for p in scripts)}) does not put "
            "extraargs on the kernel command line; refusing to edit it"
        )


def _original(path: Path):
    return _read(path.with_name(path.name + ORIGINAL_SUFFIX))


def _u_boot_menu_files(boot_root: str) -> dict:
    root = Path(boot_root)
    rels = [cmdline.U_BOOT_DEFAULT, cmdline.KERNEL_CMDLINE, "etc/fstab"]
    if Path(boot_root).resolve() == Path("/"):
        rels.append("proc/cmdline")
    for directory in cmdline.U_BOOT_FRAGMENT_DIRS:
        if (root / directory).is_dir():
            # sh's * skips dot files; pathlib's does not.
            rels += [
                f"{directory}/{p.name}"
                for p in (root / directory).glob("*.conf")
                if not p.name.startswith(".")
            ]
    texts = {rel: _read(root / rel) for rel in rels}
    return {rel: text for rel, text in texts.items() if text is not None}


def _extlinux_args(boot_root: str):
    """``(label, arguments)`` of the label U-Boot boots in the generated extlinux.conf (None:
    no such label with one append line)."""
    path = Path(boot_root) / EXTLINUX
    text = _read(path)
    if text is None:
        return None
    labels, default = cmdline.extlinux_labels(text, str(path))  # ArmswarmError: unreadable
    if default is None or len(labels[default]) != 1:
        return None
    start, end = labels[default][0]
    return default, text[start:end].split()


def _generated_matches(generated, eff) -> bool:
    """Whether ``generated`` (:func:`_extlinux_args`) is what u-boot-update makes of ``eff``
    (the label U_BOOT_DEFAULT names, or the first when it names none, may be a rescue entry)."""
    return generated is not None and generated[1] == eff.label_args(generated[0])


def _extlinux_due(boot_root: str, eff) -> bool:
    """Whether u-boot-update would change extlinux.conf: it says other arguments, or it is no
    file u-boot-update wrote (an include, a label twice). No label at all (no kernel installed
    yet): nothing to do."""
    try:
        generated = _extlinux_args(boot_root)
    except ArmswarmError:
        return True
    return generated is not None and not _generated_matches(generated, eff)


def current(boot_root: str = "/") -> dict:
    flavour, path = locate(boot_root)
    if flavour == "u-boot-menu":
        args = cmdline.u_boot_menu_effective(_u_boot_menu_files(boot_root)).args
    else:
        args = cmdline.read(flavour, _read(path), str(path))
    return {"flavour": flavour, "file": str(path), "args": args}


def plan(boot_root: str, present=(), absent=()) -> dict:
    """``{}`` when converged, else ``{"file", "flavour", "old", "new", "writes",
    "regenerate", "missing_tool"}``; ``writes`` maps paths to new texts (None: delete)."""
    present, absent = list(present), list(absent)
    cmdline.validate(present, absent)
    flavour, path = locate(boot_root)
    if flavour == "u-boot-menu":
        menu_files = _u_boot_menu_files(boot_root)
        root = Path(boot_root)
        originals = {
            rel: _original(root / rel)
            for rel in menu_files
            if (root / (rel + ORIGINAL_SUFFIX)).exists()
        }
        change = cmdline.u_boot_menu(menu_files, present, absent, originals)
        writes = {str(root / rel): text for rel, text in change["files"].items()}
        old, new = change["old"], change["new"]
        # extlinux.conf not (yet) generated from what is configured: u-boot-update is due.
        # (No label at all: no kernel installed yet, nothing u-boot-update would change.)
        stale = _extlinux_due(boot_root, cmdline.u_boot_menu_effective(menu_files))
        reason = "extlinux.conf is out of date" if stale and not writes else ""
    else:
        _check_env_is_read(flavour, path)
        text = _read(path)
        new_text = cmdline.edit(
            flavour, text, present, absent, path=str(path), original=_original(path)
        )
        writes = {str(path): new_text} if new_text != text else {}
        old = cmdline.read(flavour, text, str(path))
        new = cmdline.read(flavour, new_text, str(path)) if writes else old
        stale, reason = False, ""
        if flavour == "boot.txt" and not writes:
            stale = _script_stale(path)
            reason = "boot.scr does not match boot.txt" if stale else ""
    if not writes and not stale:
        return {}
    tool = TOOLS.get(flavour)
    return {
        "file": str(path),
        "flavour": flavour,
        "old": old,
        "new": new,
        "writes": writes,
        "regenerate": bool(tool),
        "reason": reason,
        # What the flavour runs afterwards, when it is not installed (yet): apply refuses then,
        # a prediction notes it (the same state run may install it first).
        "missing_tool": tool if tool and not shutil.which(tool) else None,
    }


def _script_stale(path: Path) -> bool:
    scr = path.with_name("boot.scr")
    try:
        return cmdline.decode_script_image(scr.read_bytes()) != _read(path)
    except (OSError, ArmswarmError, UnicodeDecodeError):
        return False  # no boot.scr, or not one armswarm can read: nothing to say


def _temp_beside(path: Path, data: bytes, mode=None) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _write_atomic(path: Path, text):
    """``path`` holds ``text`` (bytes or str; None removes it), or is unchanged."""
    if text is None:
        path.unlink(missing_ok=True)
        files.fsync_dir(path.parent)
        return
    # A new boot file is world-readable like the ones the OS images ship.
    files.write(path, text, None if path.exists() else 0o644)


def keep_original(path: Path):
    """Copy ``path`` to ``<path>.armswarm-orig`` unless an original is kept already."""
    kept = path.with_name(path.name + ORIGINAL_SUFFIX)
    if path.is_file() and not kept.exists():
        _write_atomic(kept, path.read_bytes())
        shutil.copystat(path, kept)


def _run(argv, cwd=None):
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=120
        )
    except FileNotFoundError as exc:
        raise ArmswarmError(f"{argv[0]} is not installed") from exc
    if proc.returncode != 0:
        raise ArmswarmError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")


def _mkimage(source: Path, target: Path, cwd: Path):
    # What Arch Linux ARM's /boot/mkscr does.
    _run(
        [
            "mkimage",
            "-A",
            "arm",
            "-O",
            "linux",
            "-T",
            "script",
            "-C",
            "none",
            "-n",
            "U-Boot boot script",
            "-d",
            str(source),
            str(target),
        ],
        cwd=cwd,
    )


def regenerate(flavour: str, path: Path):
    """What the flavour needs after its file changed (in place; see :func:`apply`)."""
    if flavour == "boot.txt":
        _script_swap(path, _read(path))
    elif flavour == "u-boot-menu":
        _run(["u-boot-update"])


def _script_swap(path: Path, text: str):
    """``boot.txt`` = ``text`` and ``boot.scr`` made from it, or both as they were."""
    # A link (into the boot partition) is followed: its target is what U-Boot reads.
    scr = Path(os.path.realpath(path.with_name("boot.scr")))
    path = Path(os.path.realpath(path))
    txt_tmp = _temp_beside(path, _encode(text), path.stat().st_mode & 0o7777)
    fd, scr_tmp = tempfile.mkstemp(dir=scr.parent, prefix=".boot.scr.")
    os.close(fd)
    try:
        _mkimage(Path(txt_tmp), Path(scr_tmp), path.parent)
        if cmdline.decode_script_image(Path(scr_tmp).read_bytes()) != text:
            raise ArmswarmError(f"{scr}: mkimage made an image that does not hold boot.txt")
        with open(scr_tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if scr.exists():
            os.chmod(scr_tmp, scr.stat().st_mode & 0o7777)
        else:
            os.chmod(scr_tmp, 0o644)
        # boot.scr first: if we stop in between, boot.txt still differs and a re-run redoes it.
        os.replace(scr_tmp, scr)
        os.replace(txt_tmp, path)
        for directory in {scr.parent, path.parent}:
            files.fsync_dir(directory)
    finally:
        Path(txt_tmp).unlink(missing_ok=True)
        Path(scr_tmp).unlink(missing_ok=True)


def apply(boot_root: str, change: dict):
    path = Path(change["file"])
    flavour = change["flavour"]
    tool = TOOLS.get(flavour)
    if tool and not shutil.which(tool):
        raise ArmswarmError(
            f"{path}: changing a {flavour} command line needs {tool}, which is not "
            f"installed ({_PACKAGES[tool]} package)"
        )
    writes = {Path(p): text for p, text in change["writes"].items()}
    if flavour == "boot.txt":
        keep_original(path)
        keep_original(path.with_name("boot.scr"))
        _script_swap(path, writes.get(path, _read(path)))
    elif flavour == "u-boot-menu":
        _apply_u_boot_menu(boot_root, writes, change["new"])
    else:
        for target, text in writes.items():
            keep_original(target)
            _write_atomic(target, _encode(text))
    mark_reboot_required(boot_root, f"kernel command line changed in {path}")


def _apply_u_boot_menu(boot_root: str, writes: dict, expected: list):
    extlinux = Path(boot_root) / EXTLINUX
    before = {p: (p.read_bytes() if p.exists() else None) for p in [*writes, extlinux]}
    for target in [*writes, extlinux]:
        keep_original(target)
    try:
        for target, text in writes.items():
            _write_atomic(target, _encode(text))
        _run(["u-boot-update"])
        eff = cmdline.u_boot_menu_effective(_u_boot_menu_files(boot_root))
        generated = _extlinux_args(boot_root)
        if eff.args != expected or not _generated_matches(generated, eff):
            said = (
                f"label {generated[0]!r} says {' '.join(generated[1])!r}"
                if generated
                else "no label with one append line is booted"
            )
            want = eff.label_args(generated[0]) if generated else None
            raise ArmswarmError(
                f"{extlinux}: after u-boot-update {said}, not "
                f"{' '.join(want or expected)!r}; all files put back"
            )
    except BaseException:
        for target, data in before.items():
            _write_atomic(target, data)
        raise


def _boot_id() -> str:
    try:
        return Path(BOOT_ID).read_text().strip()
    except OSError:
        return ""


def mark_reboot_required(boot_root: str, reason: str):
    """A marker valid for this boot only: after a reboot it no longer counts."""
    marker = Path(boot_root) / MARKER
    lines = marker.read_text().splitlines() if marker.exists() else []
    if not lines or lines[0] != _boot_id():
        lines = [_boot_id()]
    if reason not in lines[1:]:
        lines.append(reason)
    files.write(marker, "\n".join(lines) + "\n")


def reboot_required(boot_root: str = "/") -> list[str]:
    """Why a reboot is required (empty when it is not)."""
    marker = Path(boot_root) / MARKER
    try:
        lines = marker.read_text().splitlines()
    except OSError:
        return []
    if not lines or lines[0] != _boot_id():
        return []
    return lines[1:]
