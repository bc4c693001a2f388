"""Backups on the lab: volumes follow their service to another node (restore on first start),
the formula's check → apply → re-apply → check, a corrupted archive refused, an unmounted or
read-only target failing before anything changes, clean-up rules, and a MariaDB dump restored
on another node with the password nowhere in Salt's files.

The network drive is the lab's share (a host directory mounted at /mnt/armswarm-backup in every
node). Images are built here and pushed to the lab registry: no pulls."""

import datetime
import json
import shutil
import time
from pathlib import Path

import pytest
from armswarm_core.backup import backup_policy
from helpers import assert_not_in_salt_files, busybox_rootfs, push_image

from armswarm.lab import image
from armswarm.lab.cluster import CACHE_DIR, NODE_BACKUP_SHARE

APPLETS = (
    "sh", "ls", "grep", "sort", "sha256sum", "tar", "gzip", "find", "rm", "mkdir", "sleep",
    "cat", "echo", "cd",
)  # fmt: skip
HELPER = "/usr/local/bin/armswarm-restore"
SERVICE = "bk_app"
VOLUME = "bk_data"
SECRET = "Lab-Backup-Pw-7Qz9xK"
DRAIN = "bk_drain"
DRAIN_VOLUME = "bk_drain_data"


def salt(lab, node, fun, *args, timeout=300):
    return lab.salt_json(node, fun, *args, f"--timeout={timeout}", check=False)[node]


def sh(lab, node, script):
    code, out = lab.exec(node, ["sh", "-c", script])
    assert code == 0, (node, script, out)
    return out


def volume_checksums(lab, node, volume):
    return sh(
        lab,
        node,
        # A missing volume fails here (cd "" would hash the node's whole root instead).
        f'd=$(docker volume inspect -f {{{{.Mountpoint}}}} {volume}) && cd "$d" && '
        "find . -type f | sort | xargs sha256sum",
    )


def share(lab) -> Path:
    return lab.backup_share


def backup_ids(lab, volume):
    folder = share(lab) / "volumes" / volume
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def wait_task(lab, node, timeout=90, service=SERVICE):
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        code, out = lab.exec(
            "node1",
            [
                "docker", "service", "ps", service, "--filter", "desired-state=running",
                "--format", "{{.Node}} {{.CurrentState}}",
            ],
        )  # fmt: skip
        if code == 0 and out.strip().startswith(f"{node} Running"):
            return
        time.sleep(1)
    raise AssertionError(f"{service} not running on {node}: {out}")


@pytest.fixture(scope="module")
def app_image(lab):
    # A kept lab (ARMSWARM_LAB_KEEP) may hold a previous run's service, volumes and backups.
    for name in (SERVICE, DRAIN):
        lab.exec("node1", ["docker", "service", "rm", name])
    for node in lab.node_names():
        lab.exec(
            node,
            [
                "sh", "-c",
                "docker rm -f bk_running bk_keepme bk_stopped bk_user bk_hangapp bkdb"
                " >/dev/null 2>&1;"
                " for i in $(seq 30); do docker container prune -f >/dev/null;"
                " vols=$(docker volume ls -q | grep -E '^(bk_|bkdb_)');"
                ' [ -z "$vols" ] && break; docker volume rm $vols >/dev/null 2>&1; sleep 1; done',
            ],
        )  # fmt: skip
    for kind in ("volumes", "mysql"):
        for folder in (share(lab) / kind).glob("bk*"):
            shutil.rmtree(folder)
    ref = f"{lab.registry}/armswarm/bk-app:1"
    helper = image.helper_script().read_text()
    push_image(lab, "node1", ref, busybox_rootfs(APPLETS, {HELPER[1:]: (helper, 0o755)}))
    yield ref
    for name in (SERVICE, DRAIN):
        lab.exec("node1", ["docker", "service", "rm", name])


def test_formula_check_apply_reapply_check(lab):
    # What the formula makes is removed first: a kept lab (ARMSWARM_LAB_KEEP) has it from the
    # last run, and a check that predicts nothing equals a run that makes nothing.
    for node in lab.node_names():
        sh(lab, node, "rm -f /usr/local/sbin/armswarm-restore; crontab -r 2>/dev/null; true")
    predicted = lab.salt_json("*", "state.apply", "backup", "test=True", "--timeout=300")
    applied = lab.salt_json("*", "state.apply", "backup", "--timeout=300")
    assert sorted(predicted) == sorted(applied) == lab.node_names()
    for node in lab.node_names():
        assert all(s["result"] is True for s in applied[node].values()), applied[node]
        would = {s["__id__"] for s in predicted[node].values() if s["result"] is None}
        made = {s["__id__"] for s in applied[node].values() if s["changes"]}
        # The helper and the example pillar's three cron jobs were just removed.
        expected = {f"backup-cron-{job}" for job in ("volumes", "mysql", "cleanup")}
        assert expected | {"backup-restore-helper"} <= made, (node, sorted(made))
        assert would == made, (node, sorted(would ^ made))
    for extra in ((), ("test=True",)):
        again = lab.salt_json("*", "state.apply", "backup", *extra, "--timeout=300")
        for node, states in again.items():
            assert all(s["result"] is True for s in states.values()), states
            assert not any(s["changes"] for s in states.values()), (node, states)
    crontab = sh(lab, "node2", "crontab -l")
    for fun in ("backup.run", "backup.mysql_dump", "backup.cleanup"):
        assert f"--out=quiet {fun} ||" in crontab, crontab
    sh(lab, "node2", "test -x /usr/local/sbin/armswarm-restore")


