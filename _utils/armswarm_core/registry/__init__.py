"""The cluster registry.

``registry_settings`` (``armswarm:registry``, shared by the node and its clients),
``registry_api`` (its HTTP API v2), ``tag_retention`` (dated tags and which to keep) and
``registry_host`` (the registry container on its node).
"""
