"""armswarm's modules load both ways a user installs them: pip (entry point) and file_roots."""

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
    # The shared layer is a package: it must be synced whole, not only top-level files.
    assert (extmods / "utils" / "armswarm_core" / "boards.py").is_file()
    assert (extmods / "utils" / "armswarm_core" / "__init__.py").is_file()


def test_example_pillar_renders(salt_cli, minion):
    # Salt 3008 masks pillar values in output unless asked.
    ret = salt_cli.run("pillar.get", "armswarm:swarm", "unmask=True", minion_tgt=minion.id)
    assert ret.returncode == 0, ret
    assert ret.data["managers"] == ["node1", "node2", "node3"]
    assert len(ret.data["managers"]) % 2 == 1