def test_bad_settings_change_nothing(lab):
    ret = lab.salt_json(
        "node5",
        "state.apply",
        "backup",
        'pillar={"armswarm": {"backup": {"keep_daily": 0, "target": {"path": "rel"}}}}',
        "--timeout=300",
        check=False,  # the settings state fails: salt exits non-zero
    )["node5"]
    valid = next(s for sid, s in ret.items() if "settings_valid" in sid)
    assert valid["result"] is False and "keep_daily" in valid["comment"], valid
    assert not any(s["changes"] for s in ret.values())


def volume_share_mount(volume):
    """The documented pattern: only this volume's directory of the share, read-only."""
    path = f"volumes/{volume}"
    return f"type=bind,source={NODE_BACKUP_SHARE}/{path},target=/armswarm-backup/{path},readonly"


def create_service(lab, name, volume, node, image_ref, allow_empty=True):
    # A bind mount's source must exist: the directory is made once, 0700 like the backups.
    (share(lab) / "volumes" / volume).mkdir(mode=0o700, parents=True, exist_ok=True)
    command = ["sh", HELPER, f"/data={volume}", "--", "sleep", "100000"]
    env = ["--env", f"ARMSWARM_RESTORE_ALLOW_EMPTY={volume}"] if allow_empty else []
    code, out = lab.exec(
        "node1",
        [
            # the registry is closed: the nodes pull with node1's login, as a deploy does
            "docker", "service", "create", "--detach", "--with-registry-auth", "--name", name,
            "--constraint", f"node.hostname=={node}", *env,
            "--mount", f"type=volume,source={volume},target=/data",
            "--mount", volume_share_mount(volume),
            image_ref, *command,
        ],
    )  # fmt: skip
    assert code == 0, out


def move_service(lab, name, old, new):
    sh(
        lab,
        "node1",
        "docker service update --detach --with-registry-auth"
        " --env-rm ARMSWARM_RESTORE_ALLOW_EMPTY "
        f"--constraint-rm node.hostname=={old} --constraint-add node.hostname=={new} {name}",
    )


def test_volume_follows_its_service_to_another_node(lab, app_image):
    create_service(lab, SERVICE, VOLUME, "node4", app_image)
    wait_task(lab, "node4")
    # Files and random binary data, written where the service runs.
    sh(
        lab,
        "node4",
        f'd="$(docker volume inspect -f {{{{.Mountpoint}}}} {VOLUME})" && mkdir -p "$d/deep/er" '
        '&& head -c 3000000 /dev/urandom > "$d/deep/er/random.bin" '
        '&& head -c 70000 /dev/urandom > "$d/small.bin" && echo hello > "$d/hello.txt"',
    )
    original = volume_checksums(lab, "node4", VOLUME)

    ret = salt(lab, "node4", "backup.run")
    done = ret["backed_up"][VOLUME]
    assert done["paused"] and done["paused"][0].startswith(f"{SERVICE}.1."), ret
    assert not ret["errors"], ret
    code, out = lab.exec("node4", ["docker", "ps", "--filter", "status=paused", "-q"])
    assert out.strip() == "", "a container was left paused"
    # Unchanged since: the next run skips it.
    assert "unchanged" in salt(lab, "node4", "backup.run")["skipped"][VOLUME]

    # Remove the service's task and the volume from node4, then start it on node5.
    sh(lab, "node1", f"docker service scale --detach {SERVICE}=0")
    sh(
        lab,
        "node4",
        f"for i in $(seq 30); do docker ps -q --filter volume={VOLUME} | grep -q . || break;"
        f" sleep 1; done; docker container prune -f >/dev/null; docker volume rm {VOLUME}",
    )
    sh(
        lab,
        "node1",
        "docker service update --detach --with-registry-auth"
        " --env-rm ARMSWARM_RESTORE_ALLOW_EMPTY "
        f"--constraint-rm node.hostname==node4 "
        f"--constraint-add node.hostname==node5 --replicas 1 {SERVICE}",
    )
    wait_task(lab, "node5")
    assert volume_checksums(lab, "node5", VOLUME) == original
    logs = sh(lab, "node1", f"docker service logs --raw {SERVICE} 2>&1")
    assert f"restored {VOLUME} into /data from backup {done['id']}" in logs, logs


def test_state_restores_a_missing_volume_before_a_deploy(lab, app_image):
    args = ("name=" + VOLUME,)
    original = volume_checksums(lab, "node5", VOLUME)
    results = []
    for test in (True, False, False, True):
        argv = ["node3", "state.single", "backup.volume_restored", *args, "--timeout=300"]
        ret = lab.salt_json(*argv, *(["test=True"] if test else []))["node3"]
        (result,) = ret.values()
        results.append(result)
    predicted, applied, again, check = results
    assert predicted["result"] is None and predicted["changes"], predicted
    assert applied["result"] is True and applied["changes"] == predicted["changes"], applied
    for result in (again, check):
        assert result["result"] is True and result["changes"] == {}, result
    assert volume_checksums(lab, "node3", VOLUME) == original


