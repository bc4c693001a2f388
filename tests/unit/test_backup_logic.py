"""Backup decisions: settings, backup ids, checksum files and manifests, retention, opt-outs,
clean-up choices and MySQL detection (pure logic, no I/O)."""

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "a" * 64


def test_pillar_example_has_every_key():
    example = yaml.safe_load((ROOT / "salt/backup/pillar.example").read_text())
    assert example["armswarm"]["backup"] == backup_policy.DEFAULTS


def _pillar(backup):
    return {"armswarm": {"backup": backup}}


def test_settings_merge_pillar_over_defaults():
    conf = backup_policy.settings(None, _pillar({"keep_daily": 3, "target": {"path": "/srv/nas"}}))
    assert conf["keep_daily"] == 3
    assert conf["target"] == {"path": "/srv/nas", "require_mount": True}
    assert conf["mysql"]["images"] == ["mysql", "mariadb"]


@pytest.mark.parametrize(
    ("pillar", "fragment"),
    [
        ({"target": {"path": "relative"}}, "absolute path"),
        ({"keep_daily": 0}, "keep_daily"),
        ({"keep_daily": True}, "keep_daily"),
        ({"compression": "xz"}, "compression"),
        ({"exclude": "cache"}, "exclude"),
        ({"schedule": {"backup": "daily"}}, "schedule:backup"),
        ({"mysql": {"credentials": {"db": {"password": "x"}}}}, "password_pillar"),
        ({"cleanup": {"container_max_age_hours": -1}}, "container_max_age_hours"),
        ({"retention": 3}, "armswarm:backup:retention: unknown key"),
        ({"keep_dialy": 3}, "did you mean keep_daily"),
        ({"pause": "false"}, "armswarm:backup:pause: must be true or false"),
        ({"target": "/mnt/nas"}, "armswarm:backup:target: must be a mapping"),
    ],
)
def test_bad_settings_are_refused(pillar, fragment):
    with pytest.raises(ArmswarmError, match=fragment):
        backup_policy.settings(None, _pillar(pillar))
    # Not strict (the formula's map.jinja): the bad key is at its default, the state reports it.
    conf, problems = backup_policy.resolve(None, _pillar(pillar))
    assert fragment in "; ".join(problems)
    assert set(conf) == set(backup_policy.DEFAULTS)


def test_cron_fields():
    assert backup_policy.cron_fields("30 2 * * 1-5") == {
        "minute": "30",
        "hour": "2",
        "daymonth": "*",
        "month": "*",
        "dayweek": "1-5",
    }
    assert backup_policy.cron_fields("30 2 * *") is None
    assert backup_policy.cron_fields("@daily x y z w") is None


def test_backup_ids_sort_by_time_and_parse_back():
    early = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=backup_policy.UTC)
    late = datetime(2025, 1, 2, 3, 4, 5, 7, tzinfo=backup_policy.UTC)
    a, b = backup_policy.backup_id(early, "node_1"), backup_policy.backup_id(late, "node2")
    assert a == "20250102T030405.000006Z_node_1"
    assert sorted([b, a]) == [a, b]
    assert backup_policy.parse_backup_id(a) == (early, "node_1")
    assert backup_policy.parse_backup_id(backup_policy.partial_name(a)) is None
    assert backup_policy.parse_backup_id("latest") is None
    assert backup_policy.parse_backup_id("20251302T030405.000006Z_node_1") is None  # month 13


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "-rf", "x y"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ArmswarmError):
        backup_policy.check_name(name)


def test_sums_round_trip_and_malformed_lines():
    sums = {"data.tar.gz": DIGEST, backup_policy.MANIFEST: "b" * 64}
    assert backup_policy.parse_sums(backup_policy.sums_text(sums)) == sums
    assert backup_policy.parse_sums(f"{DIGEST} *data.tar\n") == {"data.tar": DIGEST}
    for bad in ("", "xyz  data.tar\n", f"{DIGEST}  ../data.tar\n"):
        with pytest.raises(ArmswarmError):
            backup_policy.parse_sums(bad)


def _manifest(**over):
    started = datetime(2025, 1, 1, tzinfo=backup_policy.UTC)
    manifest = backup_policy.make_manifest(
        "volume", "app", "node1", started, started, "data.tar.gz", 10, DIGEST
    )
    manifest.update(over)
    return json.dumps(manifest)


def test_manifest_checked_against_sums():
    sums = {"data.tar.gz": DIGEST}
    assert backup_policy.parse_manifest(_manifest(), sums)["size"] == 10
    with pytest.raises(ArmswarmError, match="disagree"):
        backup_policy.parse_manifest(_manifest(sha256="c" * 64), sums)
    with pytest.raises(ArmswarmError, match="unexpected archive"):
        backup_policy.parse_manifest(_manifest(archive="../etc/passwd"), sums)
    with pytest.raises(ArmswarmError, match="format"):
        backup_policy.parse_manifest(_manifest(format=99), sums)
    with pytest.raises(ArmswarmError, match="not JSON"):
        backup_policy.parse_manifest("{", sums)


