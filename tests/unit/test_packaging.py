"""Packaging: the loader entry point, the formula paths, and setup.cfg shipping the whole tree."""

import configparser
from pathlib import Path

import pytest

from armswarm import loader, paths

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LOADER_TYPES = {"modules", "states", "grains", "runners", "utils", "output"}


def _setup_cfg():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.optionxform = str  # keep keys as written (package names)
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return cfg


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _mapping(value: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in _lines(value))
    return {key.strip(): val.strip() for key, val in pairs}


def _tree_dirs() -> list[str]:
    """The repository's top-level ``_*`` extension directories, plus ``salt`` and ``pillar``."""
    ext = sorted(
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and p.name.startswith("_") and not p.name.startswith("__")
    )
    return [*ext, "salt", "pillar"]


def test_extension_dirs_cover_every_loader_type():
    dirs = loader.extension_dirs()
    assert set(dirs) == LOADER_TYPES
    for ext_type, value in dirs.items():
        # Salt rejects a bare string: the value must be a list of directories.
        assert isinstance(value, list), ext_type
        assert len(value) == 1, ext_type
        path = Path(value[0])
        assert path.is_dir(), path
        assert path.name == f"_{ext_type}"
        assert path.parent == paths.tree_root()


def test_every_extension_directory_is_a_loader_type():
    """A new ``_engines/`` (say) is useless until armswarm.paths.EXT_TYPES exposes it."""
    ext_dirs = [name for name in _tree_dirs() if name.startswith("_")]
    assert ext_dirs, "no _* directories found next to setup.cfg"
    assert {name[1:] for name in ext_dirs} <= set(paths.EXT_TYPES)


def test_file_roots_serve_formulas_and_extension_dirs():
    sls_root, ext_root = (Path(p) for p in paths.file_roots())
    assert sls_root == paths.tree_root() / "salt"
    assert ext_root == paths.tree_root()
    assert sls_root.is_dir()
    # saltutil.sync_all looks for salt://_modules …: they must sit in the second root.
    for ext_type in paths.EXT_TYPES:
        assert (ext_root / f"_{ext_type}").is_dir(), ext_type
    assert Path(paths.pillar_root()) == paths.tree_root() / "pillar"


@pytest.mark.parametrize("dirname", _tree_dirs())
def test_setup_cfg_ships_tree_directory(dirname):
    options = _setup_cfg()["options"]
    package = f"armswarm.tree.{dirname}"
    assert package in _lines(options["packages"])
    assert _mapping(options["package_dir"]).get(package) == dirname


def test_setup_cfg_packages_exist():
    """Every listed package has a directory (setuptools fails the build otherwise)."""
    options = _setup_cfg()["options"]
    package_dir = _mapping(options["package_dir"])
    for package in _lines(options["packages"]):
        # setuptools maps a sub-package through its nearest listed parent.
        parent = max(
            (p for p in package_dir if package == p or package.startswith(p + ".")),
            key=len,
            default="",
        )
        rest = package[len(parent) :].lstrip(".").replace(".", "/")
        directory = "/".join(x for x in (package_dir.get(parent, ""), rest) if x)
        assert (ROOT / directory).is_dir(), f"{package} → {directory}"


def test_setup_cfg_ships_armswarm_core_top_level():
    options = _setup_cfg()["options"]
    assert "armswarm_core" in _lines(options["packages"])
    assert _mapping(options["package_dir"])["armswarm_core"] == "_utils/armswarm_core"


@pytest.mark.parametrize(
    ("package", "dirname"),
    [(f"armswarm.tree.{name}", name) for name in _tree_dirs()] + [("armswarm.lab", "armswarm/lab")],
)
def test_package_data_covers_nested_files(package, dirname):
    """Top-level ``*.py`` files ship as modules; anything else needs a package_data glob."""
    globs = _setup_cfg()["options.package_data"].get(package, "")
    base = ROOT / dirname
    shipped = {
        path
        for pattern in (g.strip() for g in globs.split(","))
        if pattern
        for path in base.glob(pattern)
        if path.is_file()
    }
    nested = {
        path
        for path in base.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not (path.parent == base and path.suffix == ".py")
        and path.name != ".keep"
    }
    missing = sorted(p.relative_to(ROOT).as_posix() for p in nested - shipped)
    assert not missing, f"setup.cfg package_data[{package}] misses: {missing}"