def test_corrupted_archive_is_refused_and_the_volume_untouched(lab, app_image):
    good = backup_ids(lab, VOLUME)[-1]
    folder = share(lab) / "volumes" / VOLUME
    # A newer backup whose archive has one byte flipped (manifest and sums intact).
    started, node = backup_policy.parse_backup_id(good)
    bad = backup_policy.backup_id(started + datetime.timedelta(seconds=1), node)
    shutil.copytree(folder / good, folder / bad)
    archive = next((folder / bad).glob("data.tar*"))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    try:
        verified = salt(lab, "node2", "backup.verify", VOLUME, f"backup={bad}")
        assert verified["ok"] is False
        # Missing volume: refused, and no empty volume left behind.
        ret = salt(lab, "node2", "backup.restore", VOLUME, f"backup={bad}")
        assert isinstance(ret, str) and "checksum mismatch" in ret, ret
        assert salt(lab, "node2", "backup.volume_state", VOLUME) == "missing"
        # A volume with data, even with force: untouched.
        sh(lab, "node2", f"docker volume create {VOLUME} >/dev/null")
        sh(
            lab,
            "node2",
            f'echo keep > "$(docker volume inspect -f {{{{.Mountpoint}}}} {VOLUME})/x"',
        )
        before = volume_checksums(lab, "node2", VOLUME)
        ret = salt(lab, "node2", "backup.restore", VOLUME, f"backup={bad}", "force=True")
        assert isinstance(ret, str) and "checksum mismatch" in ret, ret
        assert volume_checksums(lab, "node2", VOLUME) == before
        # Restore on first start skips the damaged newest backup for the newest good one.
        sh(lab, "node2", f"docker volume rm {VOLUME} >/dev/null")
        code, out = lab.exec(
            "node2",
            [
                "docker", "run", "--rm", "-v", f"{VOLUME}:/data",
                "-v", f"{NODE_BACKUP_SHARE}:/armswarm-backup:ro",
                app_image, "sh", HELPER, f"/data={VOLUME}", "--", "true",
            ],
        )  # fmt: skip
        assert code == 0, out
        assert f"backup {bad} of {VOLUME}: checksum mismatch, skipped" in out, out
        assert f"from backup {good}" in out, out
        assert volume_checksums(lab, "node2", VOLUME) == volume_checksums(lab, "node5", VOLUME)
    finally:
        shutil.rmtree(folder / bad)
        lab.exec("node2", ["docker", "volume", "rm", VOLUME])


def test_unmounted_or_read_only_target_fails_clearly_and_deletes_nothing(lab, app_image):
    before = sorted(str(p) for p in share(lab).rglob("*"))
    sh(lab, "node4", "mkdir -p /srv/not-mounted /srv/ro")
    sh(
        lab,
        "node4",
        f"mount --bind {NODE_BACKUP_SHARE} /srv/ro && mount -o remount,ro,bind /srv/ro",
    )
    try:
        for target, reason in (("/srv/not-mounted", "not a mount point"), ("/srv/ro", "read-only")):
            for fun in ("backup.run", "backup.mysql_dump"):
                ret = salt(lab, "node4", fun, f"target={target}")
                assert isinstance(ret, str) and reason in ret, (fun, target, ret)
        after = sorted(str(p) for p in share(lab).rglob("*"))
        assert after == before, "the failed runs changed the share"
        # Clean-up cannot check backups on an unmounted target: volumes with data stay.
        sh(lab, "node4", "docker volume create bk_target >/dev/null")
        sh(lab, "node4", 'echo x > "$(docker volume inspect -f {{.Mountpoint}} bk_target)/x"')
        assert "bk_target" in salt(lab, "node4", "backup.run", "volumes=bk_target")["backed_up"]
        ret = salt(lab, "node4", "backup.cleanup", "target=/srv/not-mounted")
        assert "not a mount point" in ret["kept"]["volumes"]["bk_target"], ret
        assert "bk_target" not in [v["name"] for v in ret["removed"]["volumes"]]
        assert salt(lab, "node4", "backup.volume_state", "bk_target") == "data"
    finally:
        lab.exec("node4", ["umount", "/srv/ro"])


