"""One vocabulary of CPU architecture names.

Every spelling (``uname -m``, Debian, Arch Linux ARM, Docker/OCI) maps onto one canonical name,
the kernel's: ``aarch64``, ``armv7``, ``armv6``, ``armv5``, ``x86_64``, ``x86``. The ``armnode``
grain reports it and image builds compare with it, so ``arch: [arm64]`` and ``arch: [aarch64]``
in an ``image.yaml`` both match a node whose ``uname -m`` says ``aarch64``.
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
}

# canonical name -> the OCI platform an image for it is published as
PLATFORMS = {
    "aarch64": "linux/arm64",
    "armv7": "linux/arm/v7",
    "armv6": "linux/arm/v6",
    "armv5": "linux/arm/v5",
    "x86_64": "linux/amd64",
    "x86": "linux/386",
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
