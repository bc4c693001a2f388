"""Markers follow the directory (tests/unit → unit …), so `pytest -m unit` runs a quick subset."""

import logging
import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "functional", "integration", "lab")


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = Path(item.fspath).resolve().relative_to(TESTS)
        if rel.parts and rel.parts[0] in KINDS:
            item.add_marker(getattr(pytest.mark, rel.parts[0]))


def pytest_unconfigure(config):
    # Salt's deferred console handler flushes its buffer at exit, after pytest closed the
    # captured stderr: that prints pages of "--- Logging error ---". Its records were daemon
    # debug output already in the daemons' own logs; send them nowhere.
    for handler in logging.root.handlers:
        if type(handler).__name__ == "DeferredStreamHandler":
            handler.stream = open(os.devnull, "w")  # noqa: SIM115