def test_cleanup_rules_and_dry_run(lab, app_image):
    node = "node3"
    script = """
set -e
mk() { docker volume create "$@" >/dev/null; }
put() { echo "$2" > "$(docker volume inspect -f {{.Mountpoint}} $1)/f"; }
mk bk_fresh; put bk_fresh a
mk bk_changed; put bk_changed a
mk --label io.armswarm.keep=true bk_kept; put bk_kept a
mk bk_nobackup
mk bk_empty
mk bk_used; put bk_used a
docker create --name bk_stopped -v bk_used:/v APP true >/dev/null
docker create --name bk_keepme --label io.armswarm.keep=true APP true >/dev/null
docker run -d --name bk_running -v bk_used:/v2 APP sleep 100000 >/dev/null
""".replace("APP", app_image)
    sh(lab, node, script)
    ret = salt(lab, node, "backup.run", "volumes=bk_fresh,bk_changed,bk_kept,bk_used")
    assert sorted(ret["backed_up"]) == ["bk_changed", "bk_fresh", "bk_kept", "bk_used"], ret
    time.sleep(0.05)
    sh(lab, node, 'echo b > "$(docker volume inspect -f {{.Mountpoint}} bk_changed)/f"')
    sh(lab, node, 'echo b > "$(docker volume inspect -f {{.Mountpoint}} bk_nobackup)/f"')

    dry = salt(lab, node, "backup.cleanup", "dry_run=True", "max_age_hours=0")
    removed = {
        k: sorted(i.get("name") or i.get("id") for i in v) for k, v in dry["removed"].items()
    }
    assert "bk_stopped" in removed["containers"] and "bk_keepme" not in removed["containers"]
    assert "bk_running" not in removed["containers"]
    assert {"bk_fresh", "bk_empty"} <= set(removed["volumes"]), dry
    kept = dry["kept"]["volumes"]
    assert kept["bk_changed"].startswith("changed since its backup "), kept
    assert kept["bk_nobackup"].startswith("no backup of its current content"), kept
    assert "keep" in kept["bk_kept"] and kept["bk_used"].startswith("in use by bk_running")
    assert salt(lab, node, "backup.volume_state", "bk_fresh") == "data"  # dry run: still there

    real = salt(lab, node, "backup.cleanup", "max_age_hours=0")
    assert sorted(v["name"] for v in real["removed"]["volumes"]) == removed["volumes"], real
    assert real["freed_bytes"] > 0 and not real["errors"], real
    states = {v: salt(lab, node, "backup.volume_state", v) for v in ("bk_fresh", "bk_empty")}
    assert states == {"bk_fresh": "missing", "bk_empty": "missing"}
    for vol in ("bk_changed", "bk_nobackup", "bk_kept", "bk_used"):
        assert salt(lab, node, "backup.volume_state", vol) == "data", vol
    sh(lab, node, "docker rm -f bk_running bk_keepme >/dev/null")


@pytest.fixture(scope="module")
def mariadb_image(lab):
    context, digest = image.mariadb_context(CACHE_DIR, progress=print)
    ref = f"{lab.registry}/armswarm/mariadb:{digest}"
    node1 = lab.client.containers.get(lab.container_name(lab.node("node1")))
    with open(context, "rb") as fh:
        node1.put_archive("/root", fh)
    argv = ["docker", "import"]
    for change in image.MARIADB_CHANGES:
        argv += ["--change", change]
    for cmd in (argv + ["/root/rootfs.tar", ref], ["docker", "push", ref]):
        code, out = lab.exec("node1", cmd)
        assert code == 0, out
    lab.exec("node1", ["rm", "-f", "/root/rootfs.tar"])
    return ref


