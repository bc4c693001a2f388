"""A tree of image directories as a dependency graph.

One image per directory; its name is the directory's path under the tree's root
(``armv7h/archlinux``). A directory holds a ``Dockerfile`` or a build script (``build.sh``, or
``script:`` in ``image.yaml``) and optionally ``image.yaml``:

.. code-block:: yaml

    platforms: [linux/arm/v7, linux/arm64]   # one image per platform under one tag
    arch: [aarch64, armv7l]     # build only on nodes of these CPU architectures
    labels: {armswarm.board: rockpro64}   # … and with these node labels
    build_args: {VERSION: "1.2"}
    depends: [base]             # parents of a script-built image
    timeout: 1800               # seconds one build may take
    expected_seconds: 600       # a hint for the scheduler until a run has measured it
    dockerfile: Dockerfile.arm  # another file name (relative to the image directory)
    script: mkimage.sh
    context: ..                 # the build context: this directory or one above it, in the tree
    variants:                   # more images from this directory: <name>-<variant>
      alpine: Dockerfile.alpine         # context: the image's
      cuda12: cuda12/Dockerfile         # context: cuda12/ (the Dockerfile's directory)
      slim: {dockerfile: Dockerfile.slim, context: ., build_args: {SLIM: "1"}}

Subdirectories of an image directory are its build context, not images. ``tree.yaml`` at the
root sets ``build_args`` for every image (the pillar's ``armswarm:imagebuild:build_args`` over
it, an image's own over both). Hidden directories are ignored; directories and Dockerfiles that
are not built are in :attr:`Graph.skipped` with the reason; a symlinked directory is an alias
of its target (:attr:`Graph.aliases`), never a second image.

Platforms: an image without ``platforms:`` inherits its parents' (those all of them have), a
root the tree default (``armswarm:imagebuild:platforms``) or, without one, every platform of
the answering build nodes; ``arch:`` filters that list. :func:`resolve_platforms` decides
them, :func:`expand` turns the graph of images into the graph of jobs, one per (image,
platform), each FROM its parents' job of the same platform.
"""

import dataclasses
import errno
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from armswarm_core import ArmswarmError
from armswarm_core.build import dockerfile
from armswarm_core.common import architectures

IMAGE_FILE = "image.yaml"
TREE_FILE = "tree.yaml"
DEFAULT_SCRIPT = "build.sh"
DEFAULT_TIMEOUT = 1800


# Seconds assumed for an image never built before.
DEFAULT_DURATION = 60.0
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_VARIANT = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PLATFORMS_KEY = "armswarm:imagebuild:platforms"
_KEYS = {
    "platforms",
    "arch",
    "labels",
    "build_args",
    "depends",
    "timeout",
    "expected_seconds",
    "dockerfile",
    "script",
    "context",
    "variants",
}
_TREE_KEYS = {"build_args"}
_VARIANT_KEYS = {"dockerfile", "context", "build_args"}
RESERVED = ("scratch",)  # Docker never pulls these names
# Build jobs use dockerd's classic builder (the Engine API without BuildKit).
CLASSIC_HEREDOC = (
    "the classic builder would run a heredoc's first line as a plain command and read its "
    "body as instructions (rewrite it, e.g. with printf)"
)
CLASSIC_FLAGS = "the classic builder refuses these options"
CLASSIC_WAY_OUT = "or build the image with a build.sh that runs `docker buildx build`"


