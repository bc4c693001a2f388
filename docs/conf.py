"""Sphinx configuration for the armswarm documentation.

Build (warnings are errors)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import importlib.util
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# The repository root makes ``armswarm`` and the loader directories (``_modules.<name>`` …,
# implicit namespace packages) importable; ``_utils`` makes ``import armswarm_core`` work the
# way Salt's loader provides it to the loader modules.
for path in (DOCS / "_ext", ROOT / "_utils", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from armswarm import __version__  # noqa: E402

project = "armswarm"
author = "the armswarm developers"
copyright = "the armswarm developers"
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "armswarm_reference",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
# The tree armswarm_reference documents; it writes one page per module under
# reference/_generated/ (gitignored, refreshed on every build).
armswarm_tree = str(ROOT)

autodoc_default_options = {"members": True, "undoc-members": True}
autodoc_member_order = "bysource"
add_module_names = False
# Mock only what the documented modules import but this Python lacks (e.g. a docs-only venv
# without the docker SDK); everything installed is imported for real.
autodoc_mock_imports = [
    name
    for name in ("salt", "docker", "requests", "yaml")
    if importlib.util.find_spec(name) is None
]

html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"armswarm {release}"
