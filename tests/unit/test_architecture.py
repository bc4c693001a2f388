"""docs/architecture.rst names every package, core module and loader module (it cannot go stale
silently), and loader modules never import each other."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "_utils" / "armswarm_core"
PAGE = (ROOT / "docs" / "architecture.rst").read_text(encoding="utf-8")
LOADER_DIRS = ("_modules", "_states", "_grains", "_runners")


def _core_modules():
    return sorted(
        p.relative_to(CORE).with_suffix("").as_posix()
        for p in CORE.glob("*/*.py")
        if p.name != "__init__.py"
    )


def _loader_modules():
    return sorted(
        p.relative_to(ROOT).as_posix() for d in LOADER_DIRS for p in (ROOT / d).glob("*.py")
    )


def test_there_is_something_to_check():
    assert len(_core_modules()) > 30
    assert len(_loader_modules()) > 10


def _package_rows() -> dict:
    """``{package: [modules]}`` from the package table (``* - ``pkg``'' then ``- ``mod``, …``)."""
    rows, package, cells = {}, None, []
    for line in PAGE.splitlines():
        head = re.match(r"^   \* - ``(\w+)``$", line)
        if head:
            package, cells = head.group(1), []
            rows[package] = cells
        elif package and re.match(r"^     - ", line) and not cells:
            cells.append(line)
        elif package and cells and len(cells) == 1 and re.match(r"^       ``", line):
            cells.append(line)
        elif package and cells:
            package = None
    return {p: re.findall(r"``(\w+)``", " ".join(c)) for p, c in rows.items()}


@pytest.mark.parametrize("module", _core_modules())
def test_core_module_is_in_its_package_row(module):
    package, name = module.split("/")
    assert name in _package_rows().get(package, []), module


def test_the_table_names_only_modules_that_exist():
    rows = _package_rows()
    assert set(rows) == {p.parent.name for p in CORE.glob("*/__init__.py")}
    listed = {f"{p}/{m}" for p, mods in rows.items() for m in mods}
    assert listed == set(_core_modules())


@pytest.mark.parametrize("path", _loader_modules())
def test_loader_module_is_on_the_page(path):
    assert f"``{path}``" in PAGE or f"``{path.rsplit('.', 1)[0]}" in PAGE, path


@pytest.mark.parametrize("path", _loader_modules())
def test_loader_modules_import_only_the_core(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in {"_modules", "_states", "_grains", "_runners"}
            assert not name.startswith("salt.loaded"), name


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")))
def test_core_never_imports_loader_modules_or_renames(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("armswarm_core"):
            assert all(a.asname is None for a in node.names), f"{path}: renamed import"
        if isinstance(node, ast.Name) and node.id.startswith("__") and node.id.endswith("__"):
            assert node.id not in {"__salt__", "__opts__", "__pillar__", "__grains__"}, path
