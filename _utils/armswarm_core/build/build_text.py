"""The build report and plan as text (what a person reads after ``salt-run imagebuild.run``)."""


def _cell(value, width: int) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text[:width].ljust(width)


def _digest(value) -> str:
    if not value:
        return "-"
    return str(value).split(":", 1)[-1][:12]


def render_run(report: dict) -> str:
    lines = [
        f"imagebuild run {report.get('run')}  tag {report.get('tag')}  "
        f"{report.get('seconds')} s  "
        + ", ".join(f"{k} {v}" for k, v in sorted((report.get("counts") or {}).items()))
    ]
    head = f"{'image':<28} {'status':<9} {'node':<10} {'seconds':>8}  digest"
    lines += [head, "-" * len(head)]
    failed = []
    for item in report.get("images") or []:
        seconds = item.get("seconds")
        lines.append(
            f"{_cell(item.get('image'), 28)} {_cell(item.get('status'), 9)} "
            f"{_cell(item.get('node'), 10)} "
            f"{(f'{seconds:.1f}' if isinstance(seconds, (int, float)) else '-'):>8}  "
            f"{_digest(item.get('digest'))}"
        )
        if item.get("error"):
            failed.append(f"  {item.get('image')}: {' '.join(str(item['error']).split())[:300]}")
    if failed:
        lines += ["errors:", *failed]
    if report.get("lost_nodes"):
        lines.append(f"lost nodes: {', '.join(map(str, report['lost_nodes']))}")
    if report.get("interrupted"):
        lines.append("interrupted: the run did not finish")
    lines += [f"report   {report.get('report')}", f"timeline {report.get('timeline')}"]
    return "\n".join(lines)


def render_plan(plan: dict) -> str:
    images = plan.get("images") or {}
    lines = [
        f"imagebuild plan: {len(images)} image(s) on {len(plan.get('nodes') or [])} node(s) "
        f"({', '.join(map(str, plan.get('nodes') or [])) or 'none answering'})",
        f"expected {plan.get('expected_makespan_seconds')} s "
        f"(lower bound {plan.get('lower_bound_seconds')} s, "
        f"work {plan.get('total_work_seconds')} s), "
        f"critical path {' > '.join(plan.get('critical_path') or []) or '-'}",
    ]
    schedule = plan.get("expected_schedule") or {}
    head = f"{'image':<28} {'parents':<28} {'expected':>8}  schedule"
    lines += [head, "-" * len(head)]
    for depth, names in (plan.get("order") or {}).items():
        lines.append(f"{depth}:")
        for name in names:
            info = images.get(name) or {}
            seconds = info.get("expected_seconds")
            lines.append(
                f"  {_cell(name, 26)} {_cell(', '.join(info.get('parents') or []), 28)} "
                f"{(f'{seconds:.0f}s' if isinstance(seconds, (int, float)) else '-'):>8}  "
                f"{schedule.get(name, '-')}"
            )
    for name, why in sorted((plan.get("skipped") or {}).items()):
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)


def render(data) -> str:
    """A run report, a plan, or an error, as text; anything else as its ``repr``."""
    if isinstance(data, dict) and "error" in data and len(data) <= 2:
        return f"imagebuild error: {data['error']}"
    if isinstance(data, dict) and "report" in data and "images" in data:
        return render_run(data)
    if isinstance(data, dict) and "critical_path" in data:
        return render_plan(data)
    return repr(data)
