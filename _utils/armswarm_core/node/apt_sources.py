"""apt's sources pointed at a Debian mirror, whatever format the image ships them in.

Images differ: Debian 12 images and DietPi list Debian's archive in ``/etc/apt/sources.list``
(one-line format); Armbian's current builds and Raspberry Pi OS on Debian 13 leave
``sources.list`` empty or absent and put it in ``sources.list.d/debian.sources`` (deb822),
next to their own archives (``armbian.sources``, ``raspi.sources``). Writing the mirror into
``sources.list`` alone leaves apt asking Debian's own servers too, which an offline cluster
cannot reach. So the mirror goes into the managed file, and every other entry for the same
Debian suites is switched off where it stands (deb822 ``Enabled: no``, a one-line entry
commented out): the image's file stays, other archives in it stay untouched.

Raspbian (32-bit Raspberry Pi OS) and Ubuntu are other archives built for other CPUs or
releases: a Debian mirror in their place breaks every later install, so that is refused.

Pure functions over file texts; :func:`plan` decides, the state writes.
"""

import re
from urllib.parse import urlparse, urlsplit

from armswarm_core import ArmswarmError

MARK = "# armnode mirror: "  # prefix of a one-line entry this module switched off
HEADER = "# Managed by Salt (armnode): Debian from the mirror in pillar armnode:mirrors\n"
# Archives that are not Debian's, by host: a Debian mirror must not replace them.
_FOREIGN = (
    ("raspbian", "Raspbian (32-bit Raspberry Pi OS, built for ARMv6)"),
    ("ubuntu.com", "Ubuntu"),
)
# Vendors that serve their own archive under a path named "debian".
_VENDORS = ("raspberrypi.com", "raspberrypi.org", "armbian.com")
_ONE_LINE = re.compile(r"^\s*(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)(.*)$")


def _norm(uri: str) -> str:
    return uri.strip().rstrip("/").lower()


def _host(uri: str) -> str:
    try:
        return (urlsplit(uri.strip()).hostname or "").lower()
    except ValueError:
        return ""


def foreign_archive(uri: str) -> str | None:
    """The name of the non-Debian distribution whose archive ``uri`` is, else None."""
    host = _host(uri)
    path = urlsplit(uri.strip()).path.rstrip("/").rsplit("/", 1)[-1].lower()
    for part, what in _FOREIGN:
        if part in host:
            return what
    if path in ("ubuntu", "ubuntu-ports"):
        return "Ubuntu"
    if path == "raspbian":
        return _FOREIGN[0][1]
    return None


# Debian's own components: another archive under a path named "debian" has its own
# (Docker's "stable", say).
_COMPONENTS = {"main", "contrib", "non-free", "non-free-firmware"}


def is_debian_archive(uri: str, mirrors=(), image_file: bool = False, components=()) -> bool:
    """Debian's archive: a host under debian.org, one of the configured mirrors, or, in the
    image's Debian file (``sources.list``, ``debian.sources``), a path named ``debian`` or
    ``debian-security`` with only Debian's components on a host that is no known vendor's
    (Armbian builds with a mirror of their choice there)."""
    host = _host(uri)
    if host == "debian.org" or host.endswith(".debian.org"):
        return True
    if _norm(uri) in {_norm(m) for m in mirrors if m}:
        return True
    last = urlsplit(uri.strip()).path.rstrip("/").rsplit("/", 1)[-1].lower()
    vendor = any(host == v or host.endswith("." + v) for v in _VENDORS)
    ours = bool(components) and set(components) <= _COMPONENTS
    return image_file and ours and last in ("debian", "debian-security") and not vendor


def replaced_suites(codename: str, security: bool) -> set:
    """The suites the mirror serves: the release, its updates and backports (backports are in
    Debian's main archive, so in every full mirror) and, when a security mirror is set, the
    security suite."""
    suites = {codename, f"{codename}-updates", f"{codename}-backports"}
    if security:
        suites.add(f"{codename}-security")
    return suites


# -- one-line format -------------------------------------------------------------------------


def one_line_entries(text: str) -> list:
    """Active entries of a one-line file: ``(index, type, options, uri, suite, rest)``."""
    out = []
    for index, line in enumerate(text.splitlines()):
        stripped = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        match = _ONE_LINE.match(stripped)
        if match:
            kind, options, uri, suite, rest = match.groups()
            out.append((index, kind, (options or "").strip(), uri, suite, rest.strip()))
    return out


