"""Read the image references out of a Dockerfile, and pin them.

The reading follows BuildKit's Dockerfile frontend wherever it decides build order: parser
directives (``# syntax=``, ``# escape=``, ``# check=``, only at the very top), the escape
character, line continuations (with comments and empty lines inside), instructions in any
case separated by any whitespace, heredocs (``RUN <<EOF`` … ``EOF``: their bodies are not
instructions), shell-style words (quotes, ``$VAR``, ``${VAR:-default}``), ``ARG`` defaults
(global ones feed ``FROM``), ``FROM [--platform=…] ref [AS stage]``, ``COPY|ADD --from=ref``
and ``RUN --mount=…,from=ref``. A reference that names an earlier stage (by name or index) is
not an image, nor is ``scratch``.

Pinning rewrites only the characters of each reference: line endings (CRLF), continuation
layout and the final newline stay as they were.
"""

import json
import re
from dataclasses import dataclass, field

from armswarm_core import ArmswarmError

DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")
_SPACE = " \t\v\f\r"  # what separates an instruction from its arguments
_NAME = re.compile(r"[A-Za-z0-9_]+")
# Instruction options that dockerd's classic builder (the Engine API without BuildKit, which
# the build jobs use) refuses.
BUILDKIT_FLAGS = {
    "RUN": ("mount", "network", "security"),
    "COPY": ("link", "parents", "exclude"),
    "ADD": ("link", "parents", "exclude", "checksum", "keep-git-dir"),
}
HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
# Docker Hub's names: a reference spelled with one of them names Docker Hub, not a local registry.
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass
class Reference:
    """One image reference: ``kind`` is ``from``, ``copy`` or ``mount``; ``lines`` the
    physical line span ``(first, last)`` of its instruction (0-based, inclusive); ``where``
    the reference's characters as ``(line, start, end)`` (None when it is split over lines)."""

    kind: str
    raw: str
    value: str
    lines: tuple
    stage: int
    where: tuple | None = None


@dataclass
class Dockerfile:
    stages: list = field(default_factory=list)  # stage names (None when unnamed)
    references: list = field(default_factory=list)  # image references, not stages
    text: str = ""
    directives: dict = field(default_factory=dict)
    escape: str = "\\"
    heredocs: list = field(default_factory=list)  # (line, instruction, terminator), 1-based
    buildkit: list = field(default_factory=list)  # what the classic builder cannot do
    declared: set = field(default_factory=set)  # names of every ARG
    from_scratch: bool = False  # a stage starts FROM scratch


@dataclass
class _Instruction:
    first: int
    last: int
    text: str
    segments: list  # (offset in text, physical line, column)

    def locate(self, start: int, end: int):
        """The physical ``(line, start, end)`` of ``text[start:end]``, or None when it
        spans a line continuation."""
        for index, (offset, line, column) in enumerate(self.segments):
            stop = self.segments[index + 1][0] if index + 1 < len(self.segments) else None
            if offset <= start and (stop is None or end <= stop):
                return line, column + start - offset, column + end - offset
        return None


# -- lexing ----------------------------------------------------------------------------------
def _physical(text: str) -> list:
    """Lines without their ``\\n``; a CR stays (it is part of no instruction's words)."""
    return text.split("\n")


def _content(lines: list, number: int) -> tuple:
    """``(text, column)``: the line without BOM and trailing CR/LF, and where it starts."""
    line = lines[number]
    column = 1 if number == 0 and line.startswith("\ufeff") else 0
    return line[column:].rstrip("\r"), column


def _directives(lines: list) -> dict:
    found = {}
    for number in range(len(lines)):
        content, _ = _content(lines, number)
        content = content.lstrip()
        if not content.startswith("#"):
            break
        match = _DIRECTIVE.match(content[1:].lstrip())
        if not match or match.group(1).lower() not in DIRECTIVES:
            break
        key = match.group(1).lower()
        if key in found:
            raise ArmswarmError(f"line {number + 1}: only one {key} parser directive can be used")
        found[key] = match.group(2)
    escape = found.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise ArmswarmError(f"invalid escape token {escape!r}: must be ` or \\")
    return found


def _continuation(escape: str):
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


