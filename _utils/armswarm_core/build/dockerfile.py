"""Read the image references out of a Dockerfile, and pin them.

The reading follows BuildKit's Dockerfile frontend wherever it decides build order: parser
directives (``# syntax=``, ``# escape=``, ``# check=``, only at the very top), the escape
character, line continuations (with comments and empty lines inside), instructions in any
case separated by any whitespace, heredocs (``RUN <<EOF`` and, since dockerfile 1.16,
``cat << EOF`` … ``EOF``: their bodies are not instructions), shell-style words (quotes,
``$VAR``, ``${VAR:-default}``), ``ARG`` defaults (global ones feed ``FROM``),
``FROM [--platform=…] ref [AS stage]``, ``COPY --from=ref`` and ``RUN --mount=…,from=ref``
(both literal: no variables). A reference that names an earlier stage (``FROM`` by name,
``COPY --from`` by name or index) is not an image, nor is ``scratch``.

What both builders refuse is refused here, naming the line, rather than guessed at: unknown
instructions, lines over 64 KiB, stage names BuildKit rejects or used twice, ``--from`` naming
the instruction's own stage or a later one, and references that are no image reference once
expanded (an unset ``ARG``: the hint names it).

Pinning rewrites only the characters of each reference: line endings (CRLF), continuation
layout and the final newline stay as they were.
"""

import json
import re
from dataclasses import dataclass, field

from armswarm_core import ArmswarmError
from armswarm_core.common.architectures import PLATFORM_ARGS

DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")
_SPACE = " \t\v\f\r"  # what separates an instruction from its arguments
_NAME = re.compile(r"[A-Za-z0-9_]+")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
# BuildKit's rule for ``AS <name>`` (not expanded, compared in lower case)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")
_INDEX = re.compile(r"^[+-]?[0-9]+$")
# Docker's reference grammar (distribution/reference); a digest's length is left to docker.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]+"
_REFERENCE = re.compile(rf"^(?:({_DOMAIN})/)?({_PATH})(?::{_TAG})?(?:@{_DIGEST})?$")
# bufio.Scanner's limit in the Dockerfile parser of BuildKit and dockerd
MAX_LINE = 65535
# Instruction options that dockerd's classic builder (the Engine API without BuildKit, which
# the build jobs use) refuses or ignores; it refuses every RUN option.
BUILDKIT_FLAGS = {
    "COPY": ("link", "parents", "exclude", "chmod"),
    "ADD": ("link", "parents", "exclude", "checksum", "keep-git-dir", "chmod", "unpack"),
}
HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
# Both builders refuse any other word as an instruction.
INSTRUCTIONS = (
    *("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK"),
    *("LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME"),
    "WORKDIR",
)
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


def _check_length(lines: list):
    for number, line in enumerate(lines):
        if len(line) > MAX_LINE // 4 and len(line.encode("utf-8")) > MAX_LINE:
            raise ArmswarmError(
                f"line {number + 1}: longer than {MAX_LINE} bytes, which docker cannot read"
            )


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
    if quote:
        raise ArmswarmError(f"{word}: unterminated {quote} quote")
    return "".join(out), index


def _unquote(word: str, escape: str = "\\") -> str:
    """``word`` without its quotes and escapes, ``$`` kept: how BuildKit reads a heredoc's
    name and an option's value, neither of which is expanded."""
    out, quote, index = [], None, 0
    while index < len(word):
        char = word[index]
        if quote == "'" and char != "'":
            out.append(char)
        elif char == escape and index + 1 < len(word):
            nxt = word[index + 1]
            if quote == '"' and nxt not in ('"', "$", escape):
                out.append(char)
            else:
                out.append(nxt)
                index += 1
        elif char in "'\"" and quote in (None, char):
            quote = None if quote else char
        else:
            out.append(char)
        index += 1
    if quote:
        raise ArmswarmError(f"{word}: unterminated {quote} quote")
    return "".join(out)


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


def _heredoc_words(text: str) -> list:
    """The words of an instruction as BuildKit's lexer splits them to find heredocs: quotes
    and escapes (always ``\\``) kept, and the blanks after ``<<`` joined to the word after
    them (dockerfile 1.16, "allow whitespace in heredocs": ``cat << EOF`` opens one)."""
    words, word, quote, index = [], "", None, 0
    while index < len(text):
        char = text[index]
        if quote:
            word += char
            if char == "\\" and quote == '"' and index + 1 < len(text):
                index += 1
                word += text[index]
            elif char == quote:
                quote = None
        elif char == "\\":
            word += text[index : index + 2]
            index += 1
        elif char in "'\"":
            quote = char
            word += char
        elif text.startswith("<<", index):
            word += "<<"
            index += 2
            while index < len(text) and text[index] in " \t\r":
                word += text[index]
                index += 1
            continue
        elif char.isspace():
            if word:
                words.append(word)
            word = ""
        else:
            word += char
        index += 1
    if quote:
        # BuildKit's lexer fails and then sees no heredoc, so the body would be read as
        # instructions: where this instruction ends cannot be told.
        raise ArmswarmError(
            "an unterminated quote on a line with <<: cannot tell whether a heredoc starts here"
        )
    return [*words, word] if word else words


