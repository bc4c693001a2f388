"""What every domain shares.

``config`` (the settings layer: merge, lookup, strict types), ``docker_client`` (the one
engine client helper), ``architectures`` (one vocabulary of CPU architecture names),
``files`` (atomic writes), ``sysfs`` (kernel attribute files) and ``state_results``
(Salt state return dicts).
"""
