"""A tree of image directories as a dependency graph.

One image per directory; its name is the directory's path under the tree's root
(``armv7h/archlinux``). A directory holds a ``Dockerfile`` or a build script (``build.sh``, or
``script:`` in ``image.yaml``) and optionally ``image.yaml``:

.. code-block:: yaml

    arch: [aarch64, armv7l]     # build only on nodes of these CPU architectures
    labels: {armswarm.board: rockpro64}   # … and with these node labels
    build_args: {VERSION: "1.2"}
    depends: [base]             # parents of a script-built image
    timeout: 1800               # seconds one build may take
    dockerfile: Dockerfile.arm  # another file name
    script: mkimage.sh

Subdirectories of an image directory are its build context, not images.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from armswarm_core import ArmswarmError
from armswarm_core.build import dockerfile
from armswarm_core.common import architectures

IMAGE_FILE = "image.yaml"
DEFAULT_SCRIPT = "build.sh"
DEFAULT_TIMEOUT = 1800


# Seconds assumed for an image never built before.
DEFAULT_DURATION = 60.0
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_KEYS = {"arch", "labels", "build_args", "depends", "timeout", "dockerfile", "script"}


@dataclass
class Image:
    name: str
    path: Path
    dockerfile: str | None = None  # file name in path, or None for a script-built image
    script: str | None = None
    parents: list = field(default_factory=list)
    arch: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    build_args: dict = field(default_factory=dict)
    timeout: int = DEFAULT_TIMEOUT
    refs: list = field(default_factory=list)  # image references in the Dockerfile

    def eligible(self, node_arch: str, node_labels: dict) -> bool:
        """Whether a node with this CPU architecture and these labels may build the image."""
        if self.arch and not any(architectures.same(node_arch, a) for a in self.arch):
            return False
        return all(str(node_labels.get(k)) == str(v) for k, v in self.labels.items())


@dataclass
class Graph:
    images: dict  # name → Image
    order: list  # topological, parents first, ties by name

    def children(self, name: str) -> list:
        return sorted(n for n, image in self.images.items() if name in image.parents)

    def ancestors(self, name: str) -> set:
        seen, todo = set(), list(self.images[name].parents)
        while todo:
            parent = todo.pop()
            if parent not in seen:
                seen.add(parent)
                todo.extend(self.images[parent].parents)
        return seen

    def descendants(self, name: str) -> set:
        seen, todo = set(), self.children(name)
        while todo:
            child = todo.pop()
            if child not in seen:
                seen.add(child)
                todo.extend(self.children(child))
        return seen

    def depth(self) -> int:
        level = {}
        for name in self.order:
            level[name] = 1 + max((level[p] for p in self.images[name].parents), default=0)
        return max(level.values(), default=0)

    def bottom_levels(self, durations: dict) -> dict:
        """Per image: its duration plus the longest chain of descendants' durations after it
        (the priority of list scheduling: longest remaining path first)."""
        level = {}
        for name in reversed(self.order):
            own = duration_of(name, durations)
            level[name] = own + max((level[c] for c in self.children(name)), default=0.0)
        return level

    def critical_path(self, durations: dict) -> list:
        levels = self.bottom_levels(durations)
        roots = [n for n in self.order if not self.images[n].parents]
        if not roots:
            return []
        path = [max(roots, key=lambda n: (levels[n], n))]
        while children := self.children(path[-1]):
            path.append(max(children, key=lambda n: (levels[n], n)))
        return path


def duration_of(name: str, durations: dict) -> float:
    value = durations.get(name)
    return float(value) if value else DEFAULT_DURATION


def _settings(directory: Path, errors: list) -> dict:
    file = directory / IMAGE_FILE
    if not file.is_file():
        return {}
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        errors.append(f"{file}: not YAML: {exc}")
        return {}
    if not isinstance(data, dict):
        errors.append(f"{file}: must be a mapping")
        return {}
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        errors.append(f"{file}: unknown keys {', '.join(unknown)} (known: {sorted(_KEYS)})")
    return data


def _image_dirs(root: Path):
    """Directories that are images, not descending into them (their subdirectories are
    build context)."""
    todo = [root]
    while todo:
        directory = todo.pop()
        names = {p.name for p in directory.iterdir()}
        if names & {"Dockerfile", DEFAULT_SCRIPT, IMAGE_FILE}:
            yield directory
            continue
        todo.extend(
            p for p in sorted(directory.iterdir()) if p.is_dir() and not p.name.startswith(".")
        )


def _as_list(value, key, where, errors) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    errors.append(f"{where}: {key} must be a string or a list of strings")
    return []


def load(root, registry: str | None = None) -> Graph:
    """Read the tree under ``root``; every problem (bad names, unreadable Dockerfiles, missing
    parents, cycles) is reported at once as an ArmswarmError before anything is built.
    ``registry`` (``host:port``) is the cluster registry whose prefix names tree images."""
    root = Path(root)
    if not root.is_dir():
        raise ArmswarmError(f"image tree {root} is not a directory")
    errors: list = []
    images = {}
    for directory in _image_dirs(root):
        name = directory.relative_to(root).as_posix()
        where = f"{name or '.'}"
        if directory == root or not _NAME.match(name):
            errors.append(
                f"{where}: image directory names must be lowercase repository names "
                "([a-z0-9] separated by . _ - or /), one directory per image below the root"
            )
            continue
        conf = _settings(directory, errors)
        image = Image(name=name, path=directory)
        image.arch = _as_list(conf.get("arch"), "arch", where, errors)
        labels = conf.get("labels") or {}
        build_args = conf.get("build_args") or {}
        for key, value in (("labels", labels), ("build_args", build_args)):
            if not isinstance(value, dict):
                errors.append(f"{where}: {key} must be a mapping")
        image.labels = {str(k): str(v) for k, v in dict(labels).items()}
        image.build_args = {str(k): str(v) for k, v in dict(build_args).items()}
        try:
            image.timeout = int(conf.get("timeout", DEFAULT_TIMEOUT))
        except (TypeError, ValueError):
            errors.append(f"{where}: timeout must be a number of seconds")
        script = conf.get("script")
        docker_name = conf.get("dockerfile", "Dockerfile")
        if script is None and not (directory / docker_name).is_file():
            script = DEFAULT_SCRIPT
        parents = set(_as_list(conf.get("depends"), "depends", where, errors))
        if script is not None:
            if not (directory / script).is_file():
                errors.append(f"{where}: neither {docker_name} nor the build script {script}")
            image.script = script
        else:
            image.dockerfile = docker_name
            try:
                parsed = dockerfile.parse(
                    (directory / docker_name).read_text(encoding="utf-8"), image.build_args
                )
            except (ArmswarmError, UnicodeDecodeError) as exc:
                errors.append(f"{where}/{docker_name}: {exc}")
                parsed = dockerfile.Dockerfile()
            image.refs = [r.value for r in parsed.references]
        images[name] = image
        image.parents = sorted(parents)
    for image in images.values():
        for ref in image.refs:
            repo = dockerfile.repository(ref, registry)
            if repo in images:
                image.parents = sorted({*image.parents, repo})
            elif registry and dockerfile.repository(ref) != repo:
                # Prefixed with the cluster registry but not in the tree: it would build on
                # whatever an earlier run left there.
                errors.append(
                    f"{image.name}: parent {ref} is in the cluster registry but not in the tree"
                )
        for parent in image.parents:
            if parent not in images:
                errors.append(f"{image.name}: depends on {parent}, which is not in the tree")
            if parent == image.name:
                errors.append(f"{image.name}: depends on itself")
    if not images and not errors:
        errors.append(f"no image directories under {root}")
    if errors:
        raise ArmswarmError("image tree: " + "; ".join(errors))
    return Graph(images=images, order=_toposort(images))


def _toposort(images: dict) -> list:
    """Parents before children, alphabetical among ready ones; a cycle is an ArmswarmError
    that names it."""
    remaining = {n: set(i.parents) for n, i in images.items()}
    order = []
    while remaining:
        ready = sorted(n for n, parents in remaining.items() if not parents)
        if not ready:
            raise ArmswarmError("image tree: dependency cycle " + " -> ".join(_cycle(remaining)))
        for name in ready:
            order.append(name)
            del remaining[name]
        for parents in remaining.values():
            parents.difference_update(ready)
    return order


def _cycle(remaining: dict) -> list:
    start = min(remaining)
    path, seen = [start], {start}
    while True:
        nxt = min(remaining[path[-1]])
        if nxt in seen:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)
        seen.add(nxt)
