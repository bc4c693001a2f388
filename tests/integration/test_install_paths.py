"""armswarm's modules load both ways a user installs them: pip (entry point) and file_roots."""

import subprocess
import sys
from pathlib import Path


def test_grain_loads_through_the_pip_entry_point(salt_cli, minion):
    # No sync has happened: the grain comes from the installed package's salt.loader entry point.
    ret = salt_cli.run("grains.get", "armnode", minion_tgt=minion.id)
    assert ret.returncode == 0, ret
    assert ret.data["board"] == "rockpro64"
    assert ret.data["big_cores"] == [4, 5]


def test_sync_all_from_file_roots_ships_the_shared_layer(salt_cli, minion):
    ret = salt_cli.run("saltutil.sync_all", minion_tgt=minion.id)
    assert ret.returncode == 0, ret
    assert "grains.armnode" in ret.data["grains"]
    extmods = Path(minion.config["extension_modules"])
    # The shared layer is a package of sub-packages: it must be synced whole.
    synced = extmods / "utils" / "armswarm_core"
    source = Path(__file__).resolve().parents[2] / "_utils" / "armswarm_core"
    want = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.py"))
    got = sorted(p.relative_to(synced).as_posix() for p in synced.rglob("*.py"))
    assert "node/boards.py" in want
    assert got == want
    # … and the synced copy imports on its own, every domain (no pip-installed copy involved).
    domains = sorted(p.parent.name for p in source.glob("*/__init__.py"))
    code = (
        "import sys, importlib; sys.path.insert(0, sys.argv[1])\n"
        "for name in sys.argv[2:]:\n"
        "    mod = importlib.import_module(name)\n"
        "    assert mod.__file__.startswith(sys.argv[1]), mod.__file__\n"
    )
    modules = [f"armswarm_core.{p[:-3].replace('/', '.')}" for p in want if "__init__" not in p]
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code, str(extmods / "utils"), *modules],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(domains) >= 6


def test_example_pillar_renders(salt_cli, minion):
    # Salt 3008 masks pillar values in output unless asked.
    ret = salt_cli.run("pillar.get", "armswarm:swarm", "unmask=True", minion_tgt=minion.id)
    assert ret.returncode == 0, ret
    assert ret.data["managers"] == ["node1", "node2", "node3"]
    assert len(ret.data["managers"]) % 2 == 1
