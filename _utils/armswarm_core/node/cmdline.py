"""Kernel command-line arguments in each board's boot configuration.

One editor per boot flavour (see :func:`armswarm_core.node.boards.boot_flavour`). Each finds the
one place that sets the kernel's arguments, adds and removes words there, and leaves every
other byte of the file as it was: an argument is appended after the last one with one space,
and removing it again takes that space with it, so adding then removing gives the file back.
When the place is ambiguous (several lines set ``bootargs``, a conditional setter, an
``include``) the editor refuses rather than guess. Pure text in, text out; writing files and
running ``mkimage``/``u-boot-update`` is :mod:`armswarm_core.node.boot_files`' job.

Semantics, the same for every flavour:

* ``present``: each argument exactly once (an exact duplicate is dropped); an argument whose
  key is already there with another value is added beside it, never substituted (keys repeat:
  ``cgroup_enable=cpuset cgroup_enable=memory``, several ``console=``).
* ``absent``: ``key=value`` removes exactly that argument, a bare ``key`` removes the flag and
  every ``key=…`` except the ones ``present`` lists. To change a value: absent ``key``,
  present ``key=new``.
* A ``root=`` or ``rootwait`` in effect never disappears, and nothing is removed that the file
  only gets from elsewhere (a u-boot variable, package defaults): that is an error.
"""

import re
import struct
import zlib
from dataclasses import dataclass, field

from armswarm_core import ArmswarmError

FLAVOURS = (
    "armbianEnv",
    "dietpiEnv",
    "boot.txt",
    "boot.ini",
    "extlinux",
    "u-boot-menu",
    "rpi-cmdline",
)
# Characters an argument may not contain: whitespace and what u-boot's hush or sh would
# interpret (quotes, expansions, separators, comments, escapes).
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f\"'`$;#\\]")
# Arguments whose loss makes a board unbootable (slow media need rootwait).
_KEEP = ("root", "rootwait")


def _key(arg: str) -> str:
    return arg.split("=", 1)[0]


def validate(present, absent):
    """Every argument is one word a boot script cannot misread; none is both wanted and not."""
    for label, args in (("present", present), ("absent", absent)):
        if isinstance(args, str) or not isinstance(args, list | tuple):
            raise ArmswarmError(f"kernel arguments {label} must be a list, not {args!r}")
        for arg in args:
            if not isinstance(arg, str) or not arg or _UNSAFE.search(arg):
                raise ArmswarmError(
                    f"kernel argument {arg!r} is not a single word without quotes, spaces "
                    "or any of $ ; # \\ `"
                )
    both = sorted(set(present) & set(absent))
    if both:
        raise ArmswarmError(f"kernel arguments both present and absent: {', '.join(both)}")


def _matches(arg: str, spec: str) -> bool:
    return arg == spec if "=" in spec else (arg == spec or _key(arg) == spec)


@dataclass
class Site:
    """Where a flavour's arguments live in a text.

    ``tokens`` are the editable arguments as absolute ``(start, end)`` spans; ``fixed`` maps
    arguments in effect that this text cannot change to where they come from; ``insert`` is
    where a new argument goes (after the last token); ``create`` is the line to append when
    the text has no such place yet (``{}`` gets the arguments).
    """

    tokens: list = field(default_factory=list)
    insert: int = 0
    fixed: dict = field(default_factory=dict)
    create: str | None = None
    # Arguments only added sometimes (``setenv bootargs "${bootargs} …"`` under an ``if``):
    # removing them is beyond this editor.
    maybe: dict = field(default_factory=dict)
    # The arguments the tokens stand for, when that is not their text (quotes removed).
    words: list | None = None

    def args(self, text: str) -> list[str]:
        return self.words if self.words is not None else [text[s:e] for s, e in self.tokens]


def _words(text: str, start: int, end: int) -> list:
    """Absolute spans of the blank-separated words in ``text[start:end]``."""
    return [(start + m.start(), start + m.end()) for m in re.finditer(r"\S+", text[start:end])]


def _lines(text: str):
    """``(start, end)`` of each line, end before its newline."""
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        yield pos, pos + len(body)
        pos += len(line)


# -- flavours -----------------------------------------------------------------------------------
def _rpi_site(text: str, path: str) -> Site:
    # The firmware reads the first line only.
    end = text.find("\n")
    end = len(text) if end < 0 else end
    tokens = _words(text, 0, end)
    if not tokens:
        raise ArmswarmError(f"{path}: the kernel command line is empty; refusing to write one")
    return Site(tokens=tokens, insert=tokens[-1][1])


