"""The lab's own logic that needs no daemons: reading salt's JSON output, and the main job
refusing to run when a step's file is missing from the tree."""

import json
import subprocess
from pathlib import Path

import pytest

from armswarm import paths
from armswarm.lab import binfmt, cluster
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


def test_each_board_gets_its_cpu_share_for_what_its_dockerd_runs(monkeypatch, tmp_path):
    lab = Lab(name="armswarm-unit", progress=lambda message: None)
    monkeypatch.setattr(Lab, "_minion_keys", lambda self, node: ("PRIV", "PUB"))
    monkeypatch.setattr(Lab, "ca_file", tmp_path / "ca.crt", raising=False)
    (tmp_path / "ca.crt").write_text("CA")
    quotas = {}
    for node in lab.nodes:
        files = lab._node_files(node)
        unit = files["etc/systemd/system/docker.service.d/armswarm-lab-cpu.conf"]
        assert "Environment=DOCKER_OPTS=--cgroup-parent=/armswarm-board" in unit
        quotas[node.board] = int(unit.split("armswarm-lab-cpu ")[1].split()[0])
        script, mode = files["usr/local/sbin/armswarm-lab-cpu"]
        assert mode == 0o755 and "cpu.cfs_quota_us" in script
    # µs of CPU per 100 ms: the SOPINE gets half a CPU, a RockPro64 1.15
    assert quotas == {
        "odroid-hc1": 100000,
        "rockpro64": 115000,
        "rockpro64-extlinux": 115000,
        "sopine": 50000,
        "rpi4": 80000,
    }


def test_binfmt_lines_come_from_qemu_user_static_with_fix_binary(tmp_path):
    real = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if real.exists():  # Debian's own file, as installed by scripts/setup.sh
        line = binfmt.handler_line("qemu-aarch64")
        assert line.startswith(":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02")
        assert "F" in line.rsplit(":", 1)[1]
    interp = tmp_path / "qemu-arm-static"
    interp.write_text("")
    # a handler line without F (binfmt-support's style) gets it: nodes' containers need it
    (tmp_path / "qemu-arm.conf").write_text(
        f"# comment\n:qemu-arm:M::\\x7fELF\\x01:\\xff\\xff\\xff\\xff\\xff:{interp}:OC\n"
    )
    assert binfmt.handler_line("qemu-arm", tmp_path).endswith(f":{interp}:OCF")
    with pytest.raises(binfmt.BinfmtError, match="install qemu-user-static"):
        binfmt.handler_line("qemu-aarch64", tmp_path)
    (tmp_path / "qemu-aarch64.conf").write_text(":qemu-arm:M::x:y:/nonexistent:F\n")
    with pytest.raises(binfmt.BinfmtError, match="not a binfmt_misc line for qemu-aarch64"):
        binfmt.handler_line("qemu-aarch64", tmp_path)
    (tmp_path / "qemu-aarch64.conf").write_text(":qemu-aarch64:M::x:y:/nonexistent:F\n")
    with pytest.raises(binfmt.BinfmtError, match="/nonexistent does not exist"):
        binfmt.handler_line("qemu-aarch64", tmp_path)


def test_a_lab_owns_only_processes_under_its_own_state_dir():
    # Lab armswarm-test's leftovers are not lab armswarm-test-b's running processes.
    lab = cluster.Lab(name="armswarm-test", subnet="10.77.9.0/24")
    state = str(lab.state_dir).encode()
    assert lab._mentions_state_dir(b"docker-registry\0serve\0" + state + b"/registry/config.yml\0")
    assert lab._mentions_state_dir(b"salt-master\0-c\0" + state + b"\0")
    assert not lab._mentions_state_dir(b"docker-registry\0serve\0" + state + b"-b/registry/c.yml\0")
    assert not lab._mentions_state_dir(b"sleep\x00100\x00")
