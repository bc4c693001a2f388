"""Benchmark: lab `up` from a cold image cache vs a warm one, `down`, and the running lab's memory.

    .venv/bin/python bench/lab_up.py [--cold]

Prints figures measured in one run and their ratios (never asserted: timings vary by machine).
``--cold`` removes the cached node image first, so the first `up` includes the image build.
"""

import argparse
import time
from pathlib import Path

from armswarm.lab.cluster import Lab
from armswarm.lab.image import LABEL as IMAGE_LABEL

MiB = 1024 * 1024


def pss_of_lab_processes(lab: Lab) -> int:
    """Proportional set size of the host-side processes (salt-master tree, registry)."""
    total = 0
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if str(lab.state_dir).encode() not in (pid_dir / "cmdline").read_bytes():
                continue
            for line in (pid_dir / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def page_cache(stats: dict) -> int:
    """The page cache in a container's memory stats: cgroup v2 calls it ``file``, v1
    ``total_cache`` (``cache`` without the child cgroups, e.g. the node's own containers)."""
    for key in ("file", "total_cache", "cache"):
        if key in stats:
            return stats[key]
    raise SystemExit(f"no page-cache figure in the memory stats: {sorted(stats)}")


def node_memory(lab: Lab) -> dict:
    """Memory charged to each node's cgroup, page cache excluded (systemd, dockerd, minion…)."""
    usage = {}
    for container in lab.containers():
        stats = container.stats(stream=False)["memory_stats"]
        used = stats["usage"] - page_cache(stats.get("stats") or {})
        usage[container.labels.get("io.armswarm.lab.node")] = used
    return usage


def host_memory() -> int:
    """This machine's RAM (MemTotal), the baseline the lab's footprint is a share of."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no MemTotal in /proc/meminfo")


def timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="rebuild the node image first")
    args = parser.parse_args()
    lab = Lab(name="armswarm-bench", subnet="10.77.8.0/24", progress=lambda m: None)
    lab.ensure_host_dockerd()
    lab.down()
    if args.cold:
        for img in lab.client.images.list(filters={"label": IMAGE_LABEL}):
            lab.client.images.remove(img.id, force=True)
    first = timed(lambda: lab.up(main_job=False))
    time.sleep(10)  # let the minions settle before measuring memory
    nodes = node_memory(lab)
    host = pss_of_lab_processes(lab)
    down = timed(lab.down)
    cached = timed(lambda: lab.up(main_job=False))
    down_again = timed(lab.down)
    left = lab.leftovers()

    print(f"up ({'cold: image build included' if args.cold else 'image cached'}): {first:6.1f} s")
    print(f"up (image cached):                      {cached:6.1f} s")
    print(f"down:                                   {down:6.1f} s, again {down_again:.1f} s")
    print(f"ratio first up / cached up:             {first / cached:6.2f}")
    for name, used in sorted(nodes.items()):
        print(f"node {name} memory (cgroup, no cache):  {used / MiB:6.0f} MiB")
    total = sum(nodes.values()) + host
    ram = host_memory()
    cgroup = lab.client.info().get("CgroupVersion", "?")
    print(f"master + registry PSS on the host:      {host / MiB:6.0f} MiB")
    print(
        f"whole lab:                              {total / MiB:6.0f} MiB "
        f"({total / ram:.1%} of this machine's {ram / MiB:.0f} MiB, cgroup v{cgroup})"
    )
    print(f"left behind after down:                 {left}")


if __name__ == "__main__":
    main()
