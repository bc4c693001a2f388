"""docs/architecture.rst names every package, core module and loader module (it cannot go stale
silently), and loader modules never import each other."""

import ast
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


@pytest.mark.parametrize("module", _core_modules())
def test_core_module_is_on_the_page(module):
    package, name = module.split("/")
    assert f"``{package}``" in PAGE, package
    assert f"``{name}``" in PAGE, module


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