def _env_site(text: str, path: str, flavour: str) -> Site:
    """Armbian/DietPi ``*Env.txt`` (u-boot ``env import -t``): only ``extraargs`` is ours.

    The boot script that imports it (Armbian's boot.cmd/boot.ini, DietPi's boot.cmd) sets
    ``root=${rootdev} rootwait`` itself: those are in effect, but not in ``extraargs``."""
    found, fixed, rootdev = [], {}, None
    for start, end in _lines(text):
        line = text[start:end]
        if line.startswith("extraargs="):
            found.append((start + len("extraargs="), end))
        elif line.startswith("rootdev="):
            rootdev = line[len("rootdev=") :].strip()  # env import: the last one counts
        elif flavour == "dietpiEnv" and line.startswith("consoleargs="):
            for arg in line[len("consoleargs=") :].split():
                fixed[arg] = f"{path}: consoleargs="
    script = f"the boot script that imports {path}"
    fixed[f"root={rootdev}" if rootdev else "root=${rootdev}"] = f"{path}: rootdev= ({script})"
    fixed["rootwait"] = script
    if len(found) > 1:
        raise ArmswarmError(f"{path}: several extraargs= lines; refusing to guess which counts")
    if not found:
        return Site(fixed=fixed, create="extraargs={}\n", insert=len(text))
    start, end = found[0]
    tokens = _words(text, start, end)
    return Site(tokens=tokens, insert=tokens[-1][1] if tokens else start, fixed=fixed)


# u-boot hush: a command is the words up to `;`, a comment (# at a word start) or the line end.
_OPENERS = {"if": 1, "for": 1, "while": 1, "until": 1, "fi": -1, "done": -1}
_PREFIXES = ("then", "else", "do", "elif", "if", "while", "until", "&&", "||", "!")
_VAR = re.compile(r"\$\{?(\w+)\}?")


def _hush_commands(text: str, path: str):
    """Yield ``(line_no, words, spans, cmd_end, chained)`` per command; quotes group words.

    A command ends at ``;``, an unquoted ``&&`` or ``||`` word, a comment or the line end;
    ``chained`` says it follows ``&&``/``||`` (it only runs depending on the one before)."""
    for line_no, (start, end) in enumerate(_lines(text), 1):
        words, spans, quote, word, wstart, quoted = [], [], None, None, None, False
        cmd_end, chained = end, False
        for i in range(start, end + 1):
            c = text[i] if i < end else "\n"
            if quote and c != "\n":
                if c == quote:
                    quote = None
                else:
                    word += c
                continue
            if c in "\"'":
                quote, quoted = c, True
                if word is None:
                    word, wstart = "", i
                continue
            if c in " \t;\n" or (c == "#" and word is None):
                if word is not None:
                    if word in ("&&", "||") and not quoted:
                        yield line_no, words, spans, wstart, chained
                        words, spans, chained = [], [], True
                    else:
                        words.append(word)
                        spans.append((wstart, i))
                    word, quoted = None, False
                if c == ";":
                    yield line_no, words, spans, i, chained
                    words, spans, chained = [], [], False
                elif c == "#":
                    cmd_end = i
                    break
                continue
            if c == "\\" and i == end - 1:
                raise ArmswarmError(f"{path}:{line_no}: a continued line; refusing to edit")
            if word is None:
                word, wstart = "", i
            word += c
        if quote:
            raise ArmswarmError(f"{path}:{line_no}: unterminated quote")
        yield line_no, words, spans, cmd_end, chained


def _script_site(text: str, path: str) -> Site:
    """u-boot script (Arch ``boot.txt``, Hardkernel/Armbian/DietPi ``boot.ini``)."""
    depth, setters, defs, maybe = 0, [], {}, {}
    for line_no, words, spans, cmd_end, chained in _hush_commands(text, path):
        lead = 0
        conditional = depth > 0 or chained
        while lead < len(words) and words[lead] in _PREFIXES:
            conditional = True
            # ``if``/``while``/``until`` open a block (``fi``/``done`` close it) even as the
            # condition's prefix: what follows up to the closing word runs only sometimes.
            depth += _OPENERS.get(words[lead], 0)
            lead += 1
        if lead < len(words):
            depth = max(0, depth + _OPENERS.get(words[lead], 0))
        cmd, cspans = words[lead:], spans[lead:]
        if cmd[:2] == ["env", "set"]:
            cmd, cspans = cmd[1:], cspans[1:]
        if len(cmd) < 2 or cmd[0] != "setenv":
            if any("bootargs" in w and "setenv" in w for w in cmd):
                raise ArmswarmError(
                    f"{path}:{line_no}: bootargs is set inside another command; refusing "
                    "to guess which line counts"
                )
            continue
        name, value = cmd[1], " ".join(cmd[2:])
        if name != "bootargs":
            if "setenv bootargs" in value:
                raise ArmswarmError(
                    f"{path}:{line_no}: {name} sets bootargs when it runs; refusing to guess"
                )
            defs.setdefault(name, []).append((line_no, value, conditional))
            continue
        if re.search(r"\$\{?bootargs\b", value):
            # Extends bootargs (often conditionally): not the line that sets them.
            for word in value.split():
                if not _VAR.fullmatch(word):
                    maybe.setdefault(word, f"{path}:{line_no}")
            continue
        setters.append((line_no, cspans[2:] if len(cspans) > 2 else [], cmd_end, conditional))
    if not setters:
        raise ArmswarmError(f"{path}: no kernel command line found (no line sets bootargs)")
    if len(setters) > 1:
        raise ArmswarmError(
            f"{path}: several lines set bootargs ({', '.join(str(s[0]) for s in setters)}); "
            "refusing to guess which one counts"
        )
    line_no, vspans, cmd_end, conditional = setters[0]
    if conditional:
        raise ArmswarmError(f"{path}:{line_no}: bootargs is only set conditionally; refusing")
    if not vspans:
        raise ArmswarmError(f"{path}:{line_no}: bootargs is set empty; refusing to edit it")
    tokens, values = [], []
    for start, end in vspans:
        for span, value in _hush_word_args(text, start, end, f"{path}:{line_no}"):
            tokens.append(span)
            values.append(value)
    if not tokens:
        raise ArmswarmError(f"{path}:{line_no}: bootargs is set empty; refusing to edit it")
    fixed = {}
    for value in values:
        whole = _VAR.fullmatch(value)
        if whole:
            _expand(whole.group(1), defs, fixed, path, seen=set())
    return Site(tokens=tokens, insert=tokens[-1][1], fixed=fixed, maybe=maybe, words=values)


