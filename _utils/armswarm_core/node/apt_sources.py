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


def _last(uri: str) -> str:
    """The last part of ``uri``'s path, lower case (``debian`` for ``http://h/debian/``)."""
    try:
        path = urlsplit(uri.strip()).path
    except ValueError:  # a broken IPv6 host in an image's file: no name to go by
        return ""
    return path.rstrip("/").rsplit("/", 1)[-1].lower()


def foreign_archive(uri: str) -> str | None:
    """The name of the non-Debian distribution whose archive ``uri`` is, else None."""
    host = _host(uri)
    path = _last(uri)
    for part, what in _FOREIGN:
        if part in host:
            return what
    if path in ("ubuntu", "ubuntu-ports"):
        return "Ubuntu"
    if path == "raspbian":
        return _FOREIGN[0][1]
    return None


# Files an image lists Debian's archive in, in sources.list.d (besides the managed file).
_IMAGE_FILES = ("debian.sources", "debian.list", "moved-from-main.sources")
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
    last = _last(uri)
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
    """deb822 paragraphs as apt reads them: ``{"start", "end", "fields": {lower name: value},
    "problems": [...]}``, lines ``start..end-1``.

    As apt's parser does (apt 2.6 and 3.0): a comment is a line *starting* with ``#``; a
    paragraph ends at an empty line only, so a line of spaces or tabs continues the field
    before it; continuation lines (a leading blank) join their field's value. Where that
    reading differs from the file's look, ``problems`` says so (an indented ``#`` line is part
    of a value, a field set twice across a line of spaces: apt takes the later value), so that
    such a paragraph is never edited by guess."""
    lines = text.splitlines()
    out, current, last = [], None, None
    for index, line in enumerate(lines + [""]):
        if line == "":
            if current:
                current["end"] = index
                out.append(current)
            current, last = None, None
            continue
        if current is None:
            if not line.strip():
                continue  # blanks before a paragraph: apt skips them
            current = {"start": index, "fields": {}, "names": {}, "problems": [], "blank": None}
        if line.startswith("#"):
            continue
        if line[0] in " \t":
            value = line.strip()
            if not value:
                current["blank"] = current["blank"] or index + 1
                continue
            if last is None:
                raise ArmswarmError(f"line {index + 1} continues no field: {value!r}")
            if value.startswith("#"):
                current["problems"].append(
                    f"line {index + 1} is indented, so apt reads {value!r} as part of "
                    f"{current['names'][last]}, not as a comment (a comment starts the line)"
                )
            current["fields"][last] += " " + value
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ArmswarmError(f"line {index + 1} is not a deb822 field: {line.strip()!r}")
        last = name.strip().lower()
        if last in current["fields"]:
            blank = current["blank"]
            why = (
                f" (line {blank} holds only blanks: to apt that does not end a paragraph, an"
                " empty line does)"
                if blank
                else ""
            )
            current["problems"].append(
                f"{name.strip()} is set twice in one paragraph{why}; apt takes the value on "
                f"line {index + 1}"
            )
        current["names"][last] = name.strip()
        current["fields"][last] = value.strip()
    return out


def _enabled(fields: dict) -> bool:
    """``Enabled`` as apt reads it (StringToBool): off for no, false, without, off, disable
    (any case), 0 and an empty value (strtol takes all of ""); anything else, or no field, is
    on."""
    if fields.get("enabled") is None:
        return True
    value = fields["enabled"].strip().lower()
    return not (
        value in ("", "no", "false", "without", "off", "disable")
        or re.fullmatch(r"[+-]?(0x)?0+", value)
    )


_KEY_BLOCK = "-----BEGIN PGP PUBLIC KEY BLOCK-----"


