"""Benchmark: a converged `state.apply armnode` and a `test=True` run, per node of the lab,
against a no-op state run measured on the same node.

    .venv/bin/python bench/armnode_apply.py

Brings a lab up (the main job applies armnode once), or uses ARMSWARM_BENCH_LAB /
ARMSWARM_BENCH_LAB_SUBNET when that lab is up (and leaves it up). Then times on every node,
with ``salt-call`` on the node itself so each figure is one node's own run:

* the baseline: ``state.single test.succeed_without_changes``, which pays what every state
  run pays (salt-call start-up, loaders, grains, pillar) and does nothing;
* a converged ``state.apply armnode`` and its check (``test=True``).

Prints the seconds and each run's ratio to that node's baseline (the cost of armnode itself
over Salt's own floor), measured in one run; nothing is asserted.
"""

import time

from benchlab import bench_lab

from armswarm.lab.cluster import Lab


def timed_call(lab: Lab, node: str, *args) -> float:
    started = time.monotonic()
    code, out = lab.exec(node, ["salt-call", "--out=quiet", *args])
    elapsed = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"{node}: salt-call {' '.join(args)} failed:\n{out}")
    return elapsed


def main():
    with bench_lab() as (lab, own):
        started = time.monotonic()
        lab.up()
        lab.sync()
        if own:
            print(
                f"lab up with the main job (first armnode apply on 5 nodes): "
                f"{time.monotonic() - started:.1f} s"
            )
        # One converged run first: a used lab may have something left to change.
        for node in lab.nodes:
            timed_call(lab, node.name, "state.apply", "armnode")
        print(
            f"{'node':<6} {'board':<20} {'no-op (s)':>9} {'apply (s)':>9} {'x no-op':>7} "
            f"{'check (s)':>9} {'x no-op':>7}"
        )
        for node in lab.nodes:
            noop = timed_call(
                lab, node.name, "state.single", "test.succeed_without_changes", "name=baseline"
            )
            apply = timed_call(lab, node.name, "state.apply", "armnode")
            check = timed_call(lab, node.name, "state.apply", "armnode", "test=True")
            print(
                f"{node.name:<6} {node.board:<20} {noop:>9.1f} {apply:>9.1f} "
                f"{apply / noop:>7.2f} {check:>9.1f} {check / noop:>7.2f}"
            )


if __name__ == "__main__":
    main()
