"""Every public loader function is documented; execution and runner functions show a CLI example.

``salt '*' sys.doc`` and the Sphinx reference both show these docstrings. The files are parsed
with ``ast``, not imported: loader modules expect Salt's dunders and a minion's environment.
"""

import ast
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# directory → text every public function's docstring must contain ("" = any docstring)
RULES = {
    "_modules": "CLI Example",
    "_runners": "CLI Example",
    "_states": "",
}


def public_functions(path: Path):
    """Top-level functions of ``path`` that Salt exposes: names not starting with ``_``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith(
            "_"
        ):
            yield node


def docstring_problems(root: Path, rules: dict[str, str] = RULES) -> tuple[list[str], int]:
    """``(problems, number of functions checked)`` for the loader directories under ``root``."""
    problems = []
    checked = 0
    for dirname, required in rules.items():
        for path in sorted((root / dirname).glob("*.py")):
            rel = path.relative_to(root).as_posix()
            for func in public_functions(path):
                checked += 1
                doc = ast.get_docstring(func)
                where = f"{rel}:{func.lineno} {func.name}()"
                if not doc:
                    problems.append(f"{where}: no docstring")
                elif required and required not in doc:
                    problems.append(f"{where}: docstring has no {required!r}")
    return problems, checked


def test_loader_functions_are_documented():
    problems, _checked = docstring_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_checker_reports_bad_modules(tmp_path):
    modules = tmp_path / "_modules"
    modules.mkdir()
    (modules / "bad.py").write_text(
        textwrap.dedent(
            '''\
            """A module."""
            def _private():
                pass

            def nodoc():
                pass

            def noexample():
                """Does things."""

            def good():
                """Does things.

                CLI Example:

                .. code-block:: bash

                    salt '*' bad.good
                """
            '''
        )
    )
    states = tmp_path / "_states"
    states.mkdir()
    (states / "bad.py").write_text(
        'def present(name):\n    """Ensure it."""\n\ndef absent(name):\n    return {}\n'
    )
    (tmp_path / "_runners").mkdir()  # an empty directory is fine

    problems, checked = docstring_problems(tmp_path)

    assert checked == 5
    assert problems == [
        "_modules/bad.py:5 nodoc(): no docstring",
        "_modules/bad.py:8 noexample(): docstring has no 'CLI Example'",
        "_states/bad.py:4 absent(): no docstring",
    ]


def test_checker_handles_missing_directories(tmp_path):
    assert docstring_problems(tmp_path) == ([], 0)