def start_mariadb(lab, node, ref):
    sh(
        lab,
        node,
        f"docker rm -f bkdb >/dev/null 2>&1; docker run -d --name bkdb "
        f"-e MARIADB_ROOT_PASSWORD={SECRET} -v bkdb_data:/var/lib/mysql {ref} >/dev/null",
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        code, out = lab.exec(
            node, ["docker", "exec", "-e", f"MYSQL_PWD={SECRET}", "bkdb", "mariadb-admin", "ping"]
        )
        if code == 0 and "alive" in out:
            return
        time.sleep(1)
    _, logs = lab.exec(node, ["docker", "logs", "bkdb"])
    raise AssertionError(f"mariadb on {node} not ready: {out}\n{logs}")


def sql(lab, node, query):
    code, out = lab.exec(
        node,
        ["docker", "exec", "-e", f"MYSQL_PWD={SECRET}", "bkdb", "mariadb", "-N", "-e", query],
    )
    assert code == 0, out
    return out


def _dockerd_debug(lab, node, on: bool) -> str:
    """Switch the node's dockerd debug log on (daemon.json + SIGHUP, no restart) or off and
    back to exactly the file it was; returns the node's time, for journalctl --since. A key
    missing from the file keeps its running value on a reload, so off is written as
    ``debug: false`` and reloaded before the file is put back (else debug stays on, and a
    later run's own test commands, passwords in their env, are in the log)."""
    time.sleep(1.1)  # --since has whole seconds: the commands before are a second older
    _, now = lab.exec(node, ["date", "+%Y-%m-%d %H:%M:%S"])
    if on:
        sh(lab, node, "cp -p /etc/docker/daemon.json /root/daemon.json.before-debug")
    edit = (
        "import json; p = '/etc/docker/daemon.json'; d = json.load(open(p)); "
        f"d['debug'] = {on}; json.dump(d, open(p, 'w'), indent=2)"
    )
    code, out = lab.exec(node, ["/opt/salt/bin/python3", "-c", edit])
    assert code == 0, out
    sh(lab, node, "kill -HUP $(pidof dockerd) && sleep 1")
    if not on:
        sh(lab, node, "mv /root/daemon.json.before-debug /etc/docker/daemon.json")
    return now.strip()


def test_mariadb_dump_restored_on_another_node(lab, mariadb_image):
    start_mariadb(lab, "node2", mariadb_image)
    sql(
        lab,
        "node2",
        "DROP DATABASE IF EXISTS shop; CREATE DATABASE shop; CREATE TABLE shop.items "
        "(id INT PRIMARY KEY, name VARCHAR(40), data BLOB) ENGINE=InnoDB; "
        "USE shop; INSERT INTO shop.items SELECT seq, CONCAT('item-', seq), RANDOM_BYTES(200) "
        "FROM seq_1_to_500;",
    )
    rows = sql(lab, "node2", "SELECT id, name, HEX(data) FROM shop.items ORDER BY id")
    assert len(rows.splitlines()) == 500

    # dockerd logs each API request's body with debug on (a reloadable setting): the dump's
    # exec must not carry the password there
    since = _dockerd_debug(lab, "node2", True)
    try:
        ret = salt(lab, "node2", "backup.mysql_dump")
    finally:
        _dockerd_debug(lab, "node2", False)
    assert not ret["errors"], ret
    _, journal = lab.exec("node2", ["journalctl", "-u", "docker", "--no-pager", "--since", since])
    assert "/exec" in journal and "form data" in journal, journal[-2000:]  # debug was on
    assert SECRET not in journal
    dumped = ret["dumped"]["bkdb"]
    dump_dir = share(lab) / "mysql" / "bkdb" / dumped["id"]
    assert (dump_dir / "dump.sql.gz").stat().st_size == dumped["archive_bytes"]
    # Owner only: a dump holds every table, password hashes included.
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in dump_dir.iterdir()} == dict.fromkeys(
        ("SHA256SUMS", "dump.sql.gz", "manifest.json"), "0o600"
    )
    for folder in (dump_dir, dump_dir.parent, dump_dir.parent.parent):
        assert oct(folder.stat().st_mode & 0o777) == "0o700", folder

    start_mariadb(lab, "node3", mariadb_image)
    ret = salt(lab, "node3", "backup.mysql_restore", "bkdb")
    assert ret["backup"] == dumped["id"], ret
    assert sql(lab, "node3", "SELECT id, name, HEX(data) FROM shop.items ORDER BY id") == rows

    # Neither the master (job cache, logs) nor any minion's logs or cache hold the password.
    assert_not_in_salt_files(lab, SECRET)
    for node in ("node2", "node3"):
        lab.exec(node, ["docker", "rm", "-f", "bkdb"])
        lab.exec(node, ["docker", "volume", "rm", "bkdb_data"])


def mountpoint(volume):
    return f'"$(docker volume inspect -f {{{{.Mountpoint}}}} {volume})"'


def removed_volumes(ret):
    return [v["name"] for v in ret["removed"]["volumes"]]


