"""Flash-friendly logging: compressed rotation."""

import re


def enable_logrotate_compress(text: str) -> str:
    """``#compress`` uncommented; a global ``compress`` added when there is none at all."""
    if re.search(r"^\s*compress\s*$", text, re.M):
        return text
    if re.search(r"^#\s*compress\s*$", text, re.M):
        return re.sub(r"^#\s*compress\s*$", "compress", text, count=1, flags=re.M)
    return "compress\n" + text
