"""Benchmark: what emulation costs the lab. The same small image tree (a base from the example
tree's ``build.sh`` and a child with CPU-bound build steps) built natively for linux/amd64 and
emulated for linux/arm64 (qemu-user-static through binfmt_misc) on the host's dockerd.

    .venv/bin/python bench/emulation_cost.py [--rounds 3]

Prints, per step, the median seconds of each platform and the ratio emulated / native,
measured in one run; nothing is asserted. The root filesystems come from the lab's rootfs cache
(``/var/cache/armswarm-lab/rootfs``; made by ``build.sh`` when missing, which takes minutes for
arm64), so the base builds measure the import, the child builds the ARM code itself.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from armswarm.lab import binfmt, cluster  # noqa: E402 - after the path set-up

BASE_SCRIPT = ROOT / "salt/imagebuild/images/base/build.sh"
PLATFORMS = ("linux/amd64", "linux/arm64")
# CPU-bound steps a real tree's children run: a shell loop (the interpreter), hashing (a tight
# native loop of the image's own sha256sum), compression, and many short-lived processes.
STEPS = {
    "no-op (build overhead)": "true",
    "shell loop": "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done",
    "sha256 256 MiB": "head -c 268435456 /dev/zero | sha256sum",
    "gzip 64 MiB": "head -c 67108864 /dev/urandom | gzip -6 > /dev/null",
    "200 processes": "for i in $(seq 200); do dpkg --print-architecture > /dev/null; done",
}


def sh(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def build_base(platform: str) -> float:
    env = {
        **os.environ,
        "ARMSWARM_IMAGE": f"armswarm-bench/base:{platform.replace('/', '-')}",
        "TARGETPLATFORM": platform,
        "ARMSWARM_ROOTFS_CACHE": str(cluster.ROOTFS_CACHE),
    }
    cluster.ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sh(["sh", str(BASE_SCRIPT)], env=env, cwd=BASE_SCRIPT.parent)
    return time.monotonic() - started


def time_step(platform: str, script: str) -> float:
    """One build of a child with this step (no cache), in seconds."""
    base = f"armswarm-bench/base:{platform.replace('/', '-')}"
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "Dockerfile").write_text(f"FROM {base}\nRUN {script}\n")
        started = time.monotonic()
        sh(["docker", "build", "-q", "--no-cache", "--platform", platform, tmp])
        return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster.Lab.ensure_host_dockerd()
    with tempfile.TemporaryDirectory() as state:
        # the arm64 steps need the handlers; registered only for this run when missing
        binfmt.ensure(Path(state), log=lambda m: None)
        try:
            bases = {p: build_base(p) for p in PLATFORMS}
            rows = []
            for name, script in STEPS.items():
                times = {p: [] for p in PLATFORMS}
                for _ in range(args.rounds):
                    for p in PLATFORMS:  # interleaved: both see the same machine load
                        times[p].append(time_step(p, script))
                rows.append((name, *(statistics.median(times[p]) for p in PLATFORMS)))
        finally:
            # a lab that came up meanwhile and uses them keeps them
            labs = [d.parent for d in cluster.STATE_ROOT.glob(f"*/{binfmt.STATE_FILE}")]
            binfmt.release(Path(state), labs, log=lambda m: None)
    print(
        "base image (rootfs from the cache, bootstrapped when missing): "
        f"amd64 {bases[PLATFORMS[0]]:.1f}s, arm64 {bases[PLATFORMS[1]]:.1f}s"
    )
    print(
        f"{'step (median of ' + str(args.rounds) + ' builds)':<36} {'amd64 s':>8} "
        f"{'arm64 s':>8} {'ratio':>7}"
    )
    total_native = total_emulated = 0.0
    for name, native, emulated in rows:
        total_native += native
        total_emulated += emulated
        print(f"{name:<36} {native:>8.2f} {emulated:>8.2f} {emulated / native:>6.1f}x")
    print(
        f"{'all steps':<36} {total_native:>8.2f} {total_emulated:>8.2f} "
        f"{total_emulated / total_native:>6.1f}x"
    )


if __name__ == "__main__":
    main()
