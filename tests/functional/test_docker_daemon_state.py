"""The daemon.json state through Salt's real loader, writing a file of its own (``restart:
false``: this machine's dockerd is not touched): a typo is refused before anything is
written, then check → apply → re-apply → check."""

import json

import pytest
from armswarm_core.node import docker_daemon
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


# What dietpi/dietpi-software (MichaIng/DietPi) writes when it installs Docker.
DIETPI = """{
    "data-root": "/mnt/dietpi_userdata/docker-data",
    "log-driver": "journald",
    "log-level": "warn",
    "debug": false
}
"""


def test_merged_into_the_file_an_installer_left(tmp_path, monkeypatch):
    monkeypatch.setattr(docker_daemon, "service_argv", lambda: [], raising=False)
    states = load_states(tmp_path)
    states.opts["test"] = False
    path = tmp_path / "daemon.json"
    path.write_text(DIETPI)
    apply = states["armnode.docker_daemon_config"]
    ret = apply(name=str(path), daemon={**GOOD, "log-driver": "json-file"}, restart=False)
    assert ret["result"] is True, ret
    # DietPi's data-root (the node's images, volumes, swarm state) and log level stay
    assert json.loads(path.read_text()) == {
        "data-root": "/mnt/dietpi_userdata/docker-data",
        "log-level": "warn",
        "debug": False,
        **GOOD,
        "log-driver": "json-file",
    }
    # ours come and go with the pillar; DietPi's stay
    apply(name=str(path), daemon={**GOOD, "labels": ["x=y"], "debug": True}, restart=False)
    assert json.loads(path.read_text())["debug"] is True
    again = apply(name=str(path), daemon={"storage-driver": "overlay2"}, restart=False)
    assert again["result"] is True and again["changes"]
    # (DietPi's journald and debug were set over by ours: dropped, they are dockerd's default)
    assert json.loads(path.read_text()) == {
        "data-root": "/mnt/dietpi_userdata/docker-data",
        "log-level": "warn",
        "storage-driver": "overlay2",
    }


def test_a_file_dockerd_cannot_read_is_refused_not_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(docker_daemon, "service_argv", lambda: [], raising=False)
    states = load_states(tmp_path)
    path = tmp_path / "daemon.json"
    apply = states["armnode.docker_daemon_config"]
    # DietPi's G_CONFIG_INJECT into an existing "{\n}": a trailing comma; a comment by hand
    for text in (
        '{\n    "data-root": "/mnt/dietpi_userdata/docker-data",\n}\n',
        '{\n  // the SSD\n  "data-root": "/srv/ssd/docker"\n}\n',
    ):
        path.write_text(text)
        for test in (True, False):
            states.opts["test"] = test
            ret = apply(name=str(path), daemon=GOOD, restart=False)
            assert ret["result"] is False and ret["changes"] == {}, ret
            assert ret["comment"].startswith(f"{path}: dockerd cannot read it"), ret
            assert path.read_text() == text
    # an empty file (dockerd 20.10 does not start with it) or a BOM one is rewritten clean
    for data in (b"", b"\xef\xbb\xbf{}\n"):
        path.write_bytes(data)
        states.opts["test"] = False
        assert apply(name=str(path), daemon=GOOD, restart=False)["result"] is True
        assert path.read_bytes() == docker_daemon.render(GOOD).encode()


def test_a_key_the_unit_gives_as_a_flag_is_refused(tmp_path, monkeypatch):
    argv = ["/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock"]
    monkeypatch.setattr(docker_daemon, "service_argv", lambda: argv, raising=False)
    states = load_states(tmp_path)
    states.opts["test"] = False
    path = tmp_path / "daemon.json"
    ret = states["armnode.docker_daemon_config"](
        name=str(path), daemon={**GOOD, "hosts": ["unix:///run/docker.sock"]}, restart=False
    )
    assert ret["result"] is False and "armnode:docker:daemon:hosts:" in ret["comment"]
    assert not path.exists()
