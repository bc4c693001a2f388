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


def test_armnode_check_predicts_the_first_apply(lab):
    # The re-created nodes are freshly flashed boards again (up ran no main job).
    predicted = lab.salt_json("*", "state.apply", "armnode", "test=True", "--timeout=600")
    applied = lab.salt_json("*", "state.apply", "armnode", "--timeout=600")
    again = lab.salt_json("*", "state.apply", "armnode", "--timeout=600")
    assert sorted(predicted) == sorted(applied) == sorted(again) == lab.node_names()
    for node in lab.node_names():
        # Salt's own conditional prediction: a service its package starts while installing.
        conditional = {
            sid
            for sid, s in predicted[node].items()
            if "if created in this state run" in s["comment"]
        }
        would = {sid for sid, s in predicted[node].items() if s["result"] is None} - conditional
        made = {sid for sid, s in applied[node].items() if s["changes"]} - conditional
        assert all(s["result"] is True for s in applied[node].values()), applied[node]
        # A fresh board gets its kernel arguments and journald settings: the first apply is
        # not an empty one (empty prediction == empty run would prove nothing).
        made_ids = {applied[node][sid]["__id__"] for sid in made}
        assert {"armnode-kernel-args", "armnode-journald-config-managed"} <= made_ids, made_ids
        assert would == made, (node, sorted(would ^ made))
        assert not any(s["changes"] for s in again[node].values())
