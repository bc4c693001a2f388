"""Build one image of an image tree on this node and push it to the cluster registry.

The ``imagebuild`` runner calls :func:`build` on the node it schedules; users rarely call it by
hand. Registry credentials come from this minion's pillar: the push client's
(``armswarm:registry:clients:push``, else ``armswarm:registry:username`` and ``…:password``);
they never travel in the job's arguments or its answer.
"""

import logging
import os
import tempfile
from pathlib import Path

from armswarm_core import ArmswarmError
from armswarm_core.build import build_job
from armswarm_core.common import docker_client
from armswarm_core.registry import registry_settings
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "imagebuild"


def __virtual__():
    return docker_client.virtual(__virtualname__)


def _auth():
    try:
        conf = registry_settings.settings(__opts__, __pillar__)
    except ArmswarmError as exc:  # bad settings are named, not taken for "no credentials"
        raise CommandExecutionError(str(exc)) from exc
    username, password = registry_settings.credentials(conf, "push")
    if conf["host"] and username:
        return {"username": username, "password": password}
    return None  # no registry settings on this minion: push without credentials


def build(
    image,
    ref,
    context=None,
    dockerfile=None,
    script=None,
    pins=None,
    build_args=None,
    registry_host=None,
    timeout=1800,
    platform=None,
    context_source=None,
    context_sha256=None,
    **kwargs,
):
    """
    Build ``image`` from its context, tag it ``ref`` (``<registry>/<image>:<tag>``) and push
    it. The runner names the context: ``context_source`` (``salt://…`` on the master's file
    server, fetched with ``cp.get_file``) and ``context_sha256``; a fetched context whose
    SHA-256 differs is refused before anything is unpacked. By hand, ``context`` may instead be
    the base64 of a gzip tar of the image's directory.

    ``pins`` maps the repositories of parent images to the exact references this run built
    (``<registry>/base@sha256:…``): FROM and ``COPY --from`` lines naming them are rewritten, so
    a child never builds on an older parent. ``script`` builds the image with a script instead
    of a Dockerfile (it must create ``$ARMSWARM_IMAGE``). ``platform`` (``linux/arm/v7``,
    ``linux/arm64`` …) is what the image is built for: the engine builds for it, the Dockerfile
    gets TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT and BUILDPLATFORM … as build
    arguments (those it declares), a script as environment variables, and the built image must
    say that platform in its config or it is not pushed.

    Returns ``status`` (``ok``/``failed``), ``digest``, ``error``, ``transient`` (worth
    retrying), timings (``pull_seconds``, ``build_seconds``, ``push_seconds``) and the last
    lines of build output. Between the build and the push an event
    ``armswarm/imagebuild/built/<jid>`` tells the runner that this node may take the next job.

    CLI Example:

    .. code-block:: bash

        salt node2 imagebuild.build web reg.lan:5000/web:20261122 "$(tar -C web -cz . | base64 -w0)"
        salt node2 imagebuild.build web reg.lan:5000/web:20261122 \
            context_source=salt://web.tar.gz context_sha256="$(sha256sum web.tar.gz | cut -c1-64)"
    """
    # Salt adds its __pub_* keys (the job id among them); anything else is a misspelled argument.
    unknown = sorted(key for key in kwargs if not key.startswith("__pub_"))
    if unknown:
        raise CommandExecutionError(f"imagebuild.build: unknown argument(s): {', '.join(unknown)}")
    if (context is None) == (context_source is None):
        raise CommandExecutionError(
            "imagebuild.build: give context_source and context_sha256 (or, by hand, context)"
        )
    if context_source is not None:
        try:
            context = _fetch(context_source, context_sha256)
        except _Unfetched as exc:
            log.warning("imagebuild: %s: %s", image, exc)
            answer = build_job.failed(image, ref, str(exc), exc.transient)
            answer["node"] = __opts__["id"]
            return answer
    try:
        engine = docker_client.connect(__opts__, __pillar__)
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    log.info("imagebuild: building %s as %s", image, ref)
    answer = build_job.run(
        engine,
        image,
        ref,
        context,
        dockerfile_name=dockerfile,
        script=script,
        pins=pins,
        build_args=build_args,
        registry=registry_host,
        auth=_auth(),
        timeout=int(timeout),
        on_built=_announcer(kwargs.get("__pub_jid"), image),
        platform=platform,
    )
    answer["node"] = __opts__["id"]
    if answer["status"] != "ok":
        log.warning("imagebuild: %s failed: %s", image, answer.get("error"))
    return answer


class _Unfetched(Exception):
    def __init__(self, message, transient):
        super().__init__(message)
        self.transient = transient


def _fetch(source, sha256) -> bytes:
    """The context ``source`` names, from the master's file server, checked against
    ``sha256``. Into a private temporary directory (not the minion's file cache): it is
    read once and gone after the build."""
    if not isinstance(source, str) or not source.startswith("salt://"):
        raise _Unfetched(f"context_source must be a salt:// URL, not {source!r}", False)
    if not build_job.is_sha256(sha256):
        raise _Unfetched(f"context_sha256 must be 64 lowercase hex digits, not {sha256!r}", False)
    with tempfile.TemporaryDirectory(prefix="armswarm-context-") as tmp:
        dest = os.path.join(tmp, "context.tar.gz")
        try:
            got = __salt__["cp.get_file"](source, dest)
        except Exception as exc:  # noqa: BLE001 - the master busy or away: worth another try
            raise _Unfetched(f"fetching {source} failed: {exc}", True) from exc
        if not got:
            raise _Unfetched(f"the master does not serve {source}", False)
        data = Path(dest).read_bytes()
    try:
        return build_job.verified(data, sha256)
    except ArmswarmError as exc:
        raise _Unfetched(f"{source}: {exc}", False) from exc


def _announcer(jid, image):
    """What tells the master that the build of job ``jid`` is done and its push runs."""
    if not jid:
        return None  # called from the command line: nobody waits for it

    def announce():
        __salt__["event.send"](
            f"armswarm/imagebuild/built/{jid}", {"jid": jid, "image": image, "node": __opts__["id"]}
        )

    return announce


def images(prefix=None):
    """
    Local images (``repository:tag`` → image ID), optionally only those starting with
    ``prefix`` (e.g. the registry host): what a node has cached from earlier builds.

    CLI Example:

    .. code-block:: bash

        salt '*' imagebuild.images reg.lan:5000/
    """
    try:
        engine = docker_client.connect(__opts__, __pillar__)
    except ArmswarmError as exc:
        raise CommandExecutionError(str(exc)) from exc
    out = {}
    for image in engine.images.list():
        for tag in image.tags:
            if not prefix or tag.startswith(prefix):
                out[tag] = image.id
    return out
