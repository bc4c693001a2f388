"""Salt loader entry point: ``pip install armswarm`` makes the extension modules loadable."""

from armswarm.paths import EXT_TYPES, extension_dir


def extension_dirs():
    """Return ``{ext_type: [dir]}`` for every extension directory the tree has."""
    dirs = {}
    for ext_type in EXT_TYPES:
        path = extension_dir(ext_type)
        if path.is_dir():
            dirs[ext_type] = [str(path)]
    return dirs
