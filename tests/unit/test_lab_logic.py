"""The lab's own logic that needs no daemons: reading salt's JSON output, and the main job
refusing to run when a step's file is missing from the tree."""

import json
import subprocess

import pytest

from armswarm import paths
from armswarm.lab import cluster
from armswarm.lab.cluster import Lab, LabError, json_returns

STEP_FILES = ("salt/armnode/init.sls", "salt/swarm/init.sls", "_runners/imagebuild.py")


def test_one_document_per_minion_is_merged():
    # What `salt --out=json` prints without --static: each minion's return as it arrives.
    text = '{\n    "node1": true\n}\n{\n    "node2": "Minion did not return. [No response]"\n}\n'
    assert json_returns(text) == {"node1": True, "node2": "Minion did not return. [No response]"}


def test_a_runner_return_stays_as_it_is():
    assert json_returns('[\n    "a",\n    "b"\n]\n') == ["a", "b"]
    assert json_returns("") == {}


def test_several_documents_that_are_not_minion_returns_are_refused():
    with pytest.raises(LabError, match="one JSON object per minion"):
        json_returns('{"node1": true}\n["oops"]\n')


def _tree(tmp_path, missing):
    for rel in STEP_FILES:
        if rel != missing:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text("")
    return tmp_path


@pytest.mark.parametrize("missing", STEP_FILES)
def test_main_job_with_a_step_file_missing_fails_before_running_anything(
    tmp_path, monkeypatch, missing
):
    monkeypatch.setattr(cluster.paths, "tree_root", lambda: _tree(tmp_path, missing))
    ran = []
    lab = Lab(name="armswarm-unit", progress=lambda message: None)
    monkeypatch.setattr(lab, "run_salt", lambda *argv, **kwargs: ran.append(argv))
    with pytest.raises(LabError, match=f"needs {tmp_path / missing}"):
        lab.main_job()
    assert ran == []


def test_main_job_runs_every_step_of_the_tree(monkeypatch, tmp_path):
    # This checkout ships every step: none may be found missing.
    assert all((paths.tree_root() / rel).is_file() for rel in STEP_FILES)
    ran = []
    lab = Lab(name="armswarm-unit", progress=lambda message: None)
    monkeypatch.setattr(cluster, "STATE_ROOT", tmp_path)
    lab.state_dir = tmp_path / lab.name

    def run_salt(*argv, **kwargs):
        ran.append(tuple(a for a in argv if a != "--out=json")[:3])
        return subprocess.CompletedProcess(argv, 0, stdout="{}", stderr="")

    monkeypatch.setattr(lab, "run_salt", run_salt)
    lab.main_job()
    assert ran == [
        ("salt", "*", "state.apply"),
        ("salt-run", "state.orch", "swarm.init"),
        ("salt-run", "imagebuild.run"),
    ]
    assert lab.main_job_log.read_text().count("(exit 0)") == 3


def test_a_failing_step_names_the_failing_states_and_stops(monkeypatch, tmp_path):
    ran = []
    lab = Lab(name="armswarm-unit", progress=lambda message: None)
    lab.state_dir = tmp_path / lab.name
    ret = {
        "node1": {
            "pkg_|-armnode-packages-installed_|-armnode-packages-installed_|-installed": {
                "__id__": "armnode-packages-installed",
                "result": False,
                "comment": "E: Unable to locate package htopp",
                "changes": {},
            },
            "file_|-x_|-/etc/x_|-managed": {"__id__": "x", "result": True, "changes": {"a": 1}},
        }
    }

    def run_salt(*argv, **kwargs):
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 1, stdout=json.dumps(ret), stderr="")

    monkeypatch.setattr(lab, "run_salt", run_salt)
    with pytest.raises(LabError) as err:
        lab.main_job()
    assert len(ran) == 1  # the swarm and the builds do not run after a failed armnode
    message = str(err.value)
    assert "node1: armnode-packages-installed (pkg.installed)" in message
    assert "Unable to locate package htopp" in message
    assert str(lab.main_job_log) in message
    assert "Unable to locate package htopp" in lab.main_job_log.read_text()


def test_a_machine_without_a_running_dockerd_has_no_lab_up(monkeypatch, tmp_path):
    # A freshly booted machine: the docker socket exists or not, but nothing answers on it.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-dockerd.sock")
    lab = Lab(name="armswarm-nodockerd", subnet="10.77.250.0/24")
    assert lab.is_up() is False
    status = lab.status()
    assert status["up"] is False
    assert {node["state"] for node in status["nodes"]} == {"absent"}
    assert len(status["nodes"]) == len(lab.nodes) > 0
