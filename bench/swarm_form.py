"""Benchmark: forming a swarm from scratch with `salt-run state.orch swarm.init`, by node count.

    .venv/bin/python bench/swarm_form.py [--sizes 3,5,9]

For each size a lab of that many nodes is brought up (no main job) with a pillar of 3 managers
and the rest workers; the orchestration forms the swarm (managers joined one at a time, workers
in parallel) and is re-run once (converged: no changes). Prints seconds and ratios to the
smallest size, measured in one run; nothing is asserted. Workers join in parallel, so the time
should barely grow with size.
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from armswarm.lab.cluster import DEFAULT_NODES, Lab, NodeSpec


def nodes(count: int) -> tuple:
    boards = [n.board for n in DEFAULT_NODES]
    return tuple(NodeSpec(f"node{i + 1}", boards[i % len(boards)], 11 + i) for i in range(count))


def write_pillar(root: Path, names: list) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "top.sls").write_text("base:\n  '*':\n    - armswarm\n")
    layout = {"armswarm": {"swarm": {"managers": names[:3], "workers": names[3:]}}}
    (root / "armswarm.sls").write_text(json.dumps(layout))
    return str(root)


def orch(lab: Lab) -> tuple[float, dict]:
    started = time.monotonic()
    proc = lab.run_salt("salt-run", "state.orch", "swarm.init", "--out=json")
    elapsed = time.monotonic() - started
    (states,) = json.loads(proc.stdout)["data"].values()
    (ret,) = states.values()
    if ret["result"] is not True:
        raise SystemExit(f"orchestration failed: {ret['comment']}")
    return elapsed, ret["changes"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="3,5,9")
    args = parser.parse_args()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="armswarm-bench-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            specs = nodes(size)
            pillar = write_pillar(tmp / str(size), [n.name for n in specs])
            lab = Lab(
                name="armswarm-bench",
                subnet="10.77.5.0/24",
                nodes=specs,
                progress=lambda m: None,
                pillar_root=pillar,
            )
            lab.ensure_host_dockerd()
            lab.down()
            try:
                lab.up(main_job=False)
                formed, changes = orch(lab)
                assert changes.get("init") == "node1", changes
                rerun, changes = orch(lab)
                assert changes == {}, changes
                rows.append((size, formed, rerun))
            finally:
                lab.down()
    finally:
        shutil.rmtree(tmp)
    base = rows[0][1]
    print(f"{'nodes':>5} {'form (s)':>9} {'ratio':>6} {'re-run (s)':>10}")
    for size, formed, rerun in rows:
        print(f"{size:>5} {formed:>9.1f} {formed / base:>6.2f} {rerun:>10.1f}")


if __name__ == "__main__":
    main()