def _id(day, hour=2, node="node1"):
    return backup_policy.backup_id(datetime(2025, 1, day, hour, tzinfo=backup_policy.UTC), node)


def test_retention_keeps_the_newest_of_each_recent_day():
    ids = [_id(1), _id(2), _id(2, 14, "node2"), _id(3), _id(4), "odd-name"]
    keep, delete = backup_policy.retention(ids, 2)
    assert keep == sorted([_id(4), _id(3), "odd-name"])
    assert delete == sorted([_id(1), _id(2), _id(2, 14, "node2")])
    keep, delete = backup_policy.retention(ids, 7)
    assert _id(2, 14, "node2") in keep and delete == [_id(2)]
    assert backup_policy.retention([], 3) == ([], [])


def test_opt_out_by_label_or_pattern():
    assert "label" in backup_policy.excluded("db", {backup_policy.LABEL_BACKUP: "False"}, [])
    assert "pattern" in backup_policy.excluded("shop_cache", {}, ["*_cache"])
    assert (
        backup_policy.excluded("shop_db", {backup_policy.LABEL_BACKUP: "true"}, ["*_cache"]) is None
    )


NOW = 1_000_000.0


def _container(cid, state="exited", age_h=48, volumes=(), labels=None):
    return {
        "id": cid,
        "name": f"c-{cid}",
        "state": state,
        "finished": NOW - age_h * 3600 if state != "running" else None,
        "labels": labels or {},
        "volumes": list(volumes),
    }


def _volume(name, last_change=NOW - 3600, empty=False, labels=None):
    return {"name": name, "labels": labels or {}, "last_change": last_change, "empty": empty}


def _never_called(name):
    raise AssertionError(f"coverage of {name} asked")


def test_cleanup_removes_old_stopped_containers_only():
    containers = [
        _container("old"),
        _container("young", age_h=1),
        _container("running", state="running"),
        _container("kept", labels={backup_policy.LABEL_KEEP: "true"}),
    ]
    decided = backup_policy.plan_cleanup(containers, [], _never_called, NOW, 24)
    assert decided["containers"] == ["old"]


def test_cleanup_volume_rules():
    containers = [
        _container("running", state="running", volumes=["used"]),
        _container("old", volumes=["freed"]),
    ]
    volumes = [
        _volume("used"),
        _volume("freed"),
        _volume("keep", labels={backup_policy.LABEL_KEEP: "yes"}),
        _volume("stale_backup"),
        _volume("never"),
        _volume("empty", empty=True),
        _volume("unreadable", last_change=None),
    ]
    reasons = {"freed": None, "stale_backup": "changed since its backup X", "never": "no backup"}
    asked = []

    def covered(name):
        asked.append(name)
        return reasons[name]

    decided = backup_policy.plan_cleanup(containers, volumes, covered, NOW, 24)
    # "freed" is no longer used once its old container goes, and a backup holds its content.
    assert sorted(decided["volumes"]) == ["empty", "freed"]
    assert decided["kept"]["used"].startswith("in use by c-running")
    assert "keep" in decided["kept"]["keep"]
    assert decided["kept"]["stale_backup"] == "changed since its backup X"
    assert decided["kept"]["never"] == "no backup"
    assert "cannot be read" in decided["kept"]["unreadable"]
    # Backups are read (an archive verified) only for volumes that could go.
    assert sorted(asked) == ["freed", "never", "stale_backup"]


def test_cleanup_keeps_volumes_when_the_target_is_unreadable():
    volumes = [_volume("backed_up"), _volume("empty", empty=True)]
    decided = backup_policy.plan_cleanup(
        [], volumes, _never_called, NOW, 24, target_problem="not mounted"
    )
    assert decided["volumes"] == ["empty"]
    assert "not mounted" in decided["kept"]["backed_up"]


def test_cleanup_of_volumes_can_be_turned_off():
    decided = backup_policy.plan_cleanup(
        [], [_volume("x", empty=True)], _never_called, NOW, 24, clean_volumes=False
    )
    assert decided["volumes"] == [] and decided["kept"] == {}


@pytest.mark.parametrize(
    ("image", "labels", "expected"),
    [
        ("10.0.0.1:5443/armswarm/mariadb:11@sha256:" + "f" * 64, {}, True),
        ("mysql:8", {}, True),
        ("registry/shop/web:1", {}, False),
        ("registry/shop/web:1", {backup_policy.LABEL_MYSQL: "true"}, True),
        ("mariadb:11", {backup_policy.LABEL_MYSQL: "false"}, False),
        ("registry:5000/mysql-tools/web:1", {}, False),
    ],
)
def test_mysql_detection(image, labels, expected):
    assert backup_policy.mysql_detected(image, labels, ["mysql", "mariadb"]) is expected