def _heredocs(text: str) -> list:
    """``(terminator, chomp)`` of every heredoc opened on an instruction line."""
    found = []
    for raw in _heredoc_words(text):
        match = _HEREDOC.match(raw)
        if not match or not match.group(3):
            continue
        if len(_split_words(match.group(3), "\\")) != 1:
            continue
        found.append((_unquote(match.group(3)), match.group(2) == "-"))
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
                try:
                    heredocs = _heredocs(text)
                except ArmswarmError as exc:
                    raise ArmswarmError(f"line {first + 1}: {exc}") from None
                for terminator, chomp in heredocs:
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
    _check_length(lines)
    result = Dockerfile(text=text)
    result.directives = _directives(lines)
    escape = result.escape = result.directives.get("escape", "\\")
    global_args: dict = {}
    stage_lines: dict = {}  # stage name → the line of its FROM
    options: list = []  # (reference, label): checked once every stage name is known
    for ins in _instructions(lines, escape, result):
        keyword, rest = _keyword(ins.text)
        at = f"line {ins.first + 1}"
        base = len(ins.text.rstrip(_SPACE)) - len(rest)  # where the arguments start
        words = [(raw, base + s, base + e) for raw, s, e in _split_words(rest, escape)]
        inner = _keyword(rest)[0] if keyword == "ONBUILD" else keyword
        if keyword not in INSTRUCTIONS or inner not in INSTRUCTIONS:
            raise ArmswarmError(
                f"{at}: unknown instruction {inner} (a heredoc's body, or a line that lost "
                "its continuation?)"
            )
        if keyword == "ARG":
            for raw, _, _ in words:
                name, eq, default = raw.partition("=")
                result.declared.add(name)
                if result.stages:
                    continue  # a stage's ARG reaches no image reference (--from is literal)
                if name in build_args:
                    global_args[name] = build_args[name]
                elif eq:
                    global_args[name] = _at(at, expand, default, global_args, escape)
                else:
                    global_args.setdefault(name, None)
        elif keyword == "FROM":
            _, plain = _flags(words)
            if len(plain) not in (1, 3) or (len(plain) == 3 and plain[1][0].upper() != "AS"):
                comment = any(raw.startswith("#") for raw, _, _ in plain)
                raise ArmswarmError(
                    f"{at}: FROM takes an image and optionally AS <name>"
                    + (" (a # after an instruction starts no comment)" if comment else "")
                )
            raw, start, end = plain[0]
            value = _at(at, expand, raw, global_args, escape)
            if not value:
                raise ArmswarmError(
                    f"{at}: FROM {raw} expands to nothing{_hints(raw, global_args)}"
                )
            result.from_scratch = result.from_scratch or value == "scratch"
            # FROM names a stage by name only (an index is an image's name there)
            if value != "scratch" and value.lower() not in stage_lines:
                _check_reference(value, f"{at}: FROM {raw}", _hints(raw, global_args))
                where = ins.locate(start, end)
                result.references.append(
                    Reference("from", raw, value, (ins.first, ins.last), len(result.stages), where)
                )
            name = None
            if len(plain) == 3:
                name = plain[2][0].lower()  # BuildKit neither expands nor unquotes it
                if not _STAGE_NAME.match(name):
                    raise ArmswarmError(
                        f"{at}: invalid stage name {plain[2][0]}: a letter, then letters, "
                        "digits, - _ or . (no variables)"
                    )
                if name in stage_lines:
                    raise ArmswarmError(
                        f"{at}: stage name {name} is used twice (lines {stage_lines[name]} "
                        f"and {ins.first + 1})"
                    )
                stage_lines[name] = ins.first + 1
            result.stages.append(name)
        elif keyword in ("COPY", "ADD", "RUN"):
            if not result.stages:
                raise ArmswarmError(f"{at}: {keyword} before the first FROM")
            flags, _ = _flags(words)
            for flag, _, _ in flags:
                option = flag[2:].split("=", 1)[0].lower()
                if keyword == "RUN" or option in BUILDKIT_FLAGS.get(keyword, ()):
                    result.buildkit.append(f"{at}: {keyword} --{option}")
            current = len(result.stages) - 1
            for kind, option, raw, start, end in _option_refs(keyword, flags, at):
                value = _at(f"{at}: {option}={raw}", _unquote, raw, escape)
                if not value:
                    continue  # --from= copies from the build context
                label = f"{at}: {option}={value}"
                if "$" in value:
                    raise ArmswarmError(
                        f"{label}: variables are not expanded there (BuildKit refuses them, "
                        "the classic builder would look for an image of that name): name the "
                        "image in a FROM … AS <stage> (global ARGs work there) and use the stage"
                    )
                if kind == "copy" and _INDEX.match(value):
                    if int(value) == current:
                        raise ArmswarmError(f"{label}: that is its own stage")
                    if not 0 <= int(value) < current:
                        raise ArmswarmError(f"{label}: there is no stage {value} before it")
                    continue
                if value.lower() == result.stages[current]:
                    raise ArmswarmError(f"{label}: that is its own stage")
                if value.lower() in result.stages[:current]:
                    continue
                where = ins.locate(start, end)
                ref = Reference(kind, raw, value, (ins.first, ins.last), current, where)
                result.references.append(ref)
                options.append((ref, label))
    for line, keyword, terminator in result.heredocs:
        result.buildkit.append(f"line {line}: {keyword} <<{terminator} (a heredoc)")
    if not result.stages:
        raise ArmswarmError("no FROM instruction")
    for ref, label in options:
        if ref.value.lower() in stage_lines:
            raise ArmswarmError(
                f"{label}: a stage defined later (line {stage_lines[ref.value.lower()]}): "
                "an instruction can only use the stages before its own"
            )
        _check_reference(ref.value, label, "")
    return result


