"""Kernel attribute files (sysfs, /proc/irq): read one, decide a change among the values the kernel
offers, write one. These files are written in place: the kernel does not let them be replaced
by a rename, so :mod:`armswarm_core.common.files` does not apply."""

from armswarm_core import ArmswarmError


def read(path) -> str | None:
    """The file's text, or None when the kernel has no such file (or refuses to read it)."""
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except OSError:
        return None


def choice(subject: str, current, wanted: str, available, what: str) -> dict | None:
    """``{"old", "new"}`` when ``current`` is not ``wanted``; None when it is. A value the
    kernel does not offer is an ArmswarmError naming ``subject`` and what it does offer."""
    if current == wanted:
        return None
    if wanted not in available:
        raise ArmswarmError(
            f"{subject} does not offer {what} (available: {', '.join(available) or 'none'})"
        )
    return {"old": current, "new": wanted}


def write(path, value: str, what: str):
    """Write ``value``; an ArmswarmError saying ``cannot set <what>`` when the kernel refuses."""
    try:
        with open(path, "w", encoding="ascii") as fh:
            fh.write(value)
    except OSError as exc:
        raise ArmswarmError(f"cannot set {what}: {exc}") from exc
