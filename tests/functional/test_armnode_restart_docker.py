"""``armnode.restart_docker`` through the real loader, with ``systemctl`` and ``docker`` as
small programs on PATH (restarting the machine's own dockerd is the lab's job): a restart
that hangs or leaves an autolocked manager locked is a clear answer, never a traceback."""

import os

import pytest
from armswarm_core.node import docker_daemon
from loaders import load_modules
from salt.exceptions import CommandExecutionError

pytestmark = pytest.mark.functional


@pytest.fixture
def node(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def program(name, body):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def make(restart="exit 0", after='{"LocalNodeState":"active","ControlAvailable":true}'):
        state = tmp_path / "state"
        state.write_text('{"LocalNodeState":"active","ControlAvailable":true}')
        # the node reads its swarm state before the restart and `after` once it is done
        program("systemctl", f"echo '{after}' > {state}\n{restart}")
        program("docker", f"cat {state}")
        return load_modules(tmp_path, id="node2")

    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # the pending mark is the node's file under /var/lib: this machine's is left alone
    make.cleared = []
    monkeypatch.setattr(docker_daemon, "clear_pending", lambda: make.cleared.append(True))
    return make


def test_a_restart_back_as_manager_is_ok(node):
    mods = node()
    answer = mods["armnode.restart_docker"](timeout=10)
    assert answer["ok"] is True, answer
    assert node.cleared == [True]


def test_a_manager_back_locked_names_the_unlock_runner(node):
    mods = node(after='{"LocalNodeState":"locked","ControlAvailable":false}')
    answer = mods["armnode.restart_docker"](timeout=30)
    assert answer["ok"] is False and answer["locked"] is True  # the runner unlocks it
    assert "locked" in answer["error"] and "swarm_keys.unlock node2" in answer["error"]
    assert node.cleared == [True]  # the engine runs the new daemon.json: not pending


def test_a_hanging_restart_is_an_answer_not_a_traceback(node):
    mods = node(restart="sleep 30")
    answer = mods["armnode.restart_docker"](timeout=1)
    assert answer == {"ok": False, "error": "systemctl restart docker took over 1 s"}
    assert node.cleared == []


@pytest.mark.parametrize("timeout", ["60", True, 0, -5])
def test_a_bad_timeout_is_refused_before_anything_restarts(node, timeout):
    mods = node(restart="exit 9")
    with pytest.raises(CommandExecutionError, match="timeout must be a number"):
        mods["armnode.restart_docker"](timeout=timeout)
