"""Every pillar key the code reads is documented in some ``salt/<formula>/pillar.example``.

The keys are collected from the source, which is parsed and never imported (loader modules
expect Salt's dunders):

* every key path of each settings domain's ``DEFAULTS`` mapping, in every module that also
  names its pillar key as ``PILLAR = "…"`` (``armswarm_core.common.config`` merges and checks
  exactly those keys);
* literal ``salt["pillar.get"]("a:b")`` calls in the SLS and Jinja files under ``salt/``;
* ``_setting("k", …)`` calls of the functions in ``SETTING_FUNCTIONS``;
* literal ``"armswarm:…"`` strings passed to ``traverse_dict_and_list``;
* the fields of ``armswarm_core.registry.registry_api.Settings`` (``armswarm:registry:<field>``);
* the swarm layout: the fields of ``armswarm_core.swarm.swarm_layout.Layout`` and ``NodeSettings``
and the literal ``conf.get("k")`` calls in the files of ``LAYOUT_READERS`` (``armswarm:swarm:…``).

A new formula is covered by adding its ``pillar.example``; a new settings domain by its
``PILLAR`` and ``DEFAULTS``.
"""

import ast
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("_modules", "_states", "_runners", "_grains", "_utils")
ANY = "*"  # a path component that stands for any key (e.g. a minion id under nodes)

# File → (function, pillar prefix): ``function("k", …)`` reads ``<prefix>:k``.
SETTING_FUNCTIONS = {"_runners/imagebuild.py": ("_setting", "armswarm:imagebuild")}
# Files that read the swarm layout as ``conf``: ``conf.get("k")`` reads ``armswarm:swarm:k``.
LAYOUT_READERS = (
    "_utils/armswarm_core/swarm/swarm_layout.py",
    "_utils/armswarm_core/swarm/swarm_plan.py",
    "_utils/armswarm_core/swarm/converge.py",
    "_states/swarm_cluster.py",
)
SWARM = "armswarm:swarm"

PILLAR_GET = re.compile(r"""pillar\.get['"]\]\s*\(\s*['"]([^'"]+)['"]""")


# -- what the documentation says ---------------------------------------------------------------
def flatten(data, prefix=()):
    """``{path tuple: value}`` for every key of nested mappings."""
    out = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            path = (*prefix, str(key))
            out[path] = value
            out.update(flatten(value, path))
    return out


def documented_keys(root: Path = ROOT) -> dict:
    """Every key path of every ``salt/*/pillar.example``, with its example value."""
    keys = {}
    for path in sorted((root / "salt").glob("*/pillar.example")):
        keys.update(flatten(yaml.safe_load(path.read_text(encoding="utf-8"))))
    return keys


def is_documented(key: tuple, documented: dict) -> bool:
    """``key`` (``*`` matches any one component) is in the examples, or one of its ancestors
    is a free-form mapping there (an empty mapping such as ``users: {}``)."""
    for path, value in documented.items():
        if len(path) == len(key) and all(k in (ANY, p) for k, p in zip(key, path, strict=True)):
            return True
        if (
            len(path) < len(key)
            and isinstance(value, Mapping)
            and not value
            and all(k in (ANY, p) for k, p in zip(key, path, strict=False))
        ):
            return True
    return False


# -- what the code uses --------------------------------------------------------------------------
def _split(colon_path: str) -> tuple:
    return tuple(part for part in colon_path.split(":") if part)


def _calls(tree):
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def _name(func) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _receiver(func) -> str:
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id
    return ""