def _deb822_signed_by(fields: dict) -> str | None:
    """A paragraph's ``Signed-By`` as a one-line ``signed-by=`` value: its keyrings and
    fingerprints (separated by blanks or commas in deb822) joined by commas; None when
    empty. An embedded key (a whole OpenPGP block) has no one-line form: ``""``."""
    value = fields.get("signed-by", "")
    if _KEY_BLOCK in value:
        return ""
    return ",".join(p for p in re.split(r"[\s,]+", value) if p) or None


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
        return parsed.path.startswith("/")  # apt and pacman read an absolute path only
    return parsed.scheme in ("http", "https", "ftp") and bool(parsed.netloc)


def shown(uri: str) -> str:
    """The URL as a message may show it: a user and password in it (``user:pw@``) are left
    out, however they are spelled (a ``/``, ``?`` or ``@`` a password should have encoded
    still hides all up to the last ``@``)."""
    scheme, sep, rest = str(uri).partition("://")
    if not sep or "@" not in rest:
        return str(uri)
    return f"{scheme}://…@{rest.rsplit('@', 1)[1]}"


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
    write, disabled, kept, kept_lines = {}, {}, [], []
    types, signed_by, backports = {"deb"}, None, False

    def debian(path, uri, parts):
        # The image's Debian file: apt's modernize-sources names it debian.sources (or
        # moved-from-main.sources before the first update, when it has no origin yet).
        image_file = path == managed or path.rsplit("/", 1)[-1] in _IMAGE_FILES
        return is_debian_archive(uri, mirrors, image_file, parts)

    def refuse_foreign(path, uri, suites):
        # Only the archive of this release: a PPA built for some Ubuntu release may stay.
        what = foreign_archive(uri)
        if what and set(suites) & replaced:
            raise ArmswarmError(
                f"{path} installs packages from {what} ({shown(uri)}): a Debian mirror in its "
                "place "
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
                where = f"{path}: the paragraph at line {stanza['start'] + 1}"
                if len(ours) != len(uris):
                    raise ArmswarmError(
                        f"{where} lists Debian's archive with others in one URIs field "
                        f"({' '.join(map(shown, uris))}): split it, then the mirror can replace "
                        "the Debian part"
                    )
                if stanza["problems"]:
                    raise ArmswarmError(
                        f"{where} does not read as it looks: {'; '.join(stanza['problems'])}."
                        " Not edited by guess: correct it, then the mirror can replace it"
                    )
                key = _deb822_signed_by(fields)
                if key == "":
                    raise ArmswarmError(
                        f"{where} holds Debian's key itself in Signed-By (an embedded OpenPGP "
                        f"key block): a one-line entry in {managed} cannot carry it. Save the "
                        "block to a file (say /etc/apt/keyrings/debian.asc) and name that "
                        "file in Signed-By, then the mirror can replace the paragraph"
                    )
                types |= set(fields.get("types", "deb").split())
                signed_by = signed_by or key
                backports = backports or f"{codename}-backports" in hit
                rest = [s for s in suites if s not in replaced]
                what = f"{' '.join(map(shown, uris))} {' '.join(hit)}"
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
                    disabled.setdefault(path, []).append(f"{shown(uri)} {suite}")
            elif path == managed:
                kept_lines.append(lines[index].strip())
                kept.append(kept_lines[-1].replace(uri, shown(uri), 1))
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
    if kept_lines:
        body += ["# Other archives this file held:"] + kept_lines
    new = HEADER + "\n".join(body) + "\n"
    if files.get(managed) != new:
        write[managed] = new
    return {"write": write, "disabled": disabled, "kept": kept}


def _field(line: str) -> str | None:
    if not line.strip() or line[0] in " \t#":
        return None
    return line.partition(":")[0].strip().lower()


def _join_suites(block: list) -> list:
    """``block`` with a ``Suites`` field's continuation lines folded into it (across comment
    lines, which apt drops before it reads the field, and lines of blanks)."""
    out, suites_at = [], None
    for line in block:
        if suites_at is not None and line[:1] in (" ", "\t"):
            if line.strip():
                out[suites_at] += " " + line.strip()
            continue
        if suites_at is not None and line.startswith("#"):
            out.append(line)
            continue
        suites_at = len(out) if _field(line) == "suites" else None
        out.append(line)
    return out
