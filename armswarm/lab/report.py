"""What ``armswarm-lab up`` tells a person: state counts, failing states, the compact summary.

Pure functions over Salt's JSON returns (``--out=json``), so the main job's full output can go
to a log file while the terminal gets a few lines.
"""


def _state_results(ret) -> list[tuple[str, dict]]:
    """``[(state id, result dict)]`` of one minion's ``state.apply`` return (a dict of state
    results); anything else (an error string, a list of render errors) as one failed item."""
    if isinstance(ret, dict) and all(isinstance(v, dict) and "result" in v for v in ret.values()):
        return list(ret.items())
    if isinstance(ret, list):  # render errors
        return [("render", {"result": False, "comment": "\n".join(map(str, ret)), "changes": {}})]
    return [("return", {"result": False, "comment": str(ret), "changes": {}})]


def state_counts(ret) -> dict:
    """``{"ok", "changed", "failed"}`` of one minion's state return (None results, test
    mode, count as ok)."""
    counts = {"ok": 0, "changed": 0, "failed": 0}
    for _, result in _state_results(ret):
        if result.get("result") is False:
            counts["failed"] += 1
        elif result.get("changes"):
            counts["changed"] += 1
        else:
            counts["ok"] += 1
    return counts


def _state_name(state_id: str, result: dict) -> str:
    # Salt's keys are "module_|-id_|-name_|-function": show "id (module.function)".
    if result.get("__id__"):
        parts = state_id.split("_|-")
        func = f"{parts[0]}.{parts[-1]}" if len(parts) >= 4 else state_id
        return f"{result['__id__']} ({func})"
    return state_id


def failures(returns: dict) -> list[str]:
    """``"minion: state: comment"`` for every failed state of ``{minion: state return}``."""
    lines = []
    for minion in sorted(returns):
        for state_id, result in _state_results(returns[minion]):
            if result.get("result") is False:
                comment = " ".join(str(result.get("comment") or "").split())
                lines.append(f"{minion}: {_state_name(state_id, result)}: {comment[:600]}")
    return lines


def orch_returns(ret) -> dict:
    """The ``{master id: state results}`` inside a ``salt-run state.orch --out=json`` return."""
    if isinstance(ret, dict) and isinstance(ret.get("data"), dict):
        return ret["data"]
    return {"orchestrate": ret}


def node_table(rows: list[dict]) -> list[str]:
    """Rows of ``{node, board, os, engine, python, counts}`` as aligned lines."""
    head = f"{'node':<7} {'board':<20} {'os':<34} {'engine':<15} {'python':<7} states ok/chg/fail"
    lines = [head]
    for row in rows:
        counts = row.get("counts")
        states = f"{counts['ok']}/{counts['changed']}/{counts['failed']}" if counts else "-"
        lines.append(
            f"{row['node']:<7} {str(row.get('board') or '?'):<20} "
            f"{str(row.get('os') or '?')[:34]:<34} {str(row.get('engine') or '?'):<15} "
            f"{str(row.get('python') or '?'):<7} {states}"
        )
    return lines


def build_lines(report) -> list[str]:
    """The build run in a few lines: counts, the report and timeline paths."""
    if not isinstance(report, dict) or "report" not in report:
        return [f"no build report ({str(report)[:300]})"]
    counts = report.get("counts") or {}
    shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to build"
    return [
        f"run {report.get('run')} tag {report.get('tag')}: {shown} in {report.get('seconds')}s",
        f"report   {report['report']}",
        f"timeline {report['timeline']}",
    ]


def backup_lines(listing) -> list[str]:
    """The backup target as ``backup.list_backups`` lists it (the share every node writes to):
    volumes with backups, their count, the newest, and any damaged one."""
    if not isinstance(listing, dict):
        return [f"backup target: {' '.join(str(listing).split())[:300]}"]
    entries = [e for backups in listing.values() if isinstance(backups, list) for e in backups]
    if not entries:
        return [f"no backups yet ({len(listing)} volume folder(s) on the target)"]
    newest = max(str(e.get("id")) for e in entries)
    damaged = [e for e in entries if e.get("status") != "complete"]
    line = f"{len(listing)} volume(s), {len(entries)} backup(s), newest {newest}"
    return [line + (f", {len(damaged)} damaged" if damaged else "")]