def _hush_word_args(text: str, start: int, end: int, where: str):
    """The kernel arguments one hush word ``text[start:end]`` gives, as ``(span, value)``.

    ``"a b c"`` gives three arguments, each spanning its own text inside the quotes. A word
    that quotes part of one argument (Arch Linux ARM's Raspberry Pi boot.txt:
    ``smsc95xx.macaddr="${usbethaddr}"``) is one argument spanning the whole word, its value
    without the quotes. Quotes inside a word that splits into several arguments
    (``"root=/a x"y``) are beyond this editor."""
    chars, quote = [], None
    for i in range(start, end):
        c = text[i]
        if quote:
            if c == quote:
                quote = None
            else:
                chars.append((c, i))
        elif c in "\"'":
            quote = c
        else:
            chars.append((c, i))
    args, current = [], []
    for c, i in [*chars, (" ", end)]:
        if c.isspace():
            if current:
                args.append(current)
            current = []
        else:
            current.append((c, i))
    spans = [(arg[0][1], arg[-1][1] + 1) for arg in args]
    values = ["".join(c for c, _ in arg) for arg in args]
    quoted_inside = [
        n for n, (s, e) in enumerate(spans) if any(text[p] in "\"'" for p in range(s, e))
    ]
    if quoted_inside and len(args) == 1:
        return [((start, end), values[0])]
    if quoted_inside:
        raise ArmswarmError(f"{where}: quotes inside an argument; refusing")
    return list(zip(spans, values, strict=True))


def _expand(name, defs, fixed, path, seen):
    """Arguments a ``${name}`` in bootargs stands for, when the file defines it once and
    unconditionally (anything else is unknown, and left alone)."""
    if name in seen or len(defs.get(name, ())) != 1:
        return
    seen.add(name)
    line_no, value, conditional = defs[name][0]
    if conditional:
        return
    for word in value.split():
        whole = _VAR.fullmatch(word)
        if whole:
            _expand(whole.group(1), defs, fixed, path, seen)
        else:
            fixed.setdefault(word, f"{path}:{line_no} (${{{name}}})")


# U-Boot's pxe parser (boot/pxe_utils.c: parse_label): the keywords a label goes on with.
_LABEL_KEYWORDS = {
    "menu",
    "kernel",
    "linux",
    "append",
    "initrd",
    "fdt",
    "devicetree",
    "fdtdir",
    "devicetreedir",
    "fdtoverlays",
    "devicetree-overlay",
    "localboot",
    "ipappend",
    "kaslrseed",
}
# Read once per label: a second one's value is not consumed, so it is read as an (unknown)
# keyword, which ends the label. An APPEND's initrd= sets the initrd too.
_ONCE = {
    "initrd": "initrd",
    "fdt": "fdt",
    "devicetree": "fdt",
    "fdtdir": "fdtdir",
    "devicetreedir": "fdtdir",
    "fdtoverlays": "fdtoverlays",
    "devicetree-overlay": "fdtoverlays",
}
_KEYWORDS = _LABEL_KEYWORDS | {"label", "default", "ontimeout", "timeout", "prompt", "include"}
_KEYWORDS |= {"title", "background", "fallback"}
# U-Boot's isspace() ends a keyword; only isblank() (space, tab) is skipped before a token.
_C_SPACE = " \t\n\v\f\r"


def _conf_lines(text: str):
    """``(start, end)`` of each line as U-Boot splits them: at ``\n`` only, end before it."""
    pos = 0
    while pos < len(text):
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl
        yield pos, end
        pos = end + 1


@dataclass
class _Label:
    appends: list = field(default_factory=list)  # (start, end, line_no) of each APPEND value
    initrd_before: bool = False  # an initrd was set before the last APPEND line


