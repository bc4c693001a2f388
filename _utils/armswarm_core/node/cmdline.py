"""Kernel command-line arguments in each board's boot configuration.

One editor per boot flavour (see :func:`armswarm_core.node.boards.boot_flavour`): each finds the
arguments in its file, adds an argument once, removes one, and leaves every other byte of the
file as it was. Pure text in, text out; writing files and running ``mkimage``/``u-boot-update``
is the caller's job.
"""

import re
import struct
import zlib

from armswarm_core import ArmswarmError

# Keys that legitimately appear several times on one command line.
MULTI_KEYS = frozenset({"console"})
_PATTERNS = {
    # u-boot script: every `setenv bootargs "…"` line.
    "boot.txt": re.compile(
        r'^(?P<head>\s*setenv\s+bootargs\s+")(?P<args>[^"]*)(?P<tail>".*)$', re.M
    ),
    # Armbian: only extraargs is ours; boot.cmd builds the rest from the other keys.
    "armbianEnv": re.compile(r"^(?P<head>extraargs=)(?P<args>.*?)(?P<tail>\s*)$", re.M),
    "extlinux": re.compile(r"^(?P<head>\s*append\s+)(?P<args>.*?)(?P<tail>\s*)$", re.M),
    "u-boot-menu": re.compile(r'^(?P<head>U_BOOT_PARAMETERS=")(?P<args>[^"]*)(?P<tail>".*)$', re.M),
    # Raspberry Pi: the whole file is one line.
    "rpi-cmdline": re.compile(r"\A(?P<head>)(?P<args>[^\n]*)(?P<tail>\n?)", re.S),
}


# Flavours whose file may lack the line: it is appended.
_APPEND_LINE = {"armbianEnv": "extraargs={}\n", "u-boot-menu": 'U_BOOT_PARAMETERS="{}"\n'}
FLAVOURS = tuple(_PATTERNS)


def _key(arg: str) -> str:
    return arg.split("=", 1)[0]


def _pattern(flavour: str):
    try:
        return _PATTERNS[flavour]
    except KeyError:
        raise ArmswarmError(
            f"no kernel command line editor for boot flavour {flavour!r} "
            f"(known: {', '.join(FLAVOURS)})"
        ) from None


def read(flavour: str, text: str) -> list[str]:
    """The arguments of the first command line in ``text`` (empty if there is none)."""
    match = _pattern(flavour).search(text)
    return match.group("args").split() if match else []


def edit_args(args: list[str], present=(), absent=()) -> list[str]:
    """``args`` with each ``present`` argument exactly once and no ``absent`` one.

    ``key=value`` replaces a different value of the same key (unless the key may repeat, like
    ``console``); an ``absent`` entry without ``=`` removes the flag and every ``key=…``.
    """
    out = list(args)
    for arg in absent:
        if "=" in arg:
            out = [a for a in out if a != arg]
        else:
            out = [a for a in out if a != arg and _key(a) != arg]
    for arg in present:
        if arg in out:
            # Exactly once: drop duplicates after the first.
            first = out.index(arg)
            out = out[: first + 1] + [a for a in out[first + 1 :] if a != arg]
            continue
        key = _key(arg)
        same_key = [i for i, a in enumerate(out) if "=" in a and _key(a) == key]
        if "=" in arg and same_key and key not in MULTI_KEYS:
            out[same_key[0]] = arg
            out = [a for i, a in enumerate(out) if i not in same_key[1:]]
        else:
            out.append(arg)
    return out


def edit(flavour: str, text: str, present=(), absent=(), path: str = "the boot file") -> str:
    """``text`` with every command line of the file edited; all other bytes unchanged."""
    _validate(present, absent)
    pattern = _pattern(flavour)
    if not pattern.search(text):
        if flavour not in _APPEND_LINE:
            raise ArmswarmError(f"{path}: no kernel command line found for flavour {flavour}")
        args = " ".join(edit_args([], present, absent))
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + _APPEND_LINE[flavour].format(args)

    def replace(match):
        args = edit_args(match.group("args").split(), present, absent)
        return f"{match.group('head')}{' '.join(args)}{match.group('tail')}"

    return pattern.sub(replace, text)


def _validate(present, absent):
    for arg in (*present, *absent):
        if not isinstance(arg, str) or not arg or any(c.isspace() for c in arg) or '"' in arg:
            raise ArmswarmError(
                f"kernel argument {arg!r} is not a single word without quotes or spaces"
            )


# -- u-boot legacy script images (what mkscr/mkimage -T script makes) ---------------------------
_HEADER = struct.Struct(">IIIIIIIBBBB32s")
_MAGIC = 0x27051956


def decode_script_image(data: bytes) -> str:
    """The script inside a ``mkimage -T script`` image, after checking its header and CRCs."""
    if len(data) < _HEADER.size:
        raise ArmswarmError("boot.scr is too short to be a u-boot image")
    fields = _HEADER.unpack(data[: _HEADER.size])
    magic, hcrc, _time, size, _load, _ep, dcrc, _os, _arch, img_type, _comp, _name = fields
    if magic != _MAGIC:
        raise ArmswarmError("boot.scr is not a u-boot legacy image (bad magic)")
    header = bytearray(data[: _HEADER.size])
    header[4:8] = b"\0\0\0\0"
    if zlib.crc32(bytes(header)) != hcrc:
        raise ArmswarmError("boot.scr header checksum mismatch")
    body = data[_HEADER.size : _HEADER.size + size]
    if zlib.crc32(body) != dcrc:
        raise ArmswarmError("boot.scr data checksum mismatch")
    if img_type != 6:  # IH_TYPE_SCRIPT
        raise ArmswarmError(f"boot.scr is an image of type {img_type}, not a script")
    # Script images start with a table of part sizes ended by 0; the script is the first part.
    (first_len,) = struct.unpack(">I", body[:4])
    offset = 4
    while struct.unpack(">I", body[offset : offset + 4])[0] != 0:
        offset += 4
    offset += 4
    return body[offset : offset + first_len].decode()