def _trim(line: str, continued) -> tuple:
    """``(line without its continuation escape, whether the instruction ends here)``."""
    match = continued.search(line)
    if match:
        return line[: match.start()] + (match.group(1) or ""), False
    return line, True


def _split_words(text: str, escape: str) -> list:
    """Shell-style words of ``text`` as ``(raw word, start, end)``: whitespace outside quotes
    separates them; quotes and escapes stay in the raw word."""
    words, start, quote, index = [], None, None, 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == escape and quote == '"' and index + 1 < len(text):
                index += 1
            elif char == quote:
                quote = None
        elif char in _SPACE:
            if start is not None:
                words.append((text[start:index], start, index))
                start = None
        else:
            if start is None:
                start = index
            if char == escape:
                index += 1
            elif char in "'\"":
                quote = char
        index += 1
    if start is not None:
        words.append((text[start:], start, len(text)))
    return words


def expand(word: str, args: dict, escape: str = "\\") -> str:
    """``word`` with quotes removed and ``$VAR``, ``${VAR}``, ``${VAR:-x}``, ``${VAR-x}``,
    ``${VAR:+x}``, ``${VAR+x}`` and ``${VAR:?msg}`` expanded from ``args`` (``None`` or a
    missing key: unset), as BuildKit expands ``FROM`` and ``ARG``."""
    out, _ = _expand(word, 0, args, escape, None)
    return out


def _expand(word, index, args, escape, stop):
    """Expand from ``index`` until ``stop`` (``}`` inside ``${…}``) or the end."""
    out, quote = [], None
    while index < len(word):
        char = word[index]
        if stop and not quote and char == stop:
            return "".join(out), index
        if quote == "'":
            if char == "'":
                quote = None
            else:
                out.append(char)
        elif char == escape and index + 1 < len(word):
            nxt = word[index + 1]
            if quote == '"' and nxt not in ('"', "$", escape):
                out.append(char)
            else:
                out.append(nxt)
                index += 1
        elif char in "'\"" and (quote is None or quote == char):
            quote = None if quote else char
        elif char == "'" and quote == '"':
            out.append(char)
        elif char == "$":
            text, index = _dollar(word, index, args, escape)
            out.append(text)
            continue
        else:
            out.append(char)
        index += 1
    if stop:
        raise ArmswarmError(f"{word}: missing '}}'")
    return "".join(out), index


def _dollar(word, index, args, escape):
    """Expand the ``$…`` at ``index``; returns the text and the index after it."""
    if word.startswith("${", index):
        match = _NAME.match(word, index + 2)
        if not match:
            raise ArmswarmError(f"{word}: bad substitution")
        name, pos = match.group(0), match.end()
        value = args.get(name)
        if pos < len(word) and word[pos] == "}":
            return value or "", pos + 1
        colon = word.startswith(":", pos)
        op = word[pos + colon] if pos + colon < len(word) else ""
        if op not in "-+?" or not op:
            raise ArmswarmError(
                f"{word}: unsupported substitution ${{{name}{word[pos : pos + 2]}…}}"
            )
        alt, end = _expand(word, pos + colon + 1, args, escape, "}")
        present = bool(value) if colon else value is not None
        if op == "-":
            text = value if present else alt
        elif op == "+":
            text = alt if present else ""
        elif not present:
            raise ArmswarmError(f"{name}: {alt or 'is not set'}")
        else:
            text = value
        return text or "", end + 1
    match = _NAME.match(word, index + 1)
    if not match:
        return "$", index + 1
    return args.get(match.group(0)) or "", match.end()


def substitute(value: str, args: dict) -> str:
    """``value`` with variables expanded from ``args`` (see :func:`expand`)."""
    return expand(value, args)


def _flags(words: list) -> tuple:
    """Leading ``--name[=value]`` words, and the rest."""
    for index, (raw, _, _) in enumerate(words):
        if raw == "--":
            return words[:index], words[index + 1 :]
        if not raw.startswith("--"):
            return words[:index], words[index:]
    return words, []


