"""down removes exactly what the lab made; up after down works again (from the cached image).

Runs after test_cluster.py (file order) because it takes the session's lab down and up again.
"""

import time


def test_down_leaves_nothing_and_up_works_again(lab):
    lab.down()
    assert lab.leftovers() == {
        "containers": [],
        "volumes": [],
        "networks": [],
        "processes": [],
        "state_dir": [],
    }
    started = time.monotonic()
    lab.up(main_job=False)
    print(f"cached up took {time.monotonic() - started:.0f}s")
    assert lab.is_up()
    assert lab.salt_json("*", "test.ping", "--timeout=20") == {n: True for n in lab.node_names()}