def test_a_drain_loses_nothing(lab, app_image):
    # node4 backs up, keeps writing, is drained; node5 restores that backup, writes and backs
    # up; then node4's nightly backup and clean-up run.
    create_service(lab, DRAIN, DRAIN_VOLUME, "node4", app_image)
    wait_task(lab, "node4", service=DRAIN)
    d = mountpoint(DRAIN_VOLUME)
    sh(lab, "node4", f"head -c 500000 /dev/urandom > {d}/before.bin && echo one > {d}/log.txt")
    b1 = salt(lab, "node4", "backup.run", f"volumes={DRAIN_VOLUME}")["backed_up"][DRAIN_VOLUME]
    sh(lab, "node4", f"head -c 300000 /dev/urandom > {d}/after.bin && echo two >> {d}/log.txt")
    node4_content = volume_checksums(lab, "node4", DRAIN_VOLUME)
    move_service(lab, DRAIN, "node4", "node5")
    wait_task(lab, "node5", service=DRAIN)
    sh(
        lab,
        "node4",
        f"for i in $(seq 60); do docker ps -q --filter volume={DRAIN_VOLUME} | grep -q . "
        "|| break; sleep 1; done",
    )
    logs = sh(lab, "node1", f"docker service logs --raw {DRAIN} 2>&1")
    assert f"from backup {b1['id']}" in logs, logs
    sh(lab, "node5", f"echo written on node5 > {d}/node5.txt")
    node5_content = volume_checksums(lab, "node5", DRAIN_VOLUME)
    assert node5_content != node4_content
    b2 = salt(lab, "node5", "backup.run", f"volumes={DRAIN_VOLUME}")["backed_up"][DRAIN_VOLUME]
    assert b2["lineage"] != b1["lineage"], (b1, b2)

    # node4's nightly backup: its changes since its own backup go under its own lineage,
    # although node5's backup of the same name is newer.
    nightly = salt(lab, "node4", "backup.run")
    assert DRAIN_VOLUME in nightly["backed_up"], nightly
    b3 = nightly["backed_up"][DRAIN_VOLUME]
    assert b3["lineage"] == b1["lineage"], (b1, b3)
    # Retention keeps the newest of each lineage (all of them are from today).
    assert {b2["id"], b3["id"]} <= set(backup_ids(lab, DRAIN_VOLUME))

    # The share lost the end of node4's archive, manifest and SHA256SUMS intact: the clean-up
    # must not take that for a backup.
    archive = next((share(lab) / "volumes" / DRAIN_VOLUME / b3["id"]).glob("data.tar*"))
    with open(archive, "r+b") as fh:
        fh.truncate(archive.stat().st_size // 2)
    ret = salt(lab, "node4", "backup.cleanup", "max_age_hours=0")
    assert DRAIN_VOLUME not in removed_volumes(ret), ret
    assert "SHA256SUMS" in ret["kept"]["volumes"][DRAIN_VOLUME], ret
    assert salt(lab, "node4", "backup.volume_state", DRAIN_VOLUME) == "data"
    # The next backup sees the damage and backs up again; only then may the volume go.
    b4 = salt(lab, "node4", "backup.run", f"volumes={DRAIN_VOLUME}")["backed_up"][DRAIN_VOLUME]
    assert b4["lineage"] == b1["lineage"]
    ret = salt(lab, "node4", "backup.cleanup", "max_age_hours=0")
    assert DRAIN_VOLUME in removed_volumes(ret), ret
    assert salt(lab, "node4", "backup.volume_state", DRAIN_VOLUME) == "missing"

    # Nothing is lost: node4's last writes are in the newest backup, node5's lineage is listed
    # and can be picked.
    try:
        restored = salt(lab, "node2", "backup.restore", DRAIN_VOLUME)
        assert restored["backup"] == b4["id"], restored
        assert restored["other_lineages"] == {b2["lineage"]: b2["id"]}, restored
        assert volume_checksums(lab, "node2", DRAIN_VOLUME) == node4_content
        sh(lab, "node2", f"docker volume rm {DRAIN_VOLUME} >/dev/null")
        picked = salt(lab, "node2", "backup.restore", DRAIN_VOLUME, f"backup={b2['id']}")
        assert picked["backup"] == b2["id"], picked
        assert volume_checksums(lab, "node2", DRAIN_VOLUME) == node5_content
    finally:
        lab.exec("node1", ["docker", "service", "rm", DRAIN])
        lab.exec("node2", ["docker", "volume", "rm", DRAIN_VOLUME])


def test_backups_are_owner_only_and_the_helper_fails_closed(lab, app_image):
    node, vol = "node4", "bk_modes"
    sh(lab, node, f"docker volume create {vol} >/dev/null && echo s > {mountpoint(vol)}/secret")
    # A umask of 000 (a cron or shell that sets none) must not widen anything.
    code, out = lab.exec(
        node, ["sh", "-c", f"umask 000; salt-call --out=json backup.run volumes={vol}"]
    )
    assert code == 0, out
    folder = share(lab) / "volumes" / vol
    (bid,) = backup_ids(lab, vol)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (folder / bid).iterdir()}
    assert modes == dict.fromkeys(("SHA256SUMS", "data.tar.gz", "manifest.json"), "0o600")
    for path in (folder / bid, folder, folder.parent):
        assert oct(path.stat().st_mode & 0o777) == "0o700", path
    lab.exec(node, ["docker", "volume", "rm", vol])

    closed = "bk_closed"
    run = ["docker", "run", "--rm", "-v", f"{closed}:/data"]
    app = [app_image, "sh", HELPER, f"/data={closed}", "--", "echo", "APP-STARTED"]
    try:
        # The share not mounted into the container: the application never starts empty.
        code, out = lab.exec(node, [*run, *app])
        assert code != 0 and "APP-STARTED" not in out, out
        assert "not mounted" in out, out
        # Mounted (that volume's directory only) but no backup yet: refused unless allowed.
        (folder.parent / closed).mkdir(mode=0o700, exist_ok=True)
        mount = ["--mount", volume_share_mount(closed)]
        code, out = lab.exec(node, [*run, *mount, *app])
        assert code != 0 and "APP-STARTED" not in out and f"no backup of {closed}" in out, out
        allow = ["-e", f"ARMSWARM_RESTORE_ALLOW_EMPTY=other {closed}"]
        code, out = lab.exec(node, [*run, *mount, *allow, *app])
        assert code == 0 and "APP-STARTED" in out, out
        # The container sees that one directory of the share, not the other volumes' backups.
        code, out = lab.exec(
            node, [*run, *mount, app_image, "sh", "-c", "ls -A /armswarm-backup/volumes"]
        )
        assert code == 0 and out.split() == [closed], out
    finally:
        lab.exec(node, ["docker", "volume", "rm", closed])


HANG = """
set -e
[ -e /dev/loop-control ] || mknod /dev/loop-control c 10 237
for i in $(seq 0 63); do [ -e /dev/loop$i ] || mknod /dev/loop$i b 7 $i; done
truncate -s 16M /srv/bk-share.img && mkfs.ext4 -q -F /srv/bk-share.img
truncate -s 64M /srv/bk-hang.img && mkfs.ext4 -q -F /srv/bk-hang.img
# The share is one file system and the volume's directory on it another: each can hang alone.
mkdir -p /srv/bk-hung && mount -o loop /srv/bk-share.img /srv/bk-hung
mkdir -p /srv/bk-hung/volumes/bk_hang
mount -o loop /srv/bk-hang.img /srv/bk-hung/volumes/bk_hang
docker volume create bk_hang >/dev/null
head -c 2000000 /dev/urandom > "$(docker volume inspect -f {{.Mountpoint}} bk_hang)/data.bin"
docker run -d --name bk_hangapp -v bk_hang:/v APP sleep 100000 >/dev/null
conf=/etc/salt/minion.d/zz-bk-hang.conf
printf 'armswarm:\\n  backup:\\n    pause_timeout_seconds: 5\\n' > $conf
# Every write to the volume's directory on the share now blocks in the kernel until thawed.
fsfreeze -f /srv/bk-hung/volumes/bk_hang
"""

