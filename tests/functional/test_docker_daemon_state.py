"""The daemon.json state through Salt's real loader, writing a file of its own (``restart:
false``: this machine's dockerd is not touched): a typo is refused before anything is
written, then check → apply → re-apply → check."""

import json

import pytest
from loaders import load_states

pytestmark = pytest.mark.functional

GOOD = {"storage-driver": "overlay2", "log-opts": {"max-size": "10m"}, "labels": ["a=b"]}


def test_checked_then_written_once(tmp_path):
    states = load_states(tmp_path)
    path = tmp_path / "daemon.json"
    path.write_text('{"storage-driver": "overlay2"}\n')
    before = path.read_text()
    for test in (True, False):
        states.opts["test"] = test
        bad = states["armnode.docker_daemon_config"](
            name=str(path), daemon={**GOOD, "storage-drivr": "vfs"}, restart=False
        )
        assert bad["result"] is False and bad["changes"] == {}
        assert "armnode:docker:daemon:storage-drivr" in bad["comment"]
        assert path.read_text() == before
    results = []
    for test in (True, False, False, True):
        states.opts["test"] = test
        results.append(
            states["armnode.docker_daemon_config"](name=str(path), daemon=GOOD, restart=False)
        )
    check, apply, again, recheck = results
    assert check["result"] is None and check["changes"]["restart"] == "none"
    assert apply["result"] is True and apply["changes"]
    assert json.loads(path.read_text()) == GOOD
    assert again["result"] is True and again["changes"] == {}
    assert recheck["result"] is True and recheck["changes"] == {}
    states.opts["test"] = False
    typed = states["armnode.docker_daemon_config"](name=str(path), daemon=GOOD, restart="no")
    assert typed["result"] is False and "restart: must be true or false" in typed["comment"]
