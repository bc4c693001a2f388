"""The worked examples are well-formed: pillar layouts parse, stack files exist and load, image
trees build a graph. (tests/lab/test_examples.py deploys them.)"""

from pathlib import Path

import pytest
import yaml
from armswarm_core.build import build_dag
from armswarm_core.swarm import stacks, swarm_layout

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "pillar.sls").is_file())


def test_there_are_five():
    assert NAMES == ["hc1-rack", "mixed-compute", "rockpro64-single", "sopine-pool", "web-arm"]


@pytest.mark.parametrize("name", NAMES)
def test_example(name):
    pillar = yaml.safe_load((EXAMPLES / name / "pillar.sls").read_text())
    layout, errors, _ = swarm_layout.parse_layout(pillar["armswarm"]["swarm"])
    assert errors == [] and swarm_layout.check_counts(layout) == []
    for stack in pillar["armswarm"]["stacks"].values():
        rel = stack["compose"].removeprefix("salt://")
        assert rel.startswith(f"{name}/")
        text = (EXAMPLES / rel).read_text().replace("{{ registry }}", "reg:5000")
        text = text.replace("{{ tag }}", "latest")
        _, hashes = stacks.load_and_stamp(text)
        assert hashes
    source = (pillar["armswarm"].get("imagebuild") or {}).get("source")
    if source:
        graph = build_dag.load(EXAMPLES / source.removeprefix("salt://"), "registry.local.lan:5000")
        assert graph.depth() >= 2
