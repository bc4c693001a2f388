"""The cluster registry.

``registry_api`` (its HTTP API v2 and settings), ``tag_retention`` (dated tags and which to
keep) and ``registry_host`` (the registry container on its node).
"""
