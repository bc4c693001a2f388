"""Salt's real loaders over this tree, for the functional tests."""

import copy
from pathlib import Path

import salt.config
import salt.loader

REPO = Path(__file__).resolve().parents[2]


def _opts(tmp_path, options):
    opts = copy.deepcopy(salt.config.minion_config(None))
    opts.update(
        {
            "file_client": "local",
            "cachedir": str(tmp_path / "cache"),
            "module_dirs": [str(REPO / "_modules")],
            "states_dirs": [str(REPO / "_states")],
            "utils_dirs": [str(REPO / "_utils")],
            "grains": {"kernel": "Linux"},
            **options,
        }
    )
    return opts


def load_modules(tmp_path, **options):
    """The execution-module loader of such a minion (``pillar`` in ``options`` is its
    pillar, ``grains`` its grains)."""
    return salt.loader.minion_mods(_opts(tmp_path, options))


def load_states(tmp_path, **options):
    """The state loader of a minion whose extension modules are this tree's, with minion
    options ``options`` (e.g. ``{"armnode.sysfs": …}``). The loader keeps its own copy of the
    options: set ``states.opts["test"]`` to switch test mode."""
    opts = _opts(tmp_path, options)
    funcs = salt.loader.minion_mods(opts)
    return salt.loader.states(opts, funcs, salt.loader.utils(opts), {})
