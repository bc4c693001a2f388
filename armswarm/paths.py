"""Where the formula tree (``_modules/``, ``salt/``, ``pillar/`` …) lives.

In a source checkout (or an editable install) the tree is the repository itself; a wheel ships
it under ``armswarm/tree/``.
"""

from pathlib import Path

EXT_TYPES = ("modules", "states", "grains", "runners", "utils", "output")


def tree_root() -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package / "tree", package.parent):
        if (candidate / "_modules").is_dir() and (candidate / "salt").is_dir():
            return candidate
    raise RuntimeError(f"armswarm: no formula tree next to {package}")


def extension_dir(ext_type: str) -> Path:
    return tree_root() / f"_{ext_type}"


def file_roots(extensions_root: Path | None = None) -> list[str]:
    """file_roots for a master serving armswarm as a formula.

    ``salt/`` holds the SLS trees (``salt://armnode``), the tree root holds ``_modules/`` …
    so that ``saltutil.sync_all`` finds them at ``salt://_modules``. ``extensions_root`` is a
    directory made by :func:`link_extensions` (a checkout's root also holds .venv, .git …, which
    the master's fileserver would otherwise list).
    """
    root = tree_root()
    return [str(root / "salt"), str(extensions_root or root)]


def link_extensions(dest: Path) -> Path:
    """Make ``dest`` hold symlinks to the extension directories only; return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for ext_type in EXT_TYPES:
        source, link = extension_dir(ext_type), dest / f"_{ext_type}"
        if source.is_dir() and not link.is_symlink():
            link.symlink_to(source)
    return dest


def pillar_root() -> str:
    return str(tree_root() / "pillar")
