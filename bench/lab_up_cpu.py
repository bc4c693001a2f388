"""Benchmark: where the CPU of a cached lab `up` (main job included) goes, step by step.

    .venv/bin/python bench/lab_up_cpu.py

For each step of `up` it prints the wall time, the core-seconds this machine spent (from
/proc/stat) as a share of what its cores could have given in that time (the baseline, measured
in the same run), and who spent them: the nodes' salt-minions, their dockerds, the rest of the
nodes (apt and dpkg of the package installs, systemd), the build containers in the nodes'
board-speed cgroup, and the host side (salt-master and the salt CLIs, the registry, the host's
dockerd, this process). A step near 100 % busy gets shorter only by doing less work, not by
overlapping more. Step boundaries fall on the last 0.5 s sample before them, so a step of a
few seconds is a rough figure. The node images must be cached (`bash scripts/lab up` once);
nothing is asserted.
"""

import os
import re
import threading
import time
from pathlib import Path

import docker

from armswarm.lab.cluster import LABEL, NODE_LABEL, Lab

HZ = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
# Where dockerd puts a container's cgroup v2 (hybrid hierarchy, cgroupfs, systemd driver):
# the parent directory and the child's name around the container id.
CGROUP_DIRS = (
    (Path("/sys/fs/cgroup/unified/docker"), re.compile(r"([0-9a-f]{64})")),
    (Path("/sys/fs/cgroup/docker"), re.compile(r"([0-9a-f]{64})")),
    (Path("/sys/fs/cgroup/system.slice"), re.compile(r"docker-([0-9a-f]{64})\.scope")),
)
NODE_PARTS = {
    "minion": "system.slice/salt-minion.service",
    "dockerd": "system.slice/docker.service",
    "containerd": "system.slice/containerd.service",
    "builds": "armswarm-board",
}


def machine_busy() -> float:
    """Core-seconds this machine has been busy since boot (all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / HZ


def cgroup_seconds(path: Path) -> float:
    """``usage_usec`` of a cgroup v2 (itself and its descendants, gone ones included)."""
    try:
        for line in (path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


class Sampler(threading.Thread):
    """Samples the machine and every lab node's cgroups every ``interval`` seconds."""

    def __init__(self, lab: Lab, interval: float = 0.5):
        super().__init__(daemon=True)
        self.lab, self.interval = lab, interval
        self.samples = []
        self.stopped = threading.Event()
        self.cgroups = {}  # cgroup path -> whether it is one of this lab's nodes

    def node_cgroups(self) -> dict:
        """The cgroups of this lab's node containers (another lab's are not counted)."""
        for parent, name in CGROUP_DIRS:
            if not parent.is_dir():
                continue
            for path in parent.iterdir():
                found = name.fullmatch(path.name)
                if found and path not in self.cgroups:
                    self.cgroups[path] = self.is_lab_node(found.group(1))
        return [path for path, ours in self.cgroups.items() if ours]

    def is_lab_node(self, container_id: str) -> bool:
        try:
            labels = self.lab.client.containers.get(container_id).labels
        except docker.errors.DockerException:
            return False
        return labels.get(LABEL) == self.lab.name and NODE_LABEL in labels

    def sample(self) -> dict:
        out = {"t": time.monotonic(), "busy": machine_busy()}
        for path in self.node_cgroups():
            out[f"{path}:total"] = cgroup_seconds(path)
            for part, sub in NODE_PARTS.items():
                out[f"{path}:{part}"] = cgroup_seconds(path / sub)
        return out

    def run(self):
        while not self.stopped.is_set():
            self.samples.append(self.sample())
            self.stopped.wait(self.interval)
        self.samples.append(self.sample())


def spent(first: dict, last: dict) -> dict:
    """Core-seconds by part between two samples (a node absent in ``first`` started at 0)."""
    parts = dict.fromkeys(["busy", "nodes", *NODE_PARTS, "nodes-rest"], 0.0)
    parts["busy"] = last["busy"] - first["busy"]
    for key, value in last.items():
        if ":" not in key:
            continue
        part = key.rsplit(":", 1)[1]
        delta = value - first.get(key, 0.0)
        parts["nodes" if part == "total" else part] += delta
    parts["nodes-rest"] = parts["nodes"] - sum(parts[p] for p in NODE_PARTS)
    parts["host"] = parts["busy"] - parts["nodes"]
    return parts


def sample_at(samples: list, moment: float) -> dict:
    before = [s for s in samples if s["t"] <= moment]
    return before[-1] if before else samples[0]


def main():
    marks = []  # (time, step title) when each step ended

    def progress(message: str):
        # a step's line ends in its time with one decimal ("modules synced      7.1s")
        step = re.match(r"(.*\S)\s+\d+\.\ds$", message)
        if step:
            marks.append((time.monotonic(), " ".join(step.group(1).split())))

    lab = Lab(name="armswarm-bench", subnet="10.77.8.0/24", progress=progress)
    lab.ensure_host_dockerd()
    lab.down()
    sampler = Sampler(lab)
    sampler.start()
    time.sleep(1)
    begun = time.monotonic()
    try:
        lab.up(main_job=True)
    finally:
        ended = time.monotonic()
        time.sleep(sampler.interval * 2)
        sampler.stopped.set()
        sampler.join()
        lab.down()
    samples = sampler.samples
    header = (
        f"{'step':<44} {'wall s':>6} {'busy':>5} {'minion':>6} {'dockerd':>7} "
        f"{'nodes, rest':>11} {'builds':>6} {'host':>5}"
    )
    print(f"core-seconds per step on this machine's {CORES} cores (busy: share of them)")
    print(header)
    rows, start = [], begun
    for moment, title in [*marks, (ended, "whole up")]:
        first = sample_at(samples, begun if title == "whole up" else start)
        last = sample_at(samples, moment)
        wall = moment - (begun if title == "whole up" else start)
        rows.append((title, wall, spent(first, last)))
        start = moment
    for title, wall, parts in rows:
        # under a second the 0.5 s samples say nothing of the share
        share = f"{parts['busy'] / (wall * CORES):5.0%}" if wall >= 1 else "    -"
        print(
            f"{title[:44]:<44} {wall:6.1f} {share} {parts['minion']:6.1f} "
            f"{parts['dockerd'] + parts['containerd']:7.1f} {parts['nodes-rest']:11.1f} "
            f"{parts['builds']:6.1f} {parts['host']:5.1f}"
        )
    _, wall, parts = rows[-1]
    print(
        f"whole up: {parts['busy']:.0f} core-seconds in {wall:.0f} s; at 100 % of "
        f"{CORES} cores that work needs at least {parts['busy'] / CORES:.0f} s "
        f"(ratio wall / that bound: {wall / (parts['busy'] / CORES):.2f})"
    )


if __name__ == "__main__":
    main()
