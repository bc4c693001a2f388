"""Benchmark: distributed image builds, dynamic scheduling against the alternatives.

    .venv/bin/python bench/imagebuild_schedule.py [--nodes 4] [--keep]

A synthetic tree of 16 images, depth 4, where every image's build is ``RUN sleep N`` (known
time, no CPU), is built on a lab with ``salt-run imagebuild.run``:

1. a warm-up run, so the master remembers each image's duration (as it would in production);
2. ``strategy=dynamic`` on N nodes (longest remaining path first, as nodes free up);
3. ``strategy=static`` on the same nodes (a round-robin split made before the run);
4. one node building everything.

Every image is built for the platforms of the build nodes' boards (the lab's HC1 is
linux/arm/v7, the other boards linux/arm64): one job per (image, platform), each on a node of
its platform, on a real ARM busybox base run under qemu's binfmt handlers.

Prints the makespans (first job start to last job end) and the ratios, measured in one run:
dynamic / lower bound, where the lower bound respects which nodes can build which platform:
max(critical path, each platform's work / its nodes, total work / N) over the durations the
nodes measured in run 2, static / dynamic and one-node / dynamic, plus the
per-job dispatch overhead (the runner's view of a job minus the node's). Targets: dynamic ≤
1.10 × lower bound, dispatch overhead ≤ 0.5 s. Nothing is asserted.
"""

import argparse
import io
import json
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from armswarm.lab import cluster, image
from armswarm.lab.cluster import Lab

# image → (parents, seconds of sleep); the first parent is FROM, the others COPY --from.
DAG = {
    "a1": ([], 4),
    "a2": ([], 3),
    "b1": (["a1"], 6),
    "b2": (["a1"], 3),
    "b3": (["a2"], 5),
    "b4": (["a2", "a1"], 2),
    "c1": (["b1"], 7),
    "c2": (["b1", "b2"], 3),
    "c3": (["b3"], 4),
    "c4": (["b4"], 2),
    "c5": (["b3"], 3),
    "d1": (["c1"], 5),
    "d2": (["c2", "c3"], 4),
    "d3": (["c3"], 3),
    "d4": (["c4", "c5"], 6),
    "d5": (["c1"], 2),
}
LOCAL_BASE = "armswarm-bench-busybox"


def write_tree(root: Path) -> Path:
    """The tree, with a fresh nonce in every RUN so no node can reuse a cached layer."""
    nonce = uuid.uuid4().hex[:8]
    for name, (parents, seconds) in DAG.items():
        lines = [f"FROM {parents[0] if parents else LOCAL_BASE}"]
        lines += [f"COPY --from={p} /{p} /{p}" for p in parents[1:]]
        lines.append(f"RUN echo {nonce} > /{name} && sleep {seconds}")
        (root / name).mkdir(parents=True)
        (root / name / "Dockerfile").write_text("\n".join(lines) + "\n")
    return root


# the lab board's uname -m → (Debian architecture, platform)
BOARD_ARCH = {"armv7l": ("armhf", "linux/arm/v7"), "aarch64": ("arm64", "linux/arm64")}


