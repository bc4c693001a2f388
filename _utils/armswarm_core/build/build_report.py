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


def svg(report: dict, width: int = 900) -> str:
    """A Gantt chart: one lane per node, one bar per attempt, coloured by its result."""
    attempts = [
        # the job: image@platform for an image of several platforms
        (a["node"], a["start"], a["end"], a["status"], item.get("job") or item["image"])
        for item in report["images"]
        for a in item.get("attempts", [])
    ]
    nodes = sorted({a[0] for a in attempts})
    t0 = min((a[1] for a in attempts), default=0.0)
    t1 = max((a[2] for a in attempts), default=t0 + 1)
    span = max(t1 - t0, 1e-6)
    left, lane, top = 120, 28, 30
    scale = (width - left - 20) / span
    height = top + lane * len(nodes) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="10" y="18" font-size="13">{html.escape(report.get("title", "build"))} '
        f"({span:.1f} s)</text>",
    ]
    for index, node in enumerate(nodes):
        y = top + index * lane
        out.append(f'<text x="10" y="{y + 17}">{html.escape(node)}</text>')
        out.append(
            f'<line x1="{left}" y1="{y + lane - 2}" x2="{width - 20}" y2="{y + lane - 2}" '
            'stroke="#ddd"/>'
        )
    for node, start, end, status, image in attempts:
        y = top + nodes.index(node) * lane
        x = left + (start - t0) * scale
        w = max((end - start) * scale, 1.0)
        colour = ATTEMPT_COLOURS.get(status, "#e67e22")
        label = html.escape(f"{image} ({status}, {end - start:.1f} s)")
        out.append(
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{lane - 8}" '
            f'fill="{colour}" stroke="#fff"><title>{label}</title></rect>'
        )
        out.append(
            f'<text x="{x + 3:.1f}" y="{y + 17}" fill="#fff" clip-path="none">'
            f"{html.escape(image)[: max(int(w / 6.5), 0)]}</text>"
        )
    ticks = 5
    for i in range(ticks + 1):
        x = left + (width - left - 20) * i / ticks
        out.append(
            f'<text x="{x:.1f}" y="{height - 12}" text-anchor="middle">'
            f"{span * i / ticks:.0f} s</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
