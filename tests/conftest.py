"""Markers follow the directory (tests/unit → unit …), so `pytest -m unit` runs a quick subset."""

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "functional", "integration", "lab")


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = Path(item.fspath).resolve().relative_to(TESTS)
        if rel.parts and rel.parts[0] in KINDS:
            item.add_marker(getattr(pytest.mark, rel.parts[0]))