def arm_rootfs(debian_arch: str) -> bytes:
    """Debian's static busybox for ``debian_arch`` as a root filesystem (extracted with
    mmdebstrap from the host's mirror; cached in the lab's cache directory)."""
    cache = cluster.CACHE_DIR / "arm-busybox" / f"busybox-{debian_arch}"
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "root.tar"
            subprocess.run(
                [
                    "mmdebstrap",
                    "--quiet",
                    "--variant=extract",
                    "--include=busybox-static",
                    f"--arch={debian_arch}",
                    "--skip=check/qemu",
                    "bookworm",
                    str(out),
                    image.host_apt_mirror(),
                ],
                check=True,
            )
            with tarfile.open(out) as tar:
                data = tar.extractfile("./bin/busybox").read()
            partial = cache.with_name(cache.name + ".partial")
            partial.write_bytes(data)
            partial.rename(cache)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(cache), arcname="bin/busybox")
        for applet in ("sh", "sleep", "echo"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


def prepare_nodes(lab: Lab, names) -> dict:
    """A local busybox image of the node's board platform on each node: the roots' FROM
    (nothing can be pulled). Returns node → platform."""
    platforms = {}
    for name in names:
        board = image_board(name, lab)
        debian_arch, platform = BOARD_ARCH[board]
        platforms[name] = platform
        context = image.tar_bytes(
            {
                "rootfs.tar": arm_rootfs(debian_arch),
                "Dockerfile": "FROM scratch\nADD rootfs.tar /\n",
            }
        )
        container = lab.client.containers.get(lab.container_name(lab.node(name)))
        container.exec_run(["mkdir", "-p", "/root/bench-base"])
        container.put_archive("/root/bench-base", context)
        code, out = lab.exec(
            name,
            [
                "sh",
                "-c",
                f"docker build -q --platform {platform} -t {LOCAL_BASE} /root/bench-base "
                ">/dev/null",
            ],
        )
        if code:
            raise SystemExit(f"{name}: {out}")
    return platforms


def image_board(name: str, lab: Lab) -> str:
    """The ``uname -m`` of the board the node plays."""
    board = lab.node(name).board
    return yaml.safe_load((cluster.FIXTURES / board / "board.yaml").read_text())["uname_m"]


def build(lab: Lab, tmp: Path, label: str, targets, strategy="dynamic") -> dict:
    tree = write_tree(tmp / label)
    proc = lab.run_salt(
        "salt-run",
        "--out=json",
        "imagebuild.run",
        f"source={tree}",
        f"target={','.join(targets)}",
        "tgt_type=list",
        f"strategy={strategy}",
        check=False,
    )
    out = proc.stdout
    report = json.loads(out[out.index("{\n") :])
    failed = [i.get("job") or i["image"] for i in report["images"] if i["status"] != "done"]
    if failed:
        raise SystemExit(f"{label}: failed {failed}\n{out[-3000:]}")
    return report


def makespan(report) -> float:
    attempts = [a for item in report["images"] for a in item["attempts"]]
    return max(a["end"] for a in attempts) - min(a["start"] for a in attempts)


def lower_bound(report, platforms: dict) -> float:
    """max(critical path of each platform's jobs, each platform's work / its nodes, all the
    work / all the nodes), over the seconds the nodes measured (``platforms``: node →
    platform)."""
    seconds = {(i["image"], i["platform"]): i["node_seconds"] for i in report["images"]}
    bound = sum(seconds.values()) / len(platforms)
    for platform in {p for _, p in seconds}:
        level = {}
        for name in reversed(list(DAG)):
            children = [c for c, (parents, _) in DAG.items() if name in parents]
            own = seconds[(name, platform)]
            level[name] = own + max((level[c] for c in children), default=0.0)
        work = sum(s for (_, p), s in seconds.items() if p == platform)
        nodes = sum(1 for p in platforms.values() if p == platform)
        bound = max(bound, *level.values(), work / nodes)
    return bound


def overheads(report) -> list:
    return [
        (item["end"] - item["start"]) - item["node_seconds"]
        for item in report["images"]
        if len(item["attempts"]) == 1
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the lab running")
    args = parser.parse_args()
    lab = Lab(name="armswarm-bench", subnet="10.77.5.0/24", progress=lambda m: None)
    started = time.monotonic()
    lab.up(main_job=False)
    lab.sync()
    names = lab.node_names()[: args.nodes]
    platforms = prepare_nodes(lab, names)
    print(
        f"lab up and prepared in {time.monotonic() - started:.0f} s; build nodes "
        + ", ".join(f"{n} ({p})" for n, p in platforms.items())
    )
    try:
        with tempfile.TemporaryDirectory(prefix="armswarm-bench-") as name:
            tmp = Path(name)
            build(lab, tmp, "warm-up", names)
            dynamic = build(lab, tmp, "dynamic", names)
            static = build(lab, tmp, "static", names, strategy="static")
            single = build(lab, tmp, "single", names[:1])
    finally:
        if not args.keep:
            lab.down()
    bound = lower_bound(dynamic, platforms)
    spans = {"dynamic": makespan(dynamic), "static": makespan(static), "one node": makespan(single)}
    over = overheads(dynamic)
    sleeps = sum(s for _, s in DAG.values())
    print(
        f"16 images, depth 4, {sleeps} s of RUN sleep per platform; {len(dynamic['images'])} "
        f"jobs on {len(names)} nodes (one node: {len(single['images'])} jobs, its platform)"
    )
    for label, span in spans.items():
        print(f"  makespan {label:9} {span:6.1f} s")
    print(
        f"  lower bound      {bound:6.1f} s (max of critical path, each platform's work / its "
        "nodes, work / nodes; measured)"
    )
    print(f"ratio dynamic / lower bound   {spans['dynamic'] / bound:.3f}   (target ≤ 1.10)")
    print(f"ratio static / dynamic        {spans['static'] / spans['dynamic']:.3f}")
    print(f"ratio one node / dynamic      {spans['one node'] / spans['dynamic']:.3f}")
    print(
        f"dispatch overhead per job     mean {sum(over) / len(over):.2f} s, "
        f"max {max(over):.2f} s   (target ≤ 0.5 s)"
    )


if __name__ == "__main__":
    main()
