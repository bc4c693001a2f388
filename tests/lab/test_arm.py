"""The lab runs ARM code: ``up`` registered qemu-user-static's binfmt handlers (flag F, so
they work inside the nodes' containers), ``down`` removes only the handlers its lab
registered, and each node's own dockerd builds and runs armhf and arm64 images."""

import json
from pathlib import Path

import pytest
from helpers import MACHINE, build_base

from armswarm.lab import binfmt, cluster

pytestmark = pytest.mark.lab

KERNEL = Path("/proc/sys/fs/binfmt_misc")


def _kernel(name):
    """The kernel's own view of a handler (None: not registered)."""
    path = KERNEL / name
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    flags = next(line for line in lines if line.startswith("flags:")).split(":", 1)[1].strip()
    return {"enabled": lines[0] == "enabled", "flags": flags}


def test_up_registered_the_arm_handlers_with_fix_binary(lab):
    for name in ("qemu-arm", "qemu-aarch64"):
        info = _kernel(name)
        assert info and info["enabled"] and "F" in info["flags"], (name, info)
    status = lab.status()["binfmt"]
    assert status["qemu-arm"]["enabled"] and status["qemu-aarch64"]["enabled"]


# Unregisters a handler for a moment: no other lab may be running ARM code then.
@pytest.mark.exclusive
def test_down_removes_only_the_handlers_its_lab_registered(lab, tmp_path, monkeypatch):
    # A second lab on this machine whose state lives apart (no other lab uses its handlers).
    monkeypatch.setattr(cluster, "STATE_ROOT", tmp_path / "labs")
    other = cluster.Lab(name="armswarm-binfmt", subnet="10.77.250.0/24", progress=print)
    other.state_dir.mkdir(parents=True)
    # qemu-arm stays registered ("someone else's" for this lab); qemu-aarch64 is not there.
    assert _kernel("qemu-arm")
    (KERNEL / "qemu-aarch64").write_text("-1")
    try:
        assert _kernel("qemu-aarch64") is None
        other._ensure_binfmt()
        assert _kernel("qemu-aarch64")["enabled"]
        recorded = json.loads((other.state_dir / binfmt.STATE_FILE).read_text())
        assert recorded["registered"] == ["qemu-aarch64"]
        other.down()
        assert _kernel("qemu-aarch64") is None  # ours: removed
        assert _kernel("qemu-arm")["enabled"]  # someone else's: kept
    finally:
        lab._ensure_binfmt()  # the session's lab registers what is missing again
    assert _kernel("qemu-aarch64")["enabled"]


# Unregisters a handler for a moment: no other lab may be running ARM code then.
@pytest.mark.exclusive
def test_down_hands_a_handler_it_registered_to_a_lab_still_using_it(lab):
    # A second lab registers qemu-aarch64 while the session's lab (up, in the same state root)
    # uses it: the second lab's down must not pull it from under the session's nodes.
    other = cluster.Lab(name="armswarm-binfmt-b", subnet="10.77.251.0/24", progress=print)
    other.state_dir.mkdir(parents=True, exist_ok=True)
    (KERNEL / "qemu-aarch64").write_text("-1")
    try:
        other._ensure_binfmt()
        assert json.loads((other.state_dir / binfmt.STATE_FILE).read_text())["registered"] == [
            "qemu-aarch64"
        ]
        other.down()
        assert _kernel("qemu-aarch64")["enabled"]  # kept: the session's lab uses it
        # ... and it is now the session's lab's to remove
        assert lab.status()["binfmt"]["qemu-aarch64"]["ours"] is True
        assert not other.state_dir.exists()
    finally:
        lab._ensure_binfmt()
    for name in ("qemu-arm", "qemu-aarch64"):
        assert _kernel(name)["enabled"], name


@pytest.mark.parametrize(
    ("node", "platform"), [("node1", "linux/arm/v7"), ("node2", "linux/arm64")]
)
def test_a_nodes_dockerd_builds_and_runs_its_boards_platform(lab, node, platform):
    ref = f"armswarm-lab/debian:{platform.replace('/', '-')}"
    build_base(lab, node, platform, ref)
    code, out = lab.exec(
        node,
        ["docker", "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}/{{.Variant}}", ref],
    )
    assert code == 0, out
    assert out.strip().rstrip("/") == platform  # recorded with the platform asked for
    code, out = lab.exec(
        node,
        [
            "docker",
            "run",
            "--rm",
            "--platform",
            platform,
            ref,
            "sh",
            "-c",
            "uname -m; dpkg --print-architecture",
        ],
    )
    assert code == 0, out
    machine, debarch = out.split()[-2:]
    assert machine == MACHINE[platform]
    assert debarch == {"linux/arm/v7": "armhf", "linux/arm64": "arm64"}[platform]
    # the node's own CPU is x86: the ARM code ran through the kernel's handler
    code, out = lab.exec(node, ["uname", "-m"])
    assert out.strip() == "x86_64"
