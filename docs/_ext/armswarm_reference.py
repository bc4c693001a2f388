"""Generate the module reference pages of the armswarm docs at build time.

One page per Python file of the shared layer (``_utils/armswarm_core/``) and of each Salt loader
directory (``_modules/``, ``_states/``, ``_grains/``, ``_runners/``), plus one index page per
group, all under ``reference/_generated/`` (gitignored). A module added to the tree shows up in
the docs without touching them; an empty directory gets an index page that says so.

Loader modules are imported by autodoc as ``_modules.<file>``, ``_states.<file>`` …: the
repository root is on ``sys.path`` and those directories are implicit namespace packages, so an
execution and a state module with the same file name do not collide. Page titles use the name
Salt calls the module by (``__virtualname__`` when the file sets one, read with ``ast``).
"""

import ast
from pathlib import Path

GENERATED = Path("reference") / "_generated"

# (directory, page name, title, what the module's functions are called as)
LOADER_GROUPS = (
    ("_modules", "modules", "Execution modules", "execution module"),
    ("_states", "states", "State modules", "state module"),
    ("_grains", "grains", "Grains modules", "grains module"),
    ("_runners", "runners", "Runner modules", "runner module"),
)


def _virtualname(path: Path) -> str:
    """``__virtualname__`` assigned at the top level of ``path``, else the file name."""
    for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__virtualname__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return path.stem


def _heading(title: str, char: str = "=") -> str:
    return f"{title}\n{char * len(title)}\n"


def _module_page(title: str, modname: str, source: str) -> str:
    return f"{_heading(title)}\nSource: ``{source}``\n\n.. automodule:: {modname}\n"


def _index_page(title: str, intro: str, entries: list[str], empty: str) -> str:
    text = f"{_heading(title)}\n{intro}\n\n"
    if not entries:
        return text + f"{empty}\n"
    lines = "\n".join(f"   {entry}" for entry in entries)
    return text + f".. toctree::\n   :maxdepth: 1\n\n{lines}\n"


def _python_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.py") if p.is_file())


def pages(tree: Path) -> dict[Path, str]:
    """Map of page path (relative to the docs source dir) to its reStructuredText."""
    out: dict[Path, str] = {}

    core = tree / "_utils" / "armswarm_core"
    entries = []
    core_files = sorted(p for p in core.rglob("*.py") if "__pycache__" not in p.parts)
    for path in core_files:
        parts = path.relative_to(core).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modname = ".".join(("armswarm_core", *parts))
        entries.append(f"core/{modname}")
        source = path.relative_to(tree).as_posix()
        out[GENERATED / "core" / f"{modname}.rst"] = _module_page(f"``{modname}``", modname, source)
    out[GENERATED / "core.rst"] = _index_page(
        "Shared layer: armswarm_core",
        "Plain Python used by every loader module (no Salt dunders; functions take ``opts`` "
        "and ``pillar`` explicitly). Loader modules ``import armswarm_core``; see "
        ":doc:`/install` for how that import is satisfied.",
        entries,
        "The shared layer has no modules yet.",
    )

    for dirname, page, title, kind in LOADER_GROUPS:
        entries = []
        for path in _python_files(tree / dirname):
            modname = f"{dirname}.{path.stem}"
            entries.append(f"{page}/{path.stem}")
            out[GENERATED / page / f"{path.stem}.rst"] = _module_page(
                f"``{_virtualname(path)}`` {kind}", modname, f"{dirname}/{path.name}"
            )
        out[GENERATED / f"{page}.rst"] = _index_page(
            title,
            f"Generated from the docstrings of ``{dirname}/*.py``.",
            entries,
            f"``{dirname}/`` has no modules yet.",
        )
    return out


def write_pages(srcdir: Path, tree: Path) -> None:
    """Write the generated pages, rewriting only changed files and removing stale ones."""
    wanted = {srcdir / rel: text for rel, text in pages(tree).items()}
    root = srcdir / GENERATED
    if root.is_dir():
        for old in root.rglob("*.rst"):
            if old not in wanted:
                old.unlink()
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def _builder_inited(app) -> None:
    tree = Path(app.config.armswarm_tree or Path(app.srcdir).parent)
    write_pages(Path(app.srcdir), tree)


def setup(app):
    app.add_config_value("armswarm_tree", None, "env")
    app.connect("builder-inited", _builder_inited)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
