"""Where the formula tree (``_modules/``, ``salt/``, ``pillar/`` …) lives.

In a source checkout (or an editable install) the tree is the repository itself; a wheel ships
it under ``armswarm/tree/``.
"""

from pathlib import Path

EXT_TYPES = ("modules", "states", "grains", "runners", "utils")


def tree_root() -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package / "tree", package.parent):
        if (candidate / "_modules").is_dir() and (candidate / "salt").is_dir():
            return candidate
    raise RuntimeError(f"armswarm: no formula tree next to {package}")


def extension_dir(ext_type: str) -> Path:
    return tree_root() / f"_{ext_type}"


def file_roots() -> list[str]:
    """file_roots for a master serving armswarm as a formula.

    ``salt/`` holds the SLS trees (``salt://armnode``), the tree root holds ``_modules/`` …
    so that ``saltutil.sync_all`` finds them at ``salt://_modules``.
    """
    root = tree_root()
    return [str(root / "salt"), str(root)]


def pillar_root() -> str:
    return str(tree_root() / "pillar")