def _extlinux_parse(text: str, path: str):
    """``(labels, default)``: :class:`_Label` by name, and the label U-Boot boots."""
    labels, order, default, current, seen = {}, [], None, None, set()
    for line_no, (start, end) in enumerate(_conf_lines(text), 1):
        line = text[start:end]
        i = len(line) - len(line.lstrip(" \t"))
        if i == len(line) or line[i] == "#":
            continue  # an empty token or a comment: the label goes on
        k = i
        while k < len(line) and line[k] not in _C_SPACE:
            k += 1
        keyword = line[i:k].lower()
        v = k + len(line[k:]) - len(line[k:].lstrip(" \t"))
        # A literal runs to the newline: trailing blanks and a CR are part of a name.
        rest = line[v:]
        where = f"{path}:{line_no}"
        if keyword == "include" or (keyword == "menu" and rest.lower().startswith("include")):
            raise ArmswarmError(f"{where}: includes another file; refusing to edit")
        if current is not None and keyword in _LABEL_KEYWORDS:
            once = _ONCE.get(keyword)
            after = rest.lstrip(" \t\r")
            if (once in seen or keyword == "kaslrseed") and after and after[0] != "#":
                # Not consumed: the value is read as the next keyword, which ends the label.
                if after.split()[0].lower() in _KEYWORDS:
                    raise ArmswarmError(
                        f"{where}: U-Boot would read {after.split()[0]!r} here as a keyword; "
                        "refusing to guess"
                    )
                current = None
                continue
            if once:
                seen.add(once)
            if keyword == "append":
                value_end = end - 1 if line.endswith("\r") and end - 1 >= start + v else end
                labels[current].appends.append((start + v, value_end, line_no))
                labels[current].initrd_before = "initrd" in seen
                if "initrd=" in rest:
                    seen.add("initrd")
            elif keyword == "menu" and rest.lower().split()[:1] == ["default"]:
                default = default or current
            continue
        current = None
        if keyword == "label":
            current = rest
            if current in labels:
                raise ArmswarmError(f"{where}: label {current!r} appears twice; refusing")
            labels[current] = _Label()
            order.append(current)
            seen = set()
        elif keyword in ("default", "ontimeout"):
            default = rest
    if not order:
        return labels, None
    return labels, default if default in labels else order[0]


def extlinux_labels(text: str, path: str = "extlinux.conf"):
    """``(labels, default)`` the way U-Boot's pxe parser (boot/pxe_utils.c) reads them:
    keywords in any case, ``default``/``ontimeout`` (last wins) or a label's ``menu default``
    (first wins); lines split at ``\n`` only, a name is the rest of its line (a CR included); a
    label ends at the first line that is no label keyword, at a CR-only line, and at a second
    initrd/fdt/fdtdir/fdtoverlays (not read: its value reads as a keyword). ``labels`` maps
    each name to the ``(start, end)`` value spans of its ``append`` lines (a final CR outside);
    ``default`` is the label U-Boot boots: the named one if it exists, else the first."""
    labels, default = _extlinux_parse(text, path)
    return {name: [(s, e) for s, e, _ in lab.appends] for name, lab in labels.items()}, default


def _extlinux_site(text: str, path: str) -> Site:
    labels, default = _extlinux_parse(text, path)
    if default is None:
        raise ArmswarmError(f"{path}: no label, so no kernel command line found")
    appends = labels[default].appends
    if len(appends) != 1:
        lines = ", ".join(str(n) for *_, n in appends)
        raise ArmswarmError(
            f"{path}: the default label {default!r} has {len(appends)} APPEND lines"
            f"{f' (lines {lines}; U-Boot uses the last)' if appends else ''}; refusing to guess"
        )
    start, end, _ = appends[0]
    tokens = _words(text, start, end)
    if not tokens:
        raise ArmswarmError(f"{path}: the default label {default!r} has an empty APPEND line")
    return Site(tokens=tokens, insert=tokens[-1][1])


def _initrd_unbounded(label: _Label, value: str) -> bool:
    # parse_label: an APPEND's initrd= is read up to strchr(' '); without a space after it the
    # length is garbage. Only when no initrd was set before that APPEND line.
    pos = value.find("initrd=")
    return not label.initrd_before and pos >= 0 and " " not in value[pos + 7 :]


def _extlinux_check(old: str, new: str, path: str):
    """Refuse an edit that leaves an APPEND line U-Boot cannot parse or misreads."""
    labels, default = _extlinux_parse(new, path)
    old_labels, old_default = _extlinux_parse(old, path)
    label = labels.get(default)
    if default != old_default or label is None or len(label.appends) != 1:
        raise ArmswarmError(f"{path}: the edit would change which label boots; refusing")
    start, _, line_no = label.appends[0]
    nl = new.find("\n", start)
    value = new[start : len(new) if nl < 0 else nl]
    where = f"{path}:{line_no}"
    if not value.strip(" \t\r"):
        raise ArmswarmError(
            f"{where}: the edit would leave label {default!r} an empty APPEND line, which "
            "U-Boot cannot parse (it would boot no label of the file); refusing"
        )
    if value.startswith("#"):
        raise ArmswarmError(
            f"{where}: the edit would make label {default!r}'s APPEND value begin with '#', "
            "a comment to U-Boot, which then cannot parse the file; refusing"
        )
    o_start, _, _ = old_labels[old_default].appends[0]
    o_nl = old.find("\n", o_start)
    old_value = old[o_start : len(old) if o_nl < 0 else o_nl]
    if _initrd_unbounded(label, value) and not _initrd_unbounded(
        old_labels[old_default], old_value
    ):
        raise ArmswarmError(
            f"{where}: the edit would leave initrd= the last word of label {default!r}'s "
            "APPEND line; U-Boot reads its file name up to the next space; refusing"
        )


