"""The daily clean-up: stopped containers, dangling images and volumes that are safe to lose
(the rules are :func:`armswarm_core.backup.backup_policy.plan_cleanup`)."""

import time
from datetime import datetime

from armswarm_core import ArmswarmError
from armswarm_core.backup import backup_policy, backup_target, volume_backups


# -- clean-up ------------------------------------------------------------------------------
def _finished(api, c) -> float:
    if c.get("State") == "created":
        return float(c["Created"])
    state = api.inspect_container(c["Id"])["State"]
    finished = state.get("FinishedAt") or ""
    try:
        # Docker reports nanoseconds: keep the seconds part.
        return (
            datetime.strptime(finished[:19], "%Y-%m-%dT%H:%M:%S")
            .replace(tzinfo=backup_policy.UTC)
            .timestamp()
        )
    except ValueError:
        return float(c["Created"])


def cleanup(engine, conf: dict, dry_run=False, now=None, max_age_hours=None) -> dict:
    """Stopped containers older than the limit, dangling images, unused volumes that are
    safe to lose (see :func:`armswarm_core.backup.backup_policy.plan_cleanup`). Reports what went
    (or would go, with ``dry_run``) and the bytes freed."""
    api = engine.api
    now = time.time() if now is None else now
    settings = dict(conf["cleanup"])
    if max_age_hours is not None:
        settings["container_max_age_hours"] = float(max_age_hours)
    containers = []
    raw_containers = api.containers(all=True, size=True)
    for c in raw_containers:
        state = c.get("State")
        containers.append(
            {
                "id": c["Id"],
                "name": c["Names"][0].lstrip("/"),
                "state": state,
                "finished": _finished(api, c) if state in backup_policy.STOPPED else None,
                "labels": c.get("Labels") or {},
                "volumes": [m["Name"] for m in c.get("Mounts") or () if m.get("Type") == "volume"],
                "size": c.get("SizeRw") or 0,
            }
        )
    target_problem = None
    try:
        root = backup_target.target_root(conf, write=False)
    except ArmswarmError as exc:
        target_problem, root = str(exc), None
    volumes, mountpoints = [], {}
    for vol in volume_backups.volume_info(engine) if settings["volumes"] else ():
        entry = {"name": vol["name"], "labels": vol["labels"], "last_change": None}
        if vol["driver"] == "local" and vol["mountpoint"]:
            try:
                info = volume_backups.scan(vol["mountpoint"])
                entry.update(info)
                mountpoints[vol["name"]] = vol["mountpoint"]
            except OSError:
                pass
        volumes.append(entry)
    fingerprints = {v["name"]: v.get("fingerprint") for v in volumes}

    def covered(name):
        return _coverage(root, name, mountpoints[name], fingerprints[name])

    decided = backup_policy.plan_cleanup(
        containers,
        volumes,
        covered,
        now,
        settings["container_max_age_hours"],
        target_problem=target_problem,
        clean_volumes=settings["volumes"],
    )
    report = {
        "dry_run": bool(dry_run),
        "removed": {"containers": [], "images": [], "volumes": []},
        "kept": {"volumes": decided["kept"]},
        "freed_bytes": 0,
        "errors": [],
    }
    if target_problem:
        report["errors"].append(target_problem)
    by_id = {c["id"]: c for c in containers}
    for cid in decided["containers"]:
        c = by_id[cid]
        if _remove(report, dry_run, lambda cid=cid: api.remove_container(cid), c["name"]):
            report["removed"]["containers"].append({"name": c["name"], "bytes": c["size"]})
            report["freed_bytes"] += c["size"]
    if settings["images"]:
        dangling = api.images(filters={"dangling": True})
        if dry_run:
            for img in dangling:
                report["removed"]["images"].append({"id": img["Id"], "bytes": img["Size"]})
                report["freed_bytes"] += img["Size"]
        elif dangling:
            pruned = api.prune_images(filters={"dangling": True})
            for item in pruned.get("ImagesDeleted") or ():
                if item.get("Deleted"):
                    report["removed"]["images"].append({"id": item["Deleted"]})
            report["freed_bytes"] += pruned.get("SpaceReclaimed") or 0
    sizes = {v["name"]: v.get("bytes", 0) for v in volumes}
    for name in decided["volumes"]:
        # The engine refuses a volume a container started using since the scan.
        if _remove(report, dry_run, lambda name=name: api.remove_volume(name), name):
            report["removed"]["volumes"].append({"name": name, "bytes": sizes.get(name, 0)})
            report["freed_bytes"] += sizes.get(name, 0)
    return report


def _coverage(root, name, mountpoint, fingerprint) -> str | None:
    """None when the backup the volume's lineage marker names holds exactly its current
    content and its archive verifies against the checksums, else why the volume stays."""
    marker = volume_backups.read_marker(mountpoint)
    try:
        item = None
        if marker and marker.get("backup"):
            item = backup_target.find(root, "volumes", name, marker["backup"])
        return backup_policy.coverage(
            marker, fingerprint, item, lambda: backup_target.archive_digest(item)
        )
    except OSError as exc:
        return f"its backup cannot be read: {exc}"


def _remove(report, dry_run, action, what) -> bool:
    if dry_run:
        return True
    try:
        action()
        return True
    except Exception as exc:  # noqa: BLE001 - docker.errors.APIError: report and go on
        report["errors"].append(f"{what}: {exc}")
        return False