def _signed_by(options: str) -> str | None:
    for item in options.split():
        key, _, value = item.partition("=")
        if key.lower() == "signed-by" and value:
            return value
    return None


# -- deb822 format ---------------------------------------------------------------------------


def stanzas(text: str) -> list:
    """deb822 paragraphs: ``{"start", "end", "fields": {lower name: value}}``, lines
    ``start..end-1``. Comment lines are kept out of the fields; continuation lines (a leading
    blank) join their field's value."""
    lines = text.splitlines()
    out, current, last = [], None, None
    for index, line in enumerate(lines + [""]):
        if not line.strip():
            if current:
                current["end"] = index
                out.append(current)
            current, last = None, None
            continue
        if current is None:
            current = {"start": index, "fields": {}}
        if line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and last:
            current["fields"][last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ArmswarmError(f"line {index + 1} is not a deb822 field: {line.strip()!r}")
        last = name.strip().lower()
        current["fields"][last] = value.strip()
    return out


def _enabled(fields: dict) -> bool:
    return fields.get("enabled", "yes").strip().lower() not in ("no", "false", "0")


# -- the plan ----------------------------------------------------------------------------------


def uri_ok(uri) -> bool:
    """One URL apt reads from a sources line: a scheme apt has a method for, a host (or a
    path for file:), and nothing that would split the line, end it in a comment or start an
    option: brackets only round an IPv6 host (``http://[fd00::1]:3142/debian``)."""
    if not isinstance(uri, str) or re.search(r"[\s\x00-\x1f\x7f#]", uri):
        return False
    parsed = urlparse(uri)
    if re.search(r"[\[\]]", uri.replace(f"//{parsed.netloc}", "", 1)):
        return False
    if parsed.scheme == "file":
        return bool(parsed.path)
    return parsed.scheme in ("http", "https", "ftp") and bool(parsed.netloc)


def shown(uri: str) -> str:
    """The URL as a message may show it: a password in it (``user:pw@``) is left out."""
    parsed = urlparse(uri)
    if "@" not in parsed.netloc:
        return uri
    return parsed._replace(netloc="…@" + parsed.netloc.rsplit("@", 1)[1]).geturl()


def component_ok(name) -> bool:
    """A component as archives name them: ``main``, ``non-free-firmware``,
    ``main/debian-installer``."""
    return isinstance(name, str) and bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+/-]*", name))


