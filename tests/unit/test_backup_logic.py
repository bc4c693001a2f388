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


def test_cleanup_removes_old_stopped_containers_only():
    containers = [
        _container("old"),
        _container("young", age_h=1),
        _container("running", state="running"),
        _container("kept", labels={backup_policy.LABEL_KEEP: "true"}),
    ]
    decided = backup_policy.plan_cleanup(containers, [], {}, NOW, 24)
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
    latest = {"freed": NOW - 60, "keep": NOW, "stale_backup": NOW - 7200, "used": NOW}
    decided = backup_policy.plan_cleanup(containers, volumes, latest, NOW, 24)
    # "freed" is no longer used once its old container goes, and its backup is newer.
    assert sorted(decided["volumes"]) == ["empty", "freed"]
    assert decided["kept"]["used"].startswith("in use by c-running")
    assert "keep" in decided["kept"]["keep"]
    assert decided["kept"]["stale_backup"] == "no backup newer than its last change"
    assert decided["kept"]["never"] == "no backup"
    assert "cannot be read" in decided["kept"]["unreadable"]


def test_cleanup_keeps_volumes_when_the_target_is_unreadable():
    volumes = [_volume("backed_up"), _volume("empty", empty=True)]
    decided = backup_policy.plan_cleanup(
        [], volumes, {"backed_up": NOW}, NOW, 24, target_problem="not mounted"
    )
    assert decided["volumes"] == ["empty"]
    assert "not mounted" in decided["kept"]["backed_up"]


def test_cleanup_of_volumes_can_be_turned_off():
    decided = backup_policy.plan_cleanup(
        [], [_volume("x", empty=True)], {}, NOW, 24, clean_volumes=False
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