def _literal(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _dict_keys(node, prefix=()) -> list:
    """Every key path of a dict literal (values need not be literals)."""
    out = []
    for key, value in zip(node.keys, node.values, strict=True):
        name = _literal(key)
        if name is None:
            continue
        out.append((*prefix, name))
        if isinstance(value, ast.Dict):
            out += _dict_keys(value, (*prefix, name))
    return out


def _settings_domain(tree):
    """``(pillar path, DEFAULTS key paths)`` of a module with ``PILLAR`` and ``DEFAULTS``."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in ("PILLAR", "DEFAULTS"):
                found[target.id] = node.value
    pillar, defaults = found.get("PILLAR"), found.get("DEFAULTS")
    if _literal(pillar) is None or not isinstance(defaults, ast.Dict):
        return None
    return _split(_literal(pillar)), _dict_keys(defaults)


def _fields(tree, class_name: str) -> list:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return [
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            ]
    raise AssertionError(f"class {class_name} not found")


def used_keys(root: Path = ROOT) -> dict:
    """``{key path tuple: where it is used}`` for the keys the code reads."""
    used: dict = {}

    def add(key, where):
        used.setdefault(tuple(key), where)

    for path in sorted((root / "salt").rglob("*")):
        if path.suffix in (".sls", ".jinja") and path.is_file():
            rel = path.relative_to(root).as_posix()
            for match in PILLAR_GET.finditer(path.read_text(encoding="utf-8")):
                add(_split(match.group(1)), rel)

    for dirname in CODE_DIRS:
        for path in sorted((root / dirname).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
            domain = _settings_domain(tree)
            if domain:
                add(domain[0], f"{rel} DEFAULTS")
                for sub in domain[1]:
                    add((*domain[0], *sub), f"{rel} DEFAULTS")
            setting = SETTING_FUNCTIONS.get(rel)
            for call in _calls(tree):
                name, args = _name(call.func), [_literal(a) for a in call.args]
                where = f"{rel}:{call.lineno}"
                first = args[0] if args else None
                if setting and name == setting[0] and first:
                    add((*_split(setting[1]), first), where)
                elif name == "traverse_dict_and_list":
                    for arg in args:
                        if arg and arg.startswith("armswarm:"):
                            add(_split(arg), where)
                elif (
                    rel in LAYOUT_READERS and name == "get" and _receiver(call.func) == "conf"
                ) and first:
                    add((*_split(SWARM), first), where)

    core = root / "_utils" / "armswarm_core"
    registry = ast.parse((core / "registry" / "registry_api.py").read_text(encoding="utf-8"))
    for field in _fields(registry, "Settings"):
        add(("armswarm", "registry", field), "armswarm_core.registry.registry_api.Settings")
    cluster = ast.parse((core / "swarm" / "swarm_layout.py").read_text(encoding="utf-8"))
    for field in _fields(cluster, "Layout"):
        add((*_split(SWARM), field), "armswarm_core.swarm.swarm_layout.Layout")
    for field in _fields(cluster, "NodeSettings"):
        add((*_split(SWARM), "nodes", ANY, field), "armswarm_core.swarm.swarm_layout.NodeSettings")
    return used


def undocumented(root: Path = ROOT) -> list:
    documented = documented_keys(root)
    return [
        f"{':'.join(key)} (used in {where})"
        for key, where in sorted(used_keys(root).items())
        if not is_documented(key, documented)
    ]


# -- tests ---------------------------------------------------------------------------------------
def test_every_pillar_key_the_code_uses_is_documented():
    missing = undocumented()
    assert not missing, "keys missing from every salt/*/pillar.example:\n" + "\n".join(missing)


def test_the_collector_finds_the_known_sources():
    used = used_keys()
    for key in (
        "armnode:admin:password_hash",  # armswarm_core.node.node_settings.DEFAULTS
        "armnode:tuning:irq_affinity:pattern",  # nested in it
        "armswarm:registry:cert_days",  # armswarm_core.registry.registry_settings.DEFAULTS
        "armswarm:backup:schedule:mysql",  # armswarm_core.backup.backup_policy.DEFAULTS
        "armswarm:imagebuild:probe_timeout",  # armswarm_core.build.build_settings.DEFAULTS
        "imagebuild:source",  # pillar.get in salt/imagebuild/init.sls
        "armswarm:docker:base_url",  # armswarm_core.common.docker_client.DEFAULTS
        "armswarm:imagebuild:max_context_mb",  # _setting in the imagebuild runner
        "armswarm:registry:node",  # traverse_dict_and_list in the imagebuild runner
        "armswarm:registry:url",  # registry_api.Settings
        "armswarm:swarm:listen_port",  # swarm_layout.Layout
        "armswarm:swarm:nodes:*:advertise_interface",  # swarm_layout.NodeSettings
        "armswarm:swarm:force",  # conf.get in armswarm_core.swarm.converge
    ):
        assert _split(key) in used, key


def _tree(tmp_path, code: str, example: str) -> Path:
    for name, text in (
        ("_modules/thing.py", code),
        ("salt/thing/pillar.example", example),
        ("_utils/armswarm_core/registry/registry_api.py", "class Settings:\n    host: str\n"),
        (
            "_utils/armswarm_core/swarm/swarm_layout.py",
            "class Layout:\n    managers: list\n"
            "class NodeSettings:\n    labels: dict\n"
            "def f(conf):\n    return conf.get('prune')\n",
        ),
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


EXAMPLE = """
armswarm:
  registry: {host: r:5000}
  swarm:
    managers: [a]
    prune: false
    nodes: {a: {labels: {}}}
  thing:
    known: 1
    free: {}
"""


def test_an_undocumented_key_fails(tmp_path):
    code = (
        "PILLAR = 'armswarm:thing'\n"
        "DEFAULTS = {'known': 1, 'free': {'anything': LATER}, 'sub': {'newkey': ''}}\n"
    )
    root = _tree(tmp_path, code, EXAMPLE)
    assert undocumented(root) == [
        "armswarm:thing:sub (used in _modules/thing.py DEFAULTS)",
        "armswarm:thing:sub:newkey (used in _modules/thing.py DEFAULTS)",
    ]


def test_defaults_without_a_pillar_key_are_not_settings(tmp_path):
    root = _tree(tmp_path, "DEFAULTS = {'armnode.sysfs': '/sys'}\n", EXAMPLE)
    assert undocumented(root) == []


def test_a_documented_tree_passes(tmp_path):
    code = "def f(opts, pillar):\n    traverse_dict_and_list(pillar, 'armswarm:thing:known')\n"
    root = _tree(tmp_path, code, EXAMPLE)
    assert undocumented(root) == []