def site(flavour: str, text: str, path: str = "the boot file") -> Site:
    if flavour == "rpi-cmdline":
        return _rpi_site(text, path)
    if flavour in ("armbianEnv", "dietpiEnv"):
        return _env_site(text, path, flavour)
    if flavour in ("boot.txt", "boot.ini"):
        return _script_site(text, path)
    if flavour == "extlinux":
        return _extlinux_site(text, path)
    if flavour == "u-boot-menu":
        raise ArmswarmError("u-boot-menu spans several files: use cmdline.u_boot_menu")
    raise ArmswarmError(
        f"no kernel command line editor for boot flavour {flavour!r} (known: {', '.join(FLAVOURS)})"
    )


def read(flavour: str, text: str, path: str = "the boot file") -> list[str]:
    """The arguments written in ``text`` (``${var}`` words as they are)."""
    return site(flavour, text, path).args(text)


# -- editing ------------------------------------------------------------------------------------
def plan_tokens(words, fixed, present=(), absent=(), where="the boot file", maybe=None):
    """``(drop, add)``: indexes of ``words`` to remove, arguments to append."""
    drop = set()
    for spec in absent:
        sometimes = [arg for arg in maybe or {} if _matches(arg, spec)]
        if sometimes:
            raise ArmswarmError(
                f"{where}: cannot remove {sometimes[0]}: {maybe[sometimes[0]]} adds it to "
                "bootargs, and armswarm does not edit that line"
            )
        for i, word in enumerate(words):
            if _matches(word, spec) and word not in present:
                drop.add(i)
        hidden = [arg for arg in fixed if _matches(arg, spec) and arg not in present]
        if hidden:
            raise ArmswarmError(
                f"{where}: cannot remove {hidden[0]}: it comes from {fixed[hidden[0]]}, which "
                "armswarm does not edit"
            )
    add = []
    for arg in present:
        hits = [i for i, word in enumerate(words) if word == arg and i not in drop]
        drop.update(hits[1:])
        if not hits and arg not in fixed and arg not in add:
            add.append(arg)
    kept = [w for i, w in enumerate(words) if i not in drop] + add + list(fixed)
    for key in _KEEP:
        had = any(_key(w) == key for w in [*words, *fixed])
        if had and not any(_key(w) == key for w in kept):
            raise ArmswarmError(
                f"{where}: refusing to remove every {key}= (the board would not boot)"
            )
    return drop, add


def apply_tokens(text: str, tokens, drop, add, insert=None, sep=None) -> str:
    """``text`` with the dropped token spans cut and ``add`` inserted.

    A dropped token takes the blanks before it (or, when no kept token precedes it, the
    blanks after it), so appending then removing an argument gives the text back. New
    arguments go after the last kept token unless ``insert``/``sep`` say where.
    """
    tokens = sorted(tokens)
    kept = [t for i, t in enumerate(tokens) if i not in drop]
    edits = []
    if kept:
        for i, span in enumerate(tokens):
            if i not in drop:
                continue
            start, end = span
            if any(t[1] <= start for t in kept):
                while start > 0 and text[start - 1] in " \t":
                    start -= 1
            else:
                while end < len(text) and text[end] in " \t":
                    end += 1
            edits.append((start, end, ""))
    elif drop:
        # Everything goes: from the first argument to the last, blanks around them stay.
        edits.append((tokens[0][0], tokens[-1][1], ""))
    if add:
        if insert is None:
            if kept:
                insert, sep = kept[-1][1], " "
            else:
                insert, sep = (tokens[0][0] if tokens else len(text)), ""
        for start, end, _ in edits:
            if start < insert <= end:
                # Inside a cut that took the blanks before a word: go where the cut starts.
                insert, sep = start, " " if text[start : start + 1] in (" ", "\t") else sep
        edits.append((insert, insert, sep + " ".join(add)))
    # Right to left; at one offset the cut goes before the insertion.
    for s, e, new in sorted(edits, key=lambda x: (x[0], x[1] > x[0]), reverse=True):
        text = text[:s] + new + text[e:]
    return text


def edit(
    flavour: str,
    text: str,
    present=(),
    absent=(),
    path: str = "the boot file",
    original: str | None = None,
) -> str:
    """``text`` with the one command line of the file edited; all other bytes unchanged.

    ``original`` is the file as it was before armswarm first edited it: a line armswarm added
    (``extraargs=``) goes away again when its last argument does.
    """
    validate(present, absent)
    present, absent = list(present), list(absent)
    if flavour in ("armbianEnv", "dietpiEnv") and any(_key(a) == "root" for a in present):
        raise ArmswarmError(
            f"{path}: the boot script takes root= from rootdev=, not from extraargs: set "
            "rootdev= (armswarm's root move does)"
        )
    found = site(flavour, text, path)
    words = found.args(text)
    drop, add = plan_tokens(words, found.fixed, present, absent, path, found.maybe)
    if not drop and not add:
        return text
    if found.create is not None:
        if not add:
            return text
        # A file saved with CRLF (a FAT boot partition edited elsewhere) stays CRLF.
        eol = "\r\n" if "\r\n" in text else "\n"
        sep = "" if not text or text.endswith("\n") else eol
        return text + sep + found.create.format(" ".join(add)).replace("\n", eol)
    if not found.tokens:
        new = apply_tokens(text, [], set(), add, insert=found.insert, sep="")
    else:
        new = apply_tokens(text, found.tokens, drop, add)
    if (
        flavour in ("armbianEnv", "dietpiEnv")
        and original is not None
        and not re.search(r"^extraargs=", original, re.M)
        and re.search(r"^extraargs=[ \t]*\r?$", new, re.M)
    ):
        new = re.sub(r"^extraargs=[ \t]*(\r?\n|\Z)", "", new, count=1, flags=re.M)
        # The line ending put before the line, when the file had no final one, goes too.
        if new in (original + "\n", original + "\r\n") and not original.endswith("\n"):
            new = original
    if flavour == "extlinux":
        _extlinux_check(text, new, path)
    return new


