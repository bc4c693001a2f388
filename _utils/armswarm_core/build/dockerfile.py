"""Read the image references out of a Dockerfile, and pin them.

Only what decides build order is parsed: ``ARG`` defaults (global ones feed ``FROM``), ``FROM
[--platform=…] ref [AS stage]``, ``COPY|ADD --from=ref`` and ``RUN --mount=…,from=ref``. A
reference that names an earlier stage (by name or index) is not an image.
"""

import re
from dataclasses import dataclass, field

from armswarm_core import ArmswarmError

_VAR = re.compile(r"\$(?:\{(\w+)(?::([-+])([^}]*))?\}|(\w+))")
_ESCAPE_DIRECTIVE = re.compile(r"^#\s*escape\s*=\s*([\\`])\s*$", re.IGNORECASE)


@dataclass
class Reference:
    """One image reference: ``kind`` is ``from``, ``copy`` or ``mount``; ``lines`` the
    physical line span ``(first, last)`` of its instruction (0-based, inclusive)."""

    kind: str
    raw: str
    value: str
    lines: tuple
    stage: int


@dataclass
class Dockerfile:
    stages: list = field(default_factory=list)  # stage names (None when unnamed)
    references: list = field(default_factory=list)  # image references, not stages
    text: str = ""


def _logical_lines(text: str):
    """``(first, last, instruction text)`` with continuations joined and comments dropped."""
    physical = text.splitlines()
    escape = "\\"
    for line in physical:
        if not line.startswith("#"):
            break
        found = _ESCAPE_DIRECTIVE.match(line)
        if found:
            escape = found.group(1)
    start, parts = None, []
    for number, line in enumerate(physical):
        stripped = line.strip()
        if start is None and (not stripped or stripped.startswith("#")):
            continue
        if start is not None and stripped.startswith("#"):
            continue  # comments inside a continued instruction are dropped by docker too
        if start is None:
            start = number
        if stripped.endswith(escape):
            parts.append(stripped[: -len(escape)])
            continue
        parts.append(stripped)
        yield start, number, " ".join(p for p in parts if p)
        start, parts = None, []
    if start is not None:
        yield start, len(physical) - 1, " ".join(p for p in parts if p)


def substitute(value: str, args: dict) -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alt}`` from ``args``."""

    def expand(match):
        name = match.group(1) or match.group(4)
        current = args.get(name) or ""
        if match.group(2) == "-":
            return current or match.group(3)
        if match.group(2) == "+":
            return match.group(3) if current else ""
        return current

    return _VAR.sub(expand, value)


def _arg_defaults(rest: str) -> dict:
    out = {}
    for item in rest.split():
        name, _, default = item.partition("=")
        out[name] = default.strip("\"'") if "=" in item else None
    return out


def parse(text: str, build_args: dict | None = None) -> Dockerfile:
    """Parse ``text``; ``build_args`` override ``ARG`` defaults (as ``--build-arg`` does)."""
    build_args = dict(build_args or {})
    result = Dockerfile(text=text)
    global_args: dict = {}
    stage_args: dict = {}
    for first, last, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        span = (first, last)
        if keyword == "ARG":
            scope = global_args if not result.stages else stage_args
            for name, default in _arg_defaults(rest).items():
                if name in build_args:
                    scope[name] = build_args[name]
                elif default is not None:
                    scope[name] = substitute(default, {**global_args, **stage_args})
                elif not result.stages:
                    scope.setdefault(name, "")
                else:
                    # ARG without a value inside a stage re-imports the global one.
                    scope[name] = global_args.get(name, "")
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                raise ArmswarmError(f"line {first + 1}: FROM without an image")
            raw = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            value = substitute(raw, global_args)
            if not value:
                raise ArmswarmError(f"line {first + 1}: FROM {raw} expands to nothing")
            stage = len(result.stages)
            if not _is_stage(value, result.stages):
                result.references.append(Reference("from", raw, value, span, stage))
            result.stages.append(name.lower() if name else None)
            stage_args = {}
        elif keyword in ("COPY", "ADD", "RUN"):
            if not result.stages:
                raise ArmswarmError(f"line {first + 1}: {keyword} before the first FROM")
            for kind, raw in _option_refs(keyword, rest):
                value = substitute(raw, {**global_args, **stage_args})
                if not _is_stage(value, result.stages):
                    ref = Reference(kind, raw, value, span, len(result.stages) - 1)
                    result.references.append(ref)
    if not result.stages:
        raise ArmswarmError("no FROM instruction")
    return result


def _option_refs(keyword: str, rest: str):
    for word in rest.split():
        if not word.startswith("--"):
            break  # options come first
        if keyword in ("COPY", "ADD") and word.lower().startswith("--from="):
            yield "copy", word.split("=", 1)[1]
        elif keyword == "RUN" and word.lower().startswith("--mount="):
            for item in word.split("=", 1)[1].split(","):
                key, _, value = item.partition("=")
                if key == "from" and value:
                    yield "mount", value


def _is_stage(value: str, stages: list) -> bool:
    if value.lower() in [s for s in stages if s]:
        return True
    return value.isdigit() and int(value) < len(stages)


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


def has_registry(ref: str) -> bool:
    """Whether ``ref`` starts with a registry host (``host.domain/…``, ``host:port/…``)."""
    first, sep, _ = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def pin(text: str, pins: dict, registry: str | None = None, build_args=None) -> str:
    """``text`` with every reference to an image in ``pins`` (repository → pinned reference)
    replaced by its pinned reference; other lines are kept byte for byte."""
    parsed = parse(text, build_args)
    lines = text.splitlines()
    rewrites = {}
    for ref in parsed.references:
        target = pins.get(repository(ref.value, registry))
        if target is None:
            continue
        first, last = ref.lines
        current = rewrites.get(first) or " ".join(
            line.strip().rstrip("\\").strip() for line in lines[first : last + 1]
        )
        if ref.kind == "from":
            words = current.split()
            index = next(i for i, w in enumerate(words[1:], 1) if not w.startswith("--"))
            words[index] = target
            current = " ".join(words)
        else:
            current = re.sub(
                r"(?<=from=)" + re.escape(ref.raw) + r"(?=[,\s]|$)", target, current, count=1
            )
        rewrites[first] = current
        for number in range(first + 1, last + 1):
            rewrites[number] = None
    out = []
    for number, line in enumerate(lines):
        if number in rewrites:
            if rewrites[number] is not None:
                out.append(rewrites[number])
        else:
            out.append(line)
    return "\n".join(out) + "\n"
