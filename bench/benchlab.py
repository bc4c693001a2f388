"""The lab a benchmark runs on: its own (``armswarm-bench``, made and removed around the run)
or an existing one named by ``ARMSWARM_BENCH_LAB`` (kept)."""

import contextlib
import os

from armswarm.lab.cluster import Lab


@contextlib.contextmanager
def bench_lab():
    """``(lab, own)`` with the lab up and this checkout's modules synced onto it."""
    name = os.environ.get("ARMSWARM_BENCH_LAB")
    own = not name
    lab = Lab(
        name=name or "armswarm-bench",
        subnet=os.environ.get("ARMSWARM_BENCH_LAB_SUBNET", "10.77.5.0/24"),
        progress=lambda m: None,
    )
    lab.ensure_host_dockerd()
    if own:
        lab.down()
    try:
        yield lab, own
    finally:
        if own:
            lab.down()