# -- u-boot-menu --------------------------------------------------------------------------------
U_BOOT_DEFAULT = "etc/default/u-boot"
U_BOOT_FRAGMENT_DIRS = ("usr/share/u-boot-menu/conf.d", "etc/u-boot-menu/conf.d")
KERNEL_CMDLINE = "etc/kernel/cmdline"
# Written only when the parameters come from a package's fragment (editing it would be undone
# by the next upgrade); /etc fragments are read after /usr/share ones.
OWN_FRAGMENT = "etc/u-boot-menu/conf.d/armswarm.conf"
OWN_FRAGMENT_HEAD = "# Managed by armswarm (armnode.kernel_args): kernel parameters.\n"
_EDITABLE = (U_BOOT_DEFAULT, "etc/u-boot-menu/conf.d/", KERNEL_CMDLINE)
_ASSIGN = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_]\w*)=")


def _editable(rel: str) -> bool:
    return rel in (U_BOOT_DEFAULT, KERNEL_CMDLINE) or rel.startswith(_EDITABLE[1])


def _sh_value(text, pos, end, env, where, rel):
    """A shell assignment's value at ``text[pos:end]``: list of ``(char, origin)``, where
    origin is the absolute offset of a literal char or None; and where the value ends."""
    out, quote, i = [], None, pos
    while i < end:
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                out.append((c, (rel, i)))
        elif c in "\\`" or text.startswith("$(", i):
            raise ArmswarmError(f"{where}: escapes or command substitution; cannot evaluate it")
        elif c == "$":
            m = re.match(r"\$(?:\{(\w+)\}|(\w+))", text[i:end])
            if not m:
                raise ArmswarmError(f"{where}: an expansion armswarm cannot evaluate")
            out.extend(env.get(m.group(1) or m.group(2), []))
            i += m.end()
            continue
        elif quote == '"':
            if c == '"':
                quote = None
            else:
                out.append((c, (rel, i)))
        elif c in "\"'":
            quote = c
        elif c in " \t;":
            # A blank or ";" ends the assignment ("VAR=x;" sets x).
            break
        elif c in "&|<>()":
            raise ArmswarmError(f"{where}: a shell operator ({c}); cannot evaluate it")
        else:
            out.append((c, (rel, i)))
        i += 1
    if quote:
        raise ArmswarmError(f"{where}: unterminated quote")
    rest = text[i:end].strip()
    rest = rest[1:].strip() if rest.startswith(";") else rest
    if rest and not rest.startswith("#"):
        raise ArmswarmError(f"{where}: more than one assignment on a line; cannot evaluate it")
    return out, i


@dataclass
class UBootMenu:
    """The effective default-label command line of u-boot-menu and where each word is from."""

    root: str  # U_BOOT_ROOT as u-boot-update resolves it
    params: list  # [(word, rel_path or None, start, end)]
    source: str  # "assignment", "kernel-cmdline" or "default"
    winner: tuple | None  # (rel, value_start, value_end, quoted_end) of the last assignment
    update_disabled: bool = False
    value: str = "ro quiet"  # U_BOOT_PARAMETERS as u-boot-update ends up with it
    alternatives: str = "default recovery"  # U_BOOT_ALTERNATIVES

    @property
    def args(self) -> list[str]:
        return [*self.root.split(), *(w for w, *_ in self.params)]

    def label_args(self, name: str):
        """What u-boot-update writes on the ``append`` line of its label ``name`` (``l<n>``
        for a kernel, ``l<n>r`` its rescue entry: `` quiet`` cut once, ``single`` added);
        None when it writes no such label."""
        m = re.fullmatch(r"l[0-9]+(r?)", name)
        if not m:
            return None
        if m.group(1):
            if "recovery" not in self.alternatives:
                return None
            return [*self.root.split(), *self.value.replace(" quiet", "", 1).split(), "single"]
        return self.args if "default" in self.alternatives else None


def _tokens_with_origin(chars):
    """Split ``[(char, (rel, offset) or None)]`` on blanks into ``(word, rel, start, end)``; a
    word is editable (has a file) when its chars are one literal run of one file."""
    words, cur = [], []
    for c, origin in [*chars, (" ", None)]:
        if not c.isspace():
            cur.append((c, origin))
            continue
        if cur:
            text = "".join(ch for ch, _ in cur)
            origins = [o for _, o in cur]
            rel = origins[0][0] if origins[0] else None
            first = origins[0][1] if origins[0] else 0
            if rel and origins == [(rel, first + n) for n in range(len(origins))]:
                words.append((text, rel, first, first + len(origins)))
            else:
                words.append((text, None, 0, 0))
            cur = []
    return words