def plan(files: dict, managed: str, mirror: str, security, codename: str, components) -> dict:
    """What pointing apt at the mirror means for ``files`` (``{path: text}``, every file of
    ``sources.list`` and ``sources.list.d/*.list|*.sources`` as the node has them; the managed
    file may be missing).

    Returns ``{"write": {path: new text}, "disabled": {path: [what]}, "kept": [what]}``:
    ``write`` holds only files whose text changes. Raises :class:`ArmswarmError` when a source
    belongs to a distribution a Debian mirror must not replace, or a deb822 paragraph mixes
    Debian's archive with another in one ``URIs`` field, before anything is written.
    """
    if not codename or not re.fullmatch(r"[a-z][a-z0-9-]*", codename):
        raise ArmswarmError(f"the release codename {codename!r} is not a Debian codename")
    for label, uri in (("debian", mirror), ("security", security)):
        if uri is not None and not uri_ok(uri):
            # not shown: a mirror URL may carry a password
            raise ArmswarmError(f"mirror {label}: not one URL an apt line can hold")
    components = components.split() if isinstance(components, str) else list(components)
    bad = [c for c in components if not component_ok(c)]
    if bad or not components:
        raise ArmswarmError(f"components {bad or components!r}: not apt component names")
    mirrors = [mirror] + ([security] if security else [])
    replaced = replaced_suites(codename, bool(security))
    write, disabled, kept = {}, {}, []
    types, signed_by, backports = {"deb"}, None, False

    def debian(path, uri, parts):
        image_file = path == managed or path.endswith("/debian.sources")
        return is_debian_archive(uri, mirrors, image_file, parts)

    def refuse_foreign(path, uri, suites):
        # Only the archive of this release: a PPA built for some Ubuntu release may stay.
        what = foreign_archive(uri)
        if what and set(suites) & replaced:
            raise ArmswarmError(
                f"{path} installs packages from {what} ({uri}): a Debian mirror in its place "
                "would break every later install. Set no armnode:mirrors:debian for this node."
            )

    for path in sorted(files):
        text = files[path]
        if path.endswith(".sources"):
            lines = text.splitlines()
            edits = []
            try:
                paragraphs = stanzas(text)
            except ArmswarmError as exc:
                raise ArmswarmError(f"{path}: {exc}") from None
            for stanza in paragraphs:
                fields = stanza["fields"]
                if not _enabled(fields):
                    continue
                uris = fields.get("uris", "").split()
                suites = fields.get("suites", "").split()
                for uri in uris:
                    refuse_foreign(path, uri, suites)
                parts = fields.get("components", "").split()
                ours = [u for u in uris if debian(path, u, parts)]
                hit = [s for s in suites if s in replaced]
                if not ours or not hit:
                    continue
                if len(ours) != len(uris):
                    raise ArmswarmError(
                        f"{path}: the paragraph at line {stanza['start'] + 1} lists Debian's "
                        f"archive with others in one URIs field ({' '.join(uris)}): split it, "
                        "then the mirror can replace the Debian part"
                    )
                types |= set(fields.get("types", "deb").split())
                signed_by = signed_by or fields.get("signed-by")
                backports = backports or f"{codename}-backports" in hit
                rest = [s for s in suites if s not in replaced]
                what = f"{' '.join(uris)} {' '.join(hit)}"
                edits.append((stanza, rest))
                disabled.setdefault(path, []).append(what)
            for stanza, rest in reversed(edits):
                block = lines[stanza["start"] : stanza["end"]]
                if rest:
                    # Other suites of the paragraph (say, security without a security
                    # mirror) stay; only the mirrored ones leave it.
                    block = [
                        f"Suites: {' '.join(rest)}" if _field(line) == "suites" else line
                        for line in _join_suites(block)
                    ]
                else:
                    block = [line for line in block if _field(line) != "enabled"]
                    block.append("Enabled: no")
                lines[stanza["start"] : stanza["end"]] = block
            if edits:
                write[path] = "\n".join(lines) + "\n"
            continue
        entries = one_line_entries(text)
        lines = text.splitlines()
        off = []
        for index, kind, options, uri, suite, rest in entries:
            refuse_foreign(path, uri, [suite.rstrip("/")])
            if debian(path, uri, rest.split()) and suite.rstrip("/") in replaced:
                types.add(kind)
                signed_by = signed_by or _signed_by(options)
                backports = backports or suite == f"{codename}-backports"
                off.append(index)
                if path != managed:
                    disabled.setdefault(path, []).append(f"{uri} {suite}")
            elif path == managed:
                kept.append(lines[index].strip())
        if off and path != managed:
            for index in off:
                lines[index] = MARK + lines[index]
            write[path] = "\n".join(lines) + "\n"

    option = f" [signed-by={signed_by}]" if signed_by else ""
    wanted = [(mirror, codename), (mirror, f"{codename}-updates")]
    if backports:
        wanted.append((mirror, f"{codename}-backports"))
    if security:
        wanted.append((security, f"{codename}-security"))
    body = [
        f"{kind}{option} {uri} {suite} {' '.join(components)}"
        for kind in sorted(types)
        for uri, suite in wanted
    ]
    if kept:
        body += ["# Other archives this file held:"] + kept
    new = HEADER + "\n".join(body) + "\n"
    if files.get(managed) != new:
        write[managed] = new
    return {"write": write, "disabled": disabled, "kept": kept}


def _field(line: str) -> str | None:
    if not line.strip() or line[0] in " \t#":
        return None
    return line.partition(":")[0].strip().lower()


def _join_suites(block: list) -> list:
    """``block`` with a ``Suites`` field's continuation lines folded into it."""
    out, in_suites = [], False
    for line in block:
        if in_suites and line[:1] in (" ", "\t") and line.strip():
            out[-1] += " " + line.strip()
            continue
        in_suites = _field(line) == "suites"
        out.append(line)
    return out