@dataclass
class Image:
    """``path`` is the build context (the directory sent to the node); ``dockerfile`` and
    ``script`` are relative to it. ``directory`` is the image's own directory."""

    name: str
    path: Path
    dockerfile: str | None = None  # file in path, or None for a script-built image
    script: str | None = None
    parents: list = field(default_factory=list)
    arch: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    build_args: dict = field(default_factory=dict)
    timeout: int = DEFAULT_TIMEOUT
    expected_seconds: float | None = None  # image.yaml's hint; history wins
    refs: list = field(default_factory=list)  # image references in the Dockerfile
    directory: Path | None = None
    variant_of: str | None = None
    # reference paths that name a tree image under another name (a symlinked alias) → image
    spelled: dict = field(default_factory=dict)
    platforms: list = field(default_factory=list)  # its own platforms: (image.yaml)
    # a job of the graph of jobs (:func:`expand`): the platform it builds, the image it is
    platform: str | None = None
    image: str | None = None

    @property
    def image_name(self) -> str:
        return self.image or self.name

    @property
    def file(self) -> str:
        """Where the image's settings are written (for messages)."""
        return f"{self.variant_of or self.name}/{IMAGE_FILE}"

    def pins(self, digests: dict, registry: str) -> dict:
        """What the node rewrites: each parent's path, and every other path this image's
        Dockerfile names it by (``FROM arch`` for the alias ``arch`` of ``armv7h/archlinux``),
        → ``registry/parent@digest``."""
        out = {p: f"{registry}/{p}@{d}" for p, d in digests.items() if d}
        out.update({alias: out[p] for alias, p in self.spelled.items() if p in out})
        return out

    def eligible(self, node_arch: str, node_labels: dict, node_platform: str = "") -> bool:
        """Whether a node with this CPU architecture, these labels and this platform may
        build the image (a job with a platform needs a node of that platform)."""
        if self.platform and node_platform != self.platform:
            return False
        if self.arch and not any(architectures.same(node_arch, a) for a in self.arch):
            return False
        return all(str(node_labels.get(k)) == str(v) for k, v in self.labels.items())


@dataclass
class Graph:
    images: dict  # name → Image
    order: list  # topological, parents first, ties by name
    # what the tree holds but does not build, with the reason (path under the root → why)
    skipped: dict = field(default_factory=dict)
    aliases: dict = field(default_factory=dict)  # symlinked directory → the image it names
    root: Path | None = None

    def children(self, name: str) -> list:
        # one pass over the graph for all images: a tree of thousands asks for each
        cache = self.__dict__.get("_children")
        if cache is None or cache[0] != len(self.images):
            table = {n: [] for n in self.images}
            for child, image in self.images.items():
                for parent in set(image.parents):
                    table.setdefault(parent, []).append(child)
            cache = self.__dict__["_children"] = (len(self.images), table)
        return sorted(cache[1].get(name, []))

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
    """Seconds of ``name``: a number, or build plus push; unknown is the default, a measured
    0 stays 0."""
    value = durations.get(name)
    if value is None:
        return DEFAULT_DURATION
    if isinstance(value, dict):
        return float(value.get("build") or 0.0) + float(value.get("push") or 0.0)
    return float(value)


def _read_yaml(file: Path, keys: set, errors: list) -> dict:
    if not file.is_file():
        return {}
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        errors.append(f"{file.name}: not YAML: {exc}")
        return {}
    if not isinstance(data, dict):
        errors.append(f"{file.name}: must be a mapping")
        return {}
    unknown = sorted(set(data) - keys)
    if unknown:
        errors.append(f"{file.name}: unknown keys {', '.join(unknown)} (known: {sorted(keys)})")
    return data


def _settings(directory: Path, errors: list) -> dict:
    sub: list = []
    data = _read_yaml(directory / IMAGE_FILE, _KEYS, sub)
    errors.extend(f"{directory.name}/{e}" for e in sub)
    return data