def u_boot_menu_effective(files: dict) -> UBootMenu:
    """What u-boot-update (u-boot-menu 4.x) puts on the default label's ``append`` line.

    ``files`` maps root-relative paths to texts (missing files absent): ``etc/default/u-boot``,
    the ``conf.d`` fragments, ``etc/kernel/cmdline``, ``etc/fstab``, ``proc/cmdline``. Like
    u-boot-update: /etc/default/u-boot, then /usr/share/u-boot-menu/conf.d/*.conf, then
    /etc/u-boot-menu/conf.d/*.conf are sourced (later wins); empty U_BOOT_PARAMETERS falls back
    to /etc/kernel/cmdline without its first ``root=…``, then to ``ro quiet``; U_BOOT_ROOT
    falls back to the cmdline's ``root=``, then the fstab entry of ``/``, then /proc/cmdline.
    """
    order = [U_BOOT_DEFAULT]
    for directory in U_BOOT_FRAGMENT_DIRS:
        order += sorted(p for p in files if p.startswith(directory + "/") and p.endswith(".conf"))
    env, winner = {}, None
    for rel in order:
        text = files.get(rel)
        if text is None:
            continue
        for line_no, (start, end) in enumerate(_lines(text), 1):
            stripped = text[start:end].strip()
            if not stripped or stripped.startswith("#"):
                continue
            m = _ASSIGN.match(text, start, end)
            if not m:
                raise ArmswarmError(
                    f"/{rel}:{line_no}: not a plain assignment; armswarm cannot evaluate what "
                    "u-boot-update would make of it"
                )
            name = m.group(1)
            value, vend = _sh_value(text, m.end(), end, env, f"/{rel}:{line_no}", rel)
            env[name] = value
            if name == "U_BOOT_PARAMETERS":
                winner = (rel, m.end(), vend)
    disabled = "".join(c for c, _ in env.get("U_BOOT_UPDATE", [])) not in ("", "true")

    def value(name):
        return "".join(c for c, _ in env.get(name, []))

    params = _tokens_with_origin(env.get("U_BOOT_PARAMETERS", []))
    root = value("U_BOOT_ROOT")
    source = "assignment"
    cmdline_text = files.get(KERNEL_CMDLINE)
    params_value = value("U_BOOT_PARAMETERS")
    if not params_value and cmdline_text is not None:
        source = "kernel-cmdline"
        body = cmdline_text.rstrip("\n")
        if "\n" in body:
            # $(cat | sed) keeps the inner newline: a line of its own in extlinux.conf.
            raise ArmswarmError(
                f"/{KERNEL_CMDLINE}:2: more than one line; u-boot-update would break the "
                "append line in two; refusing"
            )
        # sed -e 's/root=[^[:space:]]*//' (first match, anywhere) -e 's/^[[:space:]]*//'
        m = re.search(r"root=\S*", body)
        chars = [(c, (KERNEL_CMDLINE, i)) for i, c in enumerate(body)]
        if m:
            chars = chars[: m.start()] + chars[m.end() :]
        params = _tokens_with_origin(chars)
        params_value = "".join(c for c, _ in chars).lstrip()
        if m and m.start() > 0 and not body[m.start() - 1].isspace():
            # root= cut out of a longer word (nfsroot=…): what is left is not ours to edit.
            params = [(w, None, 0, 0) if e == m.start() else (w, r, s, e) for w, r, s, e in params]
        if not root:
            # sed -re 's/.*(root=[^[:space:]]*).*/\1/': the last root=, else the whole line.
            found = re.findall(r"root=\S*", body)
            root = found[-1] if found else body
    if not params_value:
        # ${U_BOOT_PARAMETERS:-ro quiet}: only an empty value (blanks are kept).
        source, params_value = "default", "ro quiet"
        params = [("ro", None, 0, 0), ("quiet", None, 0, 0)]
    if not root:
        root = _fstab_root(files.get("etc/fstab") or "") or _proc_root(files.get("proc/cmdline"))
    return UBootMenu(
        root=root,
        params=params,
        source=source,
        winner=winner if source == "assignment" else None,
        update_disabled=disabled,
        value=params_value,
        alternatives=value("U_BOOT_ALTERNATIVES") or "default recovery",
    )


def _fstab_root(text: str) -> str:
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "/":
            return "" if fields[0].startswith("#") else f"root={fields[0]}"
    return ""


def _proc_root(text) -> str:
    return next((w for w in (text or "").split() if w.startswith("root=")), "")


