"""The end-of-run report of an image build: a table, JSON, and an SVG timeline (Gantt).
One row and one bar per job: an image, or ``image@platform`` for an image of several."""

import datetime
import html

COLOURS = {"done": "#4c9a2a", "failed": "#c0392b", "skipped": "#999999"}
ATTEMPT_COLOURS = {"ok": "#4c9a2a", "failed": "#c0392b"}


def _clock(ts) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%H:%M:%S")


def table(report: dict) -> list:
    """Lines of a fixed-width summary table, one row per image in build order."""
    rows = [("image", "status", "node", "start", "end", "seconds", "digest")]
    for item in report["images"]:
        digest = (item.get("digest") or "")[7:19]
        seconds = item.get("seconds")
        rows.append(
            (
                item.get("job") or item["image"],
                item["status"],
                item.get("node") or "-",
                _clock(item.get("start")),
                _clock(item.get("end")),
                f"{seconds:.1f}" if seconds is not None else "-",
                digest or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _job(item) -> str:
    """A report row's job: ``image@platform`` for an image of several platforms."""
    return item.get("job") or item["image"]


def critical_chain(report: dict) -> list:
    """The images that set this run's length: from the last to finish back through whatever
    it waited for, a parent's end or the previous job on its node (the schedule's critical
    path), first to last."""
    items = {_job(i): i for i in report["images"] if i.get("start") and i.get("end")}
    if not items:
        return []
    by_node = {}
    for item in items.values():
        by_node.setdefault(item.get("node"), []).append(item)
    chain = [max(items.values(), key=lambda i: (i["end"], _job(i)))]
    seen = {_job(chain[0])}
    while True:
        item = chain[-1]
        start = item["start"]
        before = [items[p] for p in item.get("parents") or [] if p in items]
        before += [o for o in by_node.get(item.get("node"), []) if o is not item]
        before = [o for o in before if o["end"] <= start + 1.0 and _job(o) not in seen]
        if not before:
            break
        pred = max(before, key=lambda o: (o["end"], _job(o)))
        if start - pred["end"] > 5.0:  # nothing it waited for ended just before it started
            break
        chain.append(pred)
        seen.add(_job(pred))
    return [_job(i) for i in reversed(chain)]


SEGMENT_COLOURS = {"pull": "#8fbbd9", "build": "#4c9a2a", "push": "#2c6e9b"}


def _segments(item, attempt, end):
    """(kind, start, end) of one attempt: pull, build and push as the node measured them
    (an attempt that did not succeed is one bar)."""
    start = attempt["start"]
    if attempt.get("status") != "ok" or item.get("build_seconds") is None:
        return [(attempt.get("status") or "running", start, end)]
    pull = float(item.get("pull_seconds") or 0.0)
    push = float(item.get("push_seconds") or 0.0)
    push_start = max(end - push, start)
    pull_end = min(start + pull, push_start)
    out = [("pull", start, pull_end)] if pull else []
    out.append(("build", pull_end, push_start))
    if push:
        out.append(("push", push_start, end))
    return out


def svg(report: dict, width: int = 960) -> str:
    """A Gantt chart of the whole run: one row per node (board, platform, speed), pull,
    build and push as segments, failures red, the critical path outlined."""
    critical = set(report.get("critical_path") or [])
    nodes_info = report.get("nodes") or {}
    starts = [a["start"] for i in report["images"] for a in i.get("attempts", [])]
    ends = [a["end"] for i in report["images"] for a in i.get("attempts", []) if a["end"]]
    t0 = report.get("started_at") or min(starts, default=0.0)
    t1 = max([report.get("ended_at") or 0.0, *ends, *starts, t0 + 1e-6])
    span = max(t1 - t0, 1e-6)
    nodes = sorted({a["node"] for i in report["images"] for a in i.get("attempts", [])})
    left, right, lane, top = 230, 30, 28, 34
    plot = width - left - right
    scale = plot / span
    height = top + lane * len(nodes) + 56
    title = html.escape(report.get("title", "build"))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="10" y="18" font-size="13">{title} ({span:.1f} s)</text>',
    ]
    for index, node in enumerate(nodes):
        y = top + index * lane
        info = nodes_info.get(node) or {}
        parts = [node, info.get("board"), info.get("platform") or info.get("arch")]
        if info.get("speed") is not None:
            parts.append(f"×{info['speed']:g}")
        label = html.escape(" · ".join(str(p) for p in parts if p))
        out.append(f'<text x="10" y="{y + 17}">{label}</text>')
        out.append(
            f'<line x1="{left}" y1="{y + lane - 2}" x2="{left + plot}" y2="{y + lane - 2}" '
            'stroke="#ddd"/>'
        )
    for item in report["images"]:
        for attempt in item.get("attempts", []):
            y = top + nodes.index(attempt["node"]) * lane
            end = attempt["end"] or t1
            on_path = _job(item) in critical and attempt.get("status") == "ok"
            for kind, start, stop in _segments(item, attempt, end):
                x = left + (start - t0) * scale
                w = max((stop - start) * scale, 1.0)
                colour = (
                    SEGMENT_COLOURS.get(kind)
                    or {"failed": "#c0392b", "error": "#c0392b", "timeout": "#c0392b"}.get(kind)
                    or "#e67e22"
                )
                label = html.escape(f"{_job(item)}: {kind} {stop - start:.1f} s")
                stroke = 'stroke="#000" stroke-width="2"' if on_path else 'stroke="#fff"'
                out.append(
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{lane - 8}" '
                    f'fill="{colour}" {stroke}><title>{label}</title></rect>'
                )
            x = left + (attempt["start"] - t0) * scale
            w = (end - attempt["start"]) * scale
            out.append(
                f'<text x="{x + 3:.1f}" y="{y + 17}" fill="#fff">'
                f"{html.escape(_job(item))[: max(int(w / 6.5), 0)]}</text>"
            )
    ticks = 5
    axis = top + lane * len(nodes) + 14
    for i in range(ticks + 1):
        x = left + plot * i / ticks
        anchor = "end" if i == ticks else "start" if i == 0 else "middle"
        out.append(
            f'<text x="{x:.1f}" y="{axis}" text-anchor="{anchor}">{span * i / ticks:.0f} s</text>'
        )
    legend = [("pull", "pull"), ("build", "build"), ("push", "push"), ("failed", "failed")]
    x = left
    for kind, text in legend:
        colour = SEGMENT_COLOURS.get(kind, "#c0392b")
        out.append(f'<rect x="{x}" y="{axis + 10}" width="12" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="{axis + 19}">{text}</text>')
        x += 70
    out.append(
        f'<rect x="{x}" y="{axis + 10}" width="12" height="10" fill="#fff" stroke="#000" '
        f'stroke-width="2"/><text x="{x + 16}" y="{axis + 19}">critical path</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