def test_dumps_are_filed_by_service_name():
    assert (
        backup_policy.dump_set_name("/db.1.abc", {backup_policy.SWARM_SERVICE_LABEL: "shop_db"})
        == "shop_db"
    )
    assert backup_policy.dump_set_name("/mariadb", {}) == "mariadb"


# -- lineages ----------------------------------------------------------------------------------
FP = "f" * 64


def _marker(**kw):
    return {"lineage": "L4", "backup": _id(1, node="node4"), "sha256": DIGEST, "content": FP, **kw}


def _item(sha=DIGEST, error=None):
    item = {"id": _id(1, node="node4"), "manifest": {"sha256": sha}}
    if error:
        item["error"] = error
    return item


def test_coverage_needs_its_own_backup_of_exactly_this_content_and_a_verified_archive():
    def ok():
        return DIGEST

    def truncated():
        return "0" * 64

    def unread():
        raise AssertionError("archive read although something else already disagrees")

    cov = backup_policy.coverage
    assert cov(_marker(), FP, _item(), ok) is None
    # The drain case: the old node's copy changed after its backup; a newer backup of the
    # same name made elsewhere is not in its marker, so it never counts.
    assert "changed since" in cov(_marker(), "e" * 64, _item(), unread)
    assert "never backed up" in cov(None, FP, _item(), unread)
    assert "while it changed" in cov(_marker(content=None), FP, _item(), unread)
    assert "no longer on the target" in cov(_marker(), FP, None, unread)
    assert "damaged" in cov(_marker(), FP, _item(error="bad manifest"), unread)
    assert "not the archive" in cov(_marker(), FP, _item(sha="1" * 64), unread)
    # Manifest and sums intact but the archive truncated: the archive is read and fails.
    assert "SHA256SUMS" in cov(_marker(), FP, _item(), truncated)


def test_retention_keeps_the_newest_of_each_lineage():
    b = lambda day, node, line, origin=None: {  # noqa: E731
        "id": _id(day, node=node),
        "lineage": line,
        "origin": origin,
    }
    items = [
        b(1, "node4", "L4"),
        b(2, "node4", "L4"),  # node4's copy after the drain: divergent, newest of L4
        b(3, "node5", "L5", origin=_id(1, node="node4")),
        b(4, "node5", "L5"),
        b(5, "node5", "L5"),
        b(6, "node5", "L5"),
    ]
    keep, delete = backup_policy.lineage_retention(items, 2)
    assert keep == sorted([_id(2, node="node4"), _id(5, node="node5"), _id(6, node="node5")])
    assert delete == sorted([_id(1, node="node4"), _id(3, node="node5"), _id(4, node="node5")])
    # A lineage continued by a restore (another lineage's origin) needs no extra copy.
    items.append(b(7, "node3", "L3", origin=_id(2, node="node4")))
    keep, _ = backup_policy.lineage_retention(items, 2)
    assert _id(2, node="node4") not in keep
    # Backups without lineage (dumps, older backups): the daily rule alone, as before.
    plain = [{"id": _id(d)} for d in (1, 2, 3)]
    assert backup_policy.lineage_retention(plain, 2) == (
        sorted([_id(2), _id(3)]),
        [_id(1)],
    )


def test_a_restore_lists_the_divergent_lineages():
    items = [
        {"id": _id(1, node="node4"), "lineage": "L4"},
        {"id": _id(2, node="node4"), "lineage": "L4"},
        {"id": _id(3, node="node5"), "lineage": "L5", "origin": _id(1, node="node4")},
        {"id": _id(4, node="node3"), "lineage": "L3", "origin": _id(4, node="node1")},
    ]
    chosen = items[2]
    assert backup_policy.divergent(items, chosen) == {
        "L3": _id(4, node="node3"),
        "L4": _id(2, node="node4"),
    }
    # The lineage the chosen backup was restored from, at that very backup, is its ancestor.
    chosen = {"id": _id(5, node="node5"), "lineage": "L5", "origin": _id(2, node="node4")}
    assert "L4" not in backup_policy.divergent(items, chosen)


def test_lineage_ids_differ_even_in_the_same_microsecond():
    now = datetime(2025, 1, 1, tzinfo=backup_policy.UTC)
    first, second = (backup_policy.new_lineage("node4", now) for _ in range(2))
    assert first != second and first.startswith(backup_policy.backup_id(now, "node4"))


@pytest.mark.parametrize("value", [0, -5, "soon", True, [600]])
def test_pause_timeout_must_be_a_positive_number(value):
    with pytest.raises(ArmswarmError, match="pause_timeout_seconds"):
        backup_policy.settings(None, _pillar({"pause_timeout_seconds": value}))