def build_args_of(value, where: str, errors: list) -> dict:
    """A mapping of build argument names to strings or numbers, as strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"{where}: build_args must be a mapping of NAME: value")
        return {}
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ARG.match(key):
            errors.append(f"{where}: build_args: {key!r} is not a build argument name")
        elif isinstance(item, bool) or not isinstance(item, (str, int, float)):
            errors.append(f"{where}: build_args: {key} must be a string or a number, not {item!r}")
        else:
            out[key] = str(item)
    return out


def is_dockerfile(name: str) -> bool:
    """Names Docker users give Dockerfiles: ``Dockerfile``, ``Dockerfile.<variant>``,
    ``<variant>.Dockerfile`` (not ``Dockerfile.dockerignore``)."""
    lower = name.lower()
    if lower.endswith(".dockerignore"):
        return False
    return lower == "dockerfile" or lower.startswith("dockerfile.") or lower.endswith(".dockerfile")


def _link_target(path: Path, root: Path, errors: list, skipped: dict):
    """The real directory a symlinked directory names, or None (reported)."""
    rel = path.relative_to(root).as_posix()
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports loops so
        errors.append(f"{rel}: symlink loop ({rel} -> {os.readlink(path)})")
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            errors.append(f"{rel}: symlink loop ({rel} -> {os.readlink(path)})")
        else:
            skipped[rel] = f"broken symlink to {os.readlink(path)}"
        return None
    if not target.is_dir():
        if is_dockerfile(path.name):
            skipped[rel] = "a Dockerfile outside any image directory: not built"
        return None
    if target == root or target in path.parents:
        errors.append(f"{rel}: symlink loop ({rel} -> {os.readlink(path)} contains the link)")
        return None
    if root not in target.parents:
        errors.append(f"{rel}: symlink to {target}, outside the tree")
        return None
    return target


def _image_dirs(root: Path, errors: list, skipped: dict, links: dict):
    """Directories that are images, not descending into them (their subdirectories are
    build context). Directories that are not images and hold no images are ``skipped``;
    symlinked directories go to ``links`` (name → real target name)."""
    todo = [root]
    while todo:
        directory = todo.pop()
        entries = sorted(directory.iterdir())
        names = {p.name for p in entries}
        if names & {"Dockerfile", DEFAULT_SCRIPT, IMAGE_FILE}:
            yield directory
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                target = _link_target(entry, root, errors, skipped)
                if target is not None:
                    links[entry.relative_to(root).as_posix()] = target.relative_to(root).as_posix()
            elif entry.is_dir():
                subdirs.append(entry)
            elif is_dockerfile(entry.name) and directory == root:
                skipped[entry.name] = "at the tree's root: images are directories below it"
            elif is_dockerfile(entry.name):
                rel = entry.relative_to(root).as_posix()
                skipped[rel] = (
                    f"{directory.relative_to(root).as_posix()} has no Dockerfile, build.sh or "
                    f"{IMAGE_FILE}: to build it, write `dockerfile: {entry.name}` (or variants:) "
                    f"in an {IMAGE_FILE} there"
                )
        if not subdirs and directory != root and not any(is_dockerfile(n) for n in names):
            skipped[directory.relative_to(root).as_posix()] = (
                f"no Dockerfile, {DEFAULT_SCRIPT} or {IMAGE_FILE}"
                + (f" (holds {', '.join(sorted(names)[:3])}…)" if names else " (empty)")
            )
        todo.extend(reversed(subdirs))


def _as_list(value, key, where, errors) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    errors.append(f"{where}: {key} must be a string or a list of strings")
    return []


def _real(path: Path):
    """The resolved path, or None for a symlink loop (Python < 3.13 raises RuntimeError)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return None


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _relative_file(directory, value, key, where, errors, contained=True):
    """``directory / value`` for a relative file name that stays in ``directory`` (links
    followed); a build context (``contained=False``) is checked against the tree by its
    caller."""
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        errors.append(f"{where}: {key} must be a relative file name, not {value!r}")
        return None
    path = (directory / value).resolve()  # links followed: where the file really is
    if contained and not _inside(path, directory.resolve()):
        errors.append(f"{where}: {key} {value} is outside the image directory")
        return None
    return path


