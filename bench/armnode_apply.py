"""Benchmark: a converged `state.apply armnode` and a `test=True` run, per node of the lab.

    .venv/bin/python bench/armnode_apply.py

Brings a lab up (the main job applies armnode once), then times on every node a converged
apply and a check (`salt-call` on the node itself, so each figure is one node's own run), and
prints them with their ratio to the 5 s target. Measured in one run; nothing is asserted.
"""

import time

from armswarm.lab.cluster import Lab

TARGET = 5.0


def timed_call(lab: Lab, node: str, *args) -> float:
    started = time.monotonic()
    code, out = lab.exec(node, ["salt-call", "--out=quiet", "state.apply", "armnode", *args])
    elapsed = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"{node}: state.apply armnode {' '.join(args)} failed:\n{out}")
    return elapsed


def main():
    lab = Lab(name="armswarm-bench", subnet="10.77.5.0/24", progress=lambda m: None)
    lab.ensure_host_dockerd()
    lab.down()
    try:
        started = time.monotonic()
        lab.up()
        first = time.monotonic() - started
        print(f"lab up with the main job (first armnode apply on 5 nodes): {first:.1f} s")
        print(
            f"{'node':<6} {'board':<20} {'apply (s)':>9} {'/target':>7} {'check (s)':>9} "
            f"{'/target':>7}"
        )
        for node in lab.nodes:
            apply = timed_call(lab, node.name)
            check = timed_call(lab, node.name, "test=True")
            print(
                f"{node.name:<6} {node.board:<20} {apply:>9.1f} {apply / TARGET:>7.2f} "
                f"{check:>9.1f} {check / TARGET:>7.2f}"
            )
    finally:
        lab.down()


if __name__ == "__main__":
    main()
