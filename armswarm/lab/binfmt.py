"""The kernel's binfmt_misc handlers for ARM binaries, so the lab's x86 nodes run ARM code.

Debian's qemu-user-static ships the handler lines in ``/usr/lib/binfmt.d/qemu-*.conf`` (the
format ``/proc/sys/fs/binfmt_misc/register`` reads). The lab registers them itself (no
binfmt-support, no systemd-binfmt on this machine) with the ``F`` (fix-binary) flag: the kernel
opens the interpreter at registration, so it also runs inside containers whose root filesystem
has no qemu.

binfmt_misc is global to the kernel, so several labs share it: each lab records in its state
directory which handlers it registered and which it uses; ``release`` removes only the handlers
this lab registered, and hands them to another lab that still uses them instead of removing
them under it. A handler registered by anyone else is never touched.
"""

import json
import os
import subprocess
from pathlib import Path

BINFMT_DIR = Path(os.environ.get("ARMSWARM_LAB_BINFMT_DIR", "/proc/sys/fs/binfmt_misc"))
CONF_DIR = Path(os.environ.get("ARMSWARM_LAB_BINFMT_CONF", "/usr/lib/binfmt.d"))
# The handlers the lab needs: 32-bit ARM (armv7l, the HC1) and aarch64 (RockPro64, SOPINE, Pi 4).
HANDLERS = ("qemu-arm", "qemu-aarch64")
STATE_FILE = "binfmt.json"


class BinfmtError(RuntimeError):
    pass


def handler_line(name: str, conf_dir: Path = CONF_DIR) -> str:
    """The register line for ``name`` from qemu-user-static, with the ``F`` flag set."""
    conf = conf_dir / f"{name}.conf"
    try:
        line = next(
            ln for ln in conf.read_text().splitlines() if ln.strip() and not ln.startswith("#")
        )
    except (OSError, StopIteration):
        raise BinfmtError(
            f"{conf} is missing: install qemu-user-static (scripts/setup.sh does)"
        ) from None
    # :name:type:offset:magic:mask:interpreter:flags
    fields = line.strip().split(":")
    if len(fields) != 8 or fields[1] != name:
        raise BinfmtError(f"{conf}: not a binfmt_misc line for {name}: {line!r}")
    interpreter = Path(fields[6])
    if not interpreter.exists():
        raise BinfmtError(f"{conf}: interpreter {interpreter} does not exist")
    if "F" not in fields[7]:
        fields[7] += "F"
    return ":".join(fields)


def ensure_mounted(binfmt_dir: Path = BINFMT_DIR) -> bool:
    """Mount binfmt_misc when it is not; True when this call mounted it."""
    if (binfmt_dir / "register").exists():
        return False
    proc = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not (binfmt_dir / "register").exists():
        raise BinfmtError(f"cannot mount binfmt_misc at {binfmt_dir}: {proc.stderr.strip()}")
    return True


def read(name: str, binfmt_dir: Path = BINFMT_DIR) -> dict | None:
    """What the kernel says of handler ``name`` (None: not registered)."""
    try:
        text = (binfmt_dir / name).read_text()
    except OSError:
        return None
    info = {"enabled": False, "interpreter": None, "flags": ""}
    for line in text.splitlines():
        if line in ("enabled", "disabled"):
            info["enabled"] = line == "enabled"
        elif line.startswith("interpreter "):
            info["interpreter"] = line.split(" ", 1)[1]
        elif line.startswith("flags: "):
            info["flags"] = line.split(" ", 1)[1]
        elif line.startswith("flags:"):
            info["flags"] = ""
    return info


def _state(state_dir: Path) -> dict:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {"registered": [], "uses": []}


def _save(state_dir: Path, state: dict):
    path = state_dir / STATE_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(state, sort_keys=True))
    partial.rename(path)


def ensure(state_dir: Path, binfmt_dir: Path = BINFMT_DIR, conf_dir: Path = CONF_DIR, log=print):
    """Register the handlers that are missing and record which this lab registered."""
    lines = {name: handler_line(name, conf_dir) for name in HANDLERS}  # all checked first
    ensure_mounted(binfmt_dir)
    state = _state(state_dir)
    for name, line in lines.items():
        current = read(name, binfmt_dir)
        if current is None:
            try:
                (binfmt_dir / "register").write_text(line)
            except OSError as exc:
                raise BinfmtError(f"cannot register binfmt handler {name}: {exc}") from exc
            state["registered"] = sorted({*state["registered"], name})
            log(f"binfmt handler {name} registered ({line.rsplit(':', 1)[1]})")
        elif not current["enabled"] or "F" not in current["flags"]:
            # Someone else's handler: not ours to change, but nodes may not run ARM code.
            log(
                f"binfmt handler {name} was registered by someone else "
                f"({'enabled' if current['enabled'] else 'disabled'}, flags "
                f"{current['flags'] or 'none'}): ARM containers need it enabled with flag F"
            )
        state["uses"] = sorted({*state["uses"], name})
    _save(state_dir, state)
    return state


def release(state_dir: Path, other_states=(), binfmt_dir: Path = BINFMT_DIR, log=print):
    """Unregister the handlers this lab registered, unless another lab (``other_states``:
    their state directories) uses them: then they become that lab's to remove."""
    state = _state(state_dir)
    for name in state["registered"]:
        heir = next((d for d in other_states if name in _state(d)["uses"]), None)
        if heir is not None:
            theirs = _state(heir)
            theirs["registered"] = sorted({*theirs["registered"], name})
            _save(heir, theirs)
            log(f"binfmt handler {name} kept: lab state {heir} uses it")
            continue
        if read(name, binfmt_dir) is not None:
            try:
                (binfmt_dir / name).write_text("-1")
            except OSError as exc:
                raise BinfmtError(f"cannot unregister binfmt handler {name}: {exc}") from exc
            log(f"binfmt handler {name} unregistered")
    (state_dir / STATE_FILE).unlink(missing_ok=True)


def status(state_dir: Path, binfmt_dir: Path = BINFMT_DIR) -> dict:
    """``{handler: {"enabled", "flags", "interpreter", "ours"} or None}``."""
    state = _state(state_dir)
    out = {}
    for name in HANDLERS:
        info = read(name, binfmt_dir)
        out[name] = info and {**info, "ours": name in state["registered"]}
    return out
