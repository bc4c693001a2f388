"""What `armswarm-lab up` prints from Salt's JSON returns, and the imagebuild outputter's text."""

import pytest
from armswarm_core.build import build_text

from armswarm.lab import report

pytestmark = pytest.mark.unit

APPLY = {
    "pkg_|-armnode-packages-installed_|-armnode-packages-installed_|-installed": {
        "__id__": "armnode-packages-installed",
        "result": True,
        "changes": {"cron": {"new": "3.0", "old": ""}},
        "comment": "1 targeted package was installed",
    },
    "file_|-armnode-sudoers_|-/etc/sudoers.d/x_|-managed": {
        "__id__": "armnode-sudoers",
        "result": True,
        "changes": {},
        "comment": "File is in the correct state",
    },
    "service_|-armnode-cron-running_|-cron_|-running": {
        "__id__": "armnode-cron-running",
        "result": False,
        "changes": {},
        "comment": "Service cron\n   is not available",
    },
    "file_|-t_|-/t_|-managed": {"__id__": "t", "result": None, "changes": {}, "comment": "test"},
}


def test_counts_and_failures_of_a_state_return():
    assert report.state_counts(APPLY) == {"ok": 2, "changed": 1, "failed": 1}
    assert report.failures({"node2": APPLY}) == [
        "node2: armnode-cron-running (service.running): Service cron is not available"
    ]


@pytest.mark.parametrize(
    "ret",
    [
        ["Rendering SLS 'base:armnode.users' failed: mapping values are not allowed"],
        "Minion did not return. [No response]",
    ],
)
def test_a_render_error_or_no_return_counts_as_a_failure(ret):
    assert report.state_counts(ret) == {"ok": 0, "changed": 0, "failed": 1}
    (line,) = report.failures({"node1": ret})
    assert line.startswith("node1: ") and str(ret[0] if isinstance(ret, list) else ret)[:20] in line


def test_orchestration_failures_are_found_inside_data():
    orch = {"data": {"lab-master": APPLY}, "outputter": "highstate", "retcode": 1}
    assert report.failures(report.orch_returns(orch))[0].startswith("lab-master: armnode-cron")


def test_node_table_rows_line_up():
    rows = [
        {
            "node": "node1",
            "board": "odroid-hc1",
            "os": "Debian GNU/Linux 12 (bookworm)",
            "engine": "20.10.24+dfsg1",
            "python": "3.11.2",
            "counts": {"ok": 3, "changed": 1, "failed": 0},
        },
        {
            "node": "node4",
            "board": None,
            "os": None,
            "engine": None,
            "python": None,
            "counts": None,
        },
    ]
    head, first, second = report.node_table(rows)
    assert first.index("20.10.24") == head.index("engine") and first.endswith("3/1/0")
    assert second.split() == ["node4", "?", "?", "?", "?", "-"]


def test_backup_lines():
    assert report.backup_lines({}) == ["no backups yet (0 volume folder(s) on the target)"]
    listing = {
        "app_data": [
            {"id": "20261201T010000Z-node4", "node": "node4", "size": 10, "status": "complete"},
            {"id": "20261130T010000Z-node4", "node": "node4", "size": 10, "status": "truncated"},
        ]
    }
    assert report.backup_lines(listing) == [
        "1 volume(s), 2 backup(s), newest 20261201T010000Z-node4, 1 damaged"
    ]
    assert report.backup_lines("backup: the target is not mounted")[0].endswith("not mounted")


RUN = {
    "run": "20261201-6706a4",
    "tag": "20261201",
    "seconds": 6.978,
    "counts": {"done": 1, "failed": 1},
    "images": [
        {
            "image": "base",
            "status": "done",
            "node": "node3",
            "seconds": 3.14,
            "digest": "sha256:6f1c0a9e2b44aa",
        },
        {
            "image": "app",
            "status": "failed",
            "node": "node4",
            "seconds": None,
            "digest": None,
            "error": "step 2 failed:\n exit 1",
        },
    ],
    "report": "/r/report.json",
    "timeline": "/r/timeline.svg",
    "lost_nodes": [],
    "interrupted": False,
    "retcode": 1,
}


def test_outputter_run_table():
    text = build_text.render(RUN).splitlines()
    assert text[0].startswith("imagebuild run 20261201-6706a4  tag 20261201")
    assert "done 1, failed 1" in text[0]
    base = next(line for line in text if line.startswith("base"))
    assert base.split() == ["base", "done", "node3", "3.1", "6f1c0a9e2b44"]
    assert "  app: step 2 failed: exit 1" in text
    assert text[-2:] == ["report   /r/report.json", "timeline /r/timeline.svg"]


def test_outputter_plan_and_error():
    plan = {
        "images": {
            "base": {"parents": [], "expected_seconds": 60.0},
            "app": {"parents": ["base"], "expected_seconds": 30.0},
        },
        "order": {"depth 1": ["base"], "depth 2": ["app"]},
        "skipped": {"junk": "no Dockerfile, build.sh or image.yaml"},
        "critical_path": ["base", "app"],
        "critical_path_seconds": 90.0,
        "total_work_seconds": 90.0,
        "nodes": ["node1", "node4"],
        "lower_bound_seconds": 90.0,
        "expected_makespan_seconds": 90.0,
        "expected_schedule": {"base": "node1 0–60 s", "app": "node4 60–90 s"},
    }
    text = build_text.render(plan)
    assert "2 image(s) on 2 node(s) (node1, node4)" in text
    assert "critical path base > app" in text
    app = next(line for line in text.splitlines() if line.strip().startswith("app"))
    assert app.split()[:3] == ["app", "base", "30s"] and app.endswith("node4 60–90 s")
    assert "skipped junk: no Dockerfile" in text
    assert build_text.render({"error": "no images", "retcode": 1}) == "imagebuild error: no images"
