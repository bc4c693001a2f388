"""Dated tags (``%Y%m%d`` by default, suffixed ``.1``, ``.2`` … within a day) and which of them
retention keeps."""

import datetime
import re

DEFAULT_TAG_FORMAT = "%Y%m%d"
DEFAULT_KEEP = 7
LATEST = "latest"
_SUFFIX = re.compile(r"^(?P<base>.+?)(?:\.(?P<n>\d+))?$")


# -- dated tags -------------------------------------------------------------------------------
def run_tag(existing_tags, when: datetime.datetime | None = None, fmt=DEFAULT_TAG_FORMAT) -> str:
    """This run's tag: the UTC date; ``<date>.2``, ``.3`` … when an earlier run of the same
    day published one (in any repository of ``existing_tags``), so no dated tag is ever
    overwritten."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    base = when.strftime(fmt)
    taken = set(existing_tags)
    if base not in taken:
        return base
    n = 2
    while f"{base}.{n}" in taken:
        n += 1
    return f"{base}.{n}"


def dated_key(tag: str, fmt=DEFAULT_TAG_FORMAT):
    """A sort key for a dated tag (``(date, suffix)``), or None for other tags. The whole tag
    is tried first: a format with dots (``%Y.%m.%d``) must not lose its last part as a
    same-day suffix."""
    try:
        return (datetime.datetime.strptime(tag, fmt), 1)
    except ValueError:
        pass
    match = _SUFFIX.match(tag)
    try:
        day = datetime.datetime.strptime(match.group("base"), fmt)
    except ValueError:
        return None
    return (day, int(match.group("n") or 1))


def retention(tags: dict, keep: int, fmt=DEFAULT_TAG_FORMAT) -> dict:
    """What to remove from one repository (``tags``: tag → digest): all but the newest
    ``keep`` dated tags. Tags that are not dated, and ``latest``, are always kept.

    Returns ``{"keep": [...], "delete": [(tag, digest)], "untag": [(tag, digest)]}``: a digest
    that a kept tag also points to is never deleted (that would delete the kept tag too); its
    old tag is only untagged."""
    dated = sorted((t for t in tags if dated_key(t, fmt)), key=lambda t: dated_key(t, fmt))
    old = dated[: max(len(dated) - keep, 0)]
    kept = sorted(set(tags) - set(old))
    kept_digests = {tags[t] for t in kept}
    plan = {"keep": kept, "delete": [], "untag": []}
    deleted = set()
    for tag in old:
        digest = tags[tag]
        if digest in kept_digests:
            plan["untag"].append((tag, digest))
        elif digest in deleted:
            # another old tag on the same digest: removed with it
            plan["delete"].append((tag, digest))
        else:
            deleted.add(digest)
            plan["delete"].append((tag, digest))
    return plan
