"""The cluster registry's container on the registry node: status, CA, garbage collection.

Deployed by the ``registry`` formula (``salt/registry``) from pillar ``armswarm:registry``;
see :mod:`armswarm_core.registry.registry_host`.
"""

from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.common import docker_client
from armswarm_core.registry import registry_host, registry_settings
from salt.exceptions import CommandExecutionError

__virtualname__ = "docker_registry"


def __virtual__():
    return docker_client.virtual(__virtualname__)


def _conf(name=registry_host.CONTAINER):
    return registry_host.settings(__opts__, __pillar__, name)


def settings(strict=True):
    """
    The registry settings: the defaults < ``armswarm:registry`` in the minion config < in
    pillar, key by key, validated (an error names every bad key); passwords are masked. The
    formula's ``map.jinja`` reads them here, so a bad key stops its render. ``strict=False``
    returns them even when some keys are bad, each left at its default.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_registry.settings
    """
    try:
        conf = registry_settings.settings(__opts__, __pillar__, strict=bool(strict))
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    return registry_settings.masked(conf)


def placement():
    """
    Where this node's registry is reached: ``host`` (the name clients use, default
    ``<address>:<port>``), ``listen`` (the address its port is published on) and
    ``addresses`` (this node's addresses other nodes can reach: no loopback, no docker
    bridge such as docker0's 172.17.0.1). The formula's certificate names come from these.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_registry.placement
    """
    try:
        conf = registry_settings.settings(__opts__, __pillar__)
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    return registry_host.placement(conf, __grains__.get("ip4_interfaces"))


def status(name=registry_host.CONTAINER):
    """
    The registry container ``name`` on this node: ``id``, ``status``, ``image``, the spec it
    was created from and whether it is read-only; ``None`` when it is not deployed here.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_registry.status
    """
    try:
        return registry_host.current(docker_client.connect(__opts__, __pillar__), _conf(name))
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc


def ca_cert():
    """
    The registry's CA certificate (PEM), published to the Salt mine as
    ``armswarm_registry_ca`` so every node can trust it; ``None`` before the formula made it.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_registry.ca_cert
    """
    try:
        path = Path(_conf()["config_dir"]) / "ca.crt"
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    return path.read_text() if path.is_file() else None


def garbage_collect(dry_run=False, name=registry_host.CONTAINER):
    """
    Free the storage of blobs no manifest references any more (after ``salt-run
    imagebuild.prune dry_run=False``). The registry is read-only meanwhile: pulls keep
    working, pushes are refused for the few seconds it takes. Returns bytes before and after.

    CLI Example:

    .. code-block:: bash

        salt node1 docker_registry.garbage_collect
        salt node1 docker_registry.garbage_collect dry_run=True
    """
    try:
        conf = _conf(name)
        # the address the registry state would publish on (a container of an older version
        # may have none recorded: every interface)
        conf["listen"] = registry_host.placement(conf, __grains__.get("ip4_interfaces"))["listen"]
        engine = docker_client.connect(__opts__, __pillar__)
        return registry_host.garbage_collect(engine, conf, dry_run=bool(dry_run))
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