def global_arg_names(text: str) -> set:
    """The names the ``ARG`` instructions before the first ``FROM`` declare (those that may
    reach an image reference), nothing else evaluated."""
    lines = _physical(text)
    escape = _directives(lines).get("escape", "\\")
    names: set = set()
    for ins in _instructions(lines, escape, Dockerfile()):
        keyword, rest = _keyword(ins.text)
        if keyword == "FROM":
            break
        if keyword == "ARG":
            names |= {raw.partition("=")[0] for raw, _, _ in _split_words(rest, escape)}
    return names


def _at(at: str, function, *args):
    """``function(*args)``, its ArmswarmError prefixed with where it happened."""
    try:
        return function(*args)
    except ArmswarmError as exc:
        raise ArmswarmError(f"{at}: {exc}") from None


def _option_refs(keyword: str, flags: list, at: str):
    """``(kind, option, raw, start, end)`` of the image references in an instruction's
    options; refuses the ``--from`` spellings both builders refuse."""
    seen = False
    for word, start, end in flags:
        name, eq, value = word.partition("=")
        if keyword in ("COPY", "ADD") and name.lower() == "--from":
            if keyword == "ADD":
                raise ArmswarmError(f"{at}: ADD has no --from option (COPY --from=… has)")
            if name != "--from":
                raise ArmswarmError(f"{at}: unknown option {name} (options are lower case)")
            if not eq:
                raise ArmswarmError(f"{at}: COPY --from needs a value: --from=<stage or image>")
            if seen:
                raise ArmswarmError(f"{at}: COPY --from given twice")
            seen = True
            yield "copy", "COPY --from", value, start + len(name) + 1, end
        elif keyword == "RUN" and name == "--mount" and value:
            offset = start + len(name) + 1
            if len(value) > 1 and value[0] in "\"'" and value.endswith(value[0]):
                value, offset = value[1:-1], offset + 1
            for item in value.split(","):
                key, eq, item_value = item.partition("=")
                if eq and key.strip().lower() == "from" and item_value:
                    where = offset + len(key) + 1
                    yield "mount", "RUN --mount from", item_value, where, where + len(item_value)
                offset += len(item) + 1


def _check_reference(value: str, label: str, hints: str):
    """Refuse what Docker would not take as an image reference (a misread or unset ARG)."""
    if _REFERENCE.match(value) and len(repository(value)) <= 255:
        return
    raise ArmswarmError(f"{label}: {value!r} is not an image reference{hints}")


def _hints(raw: str, args: dict) -> str:
    """Why the variables of ``raw`` may have expanded to something unexpected."""
    out = []
    for name in dict.fromkeys(_VARIABLE.findall(raw)):
        if name not in args:
            hint = f"{name} is not declared by an ARG before the first FROM"
            if name in PLATFORM_ARGS:
                hint += (
                    f" (BuildKit sets {name} by itself; the classic builder the build jobs "
                    f"use only when declared: add ARG {name} before the first FROM)"
                )
            out.append(hint)
        elif args[name] is None:
            out.append(f"{name} has no default and no build argument sets it")
        elif args[name] == "":
            out.append(f"{name} is empty")
    return "; " + "; ".join(out) if out else ""


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