def _is_json(text: str) -> bool:
    if not text.startswith("["):
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _heredocs(text: str, escape: str) -> list:
    """``(terminator, chomp)`` of every heredoc opened on an instruction line."""
    found = []
    for raw, _, _ in _split_words(text, "\\"):
        match = _HEREDOC.match(raw)
        if not match or not match.group(3):
            continue
        words = _split_words(match.group(3), "\\")
        if len(words) != 1:
            continue
        found.append((expand(match.group(3), {}, "\\"), match.group(2) == "-"))
    return found


def _instructions(lines: list, escape: str, result: Dockerfile):
    continued = _continuation(escape)
    number = 0
    while number < len(lines):
        content, column = _content(lines, number)
        stripped = content.lstrip()
        column += len(content) - len(stripped)
        first = number
        number += 1
        if stripped.startswith("#"):
            continue
        body, ended = _trim(stripped, continued)
        if ended and not body:
            continue
        text, segments = body, [(0, first, column)]
        while not ended and number < len(lines):
            content, _ = _content(lines, number)
            number += 1
            if content.lstrip().startswith("#") or not content.strip():
                continue  # comments and empty lines inside an instruction are skipped
            body, ended = _trim(content, continued)
            segments.append((len(text), number - 1, 0))
            text += body
        if not text.strip():
            continue
        instruction = _Instruction(first, number - 1, text, segments)
        keyword, args = _keyword(text)
        if keyword == "ONBUILD":
            keyword, args = _keyword(args)
        if keyword in HEREDOC_INSTRUCTIONS and "<<" in text:
            _, rest = _flags(_split_words(args, escape))
            if not (rest and _is_json(args[rest[0][1] :].strip())):
                for terminator, chomp in _heredocs(text, escape):
                    start = number
                    while number < len(lines):
                        line = lines[number].rstrip("\r")
                        number += 1
                        if (line.lstrip("\t") if chomp else line) == terminator:
                            break
                    else:
                        raise ArmswarmError(f"line {start}: unterminated heredoc <<{terminator}")
                    result.heredocs.append((instruction.first + 1, keyword, terminator))
                    instruction.last = number - 1
        yield instruction


def _keyword(text: str) -> tuple:
    text = text.strip(_SPACE)
    for index, char in enumerate(text):
        if char in _SPACE:
            return text[:index].upper(), text[index:].lstrip(_SPACE)
    return text.upper(), ""


# -- parsing ---------------------------------------------------------------------------------
def parse(text: str, build_args: dict | None = None) -> Dockerfile:
    """Parse ``text``; ``build_args`` override ``ARG`` defaults (as ``--build-arg`` does)."""
    build_args = dict(build_args or {})
    lines = _physical(text)
    result = Dockerfile(text=text)
    result.directives = _directives(lines)
    escape = result.escape = result.directives.get("escape", "\\")
    global_args: dict = {}
    stage_args: dict = {}
    for ins in _instructions(lines, escape, result):
        keyword, rest = _keyword(ins.text)
        at = f"line {ins.first + 1}"
        base = len(ins.text.rstrip(_SPACE)) - len(rest)  # where the arguments start
        words = [(raw, base + s, base + e) for raw, s, e in _split_words(rest, escape)]
        if keyword == "ARG":
            scope = global_args if not result.stages else stage_args
            for raw, _, _ in words:
                name, eq, default = raw.partition("=")
                result.declared.add(name)
                if name in build_args:
                    scope[name] = build_args[name]
                elif eq:
                    scope[name] = expand(default, {**global_args, **stage_args}, escape)
                elif not result.stages:
                    scope.setdefault(name, None)
                else:
                    # ARG without a value inside a stage re-imports the global one.
                    scope[name] = global_args.get(name)
        elif keyword == "FROM":
            _, plain = _flags(words)
            if len(plain) not in (1, 3) or (len(plain) == 3 and plain[1][0].upper() != "AS"):
                raise ArmswarmError(f"{at}: FROM takes an image and optionally AS <name>")
            raw, start, end = plain[0]
            value = expand(raw, global_args, escape)
            if not value:
                raise ArmswarmError(f"{at}: FROM {raw} expands to nothing")
            stage = len(result.stages)
            result.from_scratch = result.from_scratch or value == "scratch"
            if not _is_stage(value, result.stages) and value != "scratch":
                where = ins.locate(start, end)
                result.references.append(
                    Reference("from", raw, value, (ins.first, ins.last), stage, where)
                )
            name = expand(plain[2][0], global_args, escape) if len(plain) == 3 else None
            result.stages.append(name.lower() if name else None)
            stage_args = {}
        elif keyword in ("COPY", "ADD", "RUN"):
            if not result.stages:
                raise ArmswarmError(f"{at}: {keyword} before the first FROM")
            flags, _ = _flags(words)
            for flag, _, _ in flags:
                option = flag[2:].split("=", 1)[0].lower()
                if option in BUILDKIT_FLAGS.get(keyword, ()):
                    result.buildkit.append(f"{at}: {keyword} --{option}")
            for kind, raw, start, end in _option_refs(keyword, flags):
                value = expand(raw, {**global_args, **stage_args}, escape)
                if not _is_stage(value, result.stages):
                    where = ins.locate(start, end)
                    ref = Reference(
                        kind, raw, value, (ins.first, ins.last), len(result.stages) - 1, where
                    )
                    result.references.append(ref)
    for line, keyword, terminator in result.heredocs:
        result.buildkit.append(f"line {line}: {keyword} <<{terminator} (a heredoc)")
    if not result.stages:
        raise ArmswarmError("no FROM instruction")
    return result


