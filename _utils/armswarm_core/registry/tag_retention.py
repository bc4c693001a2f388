"""Dated tags (``%Y%m%d`` by default, suffixed ``.1``, ``.2`` … within a day) and which of them
retention keeps.

A multi-platform image's run pushes one tag per platform, ``<dated tag>-<platform>``
(``20261201-linux-arm-v7``), and puts an image index over them under the dated tag (and
``latest``). A platform tag belongs to its run: it is as old as its dated tag and goes with
it. A manifest that a kept tag's index references is never deleted."""

import datetime
import re

from armswarm_core import ArmswarmError
from armswarm_core.common import architectures

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


def platform_tag(tag: str, platform: str) -> str:
    """The tag of one platform's manifest of a multi-platform run: ``20261201-linux-arm64``."""
    return f"{tag}-{architectures.slug(platform)}"


_SLUGS = sorted((architectures.slug(p) for p in architectures.ARCH_OF), key=len, reverse=True)


def run_of(tag: str) -> str:
    """The run tag a platform tag belongs to (``20261201-linux-arm64`` → ``20261201``); any
    other tag is its own."""
    for slug in _SLUGS:
        if tag.endswith("-" + slug) and len(tag) > len(slug) + 1:
            return tag[: -len(slug) - 1]
    return tag


def dated_key(tag: str, fmt=DEFAULT_TAG_FORMAT):
    """A sort key for a dated tag (``(date, suffix)``), or None for other tags. The whole tag
    is tried first: a format with dots (``%Y.%m.%d``) must not lose its last part as a
    same-day suffix."""
    if run_of(tag) != tag:
        return dated_key(run_of(tag), fmt)
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


def made_by_us(tag: str, made: dict) -> bool:
    """Whether ``tag`` is one the runner made (``made``: the ledger of one repository, run tag →
    the tags that run pushed or put): its run is in the ledger and names it."""
    return tag in (made.get(run_of(tag)) or ())


def retention(tags: dict, keep: int, fmt=DEFAULT_TAG_FORMAT, children=None, *, made: dict) -> dict:
    """What to remove from one repository (``tags``: tag → digest): all but the newest
    ``keep`` runs' dated tags (a run's platform tags with it), counting only the tags the
    runner made (``made``: the repository's ledger, run tag → tags, see :func:`made_by_us`).
    A tag that only *looks* dated (``20240101`` pushed by hand, or by a run before the ledger
    existed) is never deleted and does not count towards ``keep``. Tags that are not dated,
    and ``latest``, are always kept. ``children``: index digest → the manifest digests it
    references.

    Returns ``{"keep": [...], "delete": [(tag, digest)], "untag": [(tag, digest)],
    "orphans": [digest], "foreign": [...], "forget": [...]}``: a digest that a kept tag points
    to, or that a kept tag's index references, is never deleted (that would delete the kept
    tag too, or break its index); its old tag is only untagged. ``orphans`` are manifests that
    only deleted indexes referenced: deleted after them. ``foreign``: the dated-looking tags
    kept because the runner did not make them. ``forget``: the ledger's runs none of whose
    tags is left in the repository, older than its newest run that is (a run still pushing is
    newer): their entries can go."""
    children = children or {}

    def ours(tag):
        return bool(dated_key(tag, fmt)) and made_by_us(tag, made)

    foreign = sorted(t for t in tags if dated_key(t, fmt) and not made_by_us(t, made))
    runs = sorted({run_of(t) for t in tags if ours(t)}, key=lambda t: dated_key(t, fmt))
    old_runs = set(runs[: max(len(runs) - keep, 0)])
    old = sorted(
        (t for t in tags if ours(t) and run_of(t) in old_runs),
        key=lambda t: (dated_key(t, fmt), t),
    )
    kept = sorted(set(tags) - set(old))
    protected = {tags[t] for t in kept}
    protected |= {c for d in list(protected) for c in children.get(d, ())}
    plan = {"keep": kept, "delete": [], "untag": [], "orphans": [], "foreign": foreign}
    deleted = set()
    for tag in old:
        digest = tags[tag]
        if digest in protected:
            plan["untag"].append((tag, digest))
        else:
            # another old tag on the same digest is removed with it
            deleted.add(digest)
            plan["delete"].append((tag, digest))
    tagged = set(tags.values())
    for digest in sorted(deleted):
        for child in children.get(digest, ()):
            if child not in protected and child not in tagged and child not in plan["orphans"]:
                plan["orphans"].append(child)
    newest = dated_key(runs[-1], fmt) if runs else None
    plan["forget"] = sorted(
        run
        for run, made_tags in made.items()
        if newest is not None
        and dated_key(run, fmt)
        and dated_key(run, fmt) < newest
        and not set(made_tags) & set(tags)
    )
    return plan


def adopt(tags, runs, fmt=DEFAULT_TAG_FORMAT) -> dict:
    """The ledger entries for dated tags the runner did not record (``runs``: run tags the
    operator names, e.g. those of runs before the ledger existed): each run with the tags of
    ``tags`` (the repository's) that belong to it. A run that is not dated, or that has no tag
    in the repository, is refused: adoption never guesses."""
    out = {}
    for run in runs:
        if run_of(run) != run or not dated_key(run, fmt):
            raise ArmswarmError(f"{run}: not a run tag in the format {fmt}")
        mine = sorted(t for t in tags if run_of(t) == run)
        if not mine:
            raise ArmswarmError(f"{run}: no such tag in the repository")
        out[run] = mine
    return out