# -- the cluster registry under its other spellings ------------------------------------------
def _host_port(value: str) -> tuple:
    value = value.lower().rstrip("/")
    if value.startswith("["):  # [v6]:port
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] or None
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, port
    return value, None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def resolve_host(name: str) -> set:
    """The addresses ``name`` resolves to on the master (empty when it does not)."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return set()


class RegistrySpellings:
    """Whether a registry host in an image reference is the cluster registry: the same host
    name or address (with or without the port), a configured alias, or a name or address
    that resolves to the same addresses."""

    def __init__(self, host: str, aliases=(), resolve=None):
        self.host = host
        self.spellings = [_host_port(h) for h in (host, *aliases)]
        self.port = self.spellings[0][1] or "443"
        self.resolve = resolve or resolve_host
        self._mine = None

    def addresses(self) -> set:
        if self._mine is None:
            self._mine = set()
            for name, _ in self.spellings:
                self._mine |= {name} if _is_ip(name) else set(self.resolve(name))
        return self._mine

    def same(self, host: str, lookup: bool) -> str:
        """``yes``, ``no``, or ``unknown`` (a name that does not resolve); ``lookup``: resolve
        names (otherwise only spellings and literal addresses are compared)."""
        name, port = _host_port(host)
        for known, known_port in self.spellings:
            if name == known and port in (None, known_port or "443"):
                return "yes"
        if port not in (None, self.port) or name in dockerfile.DOCKER_HUB:
            return "no"
        if not _is_ip(name) and not lookup:
            return "no"
        theirs = {name} if _is_ip(name) else set(self.resolve(name))
        mine = self.addresses()
        if not theirs or not mine:
            return "unknown"
        return "yes" if theirs & mine else "no"


def _dealias(path: str, aliases: dict) -> str:
    for alias, target in aliases.items():
        if path == alias or path.startswith(alias + "/"):
            return target + path[len(alias) :]
    return path


# -- loading ---------------------------------------------------------------------------------
def load(root, registry=None, build_args=None, aliases=None, resolve=None) -> Graph:
    """Read the tree under ``root``; every problem (bad names, unreadable Dockerfiles, missing
    parents, cycles, ambiguous references) is reported at once as an ArmswarmError before
    anything is built. ``registry`` (``host:port``) is the cluster registry, ``aliases`` other
    names it has (``armswarm:imagebuild:registry_aliases``), ``build_args`` the tree-wide build
    arguments of the pillar (``armswarm:imagebuild:build_args``)."""
    if not Path(root).is_dir():
        raise ArmswarmError(f"image tree {root} is not a directory")
    root = Path(root).resolve()
    errors: list = []
    skipped: dict = {}
    links: dict = {}
    tree_conf = _read_yaml(root / TREE_FILE, _TREE_KEYS, errors)
    tree_args = build_args_of(tree_conf.get("build_args"), TREE_FILE, errors)
    tree_args.update(build_args_of(build_args, "armswarm:imagebuild:build_args", errors))
    if aliases is not None and not (
        isinstance(aliases, list) and all(isinstance(a, str) and a for a in aliases)
    ):
        errors.append("armswarm:imagebuild:registry_aliases must be a list of host[:port]")
        aliases = []
    images: dict = {}
    for directory in _image_dirs(root, errors, skipped, links):
        name = directory.relative_to(root).as_posix()
        where = f"{name or '.'}"
        if directory == root or not _NAME.match(name):
            errors.append(
                f"{where}: image directory names must be lowercase repository names "
                "([a-z0-9] separated by . _ - or /), one directory per image below the root"
            )
            continue
        if name in RESERVED:
            errors.append(f"{where}: {name} is a reserved name in Docker, put it under a directory")
            continue
        for image in _images_of(directory, name, root, tree_args, errors, skipped):
            if image.name in images:
                errors.append(f"{image.name}: defined twice (a variant and a directory?)")
            images[image.name] = image
    graph_aliases = {}
    for alias, target in sorted(links.items()):
        if target in images or any(n.startswith(target + "/") for n in images):
            graph_aliases[alias] = target
            skipped[alias] = (
                f"symlink to {target}: the same image, built once as {target}, "
                f"FROM {alias} builds on it"
            )
        else:
            skipped[alias] = f"symlink to {target}, which holds no image"
    spellings = RegistrySpellings(registry, aliases or (), resolve) if registry else None
    for image in images.values():
        for ref in image.refs:
            _add_parent(image, ref, images, graph_aliases, spellings, errors)
        for parent in image.parents:
            if parent not in images:
                errors.append(f"{image.name}: depends on {parent}, which is not in the tree")
            if parent == image.name:
                errors.append(
                    f"{image.name}: depends on itself (a FROM without registry names the "
                    "tree's image of that name, for Docker Hub's write "
                    f"docker.io/library/{image.name.rsplit('/', 1)[-1]}:<tag>)"
                )
    if not images and not errors:
        errors.append(f"no image directories under {root}")
    if errors:
        raise ArmswarmError("image tree: " + "; ".join(dict.fromkeys(errors)))
    return Graph(
        images=images,
        order=_toposort(images),
        skipped=dict(sorted(skipped.items())),
        aliases=graph_aliases,
        root=root,
    )


def _add_parent(image, ref, images, aliases, spellings, errors):
    host, rest = dockerfile.split_registry(dockerfile.repository(ref))
    path = _dealias(rest, aliases)
    in_tree = path in images
    if in_tree and path != rest:
        image.spelled[rest] = path
    if host is None or spellings is None:
        # No registry named, or none configured (a plan): a tree image's name is the tree's.
        if in_tree:
            image.parents = sorted({*image.parents, path})
        return
    verdict = spellings.same(host, lookup=in_tree)
    if verdict == "yes":
        if in_tree:
            image.parents = sorted({*image.parents, path})
        else:
            # The cluster registry, but not built by this tree: it would build on whatever an
            # earlier run left there.
            tag = dockerfile.repository(ref) != ref.split("@")[0] and ref.rsplit(":", 1)[-1]
            hint = (
                f" (did you mean {host}/{path}/{tag}? a tree image is a directory, tags are "
                "the run's dates)"
                if tag and f"{path}/{tag}" in images
                else ""
            )
            errors.append(
                f"{image.name}: parent {ref} is in the cluster registry but not in the tree{hint}"
            )
    elif in_tree:
        why = (
            "which does not resolve on the master"
            if verdict == "unknown"
            else f"which is not the cluster registry {spellings.host}"
        )
        errors.append(
            f"{image.name}: {ref} is ambiguous: the tree builds {path}, but the reference names "
            f"registry {host}, {why}: write FROM {path} (the tree's image), or list {host} "
            "in armswarm:imagebuild:registry_aliases if it is the cluster registry"
        )


def _images_of(directory, name, root, tree_args, errors, skipped):
    """The image of ``directory`` and its variants."""
    where = name
    conf = _settings(directory, errors)
    own_args = build_args_of(conf.get("build_args"), where, errors)
    image = Image(name=name, path=directory, directory=directory)
    image.arch = _as_list(conf.get("arch"), "arch", where, errors)
    image.platforms = platform_list(
        conf.get("platforms"), f"{where} ({name}/{IMAGE_FILE})", "platforms", errors
    )
    labels = conf.get("labels") or {}
    if not isinstance(labels, dict):
        errors.append(f"{where}: labels must be a mapping")
        labels = {}
    image.labels = {str(k): str(v) for k, v in labels.items()}
    image.build_args = {**tree_args, **own_args}
    timeout = conf.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        errors.append(f"{where}: timeout must be a whole number of seconds")
    else:
        image.timeout = timeout
    hint = conf.get("expected_seconds")
    if hint is not None:
        if isinstance(hint, bool) or not isinstance(hint, (int, float)) or not hint >= 0:
            errors.append(f"{where}: expected_seconds must be a number of seconds ≥ 0")
        else:
            image.expected_seconds = float(hint)
    depends = _as_list(conf.get("depends"), "depends", where, errors)
    context = directory
    if conf.get("context") is not None:
        value = conf["context"]
        if not isinstance(value, str) or Path(value).is_absolute():
            errors.append(f"{where}: context must be a relative directory, not {value!r}")
        else:
            context = (directory / value).resolve()
            if not _inside(context, root):
                errors.append(f"{where}: context {value} leaves the tree")
                context = directory
            elif not _inside(directory, context):
                errors.append(
                    f"{where}: context {value} must be this directory or one above it "
                    "(the Dockerfile travels with the context)"
                )
                context = directory
    image.path = context
    script = conf.get("script")
    docker_name = conf.get("dockerfile", "Dockerfile")
    built = set()
    file = _relative_file(directory, docker_name, "dockerfile", where, errors)
    if script is None and not (file and file.is_file()):
        script = DEFAULT_SCRIPT
    if script is not None:
        path = _relative_file(directory, script, "script", where, errors)
        if path is None or not path.is_file():
            errors.append(f"{where}: neither {docker_name} nor the build script {script}")
        elif not _inside(path, context):
            errors.append(f"{where}: script {script} is outside the build context")
        else:
            image.script = path.relative_to(context).as_posix()
            built.add(path)
        image.parents = sorted(set(depends))
    elif file is not None:
        if not _inside(file, context):
            errors.append(f"{where}: dockerfile {docker_name} is outside the build context")
        else:
            image.dockerfile = file.relative_to(context).as_posix()
            image.refs = _refs(
                file,
                image.build_args,
                f"{where}/{docker_name}",
                errors,
                _candidate_platforms(image),
            )
            built.add(file)
        image.parents = sorted(set(depends))
    out = [image]
    variants = conf.get("variants") or {}
    if not isinstance(variants, dict):
        errors.append(f"{where}: variants must be a mapping of variant: Dockerfile")
        variants = {}
    for variant, given in variants.items():
        vwhere = f"{where}: variant {variant}"
        if not isinstance(variant, str) or not _VARIANT.match(variant):
            errors.append(f"{vwhere}: variant names are lowercase ([a-z0-9] separated by . _ -)")
            continue
        spec = {"dockerfile": given} if isinstance(given, str) else given
        if not isinstance(spec, dict) or "dockerfile" not in spec:
            errors.append(f"{vwhere}: a Dockerfile name, or a mapping with dockerfile:")
            continue
        unknown = sorted(set(spec) - _VARIANT_KEYS)
        if unknown:
            errors.append(f"{vwhere}: unknown keys {', '.join(unknown)}")
        file = _relative_file(directory, spec["dockerfile"], "dockerfile", vwhere, errors)
        if file is None or not file.is_file():
            errors.append(f"{vwhere}: no file {spec['dockerfile']}")
            continue
        if "context" in spec:
            vcontext = _relative_file(
                directory, spec["context"], "context", vwhere, errors, contained=False
            )
        else:
            # jupyter/docker-stacks style: a variant in a subdirectory is built in it
            vcontext = file.parent if file.parent != directory else context
        if vcontext is None or not _inside(vcontext, root) or not _inside(file, vcontext):
            errors.append(f"{vwhere}: its context must be in the tree and hold its Dockerfile")
            continue
        args = {**image.build_args, **build_args_of(spec.get("build_args"), vwhere, errors)}
        vname = f"{name}-{variant}"
        out.append(
            Image(
                name=vname,
                path=vcontext,
                dockerfile=file.relative_to(vcontext).as_posix(),
                parents=list(image.parents),
                arch=list(image.arch),
                platforms=list(image.platforms),
                labels=dict(image.labels),
                build_args=args,
                timeout=image.timeout,
                expected_seconds=image.expected_seconds,
                refs=_refs(
                    file,
                    args,
                    f"{vname} ({spec['dockerfile']})",
                    errors,
                    _candidate_platforms(image),
                ),
                directory=directory,
                variant_of=name,
            )
        )
        built.add(file)
    _unbuilt(directory, name, root, built, skipped)
    for item in out:
        _links_leaving(item, root, skipped)
    return out


def _refs(file: Path, build_args: dict, where: str, errors: list, platforms=()) -> list:
    """The image references of ``file``. One whose global ARGs declare a platform argument no
    build argument sets (``ARG TARGETARCH`` … ``FROM target-${TARGETARCH}``) is read once per
    platform it may be built for (``platforms``): the node passes that platform's values."""
    try:
        # bytes, not text mode: the pinned copy keeps CRLF line ends
        text = file.read_bytes().decode("utf-8")
        varying = dockerfile.global_arg_names(text) & set(architectures.PLATFORM_ARGS)
    except (ArmswarmError, UnicodeDecodeError) as exc:
        errors.append(f"{where}: {exc}")
        return []
    runs = [(None, build_args)]
    if varying - set(build_args) and platforms:
        runs = [(p, {**architectures.build_args(p), **build_args}) for p in platforms]
    refs: list = []
    for platform, args in runs:
        try:
            parsed = dockerfile.parse(text, args)
        except ArmswarmError as exc:
            errors.append(f"{where}: {exc}" + (f" (building for {platform})" if platform else ""))
            return []
        refs += [r.value for r in parsed.references if r.value not in refs]
    if parsed.buildkit:
        heredoc = any("heredoc" in item for item in parsed.buildkit)
        flags = any("heredoc" not in item for item in parsed.buildkit)
        why = ", and ".join(
            [*([CLASSIC_HEREDOC] if heredoc else []), *([CLASSIC_FLAGS] if flags else [])]
        )
        errors.append(
            f"{where}: {', '.join(parsed.buildkit)}: needs BuildKit, but build jobs use "
            f"dockerd's classic builder (the Engine API): {why}, {CLASSIC_WAY_OUT}"
        )
    return refs