def _option_refs(keyword: str, flags: list):
    """``(kind, raw, start, end)`` of the image references in an instruction's options."""
    for word, start, end in flags:
        name, _, value = word.partition("=")
        name = name.lower()
        if keyword in ("COPY", "ADD") and name == "--from" and value:
            yield "copy", value, start + len(name) + 1, end
        elif keyword == "RUN" and name == "--mount" and value:
            offset = start + len(name) + 1
            if len(value) > 1 and value[0] in "\"'" and value.endswith(value[0]):
                value, offset = value[1:-1], offset + 1
            for item in value.split(","):
                key, eq, item_value = item.partition("=")
                if eq and key.strip().lower() == "from" and item_value:
                    at = offset + len(key) + 1
                    yield "mount", item_value, at, at + len(item_value)
                offset += len(item) + 1


def _is_stage(value: str, stages: list) -> bool:
    if value.lower() in [s for s in stages if s]:
        return True
    return value.isdigit() and int(value) < len(stages)


# -- names -----------------------------------------------------------------------------------
def has_registry(ref: str) -> bool:
    """Whether ``ref`` starts with a registry host (``host.domain/…``, ``host:port/…``,
    ``localhost/…``), by Docker's rule for the first path component."""
    first, sep, _ = ref.partition("/")
    return bool(sep) and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )


def split_registry(ref: str) -> tuple:
    """``(registry or None, rest)``: ``reg.lan:5000/base:1`` → ``("reg.lan:5000", "base:1")``."""
    if has_registry(ref):
        host, _, rest = ref.partition("/")
        return host, rest
    return None, ref


def repository(ref: str, registry: str | None = None) -> str:
    """The repository path of an image reference, without tag, digest or ``registry`` prefix:
    ``reg:5000/armv7h/arch:20250101`` → ``armv7h/arch``."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    if registry and name.startswith(registry.rstrip("/") + "/"):
        name = name[len(registry.rstrip("/")) + 1 :]
    return name


def path_of(ref: str) -> str:
    """The repository path without any registry, tag or digest."""
    return split_registry(repository(ref))[1]


def pin(text: str, pins: dict, registry: str | None = None, build_args=None) -> str:
    """``text`` with every reference to an image in ``pins`` (repository path → pinned
    reference) replaced by its pinned reference; all other characters are kept. The tree was
    checked when it was loaded: a reference whose path (under any registry spelling) is in
    ``pins`` names the tree's image. ``registry`` is accepted for callers of older versions."""
    del registry
    parsed = parse(text, build_args)
    lines = _physical(text)
    edits = []
    for ref in parsed.references:
        target = pins.get(path_of(ref.value))
        if target is None:
            continue
        if ref.where is None:
            raise ArmswarmError(
                f"line {ref.lines[0] + 1}: cannot pin {ref.raw}: it is split over a line "
                "continuation; write it on one line"
            )
        edits.append((*ref.where, target))
    for line, start, end, target in sorted(edits, reverse=True):
        lines[line] = lines[line][:start] + target + lines[line][end:]
    return "\n".join(lines)