UNHANG = """
fsfreeze -u /srv/bk-hung/volumes/bk_hang; fsfreeze -u /srv/bk-hung
rm -f /etc/salt/minion.d/zz-bk-hang.conf
docker unpause bk_hangapp >/dev/null 2>&1
docker rm -f bk_hangapp >/dev/null 2>&1
for i in $(seq 30); do umount /srv/bk-hung/volumes/bk_hang 2>/dev/null && break; sleep 1; done
for i in $(seq 30); do umount /srv/bk-hung 2>/dev/null && break; sleep 1; done
rm -f /srv/bk-hang.img /srv/bk-share.img; docker volume rm bk_hang >/dev/null
"""

RUN_HUNG = "timeout 120 salt-call --out=json backup.run volumes=bk_hang target=/srv/bk-hung"


def run_hung(lab, node, failing=False):
    """The run's JSON return, or (``failing``: the module raised) its error output."""
    clock = time.monotonic()
    code, out = lab.exec(node, ["sh", "-c", RUN_HUNG + (" 2>&1" if failing else " 2>/dev/null")])
    elapsed = time.monotonic() - clock
    assert code != 124, f"backup.run hung ({elapsed:.0f} s): {out}"
    # Salt-call's start and the volume scan are in it too: far below the 120 s hang.
    assert elapsed < 60, elapsed
    state = sh(lab, node, "docker inspect -f {{.State.Status}} bk_hangapp").strip()
    assert state == "running", (state, out)
    if failing:
        assert code != 0, out
        return out
    return json.loads(out)["local"]


def no_run_left(lab, node):
    """Once the share answers, no process of the run is left (a child stuck in the kernel
    dies then, killed), and none is a zombie."""
    for _ in range(20):
        code, out = lab.exec(node, ["sh", "-c", "ps -eo stat=,comm= | grep salt-call"])
        if code == 1:
            return
        time.sleep(0.5)
    raise AssertionError(f"processes of the backup run left: {out}")


def test_a_hung_share_unpauses_the_containers_within_the_limit(lab, app_image):
    node = "node4"
    try:
        sh(lab, node, HANG.replace("APP", app_image))
        ret = run_hung(lab, node)
        assert "pause_timeout_seconds=5" in ret["errors"]["bk_hang"], ret
        assert "the copy did not finish" in ret["errors"]["bk_hang"], ret
        assert "bk_hang" not in ret["backed_up"], ret
        # Thawed, the share holds no backup that looks complete.
        sh(lab, node, "fsfreeze -u /srv/bk-hung/volumes/bk_hang")
        no_run_left(lab, node)
        listing = sh(lab, node, "ls -1 /srv/bk-hung/volumes/bk_hang").split()
        assert [n for n in listing if n != "lost+found"] == [], listing

        # The whole share frozen: the run's first write (its probe) hangs, before any pause.
        since = sh(lab, node, "date +%s").strip()
        sh(lab, node, "fsfreeze -f /srv/bk-hung")
        ret = run_hung(lab, node, failing=True)
        assert "is the backup target /srv/bk-hung hung?" in ret, ret
        assert "pause_timeout_seconds=5" in ret and "before any container was paused" in ret
        events = sh(
            lab,
            node,
            f"docker events --since {since} --until $(date +%s) --filter container=bk_hangapp "
            "--filter event=pause --format '{{.Action}}'",
        )
        assert events.split() == [], events
        sh(lab, node, "fsfreeze -u /srv/bk-hung")
        no_run_left(lab, node)
    finally:
        lab.exec(node, ["sh", "-c", UNHANG])


DUMP_HANG = """
set -e
[ -e /dev/loop-control ] || mknod /dev/loop-control c 10 237
for i in $(seq 0 63); do [ -e /dev/loop$i ] || mknod /dev/loop$i b 7 $i; done
truncate -s 16M /srv/bk-dshare.img && mkfs.ext4 -q -F /srv/bk-dshare.img
truncate -s 16M /srv/bk-dhang.img && mkfs.ext4 -q -F /srv/bk-dhang.img
# The dump set's directory on the share is a file system of its own, frozen: every write
# there blocks in the kernel until thawed.
mkdir -p /srv/bk-dhung && mount -o loop /srv/bk-dshare.img /srv/bk-dhung
mkdir -p /srv/bk-dhung/mysql/bkdb && mount -o loop /srv/bk-dhang.img /srv/bk-dhung/mysql/bkdb
printf 'armswarm:\\n  backup:\\n    mysql:\\n      timeout_seconds: 5\\n' \\
    > /etc/salt/minion.d/zz-bk-dhang.conf
fsfreeze -f /srv/bk-dhung/mysql/bkdb
"""