# An image without platforms: or arch: is built for the boards' platforms: its references are
# read for those (reading them for amd64 or s390x would ask for parents no ARM tree has).
GUESSED_PLATFORMS = tuple(p for p in architectures.PLATFORMS.values() if p.startswith("linux/arm"))


def _candidate_platforms(image) -> list:
    """The platforms an image may be built for, before the nodes are known: its own list, or
    those of its ``arch:``, or the ARM ones."""
    if image.platforms:
        return list(image.platforms)
    wanted = {architectures.canonical(a) for a in image.arch}
    if not wanted:
        return list(GUESSED_PLATFORMS)
    return [p for a, p in architectures.PLATFORMS.items() if a in wanted]


def _unbuilt(directory, name, root, built, skipped):
    """Dockerfiles in an image directory that no image builds."""
    for base, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            path = Path(base) / file
            if is_dockerfile(file) and _real(path) not in built:
                skipped[path.relative_to(root).as_posix()] = (
                    f"in the build context of {name}, not built: to build it, add it to "
                    f"variants: in {name}/{IMAGE_FILE}"
                )


def _links_leaving(image, root, skipped):
    """Symlinks in a build context that :func:`build_job.pack` cannot send: those whose
    target is outside the context, and links to directories through ``..`` or an absolute
    path (a file behind such a link is sent as a copy)."""
    for base, dirs, files in os.walk(image.path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for entry in [*dirs, *files]:
            path = Path(base) / entry
            if not path.is_symlink():
                continue
            link = os.readlink(path)
            target = _real(path)
            rel = path.relative_to(root).as_posix()
            if target is None:
                skipped[rel] = f"symlink loop ({link}) in {image.name}'s build context: not sent"
            elif not _inside(target, image.path):
                skipped[rel] = (
                    f"symlink to {link} leaves the build context of {image.name}: not sent "
                    f"(set context: in {IMAGE_FILE} to a directory that holds both)"
                )
            elif target.is_dir() and (Path(link).is_absolute() or ".." in Path(link).parts):
                skipped[rel] = (
                    f"symlink to the directory {link} in {image.name}'s build context: not "
                    "sent (a link through .. or an absolute path: link without .. or copy it)"
                )


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


# -- platforms -------------------------------------------------------------------------------
def platform_list(value, where: str, key: str, errors: list) -> list:
    """A list of platform strings in their one spelling (sorted, no repeats); a scalar, an
    empty list or an unknown platform is an error naming ``where`` and ``key``."""
    if value is None:
        return []
    known = ", ".join(sorted(architectures.ARCH_OF))
    if not isinstance(value, list) or not value:
        errors.append(
            f"{where}: {key} must be a non-empty list of platforms such as [linux/arm/v7, "
            f"linux/arm64], not {value!r}"
        )
        return []
    out = []
    for item in value:
        spelled = architectures.platform(item)
        if spelled is None:
            errors.append(f"{where}: {key}: {item!r} is not a known platform (known: {known})")
        elif spelled not in out:
            out.append(spelled)
    return sorted(out)


def resolve_platforms(graph: Graph, nodes: dict, default=None) -> dict:
    """``{image: [platform, …]}`` for every image of ``graph`` on build ``nodes`` (name →
    an object with ``arch``, ``labels`` and ``platform``); ``default`` is the tree default
    (``armswarm:imagebuild:platforms``, None when unset). Every problem is one ArmswarmError
    naming the image and its file, raised before anything is built.

    An image's list is its own, or inherited: the platforms all its parents have, for a root
    the tree default or every platform of the nodes. ``arch:`` filters it. A list that was
    inherited is narrowed to the platforms some node that may build the image (``labels``)
    has; a list written down must be buildable as written. An image gets ``[None]`` (built
    for whatever its node is, unchecked) only when no node has a known platform and nothing
    asks for one. ``nodes`` None: an estimate for nodes of any platform (nothing is checked
    against nodes, a root without a list gets the tree default or ``[None]``)."""
    errors: list = []
    estimate = nodes is None
    nodes = nodes or {}
    default = platform_list(default, PLATFORMS_KEY, "value", errors) if default is not None else []
    available: dict = {}
    for node_name, node in sorted(nodes.items()):
        if node.platform:
            available.setdefault(node.platform, []).append(node_name)
    have = ", ".join(sorted(available)) or "none"
    out: dict = {}
    for name in graph.order:
        image = graph.images[name]
        where = f"{name} ({image.file})"
        parents = [p for p in image.parents if p in out]
        explicit = bool(image.platforms)
        if image.platforms:
            wanted = list(image.platforms)
            for parent in (p for p in parents if out[p] != [None]):  # [None]: any platform
                for missing in (p for p in wanted if p not in out[parent]):
                    errors.append(
                        f"{where}: platform {missing} is not a platform of its parent {parent} "
                        f"({parent} has {', '.join(map(str, out[parent])) or 'none'})"
                    )
        elif parents:
            known = [out[q] for q in parents if out[q] != [None]] or [[None]]
            wanted = [p for p in known[0] if all(p in k for k in known)]
        elif default:
            wanted, explicit, where = list(default), True, f"{where}, from {PLATFORMS_KEY}"
        elif available:
            wanted = sorted(available)
        else:
            wanted = [None]
        if image.arch and wanted != [None]:
            kept = [
                p
                for p in wanted
                if any(architectures.same(architectures.arch_of_platform(p), a) for a in image.arch)
            ]
            if not kept:
                errors.append(
                    f"{where}: arch {image.arch} leaves none of its platforms "
                    f"({', '.join(map(str, wanted)) or 'none'})"
                )
            wanted = kept
        if wanted == [None] or estimate:
            out[name] = wanted
            continue
        able = {
            p: [
                n
                for n in available.get(p, [])
                if image.eligible(nodes[n].arch, nodes[n].labels, nodes[n].platform)
            ]
            for p in wanted
        }
        if explicit:
            for p in wanted:
                if p not in available:
                    errors.append(
                        f"{where}: no build node has platform {p} (the nodes have {have})"
                    )
                elif not able[p]:
                    errors.append(
                        f"{where}: no build node of platform {p} matches its labels "
                        f"{image.labels} (nodes of {p}: {', '.join(available[p])})"
                    )
        else:
            narrowed = [p for p in wanted if able[p]]
            if wanted and not narrowed:
                errors.append(
                    f"{where}: no build node that matches its arch/labels "
                    f"({image.arch or 'any'}, {image.labels or 'any'}) has any of its "
                    f"platforms {', '.join(wanted)}"
                )
            wanted = narrowed
        out[name] = wanted
    if errors:
        raise ArmswarmError("image platforms: " + "; ".join(dict.fromkeys(errors)))
    return out


def job_name(image: str, platform, platforms: list) -> str:
    """The job that builds ``image`` for ``platform``: the image's name when it has one
    platform, ``image@platform`` when it has several."""
    return f"{image}@{platform}" if len(platforms) > 1 else image


def expand(graph: Graph, platforms: dict) -> Graph:
    """The graph of jobs: one job per (image, platform), whose parents are its parents' jobs
    of the same platform (``platforms`` from :func:`resolve_platforms`)."""
    jobs = {}
    for name in graph.order:
        image = graph.images[name]
        for platform in platforms[name]:
            key = job_name(name, platform, platforms[name])
            jobs[key] = dataclasses.replace(
                image,
                name=key,
                image=name,
                platform=platform,
                parents=sorted(job_name(p, platform, platforms[p]) for p in image.parents),
            )
    return Graph(
        images=jobs,
        order=_toposort(jobs),
        skipped=graph.skipped,
        aliases=graph.aliases,
        root=graph.root,
    )
