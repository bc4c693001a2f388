"""Salt's real loaders over this tree, for the functional tests."""

import copy
from pathlib import Path

import salt.config
import salt.loader

REPO = Path(__file__).resolve().parents[2]


def load_states(tmp_path, **options):
    """The state loader of a minion whose extension modules are this tree's, with minion
    options ``options`` (e.g. ``{"armnode.sysfs": …}``). The loader keeps its own copy of the
    options: set ``states.opts["test"]`` to switch test mode."""
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
    funcs = salt.loader.minion_mods(opts)
    return salt.loader.states(opts, funcs, salt.loader.utils(opts), {})