def u_boot_menu(files: dict, present=(), absent=(), originals=None) -> dict:
    """Plan a u-boot-menu change: ``{"old", "new", "files": {rel: new text or None}}``.

    Words are removed where they are written (/etc/default/u-boot, an /etc fragment or
    /etc/kernel/cmdline); new words go to the end of whatever sets the parameters in effect.
    When that is u-boot-menu's built-in ``ro quiet`` a ``U_BOOT_PARAMETERS`` line is appended to
    /etc/default/u-boot; when it is a package's fragment, armswarm writes its own /etc fragment.
    Either goes away again once it holds nothing but what would be in effect without it.
    ``originals`` maps paths to the files as they were before armswarm's first edit.
    """
    validate(present, absent)
    present, absent = list(present), list(absent)
    for arg in (*present, *absent):
        if _key(arg) == "root":
            raise ArmswarmError(
                "u-boot-menu takes root= from U_BOOT_ROOT (or /etc/fstab), not from the "
                "parameters: set it there"
            )
    originals = originals or {}
    eff = u_boot_menu_effective(files)
    if eff.update_disabled:
        raise ArmswarmError("U_BOOT_UPDATE is not true: u-boot-update would not apply a change")
    if not any(kind in eff.alternatives for kind in ("default", "recovery")):
        raise ArmswarmError(
            f"U_BOOT_ALTERNATIVES={eff.alternatives!r} names neither default nor recovery: "
            "u-boot-update would write no label"
        )
    editable = [i for i, (_, rel, *_) in enumerate(eff.params) if rel and _editable(rel)]
    fixed = {eff.root: "U_BOOT_ROOT"} if eff.root else {}
    for i, (word, rel, *_) in enumerate(eff.params):
        if i not in editable:
            fixed.setdefault(word, f"/{rel}" if rel else "u-boot-menu's defaults")
    ed_words = [eff.params[i][0] for i in editable]
    drop_local, add = plan_tokens(ed_words, fixed, present, absent, "u-boot-menu")
    drop = {editable[i] for i in drop_local}
    new_words = [w for i, (w, *_) in enumerate(eff.params) if i not in drop] + add
    old_args, new_args = eff.args, [*eff.root.split(), *new_words]
    if not drop and not add:
        return {"old": old_args, "new": new_args, "files": {}}
    out = dict(files)
    target = insert = sep = None
    if add and eff.source == "kernel-cmdline":
        target = KERNEL_CMDLINE
    elif add and eff.source == "assignment" and _editable(eff.winner[0]):
        target, vstart, vend = eff.winner
        text = files[target]
        kept_inside = [
            e
            for i, (_, rel, s, e) in enumerate(eff.params)
            if i not in drop and rel == target and vstart <= s and e <= vend
        ]
        dropped_inside = sorted(
            s
            for i, (_, rel, s, e) in enumerate(eff.params)
            if i in drop and rel == target and vstart <= s and e <= vend
        )
        if kept_inside:
            insert, sep = kept_inside[-1], " "
        elif dropped_inside:
            # In the place of the first word that goes (its blanks go with it).
            insert, sep = dropped_inside[0], ""
        else:
            # Only expansions (or dropped words) in the value: before its closing quote.
            quoted = text[vend - 1 : vend] in "\"'" and vend - vstart > 1
            insert = vend - 1 if quoted else vend
            body = text[vstart:insert].lstrip("\"'")
            sep = " " if body.strip() and not body.endswith((" ", "\t")) else ""
    elif add:
        line = f'U_BOOT_PARAMETERS="{" ".join(new_words)}"\n'
        if eff.source == "default":
            text = out.get(U_BOOT_DEFAULT) or ""
            out[U_BOOT_DEFAULT] = text + ("" if not text or text.endswith("\n") else "\n") + line
        else:
            out[OWN_FRAGMENT] = OWN_FRAGMENT_HEAD + line
        drop = set()  # the full value written overrides the rest
    # Per file: cut the dropped words, append to the target.
    rels = {eff.params[i][1] for i in drop} | ({target} if target else set())
    for rel in rels:
        text = files[rel]
        if rel == KERNEL_CMDLINE:
            first = text.find("\n")
            tokens = _words(text, 0, len(text) if first < 0 else first)
        else:
            tokens = sorted((s, e) for _, r, s, e in eff.params if r == rel)
        cut = {
            tokens.index((eff.params[i][2], eff.params[i][3]))
            for i in drop
            if eff.params[i][1] == rel
        }
        out[rel] = apply_tokens(
            text, tokens, cut, add if rel == target else [], insert=insert, sep=sep
        )
    # What armswarm added and no longer needs goes: its own fragment, or the appended line.
    for rel in [U_BOOT_DEFAULT, OWN_FRAGMENT]:
        if rel in out:
            without = _without_own_line(rel, out[rel], originals)
            if without != out[rel]:
                trial = {k: v for k, v in {**out, rel: without}.items() if v is not None}
                if u_boot_menu_effective(trial).args == new_args:
                    out[rel] = without
    final = {k: v for k, v in out.items() if v is not None}
    check = u_boot_menu_effective(final).args
    if check != new_args:
        raise ArmswarmError(
            f"u-boot-menu: the edit would give {' '.join(check)!r}, not {' '.join(new_args)!r}; "
            "refusing"
        )
    changed = {rel: text for rel, text in out.items() if text != files.get(rel)}
    return {"old": old_args, "new": new_args, "files": changed}


def _without_own_line(rel, text, originals):
    """``text`` without the line or fragment armswarm created there, or ``text`` itself."""
    if text is None:
        return text
    if rel == OWN_FRAGMENT and text.startswith(OWN_FRAGMENT_HEAD):
        return None
    if rel == U_BOOT_DEFAULT and rel in originals:
        original = originals[rel] or ""
        if not re.search(r"^[ \t]*U_BOOT_PARAMETERS=", original, re.M):
            return re.sub(r"^U_BOOT_PARAMETERS=.*\n?", "", text, flags=re.M)
    return text


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
    # As boot_files reads boot.txt: bytes that are not UTF-8 compare equal, not as an error.
    return body[offset : offset + first_len].decode("utf-8", "surrogateescape")