DUMP_UNHANG = """
fsfreeze -u /srv/bk-dhung/mysql/bkdb
rm -f /etc/salt/minion.d/zz-bk-dhang.conf
for i in $(seq 30); do umount /srv/bk-dhung/mysql/bkdb 2>/dev/null && break; sleep 1; done
for i in $(seq 30); do umount /srv/bk-dhung 2>/dev/null && break; sleep 1; done
rm -f /srv/bk-dshare.img /srv/bk-dhang.img
docker rm -f bkdb >/dev/null 2>&1; docker volume rm bkdb_data >/dev/null 2>&1
"""


def test_a_dump_to_a_hung_share_is_given_up_at_its_limit(lab, mariadb_image):
    node = "node2"
    start_mariadb(lab, node, mariadb_image)
    try:
        sh(lab, node, DUMP_HANG)
        clock = time.monotonic()
        code, out = lab.exec(
            node,
            [
                "sh",
                "-c",
                "timeout 120 salt-call --out=json backup.mysql_dump target=/srv/bk-dhung "
                "2>/dev/null",
            ],
        )
        elapsed = time.monotonic() - clock
        assert code != 124, f"backup.mysql_dump hung ({elapsed:.0f} s): {out}"
        assert elapsed < 60, elapsed  # the 5 s limit, salt-call's start and the probe
        ret = json.loads(out)["local"]
        error = ret["errors"]["bkdb"]
        assert "the dump of bkdb did not finish within mysql:timeout_seconds=5" in error, ret
        assert "is the backup target /srv/bk-dhung hung?" in error, ret
        assert ret["dumped"] == {}, ret
        assert SECRET not in out
        # Still frozen: the dump it was asked for is not left running (holding its
        # transaction open until the share answers). Seen with the node's own ps: dockerd's
        # exec and top wait on the stream the stuck child holds.
        for _ in range(20):
            procs = sh(lab, node, "ps -eo pid=,stat=,args=")
            if "mariadb-dump" not in procs:  # neither running nor a zombie
                break
            time.sleep(0.5)
        else:
            raise AssertionError(procs)
        # Thawed: no process of the run is left, the database answers, the share holds no dump.
        sh(lab, node, "fsfreeze -u /srv/bk-dhung/mysql/bkdb")
        no_run_left(lab, node)
        ping = f"timeout 30 docker exec -e MYSQL_PWD={SECRET} bkdb mariadb-admin ping"
        assert "alive" in sh(lab, node, ping)
        for _ in range(20):
            listing = sh(lab, node, "ls -A /srv/bk-dhung/mysql/bkdb").split()
            if [n for n in listing if n != "lost+found"] == []:
                break
            time.sleep(0.5)
        assert [n for n in listing if n != "lost+found"] == [], listing
    finally:
        lab.exec(node, ["sh", "-c", DUMP_UNHANG])


def test_forced_restore_is_refused_in_use_and_two_at_once_leave_one_copy(lab, app_image):
    node, vol = "node3", "bk_tx"
    d = mountpoint(vol)
    write = (
        'd={d}; rm -rf "$d"/* && mkdir "$d/sub" && echo {w} > "$d/sub/{w}" '
        '&& i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo {w}$i > "$d/{w}$i"; done'
    )
    ids, contents = {}, {}
    for w in ("x", "y"):
        # A new volume each time: two lineages, so that retention keeps both backups.
        sh(lab, node, f"docker volume rm {vol} >/dev/null 2>&1; docker volume create {vol}")
        sh(lab, node, write.format(d=d, w=w))
        ids[w] = salt(lab, node, "backup.run", f"volumes={vol}")["backed_up"][vol]["id"]
        contents[w] = volume_checksums(lab, node, vol)
    try:
        # A running container uses it: refused, even with force, and the data is untouched.
        sh(lab, node, f"docker run -d --name bk_user -v {vol}:/v {app_image} sleep 100000")
        ret = salt(lab, node, "backup.restore", vol, f"backup={ids['x']}", "force=True")
        assert isinstance(ret, str) and "in use by running container(s) bk_user" in ret, ret
        assert volume_checksums(lab, node, vol) == contents["y"]
        sh(lab, node, "docker rm -f bk_user >/dev/null")

        # Two forced restores of different backups at once: one complete copy, never a mix.
        out = sh(
            lab,
            node,
            f"salt-call --out=json backup.restore {vol} backup={ids['x']} force=True "
            f">/tmp/bk-r1 2>/dev/null & salt-call --out=json backup.restore {vol} "
            f"backup={ids['y']} force=True >/tmp/bk-r2 2>/dev/null & wait; "
            "cat /tmp/bk-r1; echo; echo ===; cat /tmp/bk-r2",
        )
        first, second = (json.loads(part)["local"] for part in out.split("==="))
        assert {first["backup"], second["backup"]} == set(ids.values()), (first, second)
        assert volume_checksums(lab, node, vol) in (contents["x"], contents["y"])
        # Nothing left beside the data but the lock and the lineage marker.
        left = sh(lab, node, f'ls -A "$(dirname {d})"').split()
        assert sorted(left) == ["_data", "armswarm-lineage.json", "armswarm-restore.lock"], left
    finally:
        lab.exec(node, ["sh", "-c", f"docker rm -f bk_user; docker volume rm {vol}"])
