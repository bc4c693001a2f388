"""One vocabulary of CPU architecture names.

Every spelling (``uname -m``, Debian, Arch Linux ARM, Docker/OCI) maps onto one canonical name,
the kernel's: ``aarch64``, ``armv7``, ``armv6``, ``armv5``, ``x86_64``, ``x86``. The ``armnode``
grain reports it and image builds compare with it, so ``arch: [arm64]`` and ``arch: [aarch64]``
in an ``image.yaml`` both match a node whose ``uname -m`` says ``aarch64``.

Platforms (OCI's ``os/architecture[/variant]``): :data:`PLATFORMS` gives the platform an
architecture's images are published as (a board's platform is its architecture's),
:func:`platform` the one spelling of a platform string, :func:`build_args` BuildKit's automatic
platform arguments and :func:`matches` whether an image config is a platform.
"""

ALIASES = {
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv8": "aarch64",
    "armv7": "armv7",
    "armv7l": "armv7",
    "armv7hl": "armv7",
    "armv7h": "armv7",  # Arch Linux ARM
    "armhf": "armv7",  # Debian
    # armv8l = a 32-bit ARM userland/personality on an ARMv8 core: it runs armv7 binaries.
    "armv8l": "armv7",
    "armv6": "armv6",
    "armv6l": "armv6",
    "armel": "armv6",  # Debian's armel baseline is older, but its binaries run on armv6
    "armv5": "armv5",
    "armv5tel": "armv5",
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x86": "x86",
    "i686": "x86",
    "i586": "x86",
    "i386": "x86",
    "riscv64": "riscv64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}

# canonical name -> the OCI platform an image for it is published as
PLATFORMS = {
    "aarch64": "linux/arm64",
    "armv7": "linux/arm/v7",
    "armv6": "linux/arm/v6",
    "armv5": "linux/arm/v5",
    "x86_64": "linux/amd64",
    "x86": "linux/386",
    "riscv64": "linux/riscv64",
    "ppc64le": "linux/ppc64le",
    "s390x": "linux/s390x",
}
# the platform → the canonical architecture (one per platform)
ARCH_OF = {platform: arch for arch, platform in PLATFORMS.items()}
# Spellings of a platform that name one of PLATFORMS, as containerd normalises them: arm is
# arm/v7, arm64/v8 is arm64, aarch64 is arm64, x86_64 is amd64.
_PLATFORM_SPELLINGS = {
    "linux/arm": "linux/arm/v7",
    "linux/arm/7": "linux/arm/v7",
    "linux/arm/6": "linux/arm/v6",
    "linux/arm/5": "linux/arm/v5",
    "linux/arm64/v8": "linux/arm64",
    "linux/aarch64": "linux/arm64",
    "linux/x86_64": "linux/amd64",
    "linux/x86-64": "linux/amd64",
    "linux/i386": "linux/386",
}


def canonical(name) -> str:
    """The canonical name of any spelling; an unknown spelling comes back lower-cased."""
    spelled = str(name or "").strip().lower()
    return ALIASES.get(spelled, spelled)


def same(one, other) -> bool:
    """Whether two spellings name the same architecture."""
    return canonical(one) == canonical(other)


def oci_platform(name) -> str | None:
    """``linux/arm64``, ``linux/arm/v7`` … for a spelling, or None when it is unknown."""
    return PLATFORMS.get(canonical(name))


def platform(name) -> str | None:
    """The one spelling of an OCI platform (``linux/arm/v7``, ``linux/arm64`` …) for a
    platform string as users write it (``linux/arm``, ``linux/arm64/v8``, ``LINUX/ARM64``), or
    None when it is not a platform of :data:`PLATFORMS`."""
    if not isinstance(name, str):
        return None
    spelled = name.strip().lower()
    spelled = _PLATFORM_SPELLINGS.get(spelled, spelled)
    return spelled if spelled in ARCH_OF else None


def arch_of_platform(name) -> str:
    """The canonical architecture of a platform (``linux/arm/v7`` → ``armv7``), or ""."""
    return ARCH_OF.get(platform(name) or "", "")


def parts(name) -> tuple:
    """``(os, architecture, variant)`` of a platform as OCI and BuildKit spell them
    (``linux/arm64`` → ``("linux", "arm64", "")``)."""
    spelled = platform(name)
    if spelled is None:
        raise ValueError(f"{name!r} is not a known platform")
    os_, arch, *rest = spelled.split("/")
    return os_, arch, rest[0] if rest else ""


def build_args(target: str, build: str | None = None) -> dict:
    """The automatic platform arguments with BuildKit's values: TARGETPLATFORM, TARGETOS,
    TARGETARCH, TARGETVARIANT for the platform built for, BUILDPLATFORM, BUILDOS, BUILDARCH,
    BUILDVARIANT for the platform the build runs on (the target's when unknown)."""
    out = {}
    for prefix, name in (("TARGET", target), ("BUILD", build or target)):
        os_, arch, variant = parts(name)
        out[f"{prefix}PLATFORM"] = platform(name)
        out[f"{prefix}OS"] = os_
        out[f"{prefix}ARCH"] = arch
        out[f"{prefix}VARIANT"] = variant
    return out


PLATFORM_ARGS = tuple(build_args("linux/arm64"))


def matches(name, architecture, variant="", os_="linux") -> bool:
    """Whether an image config's ``os``/``architecture``/``variant`` is platform ``name``.
    An arm64 image may say variant ``v8`` or nothing; an arm image without a variant is
    taken as v7 (containerd's default)."""
    want_os, want_arch, want_variant = parts(name)
    arch = str(architecture or "").lower()
    got_variant = str(variant or "").lower()
    if (os_ or "linux").lower() != want_os or arch != want_arch:
        return False
    if want_arch == "arm64":
        return got_variant in ("", "v8")
    if want_arch == "arm":
        return (got_variant or "v7") == want_variant
    return got_variant == want_variant


def slug(name) -> str:
    """A platform as a tag part: ``linux/arm/v7`` → ``linux-arm-v7``."""
    return (platform(name) or str(name)).replace("/", "-")
